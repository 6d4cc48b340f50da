//! Signing in: browser sessions with rotating refresh tokens ([`session`],
//! [`refresh`]), the OAuth client-credentials grant ([`oauth`]) and `/v1/me`.
//!
//! The primitives it issues and checks (JWTs, scopes, the guard, passwords)
//! are the [`crate::identity`] toolkit's. It never logs a token, password or
//! secret. The model is in docs/security.md.

mod error;
mod oauth;
pub mod refresh;
mod session;
mod store;

use axum::Json;
use std::sync::Arc;

use axum::extract::{FromRef, State};
use serde::Serialize;
use uuid::Uuid;

pub use error::AuthError;
pub use store::STATEMENTS;

use crate::config::Config;
use crate::crypto::Sealer;
use crate::db::Pool;
use crate::identity::TokenKeys;
use crate::identity::password::Hasher;
use crate::ids::{OrgId, UserId};
use crate::limits::Limiter;
use crate::metrics::Metrics;

/// What signing in needs.
#[derive(Clone)]
pub struct AuthState {
    pub config: Arc<Config>,
    pub db: Pool,
    /// Signs access tokens.
    pub tokens: Arc<TokenKeys>,
    /// argon2id hashing, with the dummy hash that equalizes login timing.
    pub hasher: Hasher,
    /// Seals refresh tokens at rest.
    pub sealer: Arc<Sealer>,
    /// Login and token-endpoint limits (state in PostgreSQL).
    pub limiter: Limiter,
    pub metrics: Arc<Metrics>,
}
use crate::db::tenant;
use crate::http::{ApiError, Routes};
use crate::identity::{Access, Caller, PrincipalKind, Scope};

pub fn routes<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    AuthState: FromRef<S>,
    Arc<Config>: FromRef<S>,
{
    Routes::new()
        .post("/v1/auth/login", Access::Public, session::login)
        .post("/v1/auth/refresh", Access::Public, session::refresh)
        .post("/v1/auth/logout", Access::Public, session::logout)
        .post("/v1/oauth/token", Access::Public, oauth::token)
        .get("/v1/me", Access::Authenticated, me)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(session::login, session::refresh, session::logout, oauth::token, me))]
pub(crate) struct Api;

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Me {
    id: Uuid,
    kind: PrincipalKind,
    #[schema(value_type = Uuid)]
    org: OrgId,
    scopes: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// `GET /v1/me`: the caller as the token and the database describe it.
#[utoipa::path(get, path = "/v1/me", tag = "auth", responses((status = 200, description = "The caller", body = Me)))]
async fn me(State(state): State<AuthState>, caller: Caller) -> Result<Json<Me>, ApiError> {
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let user = match caller.kind {
        PrincipalKind::User => store::get_user(&tx, caller.org, UserId(caller.id)).await?,
        PrincipalKind::Client => None,
    };
    tx.commit().await?;
    Ok(Json(Me {
        id: caller.id,
        kind: caller.kind,
        org: caller.org,
        scopes: caller.scopes.iter().map(Scope::as_str).collect(),
        email: user.as_ref().map(|(email, _)| email.clone()),
        role: user.map(|(_, role)| role),
    }))
}
