SELECT access_token, refresh_token, key_id FROM integrations
WHERE id = $1 AND org_id = $2
FOR UPDATE
