-- V5: single-use WebSocket tokens. Never edit a migration once it has landed.
--
-- A ws-token's `jti` is recorded here when a socket connects with it; a
-- second connect with the same token finds it and is refused, so a URL
-- copied from a log, a history or a screenshot is worthless. Rows outlive
-- the token (30 s) briefly and are purged.

CREATE TABLE ws_tokens_used (
    jti         uuid        NOT NULL,
    org_id      uuid        NOT NULL,
    used_at     timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    CONSTRAINT ws_tokens_used_pkey PRIMARY KEY (jti)
);
CREATE INDEX ws_tokens_used_expires_idx ON ws_tokens_used (expires_at);

ALTER TABLE ws_tokens_used ENABLE ROW LEVEL SECURITY;
ALTER TABLE ws_tokens_used FORCE ROW LEVEL SECURITY;
CREATE POLICY ws_tokens_used_tenant ON ws_tokens_used TO moat_runtime
    USING (org_id = moat_org()) WITH CHECK (org_id = moat_org());
GRANT SELECT, INSERT ON ws_tokens_used TO moat_runtime;

CREATE POLICY ws_tokens_used_purge_read ON ws_tokens_used FOR SELECT TO CURRENT_USER USING (expires_at < now());
CREATE POLICY ws_tokens_used_purge ON ws_tokens_used FOR DELETE TO CURRENT_USER USING (expires_at < now());

CREATE OR REPLACE FUNCTION moat_purge_expired(batch integer) RETURNS bigint
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
    DELETE FROM public.oauth_states WHERE state_hash IN (
        SELECT state_hash FROM public.oauth_states WHERE expires_at < now() LIMIT lim);
    GET DIAGNOSTICS n = ROW_COUNT; purged := purged + n;
    DELETE FROM public.ws_tokens_used WHERE jti IN (
        SELECT jti FROM public.ws_tokens_used WHERE expires_at < now() LIMIT lim);
    GET DIAGNOSTICS n = ROW_COUNT; purged := purged + n;
    RETURN purged;
END
$$;
