-- One page of an organization's files, oldest first (keyset on created_at, id).
SELECT id, name, size, sha256, content_type, created_at
FROM files
WHERE org_id = $1
  AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::uuid))
ORDER BY created_at, id
LIMIT $4
