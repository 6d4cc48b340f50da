SELECT EXISTS (SELECT 1 FROM run_commands
               WHERE run_id = $1 AND org_id = $2 AND kind = 'cancel' AND applied_at IS NULL) AS pending
