//! Integrations and the credential broker.
//!
//! Owns OAuth connections to third-party providers: the connect flow
//! (authorization code + PKCE, [`connect`]), tokens sealed at rest with
//! AES-256-GCM-SIV bound to their row and field, metadata endpoints
//! ([`api`]), the broker that hands agents an access token and refreshes it
//! exactly once under any concurrency ([`broker`]), and re-encryption under
//! a new key ([`rekey`]). It must never return or log a token, a ciphertext
//! or a key id, and never hand out a refresh token. See docs/integrations.md.

mod api;
pub mod broker;
mod connect;
mod error;
pub mod provider;
pub mod rekey;
mod store;

pub use error::IntegrationError;
pub use provider::Providers;
pub use store::STATEMENTS;

use std::sync::Arc;

use axum::extract::FromRef;

use crate::config::Config;
use crate::crypto::Sealer;
use crate::db::Pool;
use crate::http::Routes;
use crate::identity::{Access, Scope};
use crate::metrics::Metrics;

/// What the integrations API needs.
#[derive(Clone)]
pub struct IntegrationsState {
    pub config: Arc<Config>,
    pub db: Pool,
    /// AES-256-GCM-SIV for tokens at rest.
    pub sealer: Arc<Sealer>,
    /// OAuth providers with their HTTP clients.
    pub providers: Arc<Providers>,
    /// Per-instance queueing and bounds for integration refreshes.
    pub broker: broker::Broker,
    pub metrics: Arc<Metrics>,
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    connect::connect,
    connect::callback,
    api::import,
    api::list,
    api::get,
    api::delete,
    api::access_token
))]
pub(crate) struct Api;

pub fn routes<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    IntegrationsState: FromRef<S>,
{
    let write = Access::Scope(Scope::IntegrationsWrite);
    let read = Access::Scope(Scope::IntegrationsRead);
    Routes::new()
        .get("/v1/integrations/{provider}/connect", write, connect::connect)
        // Public: it arrives from the provider; the single-use state and the browser-binding cookie authenticate it.
        .get("/v1/integrations/callback", Access::Public, connect::callback)
        .post("/v1/integrations", write, api::import)
        .get("/v1/integrations", read, api::list)
        .get("/v1/integrations/{id}", read, api::get)
        .delete("/v1/integrations/{id}", write, api::delete)
        .post("/v1/integrations/{id}/access-token", Access::Scope(Scope::IntegrationsUse), api::access_token)
}
