-- The provider failed: no refresh of this integration for $3 seconds.
UPDATE integrations SET cooldown_until = now() + make_interval(secs => $3), updated_at = now()
WHERE id = $1 AND org_id = $2
