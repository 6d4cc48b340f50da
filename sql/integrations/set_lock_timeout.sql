-- How long this transaction waits for a lock (transaction-local, like SET LOCAL).
SELECT set_config('lock_timeout', $1, true)
