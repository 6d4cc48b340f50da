-- running ⇄ waiting_input, only under the runner's own epoch.
UPDATE runs SET status = $4
WHERE id = $1 AND org_id = $2 AND lease_epoch = $3 AND status IN ('running', 'waiting_input')
