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

-- Expired rows of this migration's table, purged by the maintenance task
-- (sql/maintenance/purge_expired.sql) under its one-instance-at-a-time lock.
CREATE FUNCTION moat_purge_ws_tokens(batch integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM public.ws_tokens_used WHERE jti IN (
        SELECT jti FROM public.ws_tokens_used WHERE expires_at < now() LIMIT least(greatest(batch, 1), 10000));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION moat_purge_ws_tokens(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION moat_purge_ws_tokens(integer) TO moat_runtime;
