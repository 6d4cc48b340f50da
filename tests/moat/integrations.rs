//! Integrations and the credential broker against a fake OAuth provider:
//! refresh exactly once across processes, the lock shown to matter, crash
//! safety, honest failure outcomes, sealing, key rotation, the connect flow.

use std::time::Duration;

use moat::identity::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::http::{admin_in, login_at, post_json};
use crate::harness::provider::{CLIENT_SECRET, Failure, FakeProvider};
use crate::harness::{self, Env, Options, Role as DbRole, TestApp, TestDb, error_code, spawn_app};

/// A production environment with the fake provider configured.
fn env_with(db: &TestDb, provider: &FakeProvider, dir: &tempfile::TempDir) -> Env {
    Env::production(db)
        .set("MOAT_PROVIDERS_FILE", provider.providers_file(dir.path()).to_str().unwrap())
        .set("MOAT_EGRESS_ALLOW", &provider.egress_allow())
        .set("FAKE_PROVIDER_SECRET", CLIENT_SECRET)
}

struct Setup {
    app: TestApp,
    provider: FakeProvider,
    token: String,
    org: Uuid,
    _dir: tempfile::TempDir,
}

async fn setup_with(configure: Option<fn(&mut moat::config::Config)>, extra_env: &[(&str, &str)]) -> Setup {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::migrated().await;
    let mut env = env_with(&db, &provider, &dir);
    for (k, v) in extra_env {
        env = env.set(k, v);
    }
    let app = spawn_app(Options { env: Some(env), db: Some(db), configure, ..Options::default() }).await;
    let (org, _, token) = app.signed_in(Role::Admin).await;
    Setup { app, provider, token, org, _dir: dir }
}

async fn setup() -> Setup {
    setup_with(None, &[]).await
}

