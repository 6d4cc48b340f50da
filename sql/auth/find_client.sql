-- Client credentials: the client's row (visible through the client lookup key only).
-- Its tokens carry the secret generation: a rotation ends them (moat_session_active).
SELECT id, org_id, secret_hash, scopes, secret_generation, disabled_at IS NOT NULL AS disabled
FROM service_clients
WHERE id = $1
