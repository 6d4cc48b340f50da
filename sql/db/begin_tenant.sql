-- Opens a tenant transaction: sets moat.org_id for this transaction only and
-- answers whether the authenticated principal still exists and is enabled.
SELECT moat_begin($1, $2, $3) AS active
