-- V8: maintenance that maintains, and refresh tokens that do not pile up.
-- Never edit a migration once it has landed.
--
-- 1. The purge is one SECURITY DEFINER function per table (the maintenance
--    task runs each as its own statement, so one failing step cannot roll back
--    the others). V1's moat_purge_expired cleared sealed refresh tokens with an
--    UPDATE whose new row its own SELECT policy hid — PostgreSQL checks the
--    new row of an UPDATE against the SELECT policies too — so the whole
--    function failed from the first refresh on. Every policy below is written
--    so that the rows a step leaves behind stay visible to it.
-- 2. Superseded refresh tokens are deleted once past the longest reuse grace
--    window (120 s). Reuse detection does not need their rows: a refresh token
--    now begins with its family's random *tag*, so presenting any earlier
--    token of a family still finds the family (and revokes it). A family's
--    tag appears only in its refresh tokens (never in access tokens, logs or
--    the API); the database keeps only its SHA-256, so only someone who held
--    one of the family's tokens can name it. Tokens issued before this
--    migration carry no tag: their rows are kept (until they expire) so that
--    their reuse is still detected.
-- 3. Audit events without an organization (failed logins for unknown emails,
--    unknown clients) are the only audit rows an anonymous caller adds; they
--    are kept 90 days.

-- SHA-256 of the family's tag.
ALTER TABLE refresh_families ADD COLUMN tag_hash bytea;
ALTER TABLE refresh_families ADD CONSTRAINT refresh_families_tag_hash_length CHECK (octet_length(tag_hash) = 32);
CREATE UNIQUE INDEX refresh_families_tag_hash_key ON refresh_families (tag_hash) WHERE tag_hash IS NOT NULL;
-- Whether the token begins with its family's tag (every token issued from now on).
ALTER TABLE refresh_tokens ADD COLUMN tagged boolean NOT NULL DEFAULT false;

-- A refresh token whose row is gone (superseded) still names its family by tag.
ALTER POLICY refresh_families_tenant ON refresh_families TO moat_runtime
    USING (org_id = moat_org() OR encode(tag_hash, 'hex') = moat_lookup('family_tag'))
    WITH CHECK (org_id = moat_org());

-- Superseded tagged tokens: deleted once past the grace window.
CREATE INDEX refresh_tokens_used_idx ON refresh_tokens (used_at) WHERE used_at IS NOT NULL AND tagged;
ALTER POLICY refresh_tokens_purge_read ON refresh_tokens TO CURRENT_USER
    USING (expires_at < now() OR (tagged AND used_at < now() - interval '120 seconds')
           OR (sealed_token IS NOT NULL AND created_at < now() - interval '120 seconds'));
ALTER POLICY refresh_tokens_purge ON refresh_tokens TO CURRENT_USER
    USING (expires_at < now() OR (tagged AND used_at < now() - interval '120 seconds'));
-- What clearing a sealed copy leaves behind must stay visible to the owner,
-- or the UPDATE fails (the V1 bug): an unsealed token past the window.
CREATE POLICY refresh_tokens_purge_unsealed ON refresh_tokens FOR SELECT TO CURRENT_USER
    USING (sealed_token IS NULL AND created_at < now() - interval '120 seconds');
CREATE INDEX refresh_tokens_sealed_idx ON refresh_tokens (created_at) WHERE sealed_token IS NOT NULL;

CREATE POLICY audit_log_purge_read ON audit_log FOR SELECT TO CURRENT_USER
    USING (org_id IS NULL AND at < now() - interval '90 days');
CREATE POLICY audit_log_purge ON audit_log FOR DELETE TO CURRENT_USER
    USING (org_id IS NULL AND at < now() - interval '90 days');
CREATE INDEX audit_log_anonymous_idx ON audit_log (at) WHERE org_id IS NULL;

