-- Purge step `rate_limits`: Expired rate-limit buckets.
-- At most $1 rows (capped at 10,000); 0 when another instance runs this step now.
SELECT moat_purge_rate_limits($1) AS purged
