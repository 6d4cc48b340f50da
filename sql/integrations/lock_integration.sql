-- Serializes refreshes of one integration across every instance. Transaction
-- scoped: released at commit or rollback, and when the holder's connection dies.
SELECT pg_advisory_xact_lock($1)
