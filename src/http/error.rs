//! The one error shape every response uses: `{"error":{"code","message"}}`.
//!
//! Capabilities return [`ApiError`] (or map their own error type into it once);
//! [`json_errors`] turns any bare error response that a layer or axum itself
//! produced (405, 408, 413, a caught panic…) into the same shape, so no client
//! ever sees a stack trace, SQL text, path, version or host name.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::db::DbError;
use crate::db::tenant::TenantError;

/// An error answered to the client. Internal causes are logged, never sent.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (rate limits, an unavailable database, a busy lock).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// Adds `Retry-After: secs` (at least 1).
    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// 503 `unavailable`, `Retry-After: 1`: the database cannot be reached right now.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is temporarily unavailable; retry shortly",
        )
        .retry_after(1)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required")
    }

    /// Logs the cause (with its chain) and answers an opaque 500.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        let chain: Vec<String> = std::iter::successors(Some(cause), |e| e.source()).map(ToString::to_string).collect();
        tracing::error!(error = %chain.join(": "), "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "an internal error occurred")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(body(self.code, &self.message))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn body(code: &str, message: &str) -> serde_json::Value {
    json!({ "error": { "code": code, "message": message } })
}

/// Stable code and message for a status whose response carried no JSON body.
fn describe(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("bad_request", "the request is malformed"),
        401 => ("unauthorized", "a valid bearer token is required"),
        403 => ("forbidden", "not allowed"),
        404 => ("not_found", "no such resource"),
        405 => ("method_not_allowed", "this method is not allowed on this resource"),
        406 => ("not_acceptable", "no acceptable representation"),
        408 => ("request_timeout", "the request took too long"),
        409 => ("conflict", "the request conflicts with the current state"),
        411 => ("length_required", "a Content-Length header is required"),
        413 => ("payload_too_large", "the request body is too large"),
        414 => ("uri_too_long", "the request URI is too long"),
        415 => ("unsupported_media_type", "unsupported content type"),
        422 => ("unprocessable_entity", "the request is not valid"),
        429 => ("rate_limited", "too many requests"),
        503 => ("unavailable", "the service is temporarily unavailable"),
        s if s >= 500 => ("internal_error", "an internal error occurred"),
        _ => ("error", "the request failed"),
    }
}

/// Middleware body: an error response without a JSON body gets the standard one.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let (code, message) = describe(status);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body(code, message).to_string()))
}

/// `CatchPanicLayer` handler: the panic was already logged by the panic hook.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "an internal error occurred").into_response()
}

/// `Json<T>` whose rejections use the standard error shape and codes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", "the body is not valid JSON")
        }
        JsonRejection::JsonDataError(e) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", e.body_text())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
        }
        other => ApiError::new(other.status(), "bad_request", "the request body could not be read"),
    }
}

/// The one HTTP mapping of a database failure: unavailable → 503 with
/// `Retry-After`; anything else → logged, answered as an opaque 500.
impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(_) => Self::unavailable(),
            DbError::Failed(_) => Self::internal(&e),
        }
    }
}

crate::db::from_db_errors!(ApiError);

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> Self {
        match e {
            TenantError::Inactive => {
                Self::new(StatusCode::UNAUTHORIZED, "invalid_token", "the token's user or client is disabled")
            }
            TenantError::Db(e) => e.into(),
        }
    }
}
