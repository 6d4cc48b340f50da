-- The family's current token, if it was issued within the grace window ($2 seconds):
-- what a duplicate refresh of the previous token is answered with.
SELECT id, sealed_token
FROM refresh_tokens
WHERE family_id = $1 AND org_id = $3
  AND used_at IS NULL
  AND sealed_token IS NOT NULL
  AND created_at > now() - make_interval(secs => $2)
ORDER BY created_at DESC
LIMIT 1
