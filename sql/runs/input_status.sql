SELECT i.status, r.status AS run_status, i.run_id, i.conversation_id
FROM input_requests i JOIN runs r ON r.id = i.run_id
WHERE i.id = $1 AND i.org_id = $2
FOR UPDATE OF r
