-- Appends a batch (fenced by lease epoch when $3 is not NULL); NULL when fenced out.
SELECT moat_append_events($1, $2, $3, $4, $5, $6) AS first_seq
