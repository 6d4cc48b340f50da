-- V9: revocation is live. Never edit a migration once it has landed.
--
-- A session ends when its user or client is disabled, when its refresh
-- family is revoked (logout, reuse detected, password reset, user disabled),
-- or — for a service client's tokens — when the client's secret is rotated.
-- The durable fact is the row already changed (users.disabled_at,
-- refresh_families.revoked_at, service_clients.disabled_at or the new
-- secret_generation); a trigger adds, in the same transaction, a NOTIFY on
-- `moat_revocations` naming the organization, so every `serve` instance
-- re-checks its open WebSockets of that organization at once. The check is
-- one function, moat_session_active, used by every tenant transaction
-- (moat_begin_session), the broker's fast path and the WebSocket hub alike.

-- Bumped by every secret rotation; client access tokens carry the generation they were minted under.
ALTER TABLE service_clients ADD COLUMN secret_generation integer NOT NULL DEFAULT 0;

-- A connect flow is completed as the session that started it: if that session
-- is revoked meanwhile, the callback stores nothing.
ALTER TABLE oauth_states ADD COLUMN starter_sid uuid;
ALTER TABLE oauth_states ADD COLUMN starter_generation integer;

-- Whether a session is still alive, in the caller's row-level-security context
-- (moat.org_id already set to `org`): the principal exists in `org` and is
-- enabled; a user session's refresh family (`sid`, when the token names one)
-- is neither revoked nor purged; a client token's secret generation (`gen`,
-- when it names one) is still the client's.
-- PL/pgSQL with one simple query per condition: its plans are cached per
-- connection and stay index lookups (a SQL function with a SET clause is
-- planned anew at every call, and `EXISTS … AND (sid IS NULL OR EXISTS …)` as
-- one expression cost three times moat_begin; measured). STABLE: inside a
-- query it sees that query's snapshot, which the WebSocket hub relies on
-- (docs/websocket.md).
CREATE FUNCTION moat_session_active(org uuid, principal_kind text, principal uuid, sid uuid, gen integer)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF principal_kind = 'user' THEN
        IF sid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM public.refresh_families f
                                           WHERE f.id = sid AND f.org_id = org AND f.revoked_at IS NULL) THEN
            RETURN false;
        END IF;
        RETURN EXISTS (SELECT 1 FROM public.users u
                       WHERE u.id = principal AND u.org_id = org AND u.disabled_at IS NULL);
    ELSIF principal_kind = 'client' THEN
        IF gen IS NULL THEN
            RETURN EXISTS (SELECT 1 FROM public.service_clients c
                           WHERE c.id = principal AND c.org_id = org AND c.disabled_at IS NULL);
        END IF;
        RETURN EXISTS (SELECT 1 FROM public.service_clients c
                       WHERE c.id = principal AND c.org_id = org AND c.disabled_at IS NULL
                         AND c.secret_generation = gen);
    END IF;
    RETURN false;
END
$$;

-- moat_begin (V2) with the whole session check: opens a tenant transaction.
CREATE FUNCTION moat_begin_session(org uuid, principal_kind text, principal uuid, sid uuid, gen integer)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM set_config('moat.org_id', org::text, true);
    PERFORM set_config('idle_in_transaction_session_timeout', '30s', true);
    RETURN public.moat_session_active(org, principal_kind, principal, sid, gen);
END
$$;

-- moat_integration_read (V3) with the whole session check.
CREATE FUNCTION moat_integration_read(org uuid, principal_kind text, principal uuid, sid uuid, gen integer,
                                      integration uuid)
RETURNS TABLE (caller_active boolean, is_found boolean, int_status text, sealed_access bytea, valid_secs float8,
               refresh_count bigint, since_refresh float8, cooldown_secs float8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM set_config('moat.org_id', org::text, true);
    RETURN QUERY
    SELECT public.moat_session_active(org, principal_kind, principal, sid, gen),
           i.id IS NOT NULL, i.status, i.access_token,
           extract(epoch FROM i.access_expires_at - now())::float8,
           i.refresh_count, extract(epoch FROM now() - i.last_refreshed_at)::float8,
           GREATEST(extract(epoch FROM i.cooldown_until - now()), 0)::float8
    FROM (SELECT 1) AS one
    LEFT JOIN public.integrations i ON i.id = integration AND i.org_id = org;
END
$$;

-- The wake-up: one small notification per organization and transaction
-- (PostgreSQL folds identical notifications of one transaction into one).
CREATE FUNCTION moat_notify_revocation() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('moat_revocations', NEW.org_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER users_revocation AFTER UPDATE OF disabled_at ON users
    FOR EACH ROW WHEN (OLD.disabled_at IS DISTINCT FROM NEW.disabled_at)
    EXECUTE FUNCTION moat_notify_revocation();
CREATE TRIGGER service_clients_revocation AFTER UPDATE OF disabled_at, secret_generation ON service_clients
    FOR EACH ROW WHEN (OLD.disabled_at IS DISTINCT FROM NEW.disabled_at
                       OR OLD.secret_generation IS DISTINCT FROM NEW.secret_generation)
    EXECUTE FUNCTION moat_notify_revocation();
CREATE TRIGGER refresh_families_revocation AFTER UPDATE OF revoked_at ON refresh_families
    FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at)
    EXECUTE FUNCTION moat_notify_revocation();
