-- Starts a runner transaction: the run's organization, and a bound on how
-- long the session may sit idle inside it (a stalled runner must not hold
-- row locks that recovery skips). Transaction-local: works behind a pooler.
SELECT set_config('moat.org_id', $1, true), set_config('idle_in_transaction_session_timeout', $2, true)
