SELECT count(*) AS stale FROM integrations WHERE org_id = $1 AND key_id <> $2
