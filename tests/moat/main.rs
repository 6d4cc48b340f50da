//! Moat's integration tests: one binary (one link), one module per area.
//! Every test gets its own database on a PostgreSQL cluster started for this
//! run; see `harness`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

mod admin_cli;
mod agents;
mod auth_routes;
mod auth_sessions;
mod auth_tokens;
mod browser;
mod compose;
mod db_tls;
mod dev_command;
mod dev_mode;
mod egress;
mod files;
mod http_baseline;
mod http_edge;
mod integrations;
mod launch_readiness;
mod layering;
mod limits;
mod maintenance;
mod metrics;
mod oauth;
mod openapi;
mod outage;
mod pooler;
mod readiness;
mod request_ids;
mod revocation;
mod roles_script;
mod runs;
mod sanitize;
mod schema;
mod soak;
mod startup;
mod tenancy;
mod tls;
mod ws;
