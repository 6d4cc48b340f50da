UPDATE integrations SET access_token = $3, refresh_token = $4, key_id = $5
WHERE id = $1 AND org_id = $2
