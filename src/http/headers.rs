//! Security headers on every response, whatever produced it (handler, fallback,
//! a rejected body, a timeout or a caught panic): this layer is applied last,
//! outside everything else, by [`super::edge`].

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

/// Headers every response carries, overriding anything set earlier.
const ALWAYS: &[(&str, &str)] = &[
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// API defaults a route may replace (the web app sets its own CSP and caching).
const DEFAULTS: &[(&str, &str)] =
    &[("content-security-policy", "default-src 'none'; frame-ancestors 'none'"), ("cache-control", "no-store")];

pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in ALWAYS {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    for (name, value) in DEFAULTS {
        if !headers.contains_key(*name) {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
    }
    headers.remove("server");
    headers.remove("x-powered-by");
    response
}

/// The last steps of every response: JSON error bodies, then (development
/// only) the `X-Moat-Dev-Mode` header that tells every client it is not
/// talking to a production Moat, then the security headers.
pub async fn finish(dev_mode: bool, response: Response) -> Response {
    let mut response = super::error::json_errors(response).await;
    if dev_mode {
        response.headers_mut().insert("x-moat-dev-mode", HeaderValue::from_static("1"));
    }
    security_headers(response).await
}
