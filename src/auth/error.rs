//! The auth capability's errors, mapped to HTTP once, here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::http::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown email, wrong password and disabled user alike.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("rate limited for {0} s")]
    RateLimited(u64),
    /// No refresh cookie, or one that is unknown, expired, revoked or reused.
    #[error("no valid session")]
    NoSession,
    /// A cookie-authenticated request from another origin.
    #[error("cross-origin request refused")]
    ForbiddenOrigin,
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// No database connection became free in time.
    #[error("no database connection available")]
    Unavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<tokio_postgres::Error> for AuthError {
    fn from(e: tokio_postgres::Error) -> Self {
        if crate::db::connection_lost(&e) {
            tracing::warn!(error = %crate::db::describe_error(&e), "the database connection was lost");
            return Self::Unavailable;
        }
        Self::Internal(anyhow::Error::msg(crate::db::describe_error(&e)))
    }
}

impl From<deadpool_postgres::PoolError> for AuthError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %e, "no database connection available");
        Self::Unavailable
    }
}

impl From<crate::limits::LimitError> for AuthError {
    fn from(e: crate::limits::LimitError) -> Self {
        match e {
            crate::limits::LimitError::Pool(e) => e.into(),
            crate::limits::LimitError::Db(e) => e.into(),
        }
    }
}

impl From<crate::identity::password::HashError> for AuthError {
    fn from(e: crate::identity::password::HashError) -> Self {
        Self::Internal(e.into())
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let error = match self {
            Self::InvalidCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "the email or password is incorrect")
            }
            Self::RateLimited(secs) => {
                let mut response =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many attempts; retry later")
                        .into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                return response;
            }
            Self::NoSession => ApiError::new(StatusCode::UNAUTHORIZED, "invalid_session", "sign in again"),
            Self::ForbiddenOrigin => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                "this request must come from Moat's own origin",
            ),
            Self::Invalid(message) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message),
            Self::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the service is temporarily unavailable")
            }
            Self::Internal(e) => ApiError::internal(e.as_ref()),
        };
        error.into_response()
    }
}
