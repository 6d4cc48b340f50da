//! The outermost middleware of every route, as one layer (each `from_fn`
//! layer costs a boxed future and a clone of the inner service per request;
//! measured in docs/performance.md). In order:
//! 1. the request id ([`super::request_id`]) and the `request` span that every
//!    log line of the request carries;
//! 2. the inner layers and the handler;
//! 3. the HTTP metrics (by route template; timeouts and caught panics count);
//! 4. the access line: method, path **without the query string** (WebSocket
//!    tokens ride there), status and latency — nothing else from the request;
//! 5. the response's last steps ([`super::headers::finish`]: JSON error bodies,
//!    the development header, the security headers), then the request id in
//!    `X-Request-Id` and in JSON error bodies;
//! 6. a request body the handler left unread is kept until the response is
//!    sent, then drained, bounded ([`super::body`]).
//!
//! Nothing taken from the request becomes a metric label or an unbounded log
//! field: the method is mapped onto the standard set (anything else is
//! `other`), and the logged path is cut at 256 characters.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use super::{headers, request_id};
use crate::config::{Config, Environment};
use crate::metrics::Metrics;

/// What the edge layer reads: the configuration (trusted proxies, the
/// environment) and the metrics it records every request in.
#[derive(Clone)]
pub struct EdgeState {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
}

/// The longest path the access log prints.
const MAX_LOGGED_PATH: usize = 256;

/// A method as a metric label or log field: one of the standard methods, or `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The path as logged: at most [`MAX_LOGGED_PATH`] characters.
fn logged_path(path: &str) -> &str {
    match path.char_indices().nth(MAX_LOGGED_PATH) {
        Some((cut, _)) => &path[..cut],
        None => path,
    }
}

pub async fn edge(State(state): State<EdgeState>, mut request: Request, next: Next) -> Response {
    let id = request_id::assign(&state.config.trusted_proxies, &mut request);
    let span = tracing::info_span!("request", request_id = %id, org_id = tracing::field::Empty);
    let started = std::time::Instant::now();
    let method = method_label(request.method());
    let path = logged_path(request.uri().path()).to_owned();
    let parked = super::body::park_unread(&mut request);
    // An `Arc` clone: the metrics copy the template once, in `record_http`.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics.record_http(route, method, status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            target: "moat::access",
            method,
            path = %path,
            status,
            latency_ms = %format_args!("{:.3}", elapsed.as_secs_f64() * 1000.0),
            "request"
        );
    });
    let dev_mode = state.config.environment == Environment::Development;
    let response = request_id::stamp(headers::finish(dev_mode, response).await, &id).await;
    super::body::after_response(response, parked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_set_are_one_label() {
        let odd = axum::http::Method::from_bytes(b"QWERTYUIOPASDF").unwrap_or_default();
        assert_eq!(method_label(&odd), "other");
        assert_eq!(method_label(&axum::http::Method::PATCH), "PATCH");
    }

    #[test]
    fn logged_paths_are_cut() {
        let long = format!("/{}", "é".repeat(1000));
        assert_eq!(logged_path(&long).chars().count(), MAX_LOGGED_PATH);
        assert_eq!(logged_path("/v1/me"), "/v1/me");
    }
}
