-- A command, read in its organization's context; only an unapplied one for this run counts.
SELECT kind, payload FROM run_commands
WHERE id = $1 AND org_id = $2 AND run_id = $3 AND applied_at IS NULL
