DELETE FROM integrations WHERE id = $1 AND org_id = $2
RETURNING provider, account
