-- An attempt that a later limit refused never reached the password check, so
-- for this (lockout) bucket it did not happen: its count and its failure are
-- given back, and a lockout it started is lifted (the bucket was not locked
-- when the attempt began, or it would have been refused here).
UPDATE rate_limits
SET hits = greatest(hits - 1, 0), failures = greatest(failures - 1, 0), locked_until = NULL
WHERE bucket = $1 AND lockout_after > 0
