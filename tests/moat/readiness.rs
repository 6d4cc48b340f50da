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
