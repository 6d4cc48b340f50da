UPDATE service_clients SET secret_hash = $3, secret_rotated_at = now()
WHERE id = $1 AND org_id = $2
