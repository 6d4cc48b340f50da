//! Request ids: every request gets one, returned in `X-Request-Id`, carried by
//! every log line of the request (a `request` span with `request_id` and,
//! once authenticated, `org_id`), and added to every JSON error body as
//! `"request_id"` — so a user's error report leads straight to the log.
//!
//! An inbound `X-Request-Id` is kept only from a trusted proxy
//! (`MOAT_TRUSTED_PROXIES`) and only if well-formed (1–64 of `A-Za-z0-9._-`);
//! otherwise Moat makes its own (a UUID), so a client cannot forge another
//! request's id into the logs.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, header};
use axum::response::Response;

use ipnet::IpNet;

pub const HEADER: &str = "x-request-id";
/// Error bodies are small; anything larger is passed through untouched.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The request's id, in the request's extensions for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn well_formed(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The request's id: a trusted proxy's well-formed `X-Request-Id`, or a new
/// UUID. Also put in the request's extensions as [`RequestId`].
pub fn assign(trusted_proxies: &[IpNet], request: &mut Request) -> String {
    let from_trusted_proxy = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| trusted_proxies.iter().any(|net| net.contains(&peer.ip().to_canonical())));
    let inbound = request.headers().get(HEADER).and_then(|v| v.to_str().ok()).filter(|id| well_formed(id));
    let id = match inbound {
        Some(id) if from_trusted_proxy => id.to_owned(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    request.extensions_mut().insert(RequestId(id.clone()));
    id
}

/// Puts the id in `X-Request-Id` and in a JSON error body.
pub async fn stamp(response: Response, id: &str) -> Response {
    let mut response = with_id_in_error_body(response, id).await;
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// Adds `"request_id"` to a JSON error body `{"error":{…}}`.
async fn with_id_in_error_body(response: Response, id: &str) -> Response {
    let is_json_error = (response.status().is_client_error() || response.status().is_server_error())
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
    if !is_json_error {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Only bodies known to be small are read (never a stream of unknown length).
    let small = axum::body::HttpBody::size_hint(&body).upper().is_some_and(|n| n <= MAX_ERROR_BODY as u64);
    if !small {
        return Response::from_parts(parts, body);
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let updated = serde_json::from_slice::<serde_json::Value>(&bytes).ok().and_then(|mut value| {
        let error = value.get_mut("error")?.as_object_mut()?;
        error.insert("request_id".into(), serde_json::Value::String(id.to_owned()));
        Some(value.to_string())
    });
    match updated {
        Some(text) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(text))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::well_formed;

    #[test]
    fn only_plain_short_ids_are_kept() {
        assert!(well_formed("abc-123_x.y"));
        assert!(!well_formed(""));
        assert!(!well_formed(&"a".repeat(65)));
        for bad in ["a b", "a\nb", "id\"inject", "<script>", "a/b", "é"] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }
}
