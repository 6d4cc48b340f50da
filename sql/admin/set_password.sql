UPDATE users SET password_hash = $3
WHERE id = $1 AND org_id = $2
