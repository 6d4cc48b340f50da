-- Ends a session: every token of the family stops working.
UPDATE refresh_families SET revoked_at = now(), revoked_reason = $3
WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL
