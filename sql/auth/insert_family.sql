-- A login starts a refresh-token family that ends $3 seconds later, however often refreshed.
-- $4 is the SHA-256 of its random tag (the first bytes of every refresh token of the family).
INSERT INTO refresh_families (org_id, user_id, expires_at, tag_hash)
VALUES ($1, $2, now() + make_interval(secs => $3), $4)
RETURNING id, expires_at
