-- First answer wins: only a pending request can be answered, atomically.
UPDATE input_requests SET status = 'answered', answer = $3, answered_by = $4, answered_at = now()
WHERE id = $1 AND org_id = $2 AND status = 'pending'
RETURNING run_id
