-- Purge step `ws_tokens_used`: Used ws-token ids past their token's expiry.
-- At most $1 rows (capped at 10,000); 0 when another instance runs this step now.
SELECT moat_purge_ws_tokens($1) AS purged
