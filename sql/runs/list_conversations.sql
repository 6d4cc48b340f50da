-- One page of an organization's conversations, oldest first (keyset on created_at, id).
SELECT id, title, agent, created_by, created_at
FROM conversations
WHERE org_id = $1
  AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::uuid))
ORDER BY created_at, id
LIMIT $4
