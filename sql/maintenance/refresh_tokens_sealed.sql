-- Purge step `refresh_tokens_sealed`: Sealed copies of current refresh tokens past the longest reuse grace window (the rows stay).
-- At most $1 rows (capped at 10,000); 0 when another instance runs this step now.
SELECT moat_unseal_refresh_tokens($1) AS purged
