//! Cursor pagination for every list endpoint: `?limit=N&cursor=C`.
//!
//! `limit` defaults to 50; values above 200 are capped at 200 (not refused),
//! zero, negatives and non-numbers are a 400. The cursor is opaque to clients
//! (base64url of the last item's sort key); a mangled one is a 400. Cursors
//! are not secrets: they only position a query that row-level security
//! already confines to the caller's organization.

use axum::extract::{FromRequestParts, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::ApiError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// Position after which the next page starts: the last item's time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Unix time in microseconds (PostgreSQL's precision).
    t: i64,
    id: Uuid,
}

impl Cursor {
    pub fn new(at: OffsetDateTime, id: Uuid) -> Self {
        let micros = at.unix_timestamp_nanos() / 1000;
        Self { t: i64::try_from(micros).unwrap_or(i64::MAX), id }
    }

    pub fn at(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.t) * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(raw: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A page request, extracted from the query string.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub after: Option<Cursor>,
}

#[derive(Deserialize)]
struct Params {
    limit: Option<String>,
    cursor: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Page {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Query(params) = Query::<Params>::try_from_uri(&parts.uri)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "the query string is malformed"))?;
        let limit = match params.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n >= 1 => n.min(MAX_LIMIT),
                _ => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_limit",
                        format!("limit must be a whole number from 1 to {MAX_LIMIT} (larger values are capped)"),
                    ));
                }
            },
        };
        let after = match params.cursor.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(Cursor::decode(raw).ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "the cursor is not one this API issued")
            })?),
        };
        Ok(Self { limit, after })
    }
}

/// One page of results: `{"items":[…],"next_cursor":"…"|null}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Paged<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Paged<T> {
    /// `rows` were fetched with `LIMIT page.limit + 1`: the extra row only says a next page exists.
    pub fn from_rows(mut rows: Vec<T>, page: &Page, key: impl Fn(&T) -> Cursor) -> Self {
        let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more { rows.last().map(|last| key(last).encode()) } else { None };
        Self { items: rows, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_at_microsecond_precision() {
        let at =
            OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let cursor = Cursor::new(at, Uuid::nil());
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(cursor.at(), at);
        assert_eq!(Cursor::decode("not-a-cursor"), None);
    }
}
