-- As lock_integration.sql, but skips an integration whose refresh is in flight.
SELECT pg_try_advisory_xact_lock($1) AS locked
