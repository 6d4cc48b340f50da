-- Bounds for a transaction that takes an integration's refresh lock, all
-- transaction-local (like SET LOCAL): how long to wait for the lock; a
-- statement timeout just above it (so the lock timeout is what fires); and
-- how long the session may sit idle inside the transaction — during the
-- provider call — before PostgreSQL ends it, releasing the lock even if the
-- holder's host vanished without closing its connection.
SELECT set_config('lock_timeout', $1, true),
       set_config('statement_timeout', $2, true),
       set_config('idle_in_transaction_session_timeout', $3, true)
