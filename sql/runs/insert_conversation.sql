INSERT INTO conversations (id, org_id, title, agent, created_by)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, title, agent, created_by, created_at
