-- Runs whose lease really expired (after the clock gave back any outage)
-- end as failed/runner_lost, fenced; the caller appends run.failed for each.
SELECT run_id, org_id, conversation_id FROM moat_recover_runs($1)
