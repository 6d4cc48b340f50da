//! Identity: who is calling, and what they may do.
//!
//! Owns access tokens (HS256 JWTs, [`jwt`]), the guard every protected route
//! goes through ([`guard`]) with its per-instance memory of verified tokens
//! ([`verified`]), scopes and roles ([`scope`]), passwords and client
//! secrets (argon2id, [`password`]), browser sessions with rotating refresh
//! tokens ([`session`], [`refresh`]) and the OAuth client-credentials grant
//! ([`oauth`]). It never accepts a static key, never fails open, and never
//! logs a token, password or secret. The model is in docs/security.md.

mod error;
pub mod guard;
pub mod jwt;
mod oauth;
pub mod password;
pub mod refresh;
pub mod scope;
mod session;
mod store;
pub mod verified;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use uuid::Uuid;

pub use error::AuthError;
pub use guard::{Access, Caller, Guard};
pub use jwt::{AccessClaims, PrincipalKind, SessionRef, TokenKeys};
pub use scope::{Role, Scope, Scopes};
pub use session::normalize_email;
pub use store::STATEMENTS;
pub use verified::VerifiedTokens;

use crate::AppState;
use crate::db::tenant;
use crate::http::{ApiError, Routes};

pub fn routes() -> Routes {
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
    org: Uuid,
    scopes: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// `GET /v1/me`: the caller as the token and the database describe it.
#[utoipa::path(get, path = "/v1/me", tag = "auth", responses((status = 200, description = "The caller", body = Me)))]
async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<Me>, ApiError> {
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, &caller).await?;
    let user = match caller.kind {
        PrincipalKind::User => {
            let statement = tx.prepare_cached(store::GET_USER).await?;
            tx.query_opt(&statement, &[&caller.id, &caller.org]).await?
        }
        PrincipalKind::Client => None,
    };
    tx.commit().await?;
    Ok(Json(Me {
        id: caller.id,
        kind: caller.kind,
        org: caller.org,
        scopes: caller.scopes.iter().map(Scope::as_str).collect(),
        email: user.as_ref().map(|row| row.get("email")),
        role: user.as_ref().map(|row| row.get("role")),
    }))
}
