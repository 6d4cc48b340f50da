-- Counts one attempt against each bucket, atomically, in one round trip.
--
-- The window restarts once it has passed. For buckets with a lockout, the
-- attempt is counted as a failure *when it starts* (a success resets the
-- count), so concurrent attempts cannot all slip past a lockout: the upserts
-- serialize on the bucket's row. The attempt that reaches `lockout_after`
-- failures is let through and starts a lockout of `base * 2^(failures -
-- lockout_after)` seconds, at most `max`; attempts during a lockout are
-- refused (`last_refused`) and not counted.
--
-- $1 buckets (distinct), $2 window seconds, $3 retention seconds,
-- $4 lockout_after (0: none), $5 lockout base seconds, $6 lockout max seconds.
INSERT INTO rate_limits AS r
    (bucket, window_start, window_secs, hits, failures, lockout_after, lockout_base_secs, lockout_max_secs,
     locked_until, last_refused, expires_at)
SELECT b.bucket, now(), b.window_secs, 1,
       CASE WHEN b.lockout_after > 0 THEN 1 ELSE 0 END,
       b.lockout_after, b.base, b.max,
       CASE WHEN b.lockout_after = 1 THEN now() + make_interval(secs => LEAST(b.max, b.base)) END,
       false,
       now() + make_interval(secs => b.retention)
FROM unnest($1::text[], $2::float8[], $3::float8[], $4::int[], $5::float8[], $6::float8[])
     AS b (bucket, window_secs, retention, lockout_after, base, max)
ON CONFLICT (bucket) DO UPDATE SET
    hits = CASE WHEN r.window_start <= now() - make_interval(secs => excluded.window_secs)
                THEN 1 ELSE r.hits + 1 END,
    window_start = CASE WHEN r.window_start <= now() - make_interval(secs => excluded.window_secs)
                        THEN now() ELSE r.window_start END,
    window_secs = excluded.window_secs,
    lockout_after = excluded.lockout_after,
    lockout_base_secs = excluded.lockout_base_secs,
    lockout_max_secs = excluded.lockout_max_secs,
    last_refused = COALESCE(r.locked_until > now(), false),
    failures = CASE WHEN excluded.lockout_after > 0 AND NOT COALESCE(r.locked_until > now(), false)
                    THEN r.failures + 1 ELSE r.failures END,
    locked_until = CASE
        WHEN COALESCE(r.locked_until > now(), false) THEN r.locked_until
        WHEN excluded.lockout_after > 0 AND r.failures + 1 >= excluded.lockout_after
        THEN now() + make_interval(secs => LEAST(excluded.lockout_max_secs,
                 excluded.lockout_base_secs * power(2, LEAST(r.failures + 1 - excluded.lockout_after, 30))))
        ELSE r.locked_until END,
    expires_at = GREATEST(r.expires_at, excluded.expires_at)
RETURNING bucket,
          hits,
          last_refused,
          ceil(extract(epoch FROM window_start - now()) + window_secs)::bigint AS window_retry,
          COALESCE(ceil(extract(epoch FROM locked_until - now())), 0)::bigint AS lock_retry
