-- A pending connect flow, valid for ten minutes, bound to the session that started it ($8, $9).
INSERT INTO oauth_states (state_hash, org_id, created_by, provider, account, binding_hash, code_verifier, expires_at,
                          starter_sid, starter_generation)
VALUES ($1, $2, $3, $4, $5, $6, $7, now() + interval '10 minutes', $8, $9)
