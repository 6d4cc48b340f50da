-- The run's question ($1 chosen by the runner once per question: a retry
-- after a commit whose outcome was lost inserts nothing).
INSERT INTO input_requests (id, run_id, conversation_id, org_id, question)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO NOTHING
