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

use crate::auth::{Access, Scope};
use crate::http::Routes;

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

pub fn routes() -> Routes {
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
