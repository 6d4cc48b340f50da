-- Records a failed attempt. From the $2-th consecutive failure on (if $2 > 0)
-- the bucket locks for $3 seconds, doubling with each further failure, at
-- most $4 seconds. $5 retention seconds.
UPDATE rate_limits SET
    failures = failures + 1,
    locked_until = CASE
        WHEN $2::int > 0 AND failures + 1 >= $2::int
        THEN now() + make_interval(secs => LEAST($4::float8, $3::float8 * power(2, LEAST(failures + 1 - $2::int, 30))))
        ELSE locked_until END,
    expires_at = GREATEST(expires_at, now() + make_interval(secs => $5::float8))
WHERE bucket = $1
