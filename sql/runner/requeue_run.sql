-- Hands a run back on shutdown: another runner claims it (with a new epoch).
UPDATE runs SET status = 'queued', runner_id = NULL, lease_expires_at = NULL
WHERE id = $1 AND org_id = $2 AND lease_epoch = $3 AND status IN ('running', 'waiting_input')
