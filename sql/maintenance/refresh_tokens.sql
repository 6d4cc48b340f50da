-- Purge step `refresh_tokens`: Refresh tokens past their expiry, and superseded ones past the longest reuse grace window (120 s).
-- At most $1 rows (capped at 10,000); 0 when another instance runs this step now.
SELECT moat_purge_refresh_tokens($1) AS purged
