-- V2: identity and tenancy. Never edit a migration once it has landed.
--
-- Tenant isolation is enforced twice: every query filters by organization, and
-- every tenant table has row-level security (ENABLE + FORCE) keyed on the
-- transaction-local setting `moat.org_id` (set with set_config(..., true),
-- never a session SET, which would leak to the next user of a pooled
-- connection). Before a caller is authenticated there is no organization yet;
-- the three pre-authentication lookups (login by email, client credentials by
-- client id, refresh by token hash) each set a transaction-local key and may
-- then see exactly the rows matching that key, nothing else.
--
-- No row here is seeded: organizations, users and clients are created with
-- `moat admin …`, and no password, secret or hash of one is ever in this file.

-- The caller's organization for this transaction, or NULL.
-- (Only built-in functions: pg_catalog is always searched first for them.)
CREATE FUNCTION moat_org() RETURNS uuid
LANGUAGE sql STABLE
AS $$ SELECT NULLIF(current_setting('moat.org_id', true), '')::uuid $$;

-- A transaction-local lookup key, or NULL.
CREATE FUNCTION moat_lookup(name text) RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT NULLIF(current_setting('moat.lookup_' || name, true), '') $$;

CREATE TABLE orgs (
    id          uuid        NOT NULL DEFAULT gen_random_uuid(),
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orgs_pkey PRIMARY KEY (id),
    CONSTRAINT orgs_name_length CHECK (length(name) BETWEEN 1 AND 200)
);

CREATE TABLE users (
    id                uuid        NOT NULL DEFAULT gen_random_uuid(),
    org_id            uuid        NOT NULL,
    email             text        NOT NULL,
    -- lower-cased and trimmed: emails are unique case-insensitively, across orgs,
    -- because login names no organization.
    email_normalized  text        NOT NULL,
    role              text        NOT NULL,
    password_hash     text        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    disabled_at       timestamptz,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_org_fkey FOREIGN KEY (org_id) REFERENCES orgs (id),
    CONSTRAINT users_email_key UNIQUE (email_normalized),
    CONSTRAINT users_role_check CHECK (role IN ('admin', 'member')),
    CONSTRAINT users_password_hash_is_argon2id CHECK (password_hash LIKE '$argon2id$%')
);
CREATE INDEX users_org_idx ON users (org_id, created_at, id);

CREATE TABLE service_clients (
    id                 uuid        NOT NULL DEFAULT gen_random_uuid(),  -- the client_id
    org_id             uuid        NOT NULL,
    name               text        NOT NULL,
    secret_hash        text        NOT NULL,
    scopes             text[]      NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    secret_rotated_at  timestamptz,
    disabled_at        timestamptz,
    CONSTRAINT service_clients_pkey PRIMARY KEY (id),
    CONSTRAINT service_clients_org_fkey FOREIGN KEY (org_id) REFERENCES orgs (id),
    CONSTRAINT service_clients_name_length CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT service_clients_secret_hash_is_argon2id CHECK (secret_hash LIKE '$argon2id$%')
);

-- A login starts a family; each refresh rotates to a new token of the family.
-- Presenting a token that was already rotated (outside the grace window)
-- revokes the whole family.
CREATE TABLE refresh_families (
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    org_id          uuid        NOT NULL,
    user_id         uuid        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- absolute end of the session, however often it is refreshed
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text,
    CONSTRAINT refresh_families_pkey PRIMARY KEY (id),
    CONSTRAINT refresh_families_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT refresh_families_reason_check CHECK (revoked_reason IN ('logout', 'reuse', 'user_disabled'))
);
CREATE INDEX refresh_families_expires_idx ON refresh_families (expires_at);

CREATE TABLE refresh_tokens (
    id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    family_id     uuid        NOT NULL,
    org_id        uuid        NOT NULL,
    -- SHA-256 of the random token; the token itself is never stored in clear.
    token_hash    bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    -- The token encrypted with MOAT_ENCRYPTION_KEY, kept only for the reuse
    -- grace window so a concurrent duplicate refresh (a second browser tab) can
    -- be answered with the current token; cleared by the purge task.
    sealed_token  bytea,
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT refresh_tokens_family_fkey FOREIGN KEY (family_id) REFERENCES refresh_families (id) ON DELETE CASCADE,
    CONSTRAINT refresh_tokens_hash_key UNIQUE (token_hash),
    CONSTRAINT refresh_tokens_hash_length CHECK (octet_length(token_hash) = 32)
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id, created_at DESC);
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);

