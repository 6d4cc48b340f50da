//! Conversations, runs and their event log, over PostgreSQL.
//!
//! Owns the HTTP API for conversations, runs, events, cancel and answers
//! ([`api`]), the WebSocket edge that streams a conversation's events
//! ([`ws`]), the gapless per-conversation event log ([`events`]), and
//! stale-run recovery ([`recovery`]). It never talks to a runner process:
//! commands are rows in `run_commands` plus a NOTIFY with ids only, and the
//! runner ([`crate::runner`]) picks them up. See docs/architecture.md.

mod api;
pub mod commands;
mod error;
pub mod events;
pub mod recovery;
pub mod store;
pub mod ws;

pub use error::RunError;
pub use store::STATEMENTS;

use std::sync::Arc;

use axum::extract::FromRef;

use crate::config::Config;
use crate::db::Pool;
use crate::http::Routes;
use crate::identity::{Access, Scope, TokenKeys};
use crate::metrics::Metrics;

/// What the runs API and its WebSocket edge need.
#[derive(Clone)]
pub struct RunsState {
    pub config: Arc<Config>,
    pub db: Pool,
    /// Verifies and signs the single-use stream tokens.
    pub tokens: Arc<TokenKeys>,
    /// Fan-out of conversation events to this instance's WebSocket subscribers.
    pub hub: ws::hub::Hub,
    /// Open WebSockets per principal on this instance.
    pub sockets: ws::Sockets,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the process starts shutting down: open sockets close with 1001.
    pub shutdown: tokio_util::sync::CancellationToken,
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    api::create_conversation,
    api::list_conversations,
    api::get_conversation,
    api::create_run,
    api::list_events,
    api::get_run,
    api::cancel,
    api::answer
))]
pub(crate) struct Api;

pub fn routes<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    RunsState: FromRef<S>,
{
    let read = Access::Scope(Scope::ConversationsRead);
    let run = Access::Scope(Scope::RunsWrite);
    Routes::new()
        .post("/v1/conversations", Access::Scope(Scope::ConversationsWrite), api::create_conversation)
        .get("/v1/conversations", read, api::list_conversations)
        .get("/v1/conversations/{id}", read, api::get_conversation)
        .post("/v1/conversations/{id}/runs", run, api::create_run)
        .get("/v1/conversations/{id}/events", read, api::list_events)
        .get("/v1/runs/{id}", read, api::get_run)
        .post("/v1/runs/{id}/cancel", run, api::cancel)
        .post("/v1/inputs/{id}", run, api::answer)
        .merge(ws::routes())
}
