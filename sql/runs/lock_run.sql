-- The run, locked for the rest of the transaction (cancel decides on its status).
SELECT status, conversation_id FROM runs WHERE id = $1 AND org_id = $2 FOR UPDATE
