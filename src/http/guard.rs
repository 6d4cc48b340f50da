//! The one place that decides authentication: every route declares its
//! [`Access`] when it is registered ([`crate::http::Routes`]), and [`enforce`]
//! runs before the handler of every non-public route. There is no flag,
//! environment or configuration under which a protected route runs without a
//! valid token — development mode included.

use std::sync::Arc;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use tower::{Layer, Service};

use super::ApiError;
use crate::identity::jwt::TokenError;
use crate::identity::{Access, Caller, Scope, VerifiedTokens};

/// The guard in front of one route: the verifier (shared by every route) and
/// what this route requires. A hand-written layer rather than `from_fn`: the
/// check is synchronous, so a refusal is a ready response and an accepted
/// request goes straight to the handler's own future — no boxed future and no
/// clone of the inner service per request (docs/performance.md).
#[derive(Clone)]
pub struct Guard {
    pub verifier: Arc<VerifiedTokens>,
    pub access: Access,
}

impl<S> Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded { guard: self.clone(), inner }
    }
}

/// A route behind its [`Guard`].
#[derive(Clone)]
pub struct Guarded<S> {
    guard: Guard,
    inner: S,
}

impl<S> Service<Request> for Guarded<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match enforce(&self.guard, request.headers()) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Right(self.inner.call(request))
            }
            Err(refusal) => Either::Left(ready(Ok(refusal.into_response()))),
        }
    }
}

/// Why the guard refused a request.
enum Refusal {
    NoToken,
    NotBearer,
    Expired,
    Invalid,
    Scope(Scope),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::NoToken => ApiError::unauthorized().into_response(),
            Self::NotBearer => invalid_token("the Authorization header is not a single Bearer token"),
            Self::Expired => invalid_token("the access token has expired"),
            Self::Invalid => invalid_token("the access token is invalid"),
            Self::Scope(required) => insufficient_scope(required),
        }
    }
}

/// Verifies the bearer token and the route's scope: the [`Caller`] for the
/// handler, or why the request is refused.
fn enforce(guard: &Guard, headers: &HeaderMap) -> Result<Caller, Refusal> {
    let token = match bearer(headers) {
        Ok(Some(token)) => token,
        Ok(None) => return Err(Refusal::NoToken),
        Err(()) => return Err(Refusal::NotBearer),
    };
    let caller = guard.verifier.caller(token).map_err(|e| {
        tracing::debug!(reason = %e, "access token refused");
        match e {
            TokenError::Expired => Refusal::Expired,
            _ => Refusal::Invalid,
        }
    })?;
    if let Access::Scope(required) = guard.access
        && !caller.scopes.contains(required)
    {
        return Err(Refusal::Scope(required));
    }
    // Every later log line of this request names the organization (the request span's field).
    tracing::Span::current().record("org_id", tracing::field::display(caller.org));
    Ok(caller)
}

/// `Ok(None)`: no Authorization header; `Err`: one that is not a single Bearer token.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ()> {
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
