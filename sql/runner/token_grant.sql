-- What an agent's token request may use: the run's creator, still enabled,
-- with what their role or scopes grant, and the integration's provider.
SELECT r.created_by,
       (SELECT i.provider FROM integrations i WHERE i.id = $3 AND i.org_id = $2) AS provider,
       (SELECT u.role FROM users u
         WHERE 'user:' || u.id::text = r.created_by AND u.org_id = $2 AND u.disabled_at IS NULL) AS user_role,
       (SELECT c.scopes FROM service_clients c
         WHERE 'client:' || c.id::text = r.created_by AND c.org_id = $2 AND c.disabled_at IS NULL) AS client_scopes
FROM runs r
WHERE r.id = $1 AND r.org_id = $2
