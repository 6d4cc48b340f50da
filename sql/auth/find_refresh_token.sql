-- Refresh: the presented token's row, locked so concurrent refreshes of one
-- token serialize. $2 is the reuse grace window in seconds.
SELECT id, family_id, org_id, used_at IS NOT NULL AS used,
       expires_at <= now() AS expired,
       COALESCE(used_at > now() - make_interval(secs => $2), false) AS in_grace
FROM refresh_tokens
WHERE token_hash = $1
FOR UPDATE
