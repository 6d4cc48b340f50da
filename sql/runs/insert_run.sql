-- A queued run. The partial unique index refuses a second active run in one conversation.
INSERT INTO runs (id, conversation_id, org_id, input, created_by)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, conversation_id, status, attempt, error_code, created_at, started_at, finished_at
