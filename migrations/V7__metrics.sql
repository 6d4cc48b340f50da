-- V7: what /metrics reads across organizations. Never edit a migration once it has landed.
--
-- Runs by status, for every organization: the runtime role sees one
-- organization at a time (row-level security), so the count is a SECURITY
-- DEFINER function returning aggregates only — no row, no id, no org.

-- The owner (only SECURITY DEFINER functions run as it at runtime) may now
-- read every run; its UPDATE policies still bound what a claim can change,
-- and this function returns counts only.
CREATE POLICY runs_metrics_read ON runs FOR SELECT TO CURRENT_USER USING (true);

CREATE FUNCTION moat_run_counts() RETURNS TABLE (status text, error text, count bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT r.status, coalesce(r.error_code, ''), count(*)::bigint FROM public.runs r GROUP BY 1, 2
$$;
REVOKE ALL ON FUNCTION moat_run_counts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION moat_run_counts() TO moat_runtime;
