//! Helpers for tests that drive real `moat serve` processes over HTTP.

use moat::identity::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use super::pg::{Role as DbRole, TestDb};

/// An organization with one admin user, made straight in the database.
pub struct Admin {
    pub pool: moat::db::Pool,
    pub org: Uuid,
    pub email: &'static str,
    pub password: String,
}

pub async fn admin_in(db: &TestDb) -> Admin {
    let pool = moat::db::DatabaseSettings::parse(&db.url(DbRole::App)).unwrap().pool(2).unwrap();
    let org = moat::admin::create_org(&pool, "Acme").await.unwrap().0;
    let password = moat::admin::generate_password();
    let email = "ada@example.com";
    moat::admin::create_user(&pool, org, email, Role::Admin, password.clone()).await.unwrap();
    Admin { pool, org, email, password }
}

/// Logs in at `base` (a serving process) and returns the access token.
pub async fn login_at(http: &reqwest::Client, base: &str, email: &str, password: &str) -> String {
    let body =
        post_json(http, &format!("{base}/v1/auth/login"), None, json!({ "email": email, "password": password })).await;
    body["access_token"].as_str().expect("access_token").to_owned()
}

/// POSTs JSON (with a bearer token if given) and returns the JSON answer.
pub async fn post_json(http: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> Value {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// GETs JSON with a bearer token.
pub async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// Polls `GET {base}/v1/runs/{run}` until its status is `wanted` (20 s at most).
pub async fn wait_run_status(http: &reqwest::Client, base: &str, token: &str, run: &str, wanted: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let body = get_json(http, &format!("{base}/v1/runs/{run}"), token).await;
        if body["status"] == wanted {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "run {run} never reached {wanted}: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// An error body with its per-request `request_id` removed (asserted present),
/// so bodies of different requests can be compared.
pub fn without_request_id(body: &str) -> Value {
    let mut value: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    let removed = value["error"].as_object_mut().and_then(|e| e.remove("request_id"));
    assert!(removed.is_some_and(|id| id.is_string()), "no request_id in {body}");
    value
}
