//! The HTTP surface: merges every capability's `router()` in one place and
//! wraps the result in the layers every response goes through.
//!
//! Layer order, outermost first: [`edge`] (request id + span, metrics, access
//! log, JSON error bodies, in development `X-Moat-Dev-Mode`, the security
//! headers) → panic catcher → request timeout → body limit → per route, the
//! bearer guard → handler. The layers are added after `.fallback`, so 404s and
//! 405s are wrapped too. Each `from_fn` layer costs a boxed future per
//! request, so there is one (docs/performance.md).

mod body;
mod client_ip;
pub mod conn;
pub mod cookies;
mod edge;
pub mod error;
mod headers;
pub mod openapi;
pub mod pagination;
pub mod request_id;
mod routes;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

pub use client_ip::{ClientIp, resolve as resolve_client_ip};
pub use edge::method_label;
pub use error::{ApiError, ApiJson};
pub use routes::{RouteInfo, Routes};

use crate::AppState;

/// Every capability's routes, merged in this one place.
fn app_routes() -> Routes {
    crate::health::routes()
        .merge(crate::auth::routes())
        .merge(crate::users::routes())
        .merge(crate::audit::routes())
        .merge(crate::integrations::routes())
        .merge(crate::runs::routes())
        .merge(crate::ws::routes())
        .merge(crate::files::routes())
        .merge(crate::metrics::routes())
        .merge(crate::web::routes())
        .merge(Routes::new().get("/v1/openapi.json", crate::auth::Access::Public, openapi::openapi_json))
}

/// Every route Moat serves, with the access it requires (for tests and docs).
pub fn route_table() -> Vec<RouteInfo> {
    app_routes().table()
}

/// The OpenAPI document of every route (also served at `/v1/openapi.json`).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    openapi::document(&app_routes())
}

/// The complete application: Moat's routes plus `extra` (tests add probes here).
pub fn router(state: AppState, extra: Routes) -> Router {
    let config = state.config.clone();
    app_routes()
        .merge(extra)
        .into_router(&state.tokens)
        .fallback(|| async { ApiError::not_found() })
        .layer(DefaultBodyLimit::max(config.json_body_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, config.request_timeout))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(middleware::from_fn_with_state(state.clone(), edge::edge))
        .with_state(state)
}
