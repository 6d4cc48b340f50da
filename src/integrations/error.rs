//! The integrations capability's errors, mapped to HTTP once, here. Every
//! outcome of a broker call is distinct, so a caller never mistakes a busy
//! lock or a dead provider for bad credentials.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::db::DbError;
use crate::http::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    #[error("no such integration")]
    NotFound,
    #[error("unknown provider")]
    UnknownProvider,
    #[error("the caller is disabled")]
    CallerInactive,
    /// The provider refused the refresh token: the user must connect again.
    #[error("the integration needs to be connected again")]
    NeedsReauth,
    /// Another refresh of this integration held the lock longer than the lock timeout.
    #[error("a refresh of this integration is in progress")]
    RefreshBusy,
    /// Timeout, 5xx or an unusable answer; tokens unchanged; retry after the cooldown.
    #[error("the provider is unavailable")]
    ProviderUnavailable { retry_after: u64 },
    #[error("an integration for this provider account already exists")]
    Exists,
    /// The egress policy refused the provider's address.
    #[error("the egress policy refused the provider's address")]
    EgressRefused,
    /// A connect callback with a missing, wrong, reused or expired state.
    #[error("invalid or expired state")]
    InvalidState,
    #[error("the provider refused the authorization")]
    ProviderDenied,
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

crate::db::from_db_errors!(IntegrationError);

impl From<crate::db::tenant::TenantError> for IntegrationError {
    fn from(e: crate::db::tenant::TenantError) -> Self {
        match e {
            crate::db::tenant::TenantError::Inactive => Self::CallerInactive,
            crate::db::tenant::TenantError::Db(e) => e.into(),
        }
    }
}

impl From<crate::crypto::SealError> for IntegrationError {
    fn from(e: crate::crypto::SealError) -> Self {
        Self::Internal(e.into())
    }
}

fn retry_after(mut response: Response, secs: u64) -> Response {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

impl IntoResponse for IntegrationError {
    fn into_response(self) -> Response {
        let error = match self {
            Self::NotFound => ApiError::not_found(),
            Self::UnknownProvider => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_provider", "no such provider is configured")
            }
            Self::CallerInactive => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "the token's user or client is disabled")
            }
            Self::NeedsReauth => ApiError::new(
                StatusCode::CONFLICT,
                "integration_needs_reauth",
                "the provider no longer accepts this integration; connect it again",
            ),
            Self::RefreshBusy => {
                let e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "refresh_busy",
                    "a refresh is in progress; retry shortly",
                );
                return retry_after(e.into_response(), 1);
            }
            Self::ProviderUnavailable { retry_after: secs } => {
                let e = ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "provider_unavailable",
                    "the provider did not answer usably; tokens are unchanged",
                );
                return retry_after(e.into_response(), secs);
            }
            Self::EgressRefused => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "egress_refused",
                "the provider's address is not allowed by the egress policy (audited)",
            ),
            Self::Exists => ApiError::new(
                StatusCode::CONFLICT,
                "integration_exists",
                "an integration for this provider account already exists",
            ),
            Self::InvalidState => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_state",
                "the connect flow is invalid or expired; start again",
            ),
            Self::ProviderDenied => ApiError::new(
                StatusCode::BAD_REQUEST,
                "provider_denied",
                "the provider did not authorize the connection",
            ),
            Self::Invalid(message) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message),
            Self::Db(e) => e.into(),
            Self::Internal(e) => ApiError::internal(e.as_ref()),
        };
        error.into_response()
    }
}
