INSERT INTO service_clients (org_id, name, secret_hash, scopes)
VALUES ($1, $2, $3, $4)
RETURNING id
