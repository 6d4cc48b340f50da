-- One page of an organization's integrations, oldest first (keyset on created_at, id).
-- Metadata only: tokens and key ids never leave the database through the API.
SELECT id, provider, account, status, access_expires_at, last_refreshed_at, created_at
FROM integrations
WHERE org_id = $1
  AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::uuid))
ORDER BY created_at, id
LIMIT $4
