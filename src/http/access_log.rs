//! One access-log line per request: method, path **without the query string**
//! (WebSocket tokens ride there), status and latency. Nothing else from the
//! request — no headers, no body — is ever logged.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

pub async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::info!(
        target: "moat::access",
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        latency_ms = %format_args!("{:.3}", started.elapsed().as_secs_f64() * 1000.0),
        "request"
    );
    response
}
