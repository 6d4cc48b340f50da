-- A new refresh token of a family: stored as its SHA-256, plus a sealed copy kept
-- only for the reuse grace window. It never outlives its family. Every new token
-- begins with its family's tag, so its row may be purged once superseded.
INSERT INTO refresh_tokens (id, family_id, org_id, token_hash, expires_at, sealed_token, tagged)
VALUES ($1, $2, $3, $4, LEAST(now() + make_interval(secs => $5), $6), $7, true)
