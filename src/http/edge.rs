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
//!    `X-Request-Id` and in JSON error bodies.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use super::{headers, request_id};
use crate::AppState;
use crate::config::Environment;

pub async fn edge(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let id = request_id::assign(&state, &mut request);
    let span = tracing::info_span!("request", request_id = %id, org_id = tracing::field::Empty);
    let started = std::time::Instant::now();
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    // An `Arc` clone: the metrics copy the template once, in `record_http`.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics.record_http(route, method.as_str(), status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            target: "moat::access",
            method = %method,
            path = %path,
            status,
            latency_ms = %format_args!("{:.3}", elapsed.as_secs_f64() * 1000.0),
            "request"
        );
    });
    let dev_mode = state.config.environment == Environment::Development;
    request_id::stamp(headers::finish(dev_mode, response).await, &id).await
}
