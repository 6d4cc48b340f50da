-- The callback consumes its state: single use, whatever happens next.
DELETE FROM oauth_states WHERE state_hash = $1
RETURNING org_id, created_by, provider, account, binding_hash, code_verifier, expires_at > now() AS fresh,
          starter_sid, starter_generation