-- Each step: bounded (at most `batch`, capped at 10,000, rows), one instance
-- at a time (a transaction-scoped try-lock per step: the others skip it and
-- return 0), SECURITY DEFINER with a pinned search path ending in pg_temp and
-- every name qualified (a caller's temporary table cannot stand in).

CREATE FUNCTION moat_purge_rate_limits(batch integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE n bigint;
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(1836020080, 1) THEN RETURN 0; END IF;
    DELETE FROM public.rate_limits WHERE bucket IN (
        SELECT bucket FROM public.rate_limits WHERE expires_at < now() LIMIT least(greatest(batch, 1), 10000));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE FUNCTION moat_purge_refresh_families(batch integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE n bigint;
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(1836020080, 2) THEN RETURN 0; END IF;
    -- Their tokens go with them (ON DELETE CASCADE).
    DELETE FROM public.refresh_families WHERE id IN (
        SELECT id FROM public.refresh_families
        WHERE expires_at < now() OR revoked_at < now() - interval '1 day' LIMIT least(greatest(batch, 1), 10000));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE FUNCTION moat_purge_refresh_tokens(batch integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE n bigint;
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(1836020080, 3) THEN RETURN 0; END IF;
    DELETE FROM public.refresh_tokens WHERE id IN (
        SELECT id FROM public.refresh_tokens
        WHERE expires_at < now() OR (tagged AND used_at < now() - interval '120 seconds')
        LIMIT least(greatest(batch, 1), 10000));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- The sealed copy of a current token is only needed during the grace window.
CREATE FUNCTION moat_unseal_refresh_tokens(batch integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE n bigint;
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(1836020080, 4) THEN RETURN 0; END IF;
    UPDATE public.refresh_tokens SET sealed_token = NULL WHERE id IN (
        SELECT id FROM public.refresh_tokens
        WHERE sealed_token IS NOT NULL AND created_at < now() - interval '120 seconds'
        LIMIT least(greatest(batch, 1), 10000));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE FUNCTION moat_purge_audit_anonymous(batch integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE n bigint;
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(1836020080, 5) THEN RETURN 0; END IF;
    DELETE FROM public.audit_log WHERE id IN (
        SELECT id FROM public.audit_log
        WHERE org_id IS NULL AND at < now() - interval '90 days' LIMIT least(greatest(batch, 1), 10000));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- V3's and V5's steps, now also one instance at a time.
CREATE OR REPLACE FUNCTION moat_purge_oauth_states(batch integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE n bigint;
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(1836020080, 6) THEN RETURN 0; END IF;
    DELETE FROM public.oauth_states WHERE state_hash IN (
        SELECT state_hash FROM public.oauth_states WHERE expires_at < now() LIMIT least(greatest(batch, 1), 10000));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION moat_purge_ws_tokens(batch integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE n bigint;
BEGIN
    IF NOT pg_catalog.pg_try_advisory_xact_lock(1836020080, 7) THEN RETURN 0; END IF;
    DELETE FROM public.ws_tokens_used WHERE jti IN (
        SELECT jti FROM public.ws_tokens_used WHERE expires_at < now() LIMIT least(greatest(batch, 1), 10000));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- V1's all-in-one function, kept for instances of the previous release still
-- running during a rolling upgrade: now the sum of the steps, each in a
-- subtransaction of its own so one failure does not undo the rest.
CREATE OR REPLACE FUNCTION moat_purge_expired(batch integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    purged bigint := 0;
BEGIN
    BEGIN purged := purged + public.moat_purge_rate_limits(batch); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN purged := purged + public.moat_purge_refresh_families(batch); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN purged := purged + public.moat_purge_refresh_tokens(batch); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN purged := purged + public.moat_unseal_refresh_tokens(batch); EXCEPTION WHEN OTHERS THEN NULL; END;
    RETURN purged;
END
$$;

REVOKE ALL ON FUNCTION moat_purge_rate_limits(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION moat_purge_refresh_families(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION moat_purge_refresh_tokens(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION moat_unseal_refresh_tokens(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION moat_purge_audit_anonymous(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION moat_purge_rate_limits(integer) TO moat_runtime;
GRANT EXECUTE ON FUNCTION moat_purge_refresh_families(integer) TO moat_runtime;
GRANT EXECUTE ON FUNCTION moat_purge_refresh_tokens(integer) TO moat_runtime;
GRANT EXECUTE ON FUNCTION moat_unseal_refresh_tokens(integer) TO moat_runtime;
GRANT EXECUTE ON FUNCTION moat_purge_audit_anonymous(integer) TO moat_runtime;
