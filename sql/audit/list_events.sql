-- One page of an organization's audit log, newest first (keyset on at, id).
SELECT id, at, event, actor, subject, ip, detail
FROM audit_log
WHERE org_id = $1
  AND ($2::timestamptz IS NULL OR (at, id) < ($2::timestamptz, $3::uuid))
ORDER BY at DESC, id DESC
LIMIT $4
