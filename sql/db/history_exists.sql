-- Whether `moat migrate` has ever run here (refinery's history table exists),
-- and whether the current role may read it (NULL when it does not exist).
SELECT to_regclass('refinery_schema_history') IS NOT NULL AS exists,
       has_table_privilege(current_user, to_regclass('refinery_schema_history')::oid, 'SELECT') AS readable
