-- V10: an unavailable database is not evidence that a runner died.
-- Never edit a migration once it has landed.
--
-- A lease used to expire by the wall clock, so a PostgreSQL restart or a
-- failover longer than the lease failed every running run as `runner_lost`,
-- although no runner had died: none of them could reach the database, and
-- neither could anyone else. Now every instance's recovery tick first
-- advances `moat_clock.seen_at`, the last moment any Moat process reached the
-- database (moat_advance_clock). A tick that finds it older than expected has
-- just seen the end of a period in which nobody could (an outage, a
-- failover, every instance stopped): the leases that were still valid when
-- the database was last seen get that time back — and after a real outage
-- restart as full leases — before any lease is judged (moat_recover_runs).
-- Only a runner silent for a full lease of database availability loses its
-- runs. The fence is unchanged: a lease taken over still bumps the epoch.
-- Runner appends become idempotent per batch (moat_append_run_events), so a
-- runner may retry one whose commit was lost with its connection.

-- The lease each claim was given, so an outage can give it back whole.
ALTER TABLE runs ADD COLUMN lease_secs float8;

-- One row: when a Moat process last reached the database (recovery ticks).
CREATE TABLE moat_clock (
    id       boolean     NOT NULL DEFAULT true,
    seen_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT moat_clock_pkey PRIMARY KEY (id),
    CONSTRAINT moat_clock_single_row CHECK (id)
);
INSERT INTO moat_clock DEFAULT VALUES;
-- Not tenant data; only the SECURITY DEFINER function below touches it.
REVOKE ALL ON moat_clock FROM PUBLIC;

-- Extending a lease leaves the run as it was (running or waiting for input).
CREATE POLICY runs_lease_extend ON runs FOR UPDATE TO CURRENT_USER
    USING (status IN ('running', 'waiting_input'))
    WITH CHECK (status IN ('running', 'waiting_input'));

-- Claims now record the lease they grant (parameters qualified: `lease_secs`
-- is also a column).
CREATE OR REPLACE FUNCTION moat_claim_runs(runner text, max integer, lease_secs float8)
RETURNS TABLE (run_id uuid, org_id uuid, conversation_id uuid, agent text, lease_epoch bigint, input jsonb,
               attempt integer)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    WITH claimable AS (
        SELECT r.id FROM public.runs r
         WHERE r.status = 'queued'
         ORDER BY r.created_at
         LIMIT least(greatest(moat_claim_runs.max, 0), 100)
         FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE public.runs r
           SET status = 'running', runner_id = moat_claim_runs.runner, lease_epoch = r.lease_epoch + 1,
               lease_expires_at = now() + make_interval(secs => moat_claim_runs.lease_secs),
               lease_secs = moat_claim_runs.lease_secs, attempt = r.attempt + 1,
               started_at = coalesce(r.started_at, now())
          FROM claimable
         WHERE r.id = claimable.id
        RETURNING r.id, r.org_id, r.conversation_id, r.lease_epoch, r.input, r.attempt
    )
    SELECT claimed.id, claimed.org_id, claimed.conversation_id, c.agent, claimed.lease_epoch, claimed.input,
           claimed.attempt
      FROM claimed JOIN public.conversations c ON c.id = claimed.conversation_id
$$;

-- Advances the clock (serialized on its row, in a statement of its own so the
-- lock is held for microseconds) and gives back the time nobody could reach
-- the database. `tick` is how often instances tick (seconds, clamped to
-- 1..60): a gap over twice that is time nobody reached the database, and
-- each lease still valid when the database was last seen gets back what it
-- had left then, pushed past the gap (a lease renewed since is not pushed
-- further); a gap over `outage` (clamped to at least 3 s and twice the tick)
-- was an outage, after which live leases restart whole. Clamped because the
-- runtime role may call it: it cannot push a lease past the real gap plus
-- what the lease had left (plus one lease after an outage).
CREATE FUNCTION moat_advance_clock(tick float8, outage float8) RETURNS float8
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    last timestamptz;
    gap float8;
    t float8 := least(greatest(coalesce(tick, 1), 1), 60);
    o float8 := greatest(coalesce(outage, 3), 3, 2 * least(greatest(coalesce(tick, 1), 1), 60));
