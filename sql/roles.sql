-- Moat's database roles and database, for an administrator to run once with psql:
--
--   psql "<admin connection>" -v ON_ERROR_STOP=1 \
--     -v owner=moat_owner -v owner_password="$(openssl rand -hex 24)" \
--     -v app=moat_app     -v app_password="$(openssl rand -hex 24)" \
--     -v runner=moat_runner_app -v runner_password="$(openssl rand -hex 24)" \
--     -v db=moat -f sql/roles.sql
--
-- Self-hosted: connect as `postgres`; RDS/Aurora: the master user; Cloud SQL:
-- a `cloudsqlsuperuser` member; Azure: the admin user. None of the roles made
-- here is a superuser or has BYPASSRLS or CREATEROLE (docs/deployment.md).

-- The group roles every migration grants to (fixed names), if not there yet.
SELECT 'CREATE ROLE moat_runtime NOLOGIN'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'moat_runtime') \gexec
SELECT 'CREATE ROLE moat_runner NOLOGIN'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'moat_runner') \gexec

-- Owner: runs `moat migrate`, owns the schema.
CREATE ROLE :"owner" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB PASSWORD :'owner_password';
-- Runtime: `moat serve` / `moat check`, through moat_runtime only.
CREATE ROLE :"app" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB PASSWORD :'app_password';
GRANT moat_runtime TO :"app";
-- Runner: `moat runner`, also in moat_runner (claims runs across organizations).
CREATE ROLE :"runner" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB PASSWORD :'runner_password';
GRANT moat_runtime, moat_runner TO :"runner";

-- On managed services the administrator must be a member of the new owner first.
GRANT :"owner" TO CURRENT_USER;
CREATE DATABASE :"db" OWNER :"owner";

\connect :"db"
-- PostgreSQL 14 and older let everyone create in `public` (15+ does not).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
