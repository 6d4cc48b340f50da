//! The one place that decides authentication: every route declares its
//! [`Access`] when it is registered ([`crate::http::Routes`]), and [`enforce`]
//! runs before the handler of every non-public route. There is no flag,
//! environment or configuration under which a protected route runs without a
//! valid token — development mode included.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::jwt::{PrincipalKind, TokenError};
use super::scope::{Scope, Scopes};
use super::verified::VerifiedTokens;
use crate::http::ApiError;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No bearer token (health, login, refresh, logout, OAuth token endpoint).
    Public,
    /// Any valid access token.
    Authenticated,
    /// A valid access token carrying this scope.
    Scope(Scope),
}

/// The authenticated caller of a request. Only [`enforce`] creates one.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub kind: PrincipalKind,
    pub org: Uuid,
    pub scopes: Scopes,
    /// When the access token expires (unix seconds).
    pub expires_at: i64,
}

impl Caller {
    /// `user:<id>` or `client:<id>`, as written in the audit log.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.id)
    }
}

/// Middleware state: the verifier (shared by every route), and what this route requires.
#[derive(Clone)]
pub struct Guard {
    pub verifier: Arc<VerifiedTokens>,
    pub access: Access,
}

/// Verifies the bearer token and the route's scope, then hands the [`Caller`] to the handler.
pub async fn enforce(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let token = match bearer(request.headers()) {
        Ok(Some(token)) => token,
        Ok(None) => return ApiError::unauthorized().into_response(),
        Err(()) => return invalid_token("the Authorization header is not a single Bearer token"),
    };
    let caller = match guard.verifier.caller(token) {
        Ok(caller) => caller,
        Err(e) => {
            tracing::debug!(reason = %e, "access token refused");
            return invalid_token(match e {
                TokenError::Expired => "the access token has expired",
                _ => "the access token is invalid",
            });
        }
    };
    if let Access::Scope(required) = guard.access
        && !caller.scopes.contains(required)
    {
        return insufficient_scope(required);
    }
    // Every later log line of this request names the organization (the request span's field).
    tracing::Span::current().record("org_id", tracing::field::display(caller.org));
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// `Ok(None)`: no Authorization header; `Err`: one that is not a single Bearer token.
fn bearer(headers: &axum::http::HeaderMap) -> Result<Option<&str>, ()> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    let value = value.to_str().map_err(|_| ())?;
    let (scheme, token) = value.split_once(' ').ok_or(())?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(());
    }
    Ok(Some(token.trim()))
}

fn invalid_token(message: &'static str) -> Response {
    with_challenge(
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", message).into_response(),
        "Bearer error=\"invalid_token\"".to_owned(),
    )
}

fn insufficient_scope(required: Scope) -> Response {
    with_challenge(
        ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", format!("this requires the scope {required}"))
            .into_response(),
        format!("Bearer error=\"insufficient_scope\", scope=\"{required}\""),
    )
}

fn with_challenge(mut response: Response, challenge: String) -> Response {
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    /// Only [`enforce`] puts a caller here: on a route registered as public the
    /// extractor refuses, so a handler can never run unauthenticated by mistake.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(ApiError::unauthorized)
    }
}
