-- The run ended or went back to the queue: its open questions are void.
UPDATE input_requests SET status = 'expired'
WHERE run_id = $1 AND org_id = $2 AND status = 'pending'
