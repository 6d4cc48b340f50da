-- A login starts a refresh-token family that ends $3 seconds later, however often refreshed.
INSERT INTO refresh_families (org_id, user_id, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
RETURNING id, expires_at
