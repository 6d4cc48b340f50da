-- A pending connect flow, valid for ten minutes.
INSERT INTO oauth_states (state_hash, org_id, created_by, provider, account, binding_hash, code_verifier, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now() + interval '10 minutes')
