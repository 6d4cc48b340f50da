-- Purge step `oauth_states`: Expired connect flows.
-- At most $1 rows (capped at 10,000); 0 when another instance runs this step now.
SELECT moat_purge_oauth_states($1) AS purged
