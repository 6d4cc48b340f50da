-- Opens a tenant transaction: sets moat.org_id for this transaction only and
-- answers whether the caller's session is still alive: the principal exists
-- and is enabled, and its login session ($4) or client secret generation ($5),
-- when the token names one, has not been revoked (moat_session_active, V9).
SELECT moat_begin_session($1, $2, $3, $4, $5) AS active
