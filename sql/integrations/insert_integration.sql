-- A new integration; the tokens arrive sealed, bound to id $1.
INSERT INTO integrations (id, org_id, created_by, provider, account, access_token, refresh_token, key_id,
                          access_expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9))
RETURNING created_at
