-- Records a ws-token's jti; no row back means it was already used.
INSERT INTO ws_tokens_used (jti, org_id, expires_at)
VALUES ($1, $2, to_timestamp($3))
ON CONFLICT (jti) DO NOTHING
RETURNING jti
