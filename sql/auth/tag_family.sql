-- Gives a family started before tags existed (V8) its tag (its SHA-256), at its next rotation.
UPDATE refresh_families SET tag_hash = $3
WHERE id = $1 AND org_id = $2 AND tag_hash IS NULL
