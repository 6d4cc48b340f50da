-- An existing integration of this provider account (a reconnect replaces its tokens).
SELECT id, created_by FROM integrations
WHERE org_id = $1 AND provider = $2 AND account = $3
