-- The token's family and its user, the family row locked for the rest of the refresh.
SELECT f.user_id, f.expires_at, f.tag_hash, f.revoked_at IS NOT NULL AS revoked, f.expires_at <= now() AS expired,
       u.role, u.disabled_at IS NOT NULL AS user_disabled
FROM refresh_families f
JOIN users u ON u.id = f.user_id
WHERE f.id = $1 AND f.org_id = $2
FOR UPDATE OF f
