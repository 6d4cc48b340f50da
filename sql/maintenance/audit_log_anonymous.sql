-- Purge step `audit_log_anonymous`: Audit events with no organization (unknown emails and clients), after 90 days.
-- At most $1 rows (capped at 10,000); 0 when another instance runs this step now.
SELECT moat_purge_audit_anonymous($1) AS purged
