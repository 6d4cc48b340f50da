-- A durable command for the runner holding the run; the NOTIFY is only a wake-up.
INSERT INTO run_commands (id, run_id, org_id, kind, payload, created_by)
VALUES ($1, $2, $3, $4, $5, $6)
