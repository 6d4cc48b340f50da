-- Fan-out: the new events of several conversations of one organization in one
-- read ($1 conversation ids, $2 the last sequence number broadcast for each,
-- $3 the organization, $4 at most this many per conversation).
SELECT w.conversation_id, e.seq, e.run_id, e.kind, e.data, e.at
FROM unnest($1::uuid[], $2::bigint[]) AS w (conversation_id, after)
CROSS JOIN LATERAL (
    SELECT seq, run_id, kind, data, at
    FROM events
    WHERE conversation_id = w.conversation_id AND org_id = $3 AND seq > w.after
    ORDER BY seq
    LIMIT $4
) AS e
ORDER BY w.conversation_id, e.seq
