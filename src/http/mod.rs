//! The HTTP toolkit: the route table with its guard ([`Routes`], [`guard`]),
//! the error shape ([`ApiError`]), the JSON extractor, pagination, cookies,
//! the client address, connection limits and the edge layer every response
//! goes through ([`router`]). It knows no capability and no application
//! state: routes and state come from the composition root (`crate::app`).
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
pub mod guard;
mod headers;
pub mod openapi;
pub mod pagination;
mod path;
pub mod request_id;
mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

pub use client_ip::{ClientIp, resolve as resolve_client_ip};
pub use edge::{EdgeState, method_label};
pub use error::{ApiError, ApiJson};
pub use path::PathId;
pub use routes::{RouteInfo, Routes};

use crate::identity::TokenKeys;

/// The complete application from its routes and state: the guard in front of
/// every non-public route, the JSON 404 fallback, then the layers every
/// response goes through (in the order the module documentation gives).
pub fn router<S: Clone + Send + Sync + 'static>(
    routes: Routes<S>,
    state: S,
    keys: &Arc<TokenKeys>,
    edge: EdgeState,
) -> Router {
    let config = edge.config.clone();
    routes
        .into_router(keys)
        .fallback(|| async { ApiError::not_found() })
        .layer(DefaultBodyLimit::max(config.json_body_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, config.request_timeout))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(middleware::from_fn_with_state(edge, edge::edge))
        .with_state(state)
}
