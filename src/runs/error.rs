//! The runs capability's errors, mapped to HTTP once, here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::http::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("not found")]
    NotFound,
    #[error("unknown agent")]
    UnknownAgent,
    #[error("a run is already active in this conversation")]
    RunInProgress,
    #[error("the run has finished")]
    RunFinished,
    #[error("the run is not in this conversation")]
    RunNotInConversation,
    /// The caller's token lacks the scope (WebSocket commands check per message).
    #[error("insufficient scope")]
    Forbidden,
    #[error("the input request was already answered")]
    AlreadyAnswered,
    #[error("the input request no longer stands")]
    InputExpired,
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<crate::db::DbError> for RunError {
    fn from(e: crate::db::DbError) -> Self {
        Self::Api(e.into())
    }
}

crate::db::from_db_errors!(RunError);

impl From<crate::db::tenant::TenantError> for RunError {
    fn from(e: crate::db::tenant::TenantError) -> Self {
        Self::Api(e.into())
    }
}

impl RunError {
    /// The stable code and message, for the WebSocket's error frames.
    pub fn code_and_message(self) -> (&'static str, String) {
        let error = self.api_error();
        (error.code, error.message)
    }

    fn api_error(self) -> ApiError {
        match self {
            Self::NotFound => ApiError::not_found(),
            Self::UnknownAgent => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_agent", "no such agent"),
            Self::RunInProgress => ApiError::new(
                StatusCode::CONFLICT,
                "run_in_progress",
                "this conversation already has an active run; cancel it or wait for it to finish",
            ),
            Self::RunFinished => ApiError::new(StatusCode::CONFLICT, "run_finished", "the run has already finished"),
            Self::RunNotInConversation => {
                ApiError::new(StatusCode::NOT_FOUND, "run_not_in_conversation", "no such run in this conversation")
            }
            Self::AlreadyAnswered => {
                ApiError::new(StatusCode::CONFLICT, "input_already_answered", "this question was already answered")
            }
            Self::InputExpired => ApiError::new(
                StatusCode::CONFLICT,
                "input_expired",
                "the run is no longer waiting for this answer (it ended or was restarted)",
            ),
            Self::Invalid(message) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message),
            Self::Forbidden => {
                ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", "this requires the scope runs:write")
            }
            Self::Api(e) => e,
        }
    }
}

impl IntoResponse for RunError {
    fn into_response(self) -> Response {
        self.api_error().into_response()
    }
}
