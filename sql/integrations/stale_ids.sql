-- Integrations of one organization still sealed with another key than $2.
SELECT id FROM integrations WHERE org_id = $1 AND key_id <> $2 ORDER BY id LIMIT $3
