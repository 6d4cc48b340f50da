-- Unapplied commands of every run this runner holds (poll and reconnect catch-up): ids only.
SELECT command_id, run_id, org_id, kind FROM moat_pending_commands($1)
