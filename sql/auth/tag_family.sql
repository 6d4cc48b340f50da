-- Gives a family started before tags existed (V8) its tag, at its next rotation.
UPDATE refresh_families SET tag = $3
WHERE id = $1 AND org_id = $2 AND tag IS NULL
