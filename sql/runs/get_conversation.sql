-- Another organization's conversation is "not found".
SELECT id, title, agent, created_by, created_at
FROM conversations
WHERE id = $1 AND org_id = $2
