-- The final status, only under the runner's own epoch.
UPDATE runs SET status = $4, error_code = $5, finished_at = now(), lease_expires_at = NULL
WHERE id = $1 AND org_id = $2 AND lease_epoch = $3 AND status IN ('running', 'waiting_input')
