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
//! | [`cli`] | the `moat` command line (`serve`, `migrate`, `check`, `keygen`) |
//! | [`config`] | reading the environment into a validated [`config::Config`]; the keys |
//! | [`dev`] | the development-mode proof token and the single `DEV_BYPASS` logger |
//! | [`check`] | every startup check, collected into one report |
//! | [`db`] | connection settings, the pool, embedded migrations, database checks |
//! | [`tls`] | rustls server/client configuration (TLS 1.2 and 1.3 only) |
//! | [`http`] | the router, security headers, error shape, access log |
//! | [`health`] | `/healthz` and `/readyz` |
//! | [`server`] | [`AppState`], binding the listener, graceful shutdown |
//! | [`telemetry`] | logging (text or JSON) |
//!
//! SQL lives in `sql/<capability>/`, migrations in `migrations/`.

pub mod check;
pub mod cli;
pub mod config;
pub mod db;
pub mod dev;
pub mod health;
pub mod http;
pub mod server;
pub mod telemetry;
pub mod tls;

pub use server::{App, AppState};
