//! The OpenAPI 3.1 description of every route, served at `/v1/openapi.json`.
//!
//! Generated from the code so it cannot drift: each handler carries a
//! `#[utoipa::path]` (path, parameters, body, success responses) and each
//! capability lists its handlers in an `Api` struct. What the route table
//! already knows is not repeated there: [`document`] walks
//! the route table and sets every operation's security requirement from
//! the route's declared [`Access`] (the same declaration the guard enforces),
//! and adds the error responses the shared layers produce. A test asserts that
//! the document's operations are exactly the route table's.
//!
//! The document is public: it describes the API's shape, which is no secret
//! (the same as published API docs); it holds no tenant data.

use axum::http::Method;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::Routes;
use crate::identity::Access;

/// `{"error":{"code":"…","message":"…","request_id":"…"}}`: every error Moat answers.
#[derive(ToSchema)]
#[allow(dead_code)] // a description of the bodies `ApiError` writes
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable, snake_case: what clients branch on.
    #[schema(pattern = "^[a-z][a-z0-9_]*$", example = "not_found")]
    code: String,
    /// For people; may change.
    message: String,
    /// The id in the response's `X-Request-Id` header, for support requests.
    request_id: Option<String>,
}

/// The cursor pagination every list endpoint takes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageQuery {
    /// Items per page: default 50; values above 200 are capped at 200.
    #[param(minimum = 1)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (opaque).
    cursor: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Moat API",
        // The API's version, not the build's (which stays behind metrics:read).
        version = "1",
        description = "The secure backbone of an AI-agent platform. Every operation lists the scope its bearer token needs; see docs/api.md."
    ),
    components(schemas(ErrorBody, ErrorDetail))
)]
struct Base;

/// The document for `routes` (the application's route table), from each
/// capability's part (its `Api`).
pub fn document<S: Clone + Send + Sync + 'static>(routes: &Routes<S>, parts: Vec<Document>) -> Document {
    let mut doc = Base::openapi();
    for part in parts {
        doc.merge(part);
    }
    let components = doc.components.get_or_insert_with(Default::default);
    let bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
    components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
    let error = ResponseBuilder::new()
        .description("An error: a stable `code`, a message, the request id")
        .content("application/json", Content::new(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody")))))
        .build();
    components.responses.insert("Error".into(), RefOr::T(error));
    for route in routes.table() {
        if let Some(operation) = operation_mut(&mut doc, route.path, &route.method) {
            complete(operation, route.path, &route.method, route.access);
        }
    }
    doc
}

/// Security from the route's access, and the errors the shared layers answer.
fn complete(operation: &mut Operation, path: &str, method: &Method, access: Access) {
    let mut errors = vec!["500", "503"];
    match access {
        Access::Public => {}
        Access::Authenticated => {
            operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
            errors.extend(["401", "403"]);
        }
        Access::Scope(scope) => {
            operation.security = Some(vec![SecurityRequirement::new("bearer", [scope.as_str()])]);
            errors.extend(["401", "403"]);
        }
    }
    let has_params = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    if has_params || operation.request_body.is_some() {
        errors.push("400");
    }
    if path.contains('{') {
        errors.push("404");
    }
    if operation.request_body.is_some() {
        errors.extend(["413", "415", "422"]);
    }
    if *method != Method::GET {
        errors.push("405");
    }
    for code in errors {
        operation
            .responses
            .responses
            .entry(code.into())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name("Error")));
    }
}

fn operation_mut<'a>(doc: &'a mut Document, path: &str, method: &Method) -> Option<&'a mut Operation> {
    let item = doc.paths.paths.get_mut(path)?;
    match *method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        _ => None,
    }
}

/// Every documented operation as `(METHOD, path)`, for the route-table test.
pub fn operations(doc: &Document) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, operation) in [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::PUT, &item.put),
            (Method::PATCH, &item.patch),
            (Method::DELETE, &item.delete),
            (Method::HEAD, &item.head),
            (Method::OPTIONS, &item.options),
            (Method::TRACE, &item.trace),
        ] {
            if operation.is_some() {
                out.push((method, path.clone()));
            }
        }
    }
    out
}
