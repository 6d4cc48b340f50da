-- One user of the caller's organization; another organization's user is "not found".
SELECT id, email, role, created_at, disabled_at
FROM users
WHERE id = $1 AND org_id = $2
