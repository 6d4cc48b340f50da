-- Events after a sequence number, in sequence order.
SELECT seq, run_id, kind, data, at
FROM events
WHERE conversation_id = $1 AND org_id = $2 AND seq > $3
ORDER BY seq
LIMIT $4
