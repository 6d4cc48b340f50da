-- One integration's metadata; another organization's is "not found".
SELECT id, provider, account, status, access_expires_at, last_refreshed_at, created_at
FROM integrations
WHERE id = $1 AND org_id = $2
