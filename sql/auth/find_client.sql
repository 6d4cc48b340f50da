-- Client credentials: the client's row (visible through the client lookup key only).
SELECT id, org_id, secret_hash, scopes, disabled_at IS NOT NULL AS disabled
FROM service_clients
WHERE id = $1
