INSERT INTO input_requests (id, run_id, conversation_id, org_id, question)
VALUES ($1, $2, $3, $4, $5)
