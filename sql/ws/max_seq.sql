-- The last committed sequence number of a conversation (0 when it has none).
SELECT COALESCE(max(seq), 0)::bigint AS seq FROM events WHERE conversation_id = $1 AND org_id = $2
