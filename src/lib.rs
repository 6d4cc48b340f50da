//! # Moat
//!
//! The secure backbone of an AI-agent platform, with PostgreSQL as its only
//! infrastructure. It refuses to start insecure, authenticates every call with
//! a bearer token and scopes, and keeps every tenant apart in the database.
//!
//! # Layout
//!
//! Five layers; a module imports only from layers below its own, and no
//! capability imports another (`tests/moat/layering.rs` checks both, and
//! that no two modules import each other; docs/architecture.md draws it).
//!
//! | layer | module | owns |
//! |---|---|---|
//! | app | [`app`] | the composition root: [`app::AppState`] and its sub-states, every router and OpenAPI part merged, the shared startup checks, building `serve` and `runner` |
//! | | [`cli`] | the `moat` command line (`serve`, `dev`, `runner`, `migrate`, `check`, `keygen`, `admin`, `probe`) |
//! | | `admin_cli` | `moat admin …` argument parsing and output |
//! | | [`dev`] | `moat dev` and its private PostgreSQL |
//! | process | [`runner`] | `moat runner`'s loop: claims runs, executes agents under fenced leases, applies commands |
//! | capability | [`auth`] | login, refresh and logout (browser sessions), the OAuth client-credentials grant, `/v1/me` |
//! | | [`users`] | an organization's users (read-only API) |
//! | | [`integrations`] | OAuth integrations, tokens sealed at rest, the credential broker (refresh exactly once) |
//! | | [`runs`] | conversations, runs, the gapless event log, cancel/answer commands, stale-run recovery, the WebSocket edge ([`runs::ws`]) |
//! | | [`files`] | each organization's shared files: cleaned names, id-named paths verified before every open, atomic writes, orphan sweep |
//! | | [`health`] | `/healthz`, `/readyz`, `/metrics` and the loopback metrics listener |
//! | | [`web`] | the browser app at `/`: embedded static files under a strict CSP |
//! | | [`admin`] | organizations, users and service clients, straight to the database |
//! | | [`maintenance`] | periodic purge of expired rows, safe with many instances |
//! | toolkit | [`http`] | the route table and its bearer guard, error shape, JSON extractor, pagination, the edge layer, connection limits |
//! | | [`identity`] | JWTs, scopes and roles, `Caller` and `Access`, verified tokens, passwords |
//! | | [`audit`] | the append-only audit log of security events (and its list endpoint) |
//! | | [`limits`] | abuse limits kept in PostgreSQL, shared by every instance |
//! | | [`metrics`] | the Prometheus registry: route templates, pool, WebSockets, runs, broker, purge, DEV_BYPASS |
//! | | [`sanitize`] | the credential sanitizer every agent string passes through |
//! | | [`telemetry`] | logging (text or JSON) |
//! | | [`os`] | process settings `serve` and `runner` apply to themselves (non-dumpable, descriptor limit) |
//! | foundation | [`config`] | reading the environment into a validated [`config::Config`]; the keys |
//! | | [`crypto`] | AES-256-GCM-SIV sealing of secrets at rest |
//! | | [`db`] | connection settings, the pool, embedded migrations, database checks, tenant transactions |
//! | | [`egress`] | the one outbound HTTP policy: `MOAT_EGRESS_ALLOW`, addresses checked at connect time and on redirects |
//! | | [`tls`] | rustls server/client configuration (TLS 1.2 and 1.3 only) |
//! | | [`problem`] | one failed startup check: what, why, the exact fix |
//! | | [`devmode`] | the development-mode proof token and the single `DEV_BYPASS` logger |
//! | | [`ids`] | typed ids (`OrgId`, `RunId`, …): UUIDs that cannot be mixed up |
//!
//! SQL lives in `sql/<capability>/`, migrations in `migrations/`.

mod admin_cli;
pub mod app;
pub mod cli;
pub mod dev;

pub mod runner;

pub mod admin;
pub mod auth;
pub mod files;
pub mod health;
pub mod integrations;
pub mod maintenance;
pub mod runs;
pub mod users;
pub mod web;

pub mod audit;
pub mod http;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod os;
pub mod sanitize;
pub mod telemetry;

pub mod config;
pub mod crypto;
pub mod db;
pub mod devmode;
pub mod egress;
pub mod ids;
pub mod problem;
pub mod tls;

pub use app::{App, AppState};
