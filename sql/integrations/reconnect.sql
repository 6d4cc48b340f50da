-- A reconnect: fresh tokens, active again.
UPDATE integrations
SET access_token = $3, refresh_token = $4, key_id = $5,
    access_expires_at = now() + make_interval(secs => $6),
    status = 'active', cooldown_until = NULL, updated_at = now()
WHERE id = $1 AND org_id = $2
