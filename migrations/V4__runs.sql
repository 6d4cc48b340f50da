-- V4: conversations, runs, events, input requests and run commands. Never
-- edit a migration once it has landed.
--
-- The edge (API, later the WebSocket) never talks to runner processes: it
-- writes a row here and sends a NOTIFY carrying only ids; runners re-read
-- the table (the truth) on notification, on reconnect and on a slow poll.
-- Runs are claimed under a lease with an epoch that fences every later
-- write: a runner that stalled past its lease cannot write anything.

CREATE TABLE conversations (
    id          uuid        NOT NULL,
    org_id      uuid        NOT NULL,
    title       text        NOT NULL,
    agent       text        NOT NULL,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The next event sequence number. Allocated by UPDATE … RETURNING, whose
    -- row lock is held until commit: events of one conversation commit in
    -- sequence order and a rolled-back append leaves no gap.
    next_seq    bigint      NOT NULL DEFAULT 1,
    CONSTRAINT conversations_pkey PRIMARY KEY (id),
    CONSTRAINT conversations_org_fkey FOREIGN KEY (org_id) REFERENCES orgs (id),
    CONSTRAINT conversations_title_length CHECK (length(title) BETWEEN 1 AND 200),
    CONSTRAINT conversations_agent_format CHECK (agent ~ '^[a-z][a-z0-9_-]{0,39}$')
);
CREATE INDEX conversations_org_idx ON conversations (org_id, created_at, id);

CREATE TABLE runs (
    id                uuid        NOT NULL,
    conversation_id   uuid        NOT NULL,
    org_id            uuid        NOT NULL,
    status            text        NOT NULL DEFAULT 'queued',
    input             jsonb       NOT NULL,
    created_by        text        NOT NULL,
    runner_id         text,
    -- Incremented by every claim; every write of the runner carries it.
    lease_epoch       bigint      NOT NULL DEFAULT 0,
    lease_expires_at  timestamptz,
    attempt           integer     NOT NULL DEFAULT 0,
    error_code        text,
    output_bytes      bigint      NOT NULL DEFAULT 0,
    event_count       integer     NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    CONSTRAINT runs_pkey PRIMARY KEY (id),
    CONSTRAINT runs_conversation_fkey FOREIGN KEY (conversation_id) REFERENCES conversations (id) ON DELETE CASCADE,
    CONSTRAINT runs_status_check CHECK (status IN ('queued', 'running', 'waiting_input', 'succeeded', 'failed', 'cancelled'))
);
-- One active run per conversation: a second concurrent run is refused (409).
CREATE UNIQUE INDEX runs_one_active_per_conversation ON runs (conversation_id)
    WHERE status IN ('queued', 'running', 'waiting_input');
CREATE INDEX runs_queued_idx ON runs (created_at) WHERE status = 'queued';
CREATE INDEX runs_lease_idx ON runs (lease_expires_at) WHERE status IN ('running', 'waiting_input');
CREATE INDEX runs_runner_idx ON runs (runner_id) WHERE status IN ('running', 'waiting_input');

CREATE TABLE events (
    conversation_id  uuid        NOT NULL,
    seq              bigint      NOT NULL,
    org_id           uuid        NOT NULL,
    run_id           uuid,
    kind             text        NOT NULL,
    data             jsonb       NOT NULL DEFAULT '{}',
    at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_pkey PRIMARY KEY (conversation_id, seq),
    CONSTRAINT events_conversation_fkey FOREIGN KEY (conversation_id) REFERENCES conversations (id) ON DELETE CASCADE,
    CONSTRAINT events_kind_check CHECK (kind IN ('run.queued', 'run.started', 'message.delta', 'tool.started',
        'tool.completed', 'input.requested', 'input.answered', 'run.succeeded', 'run.failed', 'run.cancelled'))
);

CREATE TABLE input_requests (
    id               uuid        NOT NULL,
    run_id           uuid        NOT NULL,
    conversation_id  uuid        NOT NULL,
    org_id           uuid        NOT NULL,
    question         text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending',
    answer           jsonb,
    answered_by      text,
    answered_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT input_requests_pkey PRIMARY KEY (id),
    CONSTRAINT input_requests_run_fkey FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE,
    -- `expired`: the run ended or was handed back while waiting; the question is void.
    CONSTRAINT input_requests_status_check CHECK (status IN ('pending', 'answered', 'expired'))
);

