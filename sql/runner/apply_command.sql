-- Marks a command applied once (0 rows: it already was, through another path);
-- returns how long it waited between its commit and now (for the metrics).
UPDATE run_commands SET applied_at = now() WHERE id = $1 AND org_id = $2 AND applied_at IS NULL
RETURNING extract(epoch FROM applied_at - created_at)::float8 AS latency_secs
