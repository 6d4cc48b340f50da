-- The caller's own user row (for /v1/me).
SELECT email, role FROM users WHERE id = $1 AND org_id = $2
