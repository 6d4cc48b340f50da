-- Fan-out: the new events of several conversations of one organization in one
-- read ($1 conversation ids, $2 the last sequence number broadcast for each,
-- $3 the organization, $4 at most this many per conversation) and, in the same
-- statement and so the same snapshot, which of the listening sockets' sessions
-- ($5 kinds, $6 principals, $7 login sessions, $8 client secret generations)
-- are no longer alive: a revocation committed before any event this read sees
-- is seen too, so no socket gets an event committed after its revocation.
-- Always one row at least (`revoked`, the 1-based positions of dead sessions;
-- event columns NULL when there is no event).
WITH dead AS (
    SELECT coalesce(array_agg(s.ord::int), '{}') AS revoked
    FROM unnest($5::text[], $6::uuid[], $7::uuid[], $8::int[]) WITH ORDINALITY AS s (kind, principal, sid, gen, ord)
    WHERE NOT moat_session_active($3, s.kind, s.principal, s.sid, s.gen)
)
SELECT d.revoked, e.conversation_id, e.seq, e.run_id, e.kind, e.data, e.at
FROM dead d
LEFT JOIN (
    SELECT w.conversation_id, n.seq, n.run_id, n.kind, n.data, n.at
    FROM unnest($1::uuid[], $2::bigint[]) AS w (conversation_id, after)
    CROSS JOIN LATERAL (
        SELECT seq, run_id, kind, data, at
        FROM events
        WHERE conversation_id = w.conversation_id AND org_id = $3 AND seq > w.after
        ORDER BY seq
        LIMIT $4
    ) AS n
) AS e ON true
ORDER BY e.conversation_id, e.seq
