-- The organization of the user with this normalized email (visible through the email lookup key).
SELECT id, org_id FROM users WHERE email_normalized = $1
