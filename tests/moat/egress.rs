//! The egress policy, attacked: a destination the operator did not allow is
//! refused at startup; a name that is allowed but resolves to loopback is
//! refused at connect time (DNS rebinding) and audited; redirects are checked
//! again; metadata addresses are refused in every mode.

use std::time::Duration;

use axum::response::Redirect;
use moat::identity::Role;
use serde_json::{Value, json};

use crate::harness::provider::{CLIENT_SECRET, FakeProvider};
use crate::harness::{self, Env, Options, TestDb, spawn_app};

/// A provider whose token endpoint is reached by the name `localhost` (which resolves to loopback).
fn providers_file_by_name(provider: &FakeProvider, dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(provider.providers_file(dir))
        .unwrap()
        .replace("https://127.0.0.1", "https://localhost");
    let path = dir.join("by-name.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn a_provider_outside_the_allowlist_is_refused_at_startup_except_loudly_in_development() {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::migrated().await;
    let env = Env::production(&db)
        .set("MOAT_PROVIDERS_FILE", provider.providers_file(dir.path()).to_str().unwrap())
        .set("FAKE_PROVIDER_SECRET", CLIENT_SECRET);
    let out = harness::run(&["check"], &env.clone().set("MOAT_EGRESS_ALLOW", "accounts.example.com")).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
    assert!(out.stderr.contains("MOAT_EGRESS_ALLOW"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("add `127.0.0.1:{}`", provider.egress_allow().rsplit(':').next().unwrap())),
        "{}",
        out.stderr
    );
    assert!(!out.all_output().contains("DEV_BYPASS"));
    let ok = harness::run(&["check"], &env.clone().set("MOAT_EGRESS_ALLOW", &provider.egress_allow())).await;
    assert_eq!(ok.status.code(), Some(0), "{}", ok.all_output());
    let dev = harness::run(&["check"], &env.clone().set("MOAT_ENV", "development")).await;
    assert_eq!(dev.status.code(), Some(0), "{}", dev.all_output());
    assert!(dev.all_output().contains("DEV_BYPASS egress: allowing 127.0.0.1"), "{}", dev.all_output());
    for bad in ["http://x.example", "*", "a..b"] {
        let out = harness::run(&["check"], &env.clone().set("MOAT_EGRESS_ALLOW", bad)).await;
        assert_eq!(out.status.code(), Some(1), "{bad}");
    }
}

/// The name is allowed, but it resolves to a loopback address that is not:
/// the connection is refused when the address is known — at connect time —
/// the broker answers `egress_refused`, and the refusal is in the audit log.
#[tokio::test]
async fn an_allowed_name_resolving_to_a_forbidden_address_is_refused_at_connect_time_and_audited() {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::migrated().await;
    let port = provider.egress_allow().rsplit(':').next().unwrap().to_owned();
    let env = Env::production(&db)
        .set("MOAT_PROVIDERS_FILE", &providers_file_by_name(&provider, dir.path()))
        .set("FAKE_PROVIDER_SECRET", CLIENT_SECRET)
        .set("MOAT_EGRESS_ALLOW", &format!("localhost:{port}"));
    let app = spawn_app(Options { env: Some(env), db: Some(db), ..Options::default() }).await;
    let (_, _, token) = app.signed_in(Role::Admin).await;
    let import = json!({"provider": "fake", "account": "cal", "access_token": "stale",
        "refresh_token": provider.issue_refresh_token(), "expires_in": 0});
    let created = crate::harness::http::post_json(&app.http, &app.url("/v1/integrations"), Some(&token), import).await;
    let id = created["id"].as_str().unwrap();
    let response = app
        .http
        .post(app.url(&format!("/v1/integrations/{id}/access-token")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(crate::harness::error_code(response).await, "egress_refused");
    assert_eq!(provider.refresh_attempts(), 0, "the provider was reached");
    let audit: Value = app.get_as(&token, "/v1/audit-log").await.json().await.unwrap();
    let refusal = audit["items"].as_array().unwrap().iter().find(|e| e["event"] == "egress_refused").cloned();
    let refusal = refusal.expect("an egress_refused audit event");
    assert!(refusal.to_string().contains("loopback"), "{refusal}");
}

/// Redirects are checked like the first request: one towards a metadata
/// address, or towards a host not allowed, is refused before it is followed.
#[tokio::test]
async fn every_redirect_is_checked_again() {
    let app = axum::Router::new()
        .route(
            "/to-metadata",
            axum::routing::get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
        )
        .route("/to-elsewhere", axum::routing::get(|| async { Redirect::temporary("http://127.0.0.2:9/x") }))
        .route("/to-self", axum::routing::get(|| async { Redirect::temporary("/final") }))
        .route("/final", axum::routing::get(|| async { "arrived" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let policy = moat::egress::Egress::parse(Some(&format!("127.0.0.1:{}", addr.port())), None).unwrap();
    let client = policy.client_builder().timeout(Duration::from_secs(5)).build().unwrap();
    let get = |path: &str| client.get(format!("http://{addr}{path}")).send();
    assert_eq!(get("/to-self").await.unwrap().text().await.unwrap(), "arrived");
    for path in ["/to-metadata", "/to-elsewhere"] {
        let error = get(path).await.expect_err(path);
        let refused =
            moat::egress::refusal(&error).unwrap_or_else(|| panic!("{path}: not a policy refusal: {error:?}"));
        assert!(!refused.reason.is_empty());
    }
    // A name the policy allows but which resolves to a metadata-range address is refused by the resolver too.
    let loose = moat::egress::Egress::parse(Some("localhost"), None).unwrap();
    let client = loose.client_builder().timeout(Duration::from_secs(5)).build().unwrap();
    let error = client.get(format!("http://localhost:{}/final", addr.port())).send().await.expect_err("loopback");
    assert!(moat::egress::refusal(&error).is_some_and(|r| r.reason.contains("loopback")), "{error:?}");
}
