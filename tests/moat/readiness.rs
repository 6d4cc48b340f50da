//! `/readyz` follows the database: 503 while it cannot be reached, 200 again
//! once it is back, without restarting Moat. The database "goes down" behind a
//! small TCP relay this test controls (the server itself is shared by all tests).

use std::time::Duration;

use crate::harness::relay::Relay;
use crate::harness::{Env, Options, Role, TestDb, assert_security_headers, spawn_app};

async fn ready_status(http: &reqwest::Client, url: &str) -> (u16, String) {
    let response = http.get(url).send().await.unwrap();
    assert_security_headers(response.headers(), "readyz");
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn readyz_is_503_while_the_database_is_down_and_200_after_it_returns() {
    let db = TestDb::migrated().await;
    let relay = Relay::start(db.upstream()).await;
    let env = Env::production(&db).set("DATABASE_URL", &db.url_via(Role::App, relay.port));
    let app = spawn_app(Options { env: Some(env), db: Some(db), ..Options::default() }).await;
    let url = app.url("/readyz");
    assert_eq!(ready_status(&app.http, &url).await, (200, r#"{"status":"ready"}"#.into()));

    relay.down();
    let (status, body) = ready_status(&app.http, &url).await;
    assert_eq!((status, body.as_str()), (503, r#"{"status":"unavailable"}"#), "no detail may leak");
    assert_eq!(app.get("/healthz").await.status(), 200, "liveness does not depend on the database");

    relay.up();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = ready_status(&app.http, &url).await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "readyz did not recover after the database returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A lost database is classified once: every capability answers the same
/// 503 `unavailable` with `Retry-After` (the integrations API used to add the
/// header and the others not), and no driver text leaks.
#[tokio::test]
async fn every_capability_answers_an_unreachable_database_the_same_way() {
    let db = TestDb::migrated().await;
    let relay = Relay::start(db.upstream()).await;
    let env = Env::production(&db).set("DATABASE_URL", &db.url_via(Role::App, relay.port));
    let app = spawn_app(Options { env: Some(env), db: Some(db), ..Options::default() }).await;
    let (_, _, token) = app.signed_in(moat::identity::Role::Admin).await;

    relay.down();
    let login = serde_json::json!({"email": "nobody@example.com", "password": "correct horse battery"});
    let requests = [
        ("GET", "/v1/me"),
        ("GET", "/v1/users"),
        ("GET", "/v1/audit-log"),
        ("GET", "/v1/integrations"),
        ("GET", "/v1/conversations"),
        ("GET", "/v1/files"),
        ("POST", "/v1/auth/login"),
    ];
    for (method, path) in requests {
        let request = match method {
            "GET" => app.http.get(app.url(path)).bearer_auth(&token),
            _ => app.http.post(app.url(path)).json(&login),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            (status, retry_after.as_deref(), body["error"]["code"].as_str()),
            (503, Some("1"), Some("unavailable")),
            "{method} {path}: {body}"
        );
        let text = body.to_string().to_lowercase();
        assert!(!text.contains("postgres") && !text.contains("sqlstate") && !text.contains("connection"), "{text}");
    }
    relay.up();
}
