//! The auth capability's errors, mapped to HTTP once, here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::db::DbError;
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
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

crate::db::from_db_errors!(AuthError);

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
            Self::Db(e) => e.into(),
            Self::Internal(e) => ApiError::internal(e.as_ref()),
        };
        error.into_response()
    }
}
