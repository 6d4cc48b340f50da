-- V10: an unavailable database is not evidence that a runner died.
-- Never edit a migration once it has landed.
--
-- A lease used to expire by the wall clock, so a PostgreSQL restart or a
-- failover longer than the lease failed every running run as `runner_lost`,
-- although no runner had died: none of them could reach the database, and
-- neither could anyone else. Now every instance's recovery tick advances
-- `moat_clock.seen_at`, the last moment any Moat process reached the
-- database. A tick that finds it older than expected has just seen the end
-- of a period in which nobody could (an outage, a failover, every instance
-- stopped): the leases that were still valid when the database was last seen
-- are extended by the time nobody could reach it — and after a real outage
-- restart as full leases — before any lease is judged. Only a runner silent
-- for a full lease of database availability loses its runs. The fence is
-- unchanged: a lease taken over still bumps the epoch.

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

-- One recovery tick: advance the clock (serialized on its row), give back
-- the time nobody could reach the database, then end the runs whose lease
-- has really expired (fenced, as moat_fail_stale_runs did). `tick` is how
-- often instances tick (seconds): a gap beyond it is time nobody reached the
-- database; a gap beyond `outage` (seconds) was an outage, after which live
-- leases restart whole.
CREATE FUNCTION moat_recover_runs(max integer, tick float8, outage float8)
RETURNS TABLE (run_id uuid, org_id uuid, conversation_id uuid)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    last timestamptz;
    gap float8;
BEGIN
    SELECT c.seen_at INTO last FROM public.moat_clock c FOR UPDATE;
    gap := extract(epoch FROM now() - last);
    IF gap > tick THEN
        UPDATE public.runs r
           SET lease_expires_at = CASE
                   WHEN gap > outage
                   THEN greatest(r.lease_expires_at + make_interval(secs => gap - tick),
                                 now() + make_interval(secs => coalesce(r.lease_secs, 30)))
                   ELSE r.lease_expires_at + make_interval(secs => gap - tick)
               END
         WHERE r.status IN ('running', 'waiting_input') AND r.lease_expires_at > last;
    END IF;
    UPDATE public.moat_clock SET seen_at = greatest(seen_at, now());
    RETURN QUERY SELECT * FROM public.moat_fail_stale_runs(max);
END
$$;
REVOKE ALL ON FUNCTION moat_recover_runs(integer, float8, float8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION moat_recover_runs(integer, float8, float8) TO moat_runtime;
