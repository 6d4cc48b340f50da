//! # Moat
//!
//! The secure backbone of an AI-agent platform, with PostgreSQL as its only
//! infrastructure. It refuses to start insecure, authenticates every call with
//! a bearer token and scopes, and keeps every tenant apart in the database.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | the `moat` command line (`serve`, `dev`, `runner`, `migrate`, `check`, `keygen`, `admin`) |
//! | [`config`] | reading the environment into a validated [`config::Config`]; the keys |
//! | [`dev`] | the development-mode proof token, the single `DEV_BYPASS` logger, `moat dev` and its private PostgreSQL |
//! | [`check`] | every startup check, collected into one report |
//! | [`db`] | connection settings, the pool, embedded migrations, database checks |
//! | [`tls`] | rustls server/client configuration (TLS 1.2 and 1.3 only) |
//! | [`http`] | the router, security headers, error shape, access log |
//! | [`health`] | `/healthz` and `/readyz` |
//! | [`auth`] | bearer tokens and scopes, the route guard, login/refresh/logout, OAuth client credentials |
//! | [`admin`] | `moat admin …`: organizations, users and service clients, straight to the database |
//! | [`integrations`] | OAuth integrations, tokens sealed at rest, the credential broker (refresh exactly once) |
//! | [`runs`] | conversations, runs, the gapless event log, cancel/answer commands, stale-run recovery |
//! | [`runner`] | `moat runner`: claims runs, executes agents under fenced leases, applies commands |
//! | [`sanitize`] | the credential sanitizer every agent string passes through |
//! | [`ws`] | the WebSocket edge: five checks before the upgrade, replay + live events, commands |
//! | [`egress`] | the one outbound HTTP policy: `MOAT_EGRESS_ALLOW`, addresses checked at connect time and on redirects |
//! | [`files`] | each organization's shared files: cleaned names, id-named paths verified before every open, atomic writes, orphan sweep |
//! | [`web`] | the browser app at `/`: embedded static files under a strict CSP |
//! | [`users`] | an organization's users (read-only API) |
//! | [`audit`] | the append-only audit log of security events |
//! | [`limits`] | abuse limits kept in PostgreSQL, shared by every instance |
//! | [`crypto`] | AES-256-GCM-SIV sealing of secrets at rest |
//! | [`metrics`] | Prometheus metrics at `/metrics` (route templates, pool, WebSockets, runs, broker, DEV_BYPASS) |
//! | [`maintenance`] | periodic purge of expired rows, safe with many instances |
//! | [`server`] | [`AppState`], binding the listener, graceful shutdown |
//! | [`telemetry`] | logging (text or JSON) |
//! | [`os`] | process settings `serve` and `runner` apply to themselves (non-dumpable, descriptor limit) |
//!
//! SQL lives in `sql/<capability>/`, migrations in `migrations/`.

pub mod admin;
mod admin_cli;
pub mod audit;
pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod db;
pub mod dev;
pub mod egress;
pub mod files;
pub mod health;
pub mod http;
pub mod integrations;
pub mod limits;
pub mod maintenance;
pub mod metrics;
pub mod os;
pub mod runner;
pub mod runs;
pub mod sanitize;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod users;
pub mod web;
pub mod ws;

pub use server::{App, AppState};

/// Every SQL statement Moat runs, by name, so one test can `prepare` them all
/// against a freshly migrated database as the runtime role.
pub fn statements() -> Vec<(&'static str, &'static str)> {
    [
        db::store::ALL,
        auth::STATEMENTS,
        admin::STATEMENTS,
        audit::STATEMENTS,
        users::STATEMENTS,
        limits::STATEMENTS,
        maintenance::STATEMENTS,
        integrations::STATEMENTS,
        runs::STATEMENTS,
        ws::STATEMENTS,
        files::STATEMENTS,
        metrics::STATEMENTS,
    ]
    .concat()
}
