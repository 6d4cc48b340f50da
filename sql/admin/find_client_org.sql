-- The organization of this service client (visible through the client lookup key).
SELECT org_id FROM service_clients WHERE id = $1