BEGIN
    SELECT c.seen_at INTO last FROM public.moat_clock c FOR UPDATE;
    gap := extract(epoch FROM clock_timestamp() - last);
    IF gap > 2 * t THEN
        UPDATE public.runs r
           SET lease_expires_at = greatest(
                   r.lease_expires_at,
                   least(r.lease_expires_at, last + make_interval(secs => coalesce(r.lease_secs, 30)))
                       + make_interval(secs => gap - t),
                   CASE WHEN gap > o
                        THEN clock_timestamp() + make_interval(secs => coalesce(r.lease_secs, 30)) END)
         WHERE r.status IN ('running', 'waiting_input') AND r.lease_expires_at > last;
    END IF;
    UPDATE public.moat_clock SET seen_at = greatest(seen_at, clock_timestamp());
    RETURN gap;
END
$$;
REVOKE ALL ON FUNCTION moat_advance_clock(float8, float8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION moat_advance_clock(float8, float8) TO moat_runtime;

-- Leases are judged against the clock, not the wall clock: a recovery
-- statement delayed across an outage (queued in a pooler, a stalled
-- network, a frozen database) cannot fail runs before a tick has given the
-- outage back. In normal operation the clock lags by at most one tick.
CREATE OR REPLACE FUNCTION moat_fail_stale_runs(max integer)
RETURNS TABLE (run_id uuid, org_id uuid, conversation_id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    WITH stale AS (
        SELECT r.id, r.org_id, r.conversation_id FROM public.runs r
         WHERE r.status IN ('running', 'waiting_input')
           AND r.lease_expires_at < (SELECT c.seen_at FROM public.moat_clock c)
         ORDER BY r.lease_expires_at
         LIMIT least(greatest(moat_fail_stale_runs.max, 0), 1000)
         FOR UPDATE SKIP LOCKED
    ), failed AS (
        UPDATE public.runs r
           SET status = 'failed', error_code = 'runner_lost', finished_at = now(),
               lease_epoch = r.lease_epoch + 1, lease_expires_at = NULL
          FROM stale
         WHERE r.id = stale.id
    )
    SELECT stale.id, stale.org_id, stale.conversation_id FROM stale
$$;

-- Judging leases without the clock is no longer the runtime role's business:
-- a release that still calls it directly (during a rolling upgrade) fails
-- loudly instead of failing runs an outage made late. The recovery tick calls
-- it after advancing the clock, through moat_recover_runs.
REVOKE EXECUTE ON FUNCTION moat_fail_stale_runs(integer) FROM moat_runtime;
CREATE FUNCTION moat_recover_runs(max integer)
RETURNS TABLE (run_id uuid, org_id uuid, conversation_id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT * FROM public.moat_fail_stale_runs(max) $$;
REVOKE ALL ON FUNCTION moat_recover_runs(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION moat_recover_runs(integer) TO moat_runtime;

-- Runner appends that are safe to retry after a commit whose outcome was
-- lost with the connection: the run remembers the last batch it applied, and
-- the same batch again is a no-op that reports success (returns 0).
ALTER TABLE runs ADD COLUMN last_batch uuid;
CREATE FUNCTION moat_append_run_events(batch uuid, conversation uuid, run uuid, epoch bigint, kinds text[],
                                       datas jsonb[], output_bytes bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    applied uuid;
    first bigint;
BEGIN
    SELECT r.last_batch INTO applied FROM public.runs r WHERE r.id = run AND r.lease_epoch = epoch FOR UPDATE;
    IF applied IS NOT DISTINCT FROM batch AND batch IS NOT NULL THEN
        RETURN 0;
    END IF;
    first := public.moat_append_events(conversation, run, epoch, kinds, datas, output_bytes);
    IF first IS NOT NULL THEN
        UPDATE public.runs r SET last_batch = batch WHERE r.id = run;
    END IF;
    RETURN first;
END
$$;
