-- The hash is argon2id, made by the caller; the password itself never reaches SQL.
INSERT INTO users (org_id, email, email_normalized, role, password_hash)
VALUES ($1, $2, $3, $4, $5)
RETURNING id
