-- Gives a family a (new) tag ($3, its SHA-256) at a rotation whose presented
-- token carries none: a family started before tags existed (V8), or one whose
-- current token an instance of the previous release issued during a rolling
-- upgrade. The family's existing tokens are marked untagged, so the purge
-- keeps their rows and their reuse is still detected by row.
WITH family AS (
    UPDATE refresh_families SET tag_hash = $3 WHERE id = $1 AND org_id = $2 RETURNING id
)
UPDATE refresh_tokens SET tagged = false
WHERE family_id = (SELECT id FROM family) AND org_id = $2 AND tagged
