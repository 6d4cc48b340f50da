-- Counts one attempt against each bucket, atomically, in one round trip.
-- A bucket's window restarts once it has passed. Returns, per bucket, the hits
-- in the current window and the seconds until the window ends and until any
-- lockout ends. $1 buckets (distinct), $2 window seconds, $3 retention seconds.
INSERT INTO rate_limits AS r (bucket, window_start, window_secs, hits, failures, expires_at)
SELECT b.bucket, now(), b.window_secs, 1, 0, now() + make_interval(secs => b.retention)
FROM unnest($1::text[], $2::float8[], $3::float8[]) AS b (bucket, window_secs, retention)
ON CONFLICT (bucket) DO UPDATE SET
    hits = CASE WHEN r.window_start <= now() - make_interval(secs => excluded.window_secs)
                THEN 1 ELSE r.hits + 1 END,
    window_start = CASE WHEN r.window_start <= now() - make_interval(secs => excluded.window_secs)
                        THEN now() ELSE r.window_start END,
    window_secs = excluded.window_secs,
    expires_at = GREATEST(r.expires_at, excluded.expires_at)
RETURNING bucket,
          hits,
          ceil(extract(epoch FROM window_start - now()) + window_secs)::bigint AS window_retry,
          COALESCE(ceil(extract(epoch FROM locked_until - now())), 0)::bigint AS lock_retry
