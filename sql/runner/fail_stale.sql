-- Runs whose lease expired end as failed/runner_lost (fenced); the caller appends run.failed.
SELECT run_id, org_id, conversation_id FROM moat_fail_stale_runs($1)
