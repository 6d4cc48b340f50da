-- Marks a command applied once (0 rows: it already was, through another path).
UPDATE run_commands SET applied_at = now() WHERE id = $1 AND org_id = $2 AND applied_at IS NULL