/// Imports an integration whose access token expires in `expires_in` seconds.
async fn import(app: &TestApp, token: &str, account: &str, refresh: Option<&str>, expires_in: u64) -> Value {
    let response = app
        .http
        .post(app.url("/v1/integrations"))
        .bearer_auth(token)
        .json(&json!({
            "provider": "fake",
            "account": account,
            "access_token": format!("imported-access-{account}"),
            "refresh_token": refresh,
            "expires_in": expires_in,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    response.json().await.unwrap()
}

async fn broker(http: &reqwest::Client, base: &str, token: &str, id: &str) -> reqwest::Response {
    http.post(format!("{base}/v1/integrations/{id}/access-token")).bearer_auth(token).send().await.unwrap()
}

async fn status_of(app: &TestApp, token: &str, id: &str) -> String {
    let view: Value = app.get_as(token, &format!("/v1/integrations/{id}")).await.json().await.unwrap();
    view["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn fifty_callers_on_two_processes_cause_exactly_one_refresh() {
    let provider = FakeProvider::start().await;
    provider.set_latency(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::migrated().await;
    let env = env_with(&db, &provider, &dir);
    let (a, b) = (harness::serve(&env).await, harness::serve(&env).await);
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    let token = login_at(&http, &a.url(""), admin.email, &admin.password).await;
    let refreshed = fifty_callers_one_refresh(&http, [a.url(""), b.url("")], &token, &provider).await;
    let (id, tokens, seed) = (refreshed.id, [refreshed.access_token], refreshed.seed);
    let view: Value = http
        .get(a.url(&format!("/v1/integrations/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "active");
    let kid = moat::config::EncryptionKey::parse(env.get("MOAT_ENCRYPTION_KEY").unwrap(), None).unwrap().key_id();
    for serving in [a, b] {
        let log = serving.terminate().await.all_output();
        assert!(!log.contains(&tokens[0]) && !log.contains(&seed), "a token reached the log");
        assert!(!log.contains(&kid), "the encryption key id reached the log");
    }
}

/// What [`fifty_callers_one_refresh`] leaves behind.
pub(crate) struct Refreshed {
    pub id: String,
    pub access_token: String,
    pub seed: String,
}

/// Imports one expired integration on `bases[0]`, then 50 concurrent broker
/// calls alternate between the two instances: exactly one refresh at the
/// provider, and every caller gets the same new token.
pub(crate) async fn fifty_callers_one_refresh(
    http: &reqwest::Client,
    bases: [String; 2],
    token: &str,
    provider: &FakeProvider,
) -> Refreshed {
    let seed = provider.issue_refresh_token();
    let import =
        json!({"provider": "fake", "account": "cal", "access_token": "stale", "refresh_token": seed, "expires_in": 0});
    let created = post_json(http, &format!("{}/v1/integrations", bases[0]), Some(token), import).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let calls = (0..50).map(|i| broker(http, &bases[i % 2], token, &id));
    let mut tokens = Vec::new();
    for response in futures_util::future::join_all(calls).await {
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        let body: Value = response.json().await.unwrap();
        tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }
    tokens.dedup();
    assert_eq!(provider.refreshes(), 1, "the provider must see exactly one refresh");
    assert_eq!(provider.refresh_attempts(), 1);
    assert_eq!(tokens.len(), 1, "all 50 callers must receive the same new access token");
    assert!(tokens[0].starts_with("at-"), "{}", tokens[0]);
    Refreshed { id, access_token: tokens.remove(0), seed }
}

/// Without the PostgreSQL lock (a test-only seam no environment variable
/// reaches), two instances race: the single-use refresh token is spent twice
/// and the integration breaks. (Each instance still queues its own callers in
/// memory; only the database lock spans instances.)
#[tokio::test]
async fn without_the_lock_two_instances_break_the_integration() {
    let provider = FakeProvider::start().await;
    provider.set_latency(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::migrated().await;
    let env = env_with(&db, &provider, &dir);
    let unlocked = |config: &mut moat::config::Config| config.refresh_lock = false;
    let a =
        spawn_app(Options { env: Some(env.clone()), db: Some(db), configure: Some(unlocked), ..Options::default() })
            .await;
    let b = spawn_app(Options { env: Some(env), configure: Some(unlocked), ..Options::default() }).await;
    let (_, _, token) = a.signed_in(Role::Admin).await;
    let seed = provider.issue_refresh_token();
    let id = import(&a, &token, "cal", Some(&seed), 0).await["id"].as_str().unwrap().to_owned();

    let bases = [a.url(""), b.url("")];
    let calls = (0..20).map(|i| broker(&a.http, &bases[i % 2], &token, &id));
    let statuses: Vec<u16> = futures_util::future::join_all(calls).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(provider.refresh_attempts() > 1, "the provider saw {} refresh attempts", provider.refresh_attempts());
    assert!(statuses.contains(&409), "some callers were told to reconnect: {statuses:?}");
    assert_eq!(status_of(&a, &token, &id).await, "needs_reauth");
}

/// A holder killed while the provider is slow leaves no stuck lock.
#[tokio::test]
async fn a_killed_holder_leaves_no_stuck_lock() {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::migrated().await;
    let env = env_with(&db, &provider, &dir);
    let (a, b) = (harness::serve(&env).await, harness::serve(&env).await);
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    let (client_id, secret) = moat::admin::create_client(
        &admin.pool,
        admin.org,
        "agent",
        "integrations:use integrations:write integrations:read",
    )
    .await
    .unwrap();
    let token: Value = http
        .post(b.url("/v1/oauth/token"))
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let seed = provider.issue_refresh_token();
    let import =
        json!({"provider": "fake", "account": "cal", "access_token": "stale", "refresh_token": seed, "expires_in": 0});
    let created = post_json(&http, &b.url("/v1/integrations"), Some(&token), import).await;
    let id = created["id"].as_str().unwrap().to_owned();

    provider.set_failure(Some(Failure::Hang));
    let holder = tokio::spawn({
        let (http, base, token, id) = (http.clone(), a.url(""), token.clone(), id.clone());
        async move { http.post(format!("{base}/v1/integrations/{id}/access-token")).bearer_auth(token).send().await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while provider.refresh_attempts() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the holder never reached the provider");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill().await;
    assert!(holder.await.unwrap().is_err(), "the killed holder cannot have answered");
    provider.set_failure(None);

    let started = tokio::time::Instant::now();
    let response = broker(&http, &b.url(""), &token, &id).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?} for a dead holder's lock", started.elapsed());
    assert_eq!(provider.refreshes(), 1);
    drop(b);
}

#[tokio::test]
async fn invalid_grant_marks_the_integration_and_is_never_retried() {
    let s = setup().await;
    // A refresh token the provider does not (or no longer) know.
    let id =
        import(&s.app, &s.token, "cal", Some("rt-revoked-by-the-user"), 0).await["id"].as_str().unwrap().to_owned();
    let response = broker(&s.app.http, &s.app.url(""), &s.token, &id).await;
    assert_eq!(response.status(), 409);
    assert_eq!(error_code(response).await, "integration_needs_reauth");
    assert_eq!(status_of(&s.app, &s.token, &id).await, "needs_reauth");
    let attempts = s.provider.refresh_attempts();
    assert_eq!(broker(&s.app.http, &s.app.url(""), &s.token, &id).await.status(), 409);
    assert_eq!(s.provider.refresh_attempts(), attempts, "a dead refresh token must never be sent again");
    let log: Value = s.app.get_as(&s.token, "/v1/audit-log").await.json().await.unwrap();
    assert!(log["items"].as_array().unwrap().iter().any(|e| e["event"] == "integration_needs_reauth"), "{log}");
    // No refresh token at all: the same honest answer.
    let id = import(&s.app, &s.token, "no-refresh", None, 0).await["id"].as_str().unwrap().to_owned();
    assert_eq!(broker(&s.app.http, &s.app.url(""), &s.token, &id).await.status(), 409);
}

#[tokio::test]
async fn a_failing_provider_is_a_502_with_tokens_unchanged_and_a_cooldown() {
    let s = setup().await;
    let seed = s.provider.issue_refresh_token();
    let id = import(&s.app, &s.token, "cal", Some(&seed), 0).await["id"].as_str().unwrap().to_owned();
    s.provider.set_failure(Some(Failure::ServerError));
    let response = broker(&s.app.http, &s.app.url(""), &s.token, &id).await;
    assert_eq!(response.status(), 502);
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(error_code(response).await, "provider_unavailable");
    assert_eq!(status_of(&s.app, &s.token, &id).await, "active", "a provider outage is not the user's fault");
    // During the cooldown the provider is not called again.
    assert_eq!(broker(&s.app.http, &s.app.url(""), &s.token, &id).await.status(), 502);
    assert_eq!(s.provider.refresh_attempts(), 1);
    // After it, with the provider back, the untouched refresh token still works.
    s.provider.set_failure(None);
    tokio::time::sleep(moat::integrations::broker::COOLDOWN + Duration::from_millis(200)).await;
    let response = broker(&s.app.http, &s.app.url(""), &s.token, &id).await;
    assert_eq!(response.status(), 200);
    assert_eq!(s.provider.refreshes(), 1);
}

/// A provider answer is read to at most 1 MiB: one that never ends is a
/// provider failure within the provider timeout, not memory growing without bound.
#[tokio::test]
async fn an_endless_provider_answer_is_cut_at_one_mebibyte() {
    let s = setup().await;
    let seed = s.provider.issue_refresh_token();
    let id = import(&s.app, &s.token, "cal", Some(&seed), 0).await["id"].as_str().unwrap().to_owned();
    s.provider.set_failure(Some(Failure::Endless));
    let started = std::time::Instant::now();
    let response = broker(&s.app.http, &s.app.url(""), &s.token, &id).await;
    assert_eq!(response.status(), 502);
    assert_eq!(error_code(response).await, "provider_unavailable");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(status_of(&s.app, &s.token, &id).await, "active");
    // The provider back: the untouched refresh token still works after the cooldown.
    s.provider.set_failure(None);
    tokio::time::sleep(moat::integrations::broker::COOLDOWN + Duration::from_millis(200)).await;
    assert_eq!(broker(&s.app.http, &s.app.url(""), &s.token, &id).await.status(), 200);
}

/// A lock held longer than the lock timeout is "busy", never "bad credentials".
#[tokio::test]
async fn a_lock_held_too_long_is_refresh_busy() {
    let s = setup_with(None, &[("MOAT_PROVIDER_TIMEOUT", "1s")]).await;
    let seed = s.provider.issue_refresh_token();
    let id: Uuid = import(&s.app, &s.token, "cal", Some(&seed), 0).await["id"].as_str().unwrap().parse().unwrap();
    let mut holder = s.app._db.admin().await;
    let tx = holder.transaction().await.unwrap();
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&moat::integrations::broker::lock_key(id)]).await.unwrap();
    let response = broker(&s.app.http, &s.app.url(""), &s.token, &id.to_string()).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    assert_eq!(error_code(response).await, "refresh_busy");
    assert_eq!(s.provider.refresh_attempts(), 0);
    tx.rollback().await.unwrap();
    assert_eq!(broker(&s.app.http, &s.app.url(""), &s.token, &id.to_string()).await.status(), 200);
}

#[tokio::test]
async fn a_valid_token_is_served_without_refreshing_and_responses_hold_no_secrets() {
    let s = setup().await;
    let seed = s.provider.issue_refresh_token();
    let created = import(&s.app, &s.token, "cal", Some(&seed), 3600).await;
    let id = created["id"].as_str().unwrap();
    let body: Value = broker(&s.app.http, &s.app.url(""), &s.token, id).await.json().await.unwrap();
    assert_eq!(body["access_token"], "imported-access-cal");
    assert!(body["expires_at"].is_string());
    assert_eq!(s.provider.refresh_attempts(), 0);
    let list: Value = s.app.get_as(&s.token, "/v1/integrations").await.json().await.unwrap();
    for text in [created.to_string(), list.to_string()] {
        for secret in ["imported-access", &seed, "access_token", "refresh_token", "key_id"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
    // A disabled caller's live token gets nothing from the broker's one-statement fast path.
    let (client_id, secret) =
        moat::admin::create_client(&s.app.state.db, s.org, "agent", "integrations:use").await.unwrap();
    let agent: Value = s
        .app
        .http
        .post(s.app.url("/v1/oauth/token"))
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agent = agent["access_token"].as_str().unwrap();
    assert_eq!(broker(&s.app.http, &s.app.url(""), agent, id).await.status(), 200);
    moat::admin::disable_client(&s.app.state.db, &client_id.to_string()).await.unwrap();
    let refused = broker(&s.app.http, &s.app.url(""), agent, id).await;
    assert_eq!(refused.status(), 401);
    assert!(!refused.text().await.unwrap().contains("imported-access"));
    // A token valid for less than MOAT_TOKEN_MIN_VALIDITY (60 s) is refreshed first.
    let seed2 = s.provider.issue_refresh_token();
    let soon = import(&s.app, &s.token, "soon", Some(&seed2), 30).await;
    let body: Value =
        broker(&s.app.http, &s.app.url(""), &s.token, soon["id"].as_str().unwrap()).await.json().await.unwrap();
    assert!(body["access_token"].as_str().unwrap().starts_with("at-"));
    assert_eq!(s.provider.refreshes(), 1);
}

#[tokio::test]
async fn another_organizations_integration_is_not_found() {
    let s = setup().await;
    let id = import(&s.app, &s.token, "cal", None, 3600).await["id"].as_str().unwrap().to_owned();
    let (_, _, other) = s.app.signed_in(Role::Admin).await;
    for response in [
        s.app.get_as(&other, &format!("/v1/integrations/{id}")).await,
        broker(&s.app.http, &s.app.url(""), &other, &id).await,
        s.app.http.delete(s.app.url(&format!("/v1/integrations/{id}"))).bearer_auth(&other).send().await.unwrap(),
    ] {
        assert_eq!(response.status(), 404);
    }
    let list: Value = s.app.get_as(&other, "/v1/integrations").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    // The owner still has it, and can delete it.
    let deleted = s.app.http.delete(s.app.url(&format!("/v1/integrations/{id}"))).bearer_auth(&s.token).send();
    assert_eq!(deleted.await.unwrap().status(), 204);
    assert_eq!(s.app.get_as(&s.token, &format!("/v1/integrations/{id}")).await.status(), 404);
}

/// Each ciphertext is bound to its row and field: copied elsewhere, it does not open.
#[tokio::test]
async fn a_ciphertext_moved_to_another_row_or_field_fails() {
    let s = setup().await;
    let a =
        import(&s.app, &s.token, "a", Some("refresh-a"), 3600).await["id"].as_str().unwrap().parse::<Uuid>().unwrap();
    let b =
        import(&s.app, &s.token, "b", Some("refresh-b"), 3600).await["id"].as_str().unwrap().parse::<Uuid>().unwrap();
    let admin = s.app._db.admin().await;
    admin
        .execute("UPDATE integrations SET access_token = (SELECT access_token FROM integrations WHERE id = $1) WHERE id = $2", &[&a, &b])
        .await
        .unwrap();
    let response = broker(&s.app.http, &s.app.url(""), &s.token, &b.to_string()).await;
    assert_eq!(response.status(), 500);
    assert!(!response.text().await.unwrap().contains("imported-access-a"), "b was served a's token");
    // Moving a's refresh token into its own access-token field also fails.
    admin.execute("UPDATE integrations SET access_token = refresh_token WHERE id = $1", &[&a]).await.unwrap();
    assert_eq!(broker(&s.app.http, &s.app.url(""), &s.token, &a.to_string()).await.status(), 500);
}

/// Rotation re-encrypts everything while broker calls keep succeeding; afterwards
/// the old key is not needed, and no plaintext token is anywhere in the tables.
#[tokio::test]
async fn key_rotation_re_encrypts_everything_while_serving() {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::migrated().await;
    let old_env = env_with(&db, &provider, &dir);
    let old_key = old_env.get("MOAT_ENCRYPTION_KEY").unwrap().to_owned();
    let new_key = moat::config::keys::generate_encryption();
    let rotated_env =
        old_env.clone().set("MOAT_ENCRYPTION_KEY", &new_key).set("MOAT_ENCRYPTION_KEYS_PREVIOUS", &old_key);
    let db_url = db.url(DbRole::App);

    let old_app = spawn_app(Options { env: Some(old_env), db: Some(db), ..Options::default() }).await;
    let (_, _, token) = old_app.signed_in(Role::Admin).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let created = import(&old_app, &token, &format!("acct-{i}"), Some(&format!("refresh-{i}")), 3600).await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let admin = old_app._db.admin().await;
    let old_kid = moat::config::EncryptionKey::parse(&old_key, None).unwrap().key_id();
    let new_kid = moat::config::EncryptionKey::parse(&new_key, None).unwrap().key_id();

    // Every instance now runs with the new key and the old one as previous.
    let serving = harness::serve(&rotated_env).await;
    let http = reqwest::Client::new();
    let rotation = tokio::spawn({
        let env = Env::default()
            .set("DATABASE_URL", &db_url)
            .set("MOAT_ENCRYPTION_KEY", &new_key)
            .set("MOAT_ENCRYPTION_KEYS_PREVIOUS", &old_key);
        async move { harness::run(&["admin", "rotate-encryption-key", "--batch", "4"], &env).await }
    });
    let mut served = 0;
    while !rotation.is_finished() || served < 10 {
        for id in ids.iter().take(5) {
            let response = broker(&http, &serving.url(""), &token, id).await;
            assert_eq!(response.status(), 200, "a broker call failed during rotation");
            served += 1;
        }
    }
    let out = rotation.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", out.all_output());
    assert!(out.stdout.contains("left") && out.stdout.contains("30 integration(s) re-encrypted"), "{}", out.stdout);
    let kids: Vec<String> =
        admin.query("SELECT DISTINCT key_id FROM integrations", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(kids, [new_kid], "old key id {old_kid} remains");
    // Resumable and idempotent: a second run has nothing to do.
    let again = harness::run(
        &["admin", "rotate-encryption-key"],
        &Env::default().set("DATABASE_URL", &db_url).set("MOAT_ENCRYPTION_KEY", &new_key),
    )
    .await;
    assert!(again.stdout.contains("done: 0 integration(s)"), "{}", again.all_output());
    serving.terminate().await;

    // The old key is no longer needed.
    let new_only = rotated_env.unset("MOAT_ENCRYPTION_KEYS_PREVIOUS");
    let serving = harness::serve(&new_only).await;
    for id in &ids {
        assert_eq!(broker(&http, &serving.url(""), &token, id).await.status(), 200);
    }
    serving.terminate().await;

    // A full-table dump holds no token plaintext.
    let dump: String =
        admin.query_one("SELECT string_agg(i::text, ' ') FROM integrations i", &[]).await.unwrap().get(0);
    for i in 0..30 {
        assert!(!dump.contains(&format!("refresh-{i}")) && !dump.contains(&format!("imported-access-acct-{i}")));
    }
}

async fn connect(s: &Setup) -> (String, String, reqwest::Client) {
    let response = s
        .app
        .http
        .get(s.app.url("/v1/integrations/fake/connect?account=work"))
        .bearer_auth(&s.token)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-moat_connect_"))
        .unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let binding = cookie.split(';').next().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let authorize = body["authorize_url"].as_str().unwrap().to_owned();
    let url = url::Url::parse(&authorize).unwrap();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], "https://moat.example.com/v1/integrations/callback");
    assert_eq!(q["access_type"], "offline");
    // The browser at the provider: it redirects back with a code and the state.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&s.provider.ca_file).unwrap()).unwrap())
        .build()
        .unwrap();
    let back = browser.get(authorize).send().await.unwrap();
    assert_eq!(back.status(), 303);
    let location = back.headers().get("location").unwrap().to_str().unwrap().to_owned();
    let callback = location.replace("https://moat.example.com", &s.app.url(""));
    (callback, binding, browser)
}

async fn callback(s: &Setup, url: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = s.app.http.get(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

async fn integration_count(s: &Setup) -> usize {
    let list: Value = s.app.get_as(&s.token, "/v1/integrations").await.json().await.unwrap();
    list["items"].as_array().unwrap().len()
}

/// A connect flow completes as the session that started it: if that session
/// is revoked before the provider redirects back, nothing is stored.
#[tokio::test]
async fn a_connect_flow_whose_session_was_revoked_stores_nothing() {
    let s = setup().await;
    let (callback_url, binding, _) = connect(&s).await;
    let admin = s.app._db.admin().await;
    admin.batch_execute("UPDATE refresh_families SET revoked_at = now(), revoked_reason = 'logout'").await.unwrap();
    let response = callback(&s, &callback_url, Some(&binding)).await;
    assert_ne!(response.status(), 303, "the flow completed for a revoked session");
    let stored: i64 = admin.query_one("SELECT count(*) FROM integrations", &[]).await.unwrap().get(0);
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn the_connect_flow_end_to_end_with_pkce() {
    let s = setup().await;
    let (callback_url, binding, _) = connect(&s).await;
    let response = callback(&s, &callback_url, Some(&binding)).await;
    assert_eq!(response.status(), 303, "{:?}", response.text().await);
    let location = response.headers().get("location").unwrap().to_str().unwrap();
    assert!(location.starts_with("https://moat.example.com/app/integrations?connected="), "{location}");
    let id = location.rsplit('=').next().unwrap().to_owned();
    let view: Value = s.app.get_as(&s.token, &format!("/v1/integrations/{id}")).await.json().await.unwrap();
    assert_eq!(
        (view["provider"].as_str(), view["account"].as_str(), view["status"].as_str()),
        (Some("fake"), Some("work"), Some("active"))
    );
    let body: Value = broker(&s.app.http, &s.app.url(""), &s.token, &id).await.json().await.unwrap();
    assert!(body["access_token"].as_str().unwrap().starts_with("at-"));
    // The state was single-use.
    let replay = callback(&s, &callback_url, Some(&binding)).await;
    assert_eq!(replay.status(), 400);
    assert_eq!(error_code(replay).await, "invalid_state");
    assert_eq!(integration_count(&s).await, 1);
    let _ = s.org;
}

#[tokio::test]
async fn tampered_missing_foreign_or_expired_states_store_nothing() {
    let s = setup().await;
    // Tampered state.
    let (url, binding, _) = connect(&s).await;
    let tampered = url.replace("state=", "state=x");
    assert_eq!(error_code(callback(&s, &tampered, Some(&binding)).await).await, "invalid_state");
    // Without the browser-binding cookie (a victim lured to someone else's callback URL).
    let (url, _, _) = connect(&s).await;
    assert_eq!(error_code(callback(&s, &url, None).await).await, "invalid_state");
    // With another flow's cookie.
    let (url, _, _) = connect(&s).await;
    let (_, other_binding, _) = connect(&s).await;
    assert_eq!(error_code(callback(&s, &url, Some(&other_binding)).await).await, "invalid_state");
    // Expired.
    let (url, binding, _) = connect(&s).await;
    s.app
        ._db
        .admin()
        .await
        .execute("UPDATE oauth_states SET expires_at = now() - interval '1 second'", &[])
        .await
        .unwrap();
    assert_eq!(error_code(callback(&s, &url, Some(&binding)).await).await, "invalid_state");
    // No state at all.
    let bare = callback(&s, &s.app.url("/v1/integrations/callback?code=abc"), Some(&binding)).await;
    assert_eq!(bare.status(), 400);
    assert_eq!(integration_count(&s).await, 0, "nothing may be stored");
}

#[tokio::test]
async fn the_providers_file_is_validated_at_startup() {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::migrated().await;
    let good = env_with(&db, &provider, &dir);
    assert_eq!(harness::run(&["check"], &good).await.status.code(), Some(0));
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let base = std::fs::read_to_string(provider.providers_file(dir.path())).unwrap();
    let cases = [
        (write("unknown.toml", base.replace("scopes =", "scopez =")), "unknown field `scopez`"),
        (write("http.toml", base.replace("token_url = \"https", "token_url = \"http")), "token_url is not https"),
        (write("reserved.toml", format!("{base}state = \"x\"\n")), "authorize_params sets state"),
    ];
    for (file, expect) in cases {
        let out = harness::run(&["check"], &good.clone().set("MOAT_PROVIDERS_FILE", &file)).await;
        assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
        assert!(out.stderr.contains(expect), "missing {expect:?}:\n{}", out.stderr);
    }
    let out = harness::run(&["check"], &good.clone().unset("FAKE_PROVIDER_SECRET")).await;
    assert!(out.stderr.contains("client_secret_env names FAKE_PROVIDER_SECRET, which is not set"), "{}", out.stderr);
    assert!(out.stderr.contains("export FAKE_PROVIDER_SECRET="), "{}", out.stderr);
    assert!(!out.all_output().contains(CLIENT_SECRET));
}

/// A client that hangs up mid-refresh cannot cut the refresh off after the
/// provider rotated the token: the refresh runs detached and commits.
#[tokio::test]
async fn a_caller_that_hangs_up_mid_refresh_loses_nothing() {
    let s = setup().await;
    // The provider rotates at once but answers slowly: a refresh cut off now would lose the new token.
    s.provider.set_delay_after_rotation(Duration::from_millis(600));
    let seed = s.provider.issue_refresh_token();
    let id = import(&s.app, &s.token, "cal", Some(&seed), 0).await["id"].as_str().unwrap().to_owned();
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(150)).build().unwrap();
    let hung_up =
        impatient.post(s.app.url(&format!("/v1/integrations/{id}/access-token"))).bearer_auth(&s.token).send().await;
    assert!(hung_up.is_err(), "the client should have given up");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.provider.set_delay_after_rotation(Duration::ZERO);
    let response = broker(&s.app.http, &s.app.url(""), &s.token, &id).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert_eq!(status_of(&s.app, &s.token, &id).await, "active");
    assert_eq!(s.provider.refreshes(), 1, "the abandoned refresh was committed and reused");
}

/// A provider whose tokens live less than MOAT_TOKEN_MIN_VALIDITY is not hammered:
/// concurrent callers on two instances still cause one refresh, and a token refreshed
/// seconds ago is served rather than refreshed again.
#[tokio::test]
async fn short_lived_provider_tokens_still_refresh_once() {
    let provider = FakeProvider::start().await;
    provider.set_access_ttl(30);
    provider.set_latency(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::migrated().await;
    let env = env_with(&db, &provider, &dir);
    let a = spawn_app(Options { env: Some(env.clone()), db: Some(db), ..Options::default() }).await;
    let b = spawn_app(Options { env: Some(env), ..Options::default() }).await;
    let (_, _, token) = a.signed_in(Role::Admin).await;
    let id =
        import(&a, &token, "cal", Some(&provider.issue_refresh_token()), 0).await["id"].as_str().unwrap().to_owned();
    let bases = [a.url(""), b.url("")];
    let calls = (0..20).map(|i| broker(&a.http, &bases[i % 2], &token, &id));
    for response in futures_util::future::join_all(calls).await {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(broker(&a.http, &bases[0], &token, &id).await.status(), 200);
    assert_eq!(provider.refreshes(), 1);
}

/// One hot integration cannot starve the pool: callers of one instance queue in
/// memory, so other requests keep their connections.
#[tokio::test]
async fn a_hot_integration_does_not_exhaust_the_pool() {
    let s = setup_with(None, &[("MOAT_DATABASE_POOL_SIZE", "4")]).await;
    s.provider.set_latency(Duration::from_millis(800));
    let id = import(&s.app, &s.token, "cal", Some(&s.provider.issue_refresh_token()), 0).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = s.app.url("");
    let calls = futures_util::future::join_all((0..40).map(|_| broker(&s.app.http, &base, &s.token, &id)));
    let others = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(s.app.get_as(&s.token, "/v1/me").await.status().as_u16());
        }
        statuses
    };
    let (responses, others) = tokio::join!(calls, others);
    assert!(
        responses.iter().all(|r| r.status() == 200),
        "{:?}",
        responses.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
    assert_eq!(others, [200; 5], "other requests starved while the refresh ran");
    assert_eq!(s.provider.refreshes(), 1);
}

/// Some providers answer `invalid_grant` with status 200: still a dead grant.
#[tokio::test]
async fn invalid_grant_with_status_200_is_still_invalid_grant() {
    let s = setup().await;
    let id = import(&s.app, &s.token, "cal", Some(&s.provider.issue_refresh_token()), 0).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.provider.set_failure(Some(Failure::InvalidGrantWith200));
    assert_eq!(broker(&s.app.http, &s.app.url(""), &s.token, &id).await.status(), 409);
    assert_eq!(status_of(&s.app, &s.token, &id).await, "needs_reauth");
}

#[tokio::test]
async fn reconnecting_replaces_tokens_keeps_the_refresh_token_and_is_the_creators_alone() {
    let s = setup().await;
    let (url, binding, _) = connect(&s).await;
    let first = callback(&s, &url, Some(&binding)).await;
    assert_eq!(first.status(), 303);
    let id = first.headers().get("location").unwrap().to_str().unwrap().rsplit('=').next().unwrap().to_owned();
    // Reconnect the same label; the provider sends no refresh token this time.
    s.provider.omit_refresh_on_exchange(true);
    let (url, binding, _) = connect(&s).await;
    let second = callback(&s, &url, Some(&binding)).await;
    assert_eq!(second.status(), 303);
    assert!(second.headers().get("location").unwrap().to_str().unwrap().ends_with(&id), "a reconnect keeps its id");
    assert_eq!(integration_count(&s).await, 1);
    // The kept refresh token still works: force a refresh.
    s.app._db.admin().await.execute("UPDATE integrations SET access_expires_at = now()", &[]).await.unwrap();
    let response = broker(&s.app.http, &s.app.url(""), &s.token, &id).await;
    assert_eq!(response.status(), 200, "the refresh token was lost on reconnect");
    assert_eq!(s.provider.refreshes(), 1);
    // Another member of the organization cannot take the label over.
    let email = format!("{}@example.com", Uuid::new_v4());
    let (_, password) = s.app.create_user(s.org, &email, Role::Member).await;
    let body: Value = s.app.login(&email, &password).await.json().await.unwrap();
    let member = body["access_token"].as_str().unwrap();
    let response = s
        .app
        .http
        .get(s.app.url("/v1/integrations/fake/connect?account=work"))
        .bearer_auth(member)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(error_code(response).await, "integration_exists");
}
