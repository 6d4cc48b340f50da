SELECT r.id, r.conversation_id, r.status, r.attempt, r.error_code, r.created_at, r.started_at, r.finished_at,
       (SELECT i.id FROM input_requests i
         WHERE i.run_id = r.id AND i.org_id = r.org_id AND i.status = 'pending'
         ORDER BY i.created_at DESC LIMIT 1) AS pending_input_id,
       (SELECT i.question FROM input_requests i
         WHERE i.run_id = r.id AND i.org_id = r.org_id AND i.status = 'pending'
         ORDER BY i.created_at DESC LIMIT 1) AS pending_question
FROM runs r
WHERE r.id = $1 AND r.org_id = $2
