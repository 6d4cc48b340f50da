-- Whether the run's last applied batch is $3 (a retry after a commit whose
-- outcome was lost finds its own work done).
SELECT coalesce(last_batch = $3, false) AS applied FROM runs WHERE id = $1 AND org_id = $2
