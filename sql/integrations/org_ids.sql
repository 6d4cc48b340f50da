-- Every organization's id (key rotation visits each in its own RLS context).
SELECT id FROM moat_org_ids() AS id
