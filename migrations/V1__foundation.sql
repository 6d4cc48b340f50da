-- V1: the foundation. Never edit a migration once it has landed; add a new one.
--
-- Two roles run Moat (docs/deployment.md):
--   * the owner, which runs `moat migrate` and owns every table;
--   * the runtime role, a plain LOGIN role that `moat serve` connects as and
--     that is a member of the group role `moat_runtime` created here.
-- Every table grants the runtime role exactly what the server needs, to the
-- group, so deployments choose their own login role names.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'moat_runtime') THEN
        -- Needs CREATEROLE; where the owner lacks it, an administrator creates
        -- the role first: CREATE ROLE moat_runtime NOLOGIN;
        CREATE ROLE moat_runtime NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO moat_runtime;

-- `moat check` and `moat serve` compare this history with the binary's migrations.
GRANT SELECT ON refinery_schema_history TO moat_runtime;

-- Set once by a development-mode Moat. Development mode relaxes key checks and
-- (later) creates demo users and keys, so production refuses a database that
-- carries this marker.
CREATE TABLE moat_dev_taint (
    id         boolean     NOT NULL DEFAULT true,
    marked_at  timestamptz NOT NULL DEFAULT now(),
    marked_by  text        NOT NULL,
    CONSTRAINT moat_dev_taint_pkey PRIMARY KEY (id),
    CONSTRAINT moat_dev_taint_single_row CHECK (id)
);

GRANT SELECT, INSERT ON moat_dev_taint TO moat_runtime;