-- Security events. Append-only for the runtime role: INSERT and SELECT, never
-- UPDATE or DELETE. org_id is NULL for events with no organization (a login
-- attempt for an unknown email).
CREATE TABLE audit_log (
    id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    org_id    uuid,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    event     text        NOT NULL,
    actor     text,
    subject   text,
    ip        inet,
    detail    jsonb       NOT NULL DEFAULT '{}',
    CONSTRAINT audit_log_pkey PRIMARY KEY (id),
    CONSTRAINT audit_log_event_format CHECK (event ~ '^[a-z][a-z_.]{0,63}$')
);
CREATE INDEX audit_log_org_idx ON audit_log (org_id, at DESC, id DESC);

-- Abuse limits shared by every instance: one row per bucket (an HMAC of an
-- email, a client id or an IP), updated with one atomic upsert per attempt.
-- A limit's parameters travel with its bucket so the upsert can apply them.
-- Not tenant data (attempts precede authentication), so no row-level security.
CREATE TABLE rate_limits (
    bucket                text        NOT NULL,
    window_start          timestamptz NOT NULL,
    window_secs           float8      NOT NULL,
    hits                  integer     NOT NULL,
    -- attempts since the last success, counted when an attempt starts (so
    -- concurrent attempts cannot slip past a lockout)
    failures              integer     NOT NULL DEFAULT 0,
    lockout_after         integer     NOT NULL DEFAULT 0,
    lockout_base_secs     float8      NOT NULL DEFAULT 0,
    lockout_max_secs      float8      NOT NULL DEFAULT 0,
    locked_until          timestamptz,
    -- whether the latest attempt was refused by a lockout already in force
    last_refused          boolean     NOT NULL DEFAULT false,
    expires_at            timestamptz NOT NULL,
    CONSTRAINT rate_limits_pkey PRIMARY KEY (bucket)
);
CREATE INDEX rate_limits_expires_idx ON rate_limits (expires_at);

-- Row-level security: ENABLE + FORCE on every tenant table.
ALTER TABLE orgs ENABLE ROW LEVEL SECURITY;
ALTER TABLE orgs FORCE ROW LEVEL SECURITY;
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
ALTER TABLE service_clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE service_clients FORCE ROW LEVEL SECURITY;
ALTER TABLE refresh_families ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_families FORCE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens FORCE ROW LEVEL SECURITY;
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;

CREATE POLICY orgs_tenant ON orgs TO moat_runtime
    USING (id = moat_org()) WITH CHECK (id = moat_org());

-- Writes always need the organization; the email lookup only reads.
CREATE POLICY users_tenant ON users TO moat_runtime
    USING (org_id = moat_org() OR email_normalized = moat_lookup('email'))
    WITH CHECK (org_id = moat_org());

CREATE POLICY service_clients_tenant ON service_clients TO moat_runtime
    USING (org_id = moat_org() OR id::text = moat_lookup('client'))
    WITH CHECK (org_id = moat_org());

CREATE POLICY refresh_families_tenant ON refresh_families TO moat_runtime
    USING (org_id = moat_org()) WITH CHECK (org_id = moat_org());

CREATE POLICY refresh_tokens_tenant ON refresh_tokens TO moat_runtime
    USING (org_id = moat_org() OR encode(token_hash, 'hex') = moat_lookup('refresh'))
    WITH CHECK (org_id = moat_org());

CREATE POLICY audit_log_read ON audit_log FOR SELECT TO moat_runtime
    USING (org_id = moat_org());
CREATE POLICY audit_log_append ON audit_log FOR INSERT TO moat_runtime
    WITH CHECK (org_id IS NULL OR org_id = moat_org());

GRANT SELECT, INSERT ON orgs TO moat_runtime;
GRANT SELECT, INSERT, UPDATE ON users TO moat_runtime;
GRANT SELECT, INSERT, UPDATE ON service_clients TO moat_runtime;
GRANT SELECT, INSERT, UPDATE ON refresh_families TO moat_runtime;
GRANT SELECT, INSERT, UPDATE ON refresh_tokens TO moat_runtime;
GRANT SELECT, INSERT ON audit_log TO moat_runtime;
GRANT SELECT, INSERT, UPDATE ON rate_limits TO moat_runtime;

