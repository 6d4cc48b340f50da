-- Unapplied commands of every run this runner holds (poll and reconnect catch-up).
SELECT command_id, run_id, org_id, kind, payload FROM moat_pending_commands($1)
