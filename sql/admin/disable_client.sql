UPDATE service_clients SET disabled_at = COALESCE(disabled_at, now())
WHERE id = $1 AND org_id = $2
