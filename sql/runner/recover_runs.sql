-- One recovery tick (moat_recover_runs, V10): advance the database clock, give
-- back to live leases the time nobody could reach the database ($2 the tick
-- interval, $3 the gap that counts as an outage, in seconds), then end runs
-- whose lease really expired as failed/runner_lost (fenced); the caller
-- appends run.failed for each.
SELECT run_id, org_id, conversation_id FROM moat_recover_runs($1, $2, $3)