CREATE TABLE run_commands (
    id          uuid        NOT NULL,
    run_id      uuid        NOT NULL,
    org_id      uuid        NOT NULL,
    kind        text        NOT NULL,
    payload     jsonb       NOT NULL DEFAULT '{}',
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    applied_at  timestamptz,
    CONSTRAINT run_commands_pkey PRIMARY KEY (id),
    CONSTRAINT run_commands_run_fkey FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE,
    CONSTRAINT run_commands_kind_check CHECK (kind IN ('cancel', 'input'))
);
CREATE INDEX run_commands_pending_idx ON run_commands (run_id) WHERE applied_at IS NULL;

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
ALTER TABLE runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE runs FORCE ROW LEVEL SECURITY;
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
ALTER TABLE input_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE input_requests FORCE ROW LEVEL SECURITY;
ALTER TABLE run_commands ENABLE ROW LEVEL SECURITY;
ALTER TABLE run_commands FORCE ROW LEVEL SECURITY;

CREATE POLICY conversations_tenant ON conversations TO moat_runtime
    USING (org_id = moat_org()) WITH CHECK (org_id = moat_org());
CREATE POLICY runs_tenant ON runs TO moat_runtime
    USING (org_id = moat_org()) WITH CHECK (org_id = moat_org());
CREATE POLICY events_tenant ON events TO moat_runtime
    USING (org_id = moat_org()) WITH CHECK (org_id = moat_org());
CREATE POLICY input_requests_tenant ON input_requests TO moat_runtime
    USING (org_id = moat_org()) WITH CHECK (org_id = moat_org());
CREATE POLICY run_commands_tenant ON run_commands TO moat_runtime
    USING (org_id = moat_org()) WITH CHECK (org_id = moat_org());

GRANT SELECT, INSERT, UPDATE ON conversations TO moat_runtime;
GRANT SELECT, INSERT, UPDATE ON runs TO moat_runtime;
GRANT SELECT, INSERT ON events TO moat_runtime;
GRANT SELECT, INSERT, UPDATE ON input_requests TO moat_runtime;
GRANT SELECT, INSERT, UPDATE ON run_commands TO moat_runtime;

