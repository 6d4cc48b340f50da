-- Deletes expired rate-limit rows, refresh tokens/families, connect states and
-- used ws-tokens, and clears sealed refresh tokens past the longest grace
-- window, in bounded batches. Each migration adds a SECURITY DEFINER function
-- for its own tables that touches only expired rows. One instance at a time:
-- the others skip this round ("moatpurg", also taken inside moat_purge_expired).
SELECT CASE WHEN pg_try_advisory_xact_lock(7885082312880748391)
            THEN moat_purge_expired($1) + moat_purge_oauth_states($1) + moat_purge_ws_tokens($1)
            ELSE 0
       END AS purged
