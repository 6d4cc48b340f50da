//! [`PathId`]: a route's one `{id}` parameter as a typed id. One that does
//! not parse is as unknown as one that does not exist: 404 `not_found`.

use std::str::FromStr;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The path's id, parsed (`PathId<RunId>`, …).
#[derive(Debug, Clone, Copy)]
pub struct PathId<T>(pub T);

impl<S, T> FromRequestParts<S> for PathId<T>
where
    S: Send + Sync,
    T: FromStr + Send,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        raw.parse().map(Self).map_err(|_| ApiError::not_found().into_response())
    }
}