-- Appends events to a conversation (in the caller's tenant transaction).
-- With `epoch` set, the append is fenced: it happens only while the run is
-- active under that lease epoch (the run row is locked for the rest of the
-- transaction); otherwise it returns NULL and writes nothing. Sequence
-- numbers come from the conversation row, locked until commit, so they are
-- gapless and commit in order. Returns the first sequence number.
CREATE FUNCTION moat_append_events(conversation uuid, run uuid, epoch bigint, kinds text[], datas jsonb[],
                                   output_bytes bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    n integer := coalesce(array_length(kinds, 1), 0);
    first bigint;
    org uuid;
BEGIN
    IF n <> coalesce(array_length(datas, 1), 0) THEN
        RAISE EXCEPTION 'moat_append_events: % kinds but % datas', n, coalesce(array_length(datas, 1), 0);
    END IF;
    IF epoch IS NOT NULL THEN
        PERFORM 1 FROM public.runs r
         WHERE r.id = run AND r.lease_epoch = epoch AND r.status IN ('running', 'waiting_input')
         FOR UPDATE;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    UPDATE public.conversations c SET next_seq = c.next_seq + n
     WHERE c.id = conversation
     RETURNING c.next_seq - n, c.org_id INTO first, org;
    IF first IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO public.events (conversation_id, seq, org_id, run_id, kind, data)
    SELECT conversation, first + k.ord - 1, org, run, k.kind, d.data
      FROM unnest(kinds) WITH ORDINALITY AS k (kind, ord)
      JOIN unnest(datas) WITH ORDINALITY AS d (data, ord) USING (ord);
    IF run IS NOT NULL THEN
        UPDATE public.runs r SET event_count = r.event_count + n, output_bytes = r.output_bytes + $6
         WHERE r.id = run;
    END IF;
    -- One small wake-up per batch and conversation (the events table is the truth).
    PERFORM pg_notify('moat_events', conversation::text);
    RETURN first;
END
$$;

-- Runners claim queued runs of every organization. This SECURITY DEFINER
-- function is the only cross-organization path, and the owner's policies
-- below let it see and change only what a claim needs.
-- (PostgreSQL checks an updated row against the SELECT policy too, so the
-- recovery's `failed`/`runner_lost` rows must be visible to it.)
CREATE POLICY runs_claim_read ON runs FOR SELECT TO CURRENT_USER
    USING (status IN ('queued', 'running', 'waiting_input') OR (status = 'failed' AND error_code = 'runner_lost'));
CREATE POLICY runs_claim ON runs FOR UPDATE TO CURRENT_USER
    USING (status IN ('queued', 'running', 'waiting_input'))
    WITH CHECK (status IN ('running', 'failed'));
-- (A claim reads the agent of the claimed run's conversation.)
CREATE POLICY conversations_claim_read ON conversations FOR SELECT TO CURRENT_USER
    USING (EXISTS (SELECT 1 FROM runs r WHERE r.conversation_id = conversations.id AND r.status IN ('queued', 'running')));
CREATE POLICY run_commands_pending_read ON run_commands FOR SELECT TO CURRENT_USER USING (applied_at IS NULL);

CREATE FUNCTION moat_claim_runs(runner text, max integer, lease_secs float8)
RETURNS TABLE (run_id uuid, org_id uuid, conversation_id uuid, agent text, lease_epoch bigint, input jsonb,
               attempt integer)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    WITH claimable AS (
        SELECT r.id FROM public.runs r
         WHERE r.status = 'queued'
         ORDER BY r.created_at
         LIMIT least(greatest(max, 0), 100)
         FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE public.runs r
           SET status = 'running', runner_id = runner, lease_epoch = r.lease_epoch + 1,
               lease_expires_at = now() + make_interval(secs => lease_secs), attempt = r.attempt + 1,
               started_at = coalesce(r.started_at, now())
          FROM claimable
         WHERE r.id = claimable.id
        RETURNING r.id, r.org_id, r.conversation_id, r.lease_epoch, r.input, r.attempt
    )
    SELECT claimed.id, claimed.org_id, claimed.conversation_id, c.agent, claimed.lease_epoch, claimed.input,
           claimed.attempt
      FROM claimed JOIN public.conversations c ON c.id = claimed.conversation_id
$$;

-- Runs whose lease expired (their runner died or stalled) end as failed with
-- `runner_lost`; the epoch is bumped so the old holder is fenced out.
-- Returns them so the caller appends `run.failed` in the same transaction.
CREATE FUNCTION moat_fail_stale_runs(max integer)
RETURNS TABLE (run_id uuid, org_id uuid, conversation_id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    WITH stale AS (
        SELECT r.id, r.org_id, r.conversation_id FROM public.runs r
         WHERE r.status IN ('running', 'waiting_input') AND r.lease_expires_at < now()
         ORDER BY r.lease_expires_at
         LIMIT least(greatest(max, 0), 1000)
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

-- The unapplied commands of the runs a runner holds (its poll, and its
-- catch-up after a LISTEN reconnect): ids only; the runner reads each
-- command in its organization's context.
CREATE FUNCTION moat_pending_commands(runner text)
RETURNS TABLE (command_id uuid, run_id uuid, org_id uuid, kind text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT c.id, c.run_id, c.org_id, c.kind
      FROM public.run_commands c
      JOIN public.runs r ON r.id = c.run_id
     WHERE c.applied_at IS NULL AND r.runner_id = runner AND r.status IN ('running', 'waiting_input')
     ORDER BY c.created_at
$$;

-- Claiming runs (and reading which commands are pending for a runner) is
-- for runners only: the group role `moat_runner`, granted to the runner's
-- login role in addition to `moat_runtime`. The API's role cannot claim
-- another organization's runs. Failing stale runs stays open to every
-- instance: it only touches runs whose lease already expired.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'moat_runner') THEN
        -- Needs CREATEROLE; otherwise an administrator creates it first: CREATE ROLE moat_runner NOLOGIN;
        CREATE ROLE moat_runner NOLOGIN;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION moat_claim_runs(text, integer, float8) FROM PUBLIC;
REVOKE ALL ON FUNCTION moat_fail_stale_runs(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION moat_pending_commands(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION moat_claim_runs(text, integer, float8) TO moat_runner;
GRANT EXECUTE ON FUNCTION moat_pending_commands(text) TO moat_runner;
GRANT EXECUTE ON FUNCTION moat_fail_stale_runs(integer) TO moat_runtime;
