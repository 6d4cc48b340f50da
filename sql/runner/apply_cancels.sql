-- The run ended cancelled: every pending cancel command of it is now applied
-- (with how long each waited, for the metrics).
UPDATE run_commands SET applied_at = now()
WHERE run_id = $1 AND org_id = $2 AND kind = 'cancel' AND applied_at IS NULL
RETURNING extract(epoch FROM applied_at - created_at)::float8 AS latency_secs
