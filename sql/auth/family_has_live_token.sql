-- Whether the family still has a current (unused, unexpired) token: if not,
-- the session already ended by itself and an old token is simply refused.
SELECT EXISTS (
    SELECT 1 FROM refresh_tokens
    WHERE family_id = $1 AND org_id = $2 AND used_at IS NULL AND expires_at > now()
) AS live
