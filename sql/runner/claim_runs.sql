-- Claims up to $2 queued runs of any organization (FOR UPDATE SKIP LOCKED), bumping each lease epoch.
SELECT run_id, org_id, conversation_id, agent, lease_epoch, input, attempt
FROM moat_claim_runs($1, $2, $3)
