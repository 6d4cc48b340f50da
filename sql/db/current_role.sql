-- The attributes of the role Moat connects as: superusers and BYPASSRLS roles
-- skip row-level security, so `serve` refuses them. `in_runtime_role` is NULL
-- until the first migration has created the `moat_runtime` group role.
SELECT r.rolname::text AS name,
       r.rolsuper AS superuser,
       r.rolbypassrls AS bypass_rls,
       (SELECT pg_has_role(current_user, g.oid, 'USAGE')
          FROM pg_roles g
         WHERE g.rolname = 'moat_runtime') AS in_runtime_role
FROM pg_roles r
WHERE r.rolname = current_user
