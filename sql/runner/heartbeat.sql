-- Renews the lease, only under the runner's own epoch (0 rows: fenced out).
UPDATE runs SET lease_expires_at = now() + make_interval(secs => $4)
WHERE id = $1 AND org_id = $2 AND lease_epoch = $3 AND status IN ('running', 'waiting_input')
