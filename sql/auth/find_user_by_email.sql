-- Login: the account for a normalized email (visible through the email lookup key only).
SELECT id, org_id, role, password_hash, disabled_at IS NOT NULL AS disabled
FROM users
WHERE email_normalized = $1
