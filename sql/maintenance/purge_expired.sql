-- Deletes expired rate-limit rows and refresh tokens/families, and clears
-- sealed refresh tokens past the longest grace window, in bounded batches.
-- Runs as the owner through a SECURITY DEFINER function that only touches
-- expired rows; concurrent callers on other instances skip (advisory lock).
SELECT moat_purge_expired($1) AS purged
