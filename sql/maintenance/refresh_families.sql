-- Purge step `refresh_families`: Refresh-token families past their end, or revoked a day ago (their tokens go with them).
-- At most $1 rows (capped at 10,000); 0 when another instance runs this step now.
SELECT moat_purge_refresh_families($1) AS purged
