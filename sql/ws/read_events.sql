-- Events of a conversation after a sequence number, in order (replay and fan-out).
SELECT seq, run_id, kind, data, at
FROM events
WHERE conversation_id = $1 AND org_id = $2 AND seq > $3
ORDER BY seq
LIMIT $4
