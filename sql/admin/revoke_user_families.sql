-- A disabled user's sessions end now, not when their refresh tokens expire.
UPDATE refresh_families SET revoked_at = now(), revoked_reason = 'user_disabled'
WHERE user_id = $1 AND org_id = $2 AND revoked_at IS NULL