-- Opens a tenant transaction in one round trip: sets the organization for
-- this transaction only and says whether the authenticated principal still
-- exists and is enabled (so disabling a user or client takes effect at once,
-- not when its access token expires).
CREATE FUNCTION moat_begin(org uuid, principal_kind text, principal uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM set_config('moat.org_id', org::text, true);
    -- A process that stalls inside a request's transaction must not hold its
    -- row locks for long (recovery and refreshes skip or wait on them).
    PERFORM set_config('idle_in_transaction_session_timeout', '30s', true);
    IF principal_kind = 'user' THEN
        RETURN EXISTS (SELECT 1 FROM public.users u
                       WHERE u.id = principal AND u.org_id = org AND u.disabled_at IS NULL);
    ELSIF principal_kind = 'client' THEN
        RETURN EXISTS (SELECT 1 FROM public.service_clients c
                       WHERE c.id = principal AND c.org_id = org AND c.disabled_at IS NULL);
    END IF;
    RETURN false;
END
$$;

-- Purging expired rows crosses organizations, so it runs as the owner
-- through this function, and the owner's policies below let it see, delete
-- or update only what has expired: refresh families past their end (or
-- revoked a day ago), refresh tokens past their expiry, and sealed copies
-- older than the longest reuse grace window Moat allows (120 s). Safe with
-- many instances: one runs it at a time (the others skip), and every
-- statement is bounded.
CREATE POLICY refresh_families_purge_read ON refresh_families FOR SELECT TO CURRENT_USER
    USING (expires_at < now() OR revoked_at < now() - interval '1 day');
CREATE POLICY refresh_families_purge ON refresh_families FOR DELETE TO CURRENT_USER
    USING (expires_at < now() OR revoked_at < now() - interval '1 day');
CREATE POLICY refresh_tokens_purge_read ON refresh_tokens FOR SELECT TO CURRENT_USER
    USING (expires_at < now() OR (sealed_token IS NOT NULL AND created_at < now() - interval '120 seconds'));
CREATE POLICY refresh_tokens_purge ON refresh_tokens FOR DELETE TO CURRENT_USER
    USING (expires_at < now());
CREATE POLICY refresh_tokens_unseal ON refresh_tokens FOR UPDATE TO CURRENT_USER
    USING (sealed_token IS NOT NULL AND created_at < now() - interval '120 seconds')
    WITH CHECK (sealed_token IS NULL);

-- SECURITY DEFINER: the search path ends with pg_temp (so a caller's
-- temporary tables can never stand in for these) and every name is qualified.
CREATE FUNCTION moat_purge_expired(batch integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    purged bigint := 0;
    n bigint;
    lim integer := least(greatest(batch, 1), 10000);
BEGIN
    -- "moatpurg": one purger at a time across every instance.
    IF NOT pg_catalog.pg_try_advisory_xact_lock(7885082312880748391) THEN
        RETURN 0;
    END IF;
    DELETE FROM public.rate_limits WHERE bucket IN (
        SELECT bucket FROM public.rate_limits WHERE expires_at < now() LIMIT lim);
    GET DIAGNOSTICS n = ROW_COUNT; purged := purged + n;
    DELETE FROM public.refresh_families WHERE id IN (
        SELECT id FROM public.refresh_families
        WHERE expires_at < now() OR revoked_at < now() - interval '1 day' LIMIT lim);
    GET DIAGNOSTICS n = ROW_COUNT; purged := purged + n;
    DELETE FROM public.refresh_tokens WHERE id IN (
        SELECT id FROM public.refresh_tokens WHERE expires_at < now() LIMIT lim);
    GET DIAGNOSTICS n = ROW_COUNT; purged := purged + n;
    UPDATE public.refresh_tokens SET sealed_token = NULL WHERE id IN (
        SELECT id FROM public.refresh_tokens
        WHERE sealed_token IS NOT NULL AND created_at < now() - interval '120 seconds' LIMIT lim);
    GET DIAGNOSTICS n = ROW_COUNT; purged := purged + n;
    RETURN purged;
END
$$;

REVOKE ALL ON FUNCTION moat_purge_expired(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION moat_purge_expired(integer) TO moat_runtime;
