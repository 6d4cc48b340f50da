-- V3: integrations and the credential broker. Never edit a migration once it has landed.
--
-- OAuth tokens are stored only sealed (AES-256-GCM-SIV, src/crypto.rs): each
-- ciphertext is bound to its integration id and field, and `key_id` names
-- the key that sealed both fields so a key rotation knows what is left.
-- Refreshes of one integration serialize on a transaction-scoped advisory
-- lock (docs/integrations.md); nothing here holds session state, so it works
-- behind PgBouncer in transaction mode.

CREATE TABLE integrations (
    id                 uuid        NOT NULL,
    org_id             uuid        NOT NULL,
    created_by         text        NOT NULL,
    provider           text        NOT NULL,
    account            text        NOT NULL,
    status             text        NOT NULL DEFAULT 'active',
    access_token       bytea       NOT NULL,
    refresh_token      bytea,
    key_id             text        NOT NULL,
    access_expires_at  timestamptz NOT NULL,
    last_refreshed_at  timestamptz,
    refresh_count      bigint      NOT NULL DEFAULT 0,
    -- the provider failed: no refresh is attempted before this
    cooldown_until     timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integrations_pkey PRIMARY KEY (id),
    CONSTRAINT integrations_org_fkey FOREIGN KEY (org_id) REFERENCES orgs (id),
    CONSTRAINT integrations_account_key UNIQUE (org_id, provider, account),
    CONSTRAINT integrations_status_check CHECK (status IN ('active', 'needs_reauth')),
    CONSTRAINT integrations_account_length CHECK (length(account) BETWEEN 1 AND 200)
);
CREATE INDEX integrations_org_idx ON integrations (org_id, created_at, id);
CREATE INDEX integrations_key_idx ON integrations (key_id);

-- A pending connect flow: single use (deleted when the callback arrives),
-- bound to the organization and user that started it and to the browser
-- (a cookie whose hash is stored here), expiring after ten minutes.
CREATE TABLE oauth_states (
    state_hash     bytea       NOT NULL,
    org_id         uuid        NOT NULL,
    created_by     text        NOT NULL,
    provider       text        NOT NULL,
    account        text        NOT NULL,
    binding_hash   bytea       NOT NULL,
    -- the PKCE code verifier, sealed (bound to the state hash)
    code_verifier  bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    CONSTRAINT oauth_states_pkey PRIMARY KEY (state_hash),
    CONSTRAINT oauth_states_org_fkey FOREIGN KEY (org_id) REFERENCES orgs (id),
    CONSTRAINT oauth_states_hash_length CHECK (octet_length(state_hash) = 32 AND octet_length(binding_hash) = 32)
);
CREATE INDEX oauth_states_expires_idx ON oauth_states (expires_at);

ALTER TABLE integrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE integrations FORCE ROW LEVEL SECURITY;
ALTER TABLE oauth_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_states FORCE ROW LEVEL SECURITY;

CREATE POLICY integrations_tenant ON integrations TO moat_runtime
    USING (org_id = moat_org()) WITH CHECK (org_id = moat_org());

-- The callback arrives from the provider without a bearer token: it may see
-- (and consume) exactly the state it presents.
CREATE POLICY oauth_states_tenant ON oauth_states TO moat_runtime
    USING (org_id = moat_org() OR encode(state_hash, 'hex') = moat_lookup('state'))
    WITH CHECK (org_id = moat_org());

GRANT SELECT, INSERT, UPDATE, DELETE ON integrations TO moat_runtime;
GRANT SELECT, INSERT, DELETE ON oauth_states TO moat_runtime;

-- The broker's fast path in one statement (no explicit transaction): opens
-- the tenant context, checks the caller is still enabled, and reads the
-- integration. Returns one row; `is_found` is false for a missing integration
-- or another organization's.
CREATE FUNCTION moat_integration_read(org uuid, principal_kind text, principal uuid, integration uuid)
RETURNS TABLE (caller_active boolean, is_found boolean, int_status text, sealed_access bytea, valid_secs float8,
               refresh_count bigint, since_refresh float8, cooldown_secs float8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM set_config('moat.org_id', org::text, true);
    -- One query after the setting: the caller's enabled check (as moat_begin) and the row.
    RETURN QUERY
    SELECT CASE principal_kind
               WHEN 'user' THEN EXISTS (SELECT 1 FROM public.users u
                                        WHERE u.id = principal AND u.org_id = org AND u.disabled_at IS NULL)
               WHEN 'client' THEN EXISTS (SELECT 1 FROM public.service_clients c
                                          WHERE c.id = principal AND c.org_id = org AND c.disabled_at IS NULL)
               ELSE false
           END,
           i.id IS NOT NULL, i.status, i.access_token,
           extract(epoch FROM i.access_expires_at - now())::float8,
           i.refresh_count, extract(epoch FROM now() - i.last_refreshed_at)::float8,
           GREATEST(extract(epoch FROM i.cooldown_until - now()), 0)::float8
    FROM (SELECT 1) AS one
    LEFT JOIN public.integrations i ON i.id = integration AND i.org_id = org;
END
$$;

-- Key rotation walks every organization; the runtime role may learn their
-- ids (nothing else) through this function, then works inside each one's
-- row-level-security context.
CREATE POLICY orgs_list_ids ON orgs FOR SELECT TO CURRENT_USER USING (true);
CREATE FUNCTION moat_org_ids() RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT id FROM public.orgs ORDER BY id $$;
REVOKE ALL ON FUNCTION moat_org_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION moat_org_ids() TO moat_runtime;

CREATE POLICY oauth_states_purge_read ON oauth_states FOR SELECT TO CURRENT_USER
    USING (expires_at < now());
CREATE POLICY oauth_states_purge ON oauth_states FOR DELETE TO CURRENT_USER
    USING (expires_at < now());

-- Expired rows of this migration's table, purged by the maintenance task
-- (sql/maintenance/purge_expired.sql) under its one-instance-at-a-time lock.
CREATE FUNCTION moat_purge_oauth_states(batch integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM public.oauth_states WHERE state_hash IN (
        SELECT state_hash FROM public.oauth_states WHERE expires_at < now() LIMIT least(greatest(batch, 1), 10000));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION moat_purge_oauth_states(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION moat_purge_oauth_states(integer) TO moat_runtime;
