//! Every capability's routes and OpenAPI part, merged in this one place.

use axum::Json;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi as Document;

use super::AppState;
use crate::http::{RouteInfo, Routes};
use crate::identity::Access;

/// Every capability's routes.
fn app_routes() -> Routes<AppState> {
    crate::health::routes()
        .merge(crate::auth::routes())
        .merge(crate::users::routes())
        .merge(crate::audit::routes())
        .merge(crate::integrations::routes())
        .merge(crate::runs::routes())
        .merge(crate::files::routes())
        .merge(crate::web::routes())
        .merge(Routes::new().get("/v1/openapi.json", Access::Public, openapi_json))
}

/// Every capability's part of the OpenAPI document.
fn parts() -> Vec<Document> {
    vec![
        crate::health::Api::openapi(),
        crate::auth::Api::openapi(),
        crate::users::Api::openapi(),
        crate::audit::Api::openapi(),
        crate::integrations::Api::openapi(),
        crate::runs::Api::openapi(),
        crate::runs::ws::Api::openapi(),
        crate::files::Api::openapi(),
        crate::web::Api::openapi(),
        ThisDocument::openapi(),
    ]
}

/// Every route Moat serves, with the access it requires (for tests and docs).
pub fn route_table() -> Vec<RouteInfo> {
    app_routes().table()
}

/// The OpenAPI document of every route (also served at `/v1/openapi.json`).
pub fn openapi_document() -> Document {
    crate::http::openapi::document(&app_routes(), parts())
}

/// The complete application: Moat's routes plus `extra` (tests add probes here).
pub fn router(state: AppState, extra: Routes<AppState>) -> Router {
    let (tokens, edge) = (state.tokens.clone(), state.edge());
    crate::http::router(app_routes().merge(extra), state, &tokens, edge)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(openapi_json))]
struct ThisDocument;

/// `GET /v1/openapi.json`: this document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json")))]
async fn openapi_json() -> Response {
    let mut response = Json(openapi_document()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
