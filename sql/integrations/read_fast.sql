-- The broker's fast path: one statement, no explicit transaction, no lock.
-- `caller_active` is the same session check as every tenant transaction's.
SELECT caller_active, is_found, int_status, sealed_access, valid_secs, refresh_count, since_refresh, cooldown_secs
FROM moat_integration_read($1, $2, $3, $4, $5, $6)
