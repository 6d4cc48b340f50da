//! The OpenAPI document: generated from the code, its operations exactly the
//! route table's, every protected operation naming the scope the guard
//! enforces; served publicly at `/v1/openapi.json`; and, with schemathesis,
//! the live API answering only documented statuses and bodies.

use std::collections::BTreeSet;

use moat::auth::Access;
use serde_json::Value;

use crate::harness::{Options, spawn_app};

fn document() -> Value {
    serde_json::to_value(moat::http::openapi_document()).unwrap()
}

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete", "head", "options", "trace"];

#[test]
fn the_documents_operations_are_exactly_the_route_table() {
    let doc = document();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            METHODS.iter().filter(|m| item.get(**m).is_some()).map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> =
        moat::http::route_table().iter().map(|r| (r.method.to_string(), r.path.to_owned())).collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(undocumented.is_empty() && unrouted.is_empty(), "undocumented: {undocumented:?}; not routed: {unrouted:?}");
}

#[test]
fn every_operation_lists_the_scope_its_route_requires() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for route in moat::http::route_table() {
        let operation = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
        let label = format!("{} {}", route.method, route.path);
        let security = operation.get("security");
        match route.access {
            Access::Public => assert!(security.is_none(), "{label} is public but documents {security:?}"),
            Access::Authenticated => {
                assert_eq!(security, Some(&serde_json::json!([{"bearer": []}])), "{label}");
            }
            Access::Scope(scope) => {
                assert_eq!(security, Some(&serde_json::json!([{"bearer": [scope.as_str()]}])), "{label}");
            }
        }
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.keys().any(|code| code.starts_with(['1', '2', '3'])), "{label}: no success response");
        if route.access != Access::Public {
            for code in ["401", "403"] {
                assert!(responses.contains_key(code), "{label}: {code} undocumented");
            }
        }
        assert!(operation["summary"].as_str().is_some_and(|s| !s.is_empty()), "{label}: no summary");
    }
    // Every response, inline or shared, says what it is (OpenAPI requires a description).
    let shared = &doc["components"]["responses"];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS.iter().filter_map(|m| item.get(*m)) {
            for (code, response) in method["responses"].as_object().unwrap() {
                let response = match response.get("$ref").and_then(Value::as_str) {
                    Some(reference) => &shared[reference.trim_start_matches("#/components/responses/")],
                    None => response,
                };
                assert!(response["description"].as_str().is_some_and(|d| !d.is_empty()), "{path} {code}");
            }
        }
    }
}

#[tokio::test]
async fn the_document_is_served_publicly() {
    let app = spawn_app(Options::default()).await;
    let response = app.http.get(app.url("/v1/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    assert!(response.headers().contains_key("x-content-type-options"), "security headers on the document too");
    let served: Value = response.json().await.unwrap();
    assert_eq!(served, document());
}
