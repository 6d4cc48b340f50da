-- A presented refresh token matched no stored token: the family whose tag it
-- begins with ($1, the tag's SHA-256; visible through the family-tag lookup key only), if any.
SELECT id, org_id FROM refresh_families WHERE tag_hash = $1
