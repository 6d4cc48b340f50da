-- A presented refresh token matched no stored token: the family its tag names
-- (visible through the family-tag lookup key only), if any.
SELECT id, org_id FROM refresh_families WHERE tag = $1
