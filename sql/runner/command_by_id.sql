SELECT kind, payload, applied_at IS NOT NULL AS applied FROM run_commands WHERE id = $1 AND org_id = $2
