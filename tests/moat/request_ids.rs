//! Request ids: on every response, in every error body, in the log lines of
//! the request (with the organization); an inbound id is believed only from a
//! trusted proxy.

use moat::identity::Role;
use serde_json::Value;

use crate::harness::{self, Env, Options, TestDb, spawn_app};

fn id_of(response: &reqwest::Response) -> String {
    response.headers().get("x-request-id").expect("x-request-id").to_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_response_and_error_body_carries_the_request_id() {
    let app = spawn_app(Options::default()).await;
    let ok = app.http.get(app.url("/healthz")).send().await.unwrap();
    let first = id_of(&ok);
    assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first}");
    let again = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_ne!(id_of(&again), first, "ids must differ per request");
    // Errors from the guard, the fallback, and a handler: the body names the same id as the header.
    let (_, _, token) = app.signed_in(Role::Member).await;
    let cases = [
        app.http.get(app.url("/v1/conversations")).send().await.unwrap(),
        app.http.get(app.url("/no/such/route")).send().await.unwrap(),
        app.http.get(app.url(&format!("/v1/runs/{}", uuid::Uuid::new_v4()))).bearer_auth(&token).send().await.unwrap(),
        app.http.get(app.url("/v1/audit-log")).bearer_auth(&token).send().await.unwrap(),
    ];
    for response in cases {
        let status = response.status();
        assert!(status.is_client_error(), "{status}");
        let id = id_of(&response);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["request_id"], id.as_str(), "{status}: {body}");
        assert!(body["error"]["code"].is_string());
    }
}

#[tokio::test]
async fn an_inbound_request_id_is_believed_only_from_a_trusted_proxy() {
    // Untrusted peer: replaced.
    let app = spawn_app(Options::default()).await;
    let response = app.http.get(app.url("/healthz")).header("x-request-id", "chosen-by-client").send().await.unwrap();
    assert_ne!(id_of(&response), "chosen-by-client");
    // Loopback as a trusted proxy: a well-formed id is kept, a malformed one replaced.
    let db = TestDb::migrated().await;
    let env = Env::production(&db).set("MOAT_TRUSTED_PROXIES", "127.0.0.1/32");
    let app = spawn_app(Options { env: Some(env), db: Some(db), ..Options::default() }).await;
    let kept = app.http.get(app.url("/healthz")).header("x-request-id", "lb-7f3a.01_x").send().await.unwrap();
    assert_eq!(id_of(&kept), "lb-7f3a.01_x");
    for bad in ["has space", "a\"quote", &"x".repeat(65)] {
        let replaced = app.http.get(app.url("/healthz")).header("x-request-id", bad).send().await.unwrap();
        assert_ne!(id_of(&replaced), bad);
        assert!(uuid::Uuid::parse_str(&id_of(&replaced)).is_ok());
    }
}

/// A production `moat serve` logging JSON: the lines of one request carry its
/// id and, once authenticated, the organization; never the query string.
#[tokio::test]
async fn json_log_lines_carry_the_request_id_and_the_organization() {
    let db = TestDb::migrated().await;
    let env = Env::production(&db).set("MOAT_LOG_FORMAT", "json");
    let serving = harness::serve(&env).await;
    let admin = harness::http::admin_in(&db).await;
    let http = reqwest::Client::new();
    let token = harness::http::login_at(&http, &serving.url(""), admin.email, &admin.password).await;
    let response =
        http.get(serving.url("/v1/conversations?limit=5&secret=q")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let id = id_of(&response);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let output = serving.output();
    let lines: Vec<Value> =
        output.lines().filter(|l| l.contains(&id)).map(|l| serde_json::from_str(l).expect("a JSON log line")).collect();
    assert!(!lines.is_empty(), "no log line carries the request id {id}:\n{output}");
    let access = lines.iter().find(|l| l["target"] == "moat::access").expect("the access line");
    assert_eq!(access["span"]["request_id"], id.as_str(), "{access}");
    assert_eq!(access["span"]["org_id"], admin.org.to_string().as_str(), "{access}");
    for key in ["timestamp", "level", "target"] {
        assert!(access.get(key).is_some(), "{key} missing: {access}");
    }
    assert!(!output.contains("secret=q"), "a query string reached the log");
    serving.terminate().await;
}
