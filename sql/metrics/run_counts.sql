-- Runs by status and error code across organizations (aggregates only; see migration V7).
SELECT status, error, count FROM moat_run_counts()
