-- A successful attempt clears the consecutive-failure count and any lockout.
UPDATE rate_limits SET failures = 0, locked_until = NULL
WHERE bucket = $1
