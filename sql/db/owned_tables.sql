-- Tables in Moat's schema that the current role owns, directly or through
-- membership: owners skip row-level security, so `serve` must not be one.
SELECT c.relname::text AS name
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema()
  AND c.relkind IN ('r', 'p')
  AND pg_has_role(current_user, c.relowner, 'USAGE')
ORDER BY 1
