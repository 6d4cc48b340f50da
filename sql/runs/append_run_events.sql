-- A runner's batch ($1, its id: the same batch twice is applied once and then
-- reports 0), fenced by lease epoch; NULL when fenced out. Safe to retry
-- after a commit whose outcome was lost with the connection.
SELECT moat_append_run_events($1, $2, $3, $4, $5, $6, $7) AS first_seq
