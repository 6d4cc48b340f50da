-- A refresh token is single-use: mark it used; its sealed copy is no longer needed.
UPDATE refresh_tokens SET used_at = now(), sealed_token = NULL
WHERE id = $1 AND org_id = $2
