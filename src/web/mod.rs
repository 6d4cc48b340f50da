//! The browser app at `/`: static files embedded in the binary (plain ES
//! modules, no build step, nothing fetched from anywhere but this origin),
//! served under a strict Content-Security-Policy — no inline script or style,
//! so agent output that slips into the page as markup still cannot run.
//!
//! The app is a client like any other: it holds its access token in memory
//! only, restores sessions through the refresh cookie, and watches runs over
//! the WebSocket (docs/websocket.md).

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use crate::http::{ApiError, Routes};
use crate::identity::Access;

/// The policy for the app's HTML (the API's responses keep `default-src 'none'`).
pub const HTML_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Every file the app consists of: name, content type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("assets/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("assets/api.js")),
    ("stream.js", "text/javascript; charset=utf-8", include_str!("assets/stream.js")),
    ("view.js", "text/javascript; charset=utf-8", include_str!("assets/view.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("assets/style.css")),
];
const INDEX: &str = include_str!("assets/index.html");

pub fn routes<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
{
    Routes::new().get("/", Access::Public, index).get("/assets/{name}", Access::Public, asset)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(index, asset))]
pub(crate) struct Api;

/// The web app's page (under a strict CSP).
#[utoipa::path(get, path = "/", tag = "web", responses(
    (status = 200, description = "The page", content_type = "text/html"),
    (status = 304, description = "Unchanged (`If-None-Match`)"),
))]
async fn index(headers: HeaderMap) -> Response {
    let mut response = file(&headers, "text/html; charset=utf-8", INDEX);
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(HTML_CSP));
    response
}

/// One of the web app's scripts or its stylesheet.
#[utoipa::path(get, path = "/assets/{name}", tag = "web", params(("name" = String, Path, description = "e.g. `app.js`")), responses(
    (status = 200, description = "The asset", content((String = "text/javascript"), (String = "text/css"))),
    (status = 304, description = "Unchanged (`If-None-Match`)"),
))]
async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => file(&headers, content_type, body),
        None => ApiError::not_found().into_response(),
    }
}

/// A file with an ETag; browsers revalidate every time (`no-cache`), so a new
/// binary's app is never mixed with an old cached module.
fn file(headers: &HeaderMap, content_type: &'static str, body: &'static str) -> Response {
    let digest = Sha256::digest(body.as_bytes());
    let etag = format!("\"{}\"", digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>());
    let cache = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""))),
    ];
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}
