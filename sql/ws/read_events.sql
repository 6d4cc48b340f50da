-- A socket's own catch-up: events of its conversation after a sequence number,
-- in order, and, in the same snapshot, whether its session ($5 kind,
-- $6 principal, $7 login session, $8 client secret generation) is still alive.
-- Always one row at least (`alive`; event columns NULL when there is none).
WITH session AS (SELECT moat_session_active($2, $5, $6, $7, $8) AS alive)
SELECT s.alive, e.seq, e.run_id, e.kind, e.data, e.at
FROM session s
LEFT JOIN (
    SELECT seq, run_id, kind, data, at
    FROM events
    WHERE conversation_id = $1 AND org_id = $2 AND seq > $3
    ORDER BY seq
    LIMIT $4
) AS e ON true
ORDER BY e.seq
