-- New tokens from the provider, both sealed with the current key ($5).
UPDATE integrations
SET access_token = $3, refresh_token = $4, key_id = $5,
    access_expires_at = now() + make_interval(secs => $6),
    last_refreshed_at = now(), refresh_count = refresh_count + 1,
    cooldown_until = NULL, updated_at = now()
WHERE id = $1 AND org_id = $2
