-- Appends one security event. The runtime role may INSERT and SELECT this
-- table, never UPDATE or DELETE it.
INSERT INTO audit_log (org_id, event, actor, subject, ip, detail)
VALUES ($1, $2, $3, $4, $5, $6)
