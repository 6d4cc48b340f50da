//! `POST /v1/oauth/token` (client credentials): Basic or form authentication,
//! scope intersection, RFC 6749 errors, rotation and disabling.

use base64::Engine as _;
use moat::identity::Role;
use serde_json::Value;
use uuid::Uuid;

use crate::harness::{Options, TestApp, spawn_app};

async fn token_request(app: &TestApp, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url("/v1/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish());
    if let Some((id, secret)) = basic {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        request = request.header("authorization", format!("Basic {encoded}"));
    }
    request.send().await.unwrap()
}

async fn oauth_error(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    assert_eq!(response.headers().get("cache-control").unwrap(), "no-store");
    let body: Value = response.json().await.unwrap();
    assert!(body["error_description"].is_string(), "{body}");
    (status, body["error"].as_str().unwrap().to_owned())
}

async fn client(app: &TestApp, scopes: &str) -> (Uuid, String, String) {
    let org = app.create_org("Clients").await;
    let (id, secret) = moat::admin::create_client(&app.state.db, org, "worker", scopes).await.unwrap();
    (org, id.to_string(), secret)
}

#[tokio::test]
async fn client_credentials_by_basic_or_form_with_scope_intersection() {
    let app = spawn_app(Options::default()).await;
    let (org, id, secret) = client(&app, "conversations:read runs:write").await;

    for (label, response) in [
        ("basic", token_request(&app, Some((&id, &secret)), &[("grant_type", "client_credentials")]).await),
        (
            "form",
            token_request(
                &app,
                None,
                &[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &secret)],
            )
            .await,
        ),
    ] {
        assert_eq!(response.status(), 200, "{label}");
        assert_eq!(response.headers().get("cache-control").unwrap(), "no-store", "{label}");
        assert_eq!(response.headers().get("pragma").unwrap(), "no-cache", "{label}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "conversations:read runs:write");
        let me: Value = app.get_as(body["access_token"].as_str().unwrap(), "/v1/me").await.json().await.unwrap();
        assert_eq!((me["kind"].as_str(), me["id"].as_str()), (Some("client"), Some(id.as_str())), "{me}");
        assert_eq!(me["org"], org.to_string());
    }

    // Requested ∩ granted: asking for more than granted yields only the granted part.
    let response = token_request(
        &app,
        Some((&id, &secret)),
        &[("grant_type", "client_credentials"), ("scope", "runs:write audit:read")],
    )
    .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["scope"], "runs:write");
    // The narrowed token really lacks the other scope.
    let narrowed = body["access_token"].as_str().unwrap();
    assert_eq!(app.get_as(narrowed, "/v1/audit-log").await.status(), 403);
}

#[tokio::test]
async fn rfc6749_errors_for_each_kind_of_bad_request() {
    let app = spawn_app(Options::default()).await;
    let (_, id, secret) = client(&app, "conversations:read").await;
    let grant = ("grant_type", "client_credentials");
    let wrong = format!("{secret}x");
    let cases: Vec<(&str, reqwest::Response, (u16, &str))> = vec![
        ("wrong secret", token_request(&app, Some((&id, &wrong)), &[grant]).await, (401, "invalid_client")),
        (
            "unknown client",
            token_request(&app, Some((&Uuid::new_v4().to_string(), &secret)), &[grant]).await,
            (401, "invalid_client"),
        ),
        ("not a client id", token_request(&app, Some(("admin", "admin")), &[grant]).await, (401, "invalid_client")),
        ("no credentials", token_request(&app, None, &[grant]).await, (401, "invalid_client")),
        (
            "two methods",
            token_request(&app, Some((&id, &secret)), &[grant, ("client_id", &id), ("client_secret", &secret)]).await,
            (400, "invalid_request"),
        ),
        (
            "password grant",
            token_request(&app, Some((&id, &secret)), &[("grant_type", "password")]).await,
            (400, "unsupported_grant_type"),
        ),
        ("no grant type", token_request(&app, Some((&id, &secret)), &[]).await, (400, "invalid_request")),
        (
            "repeated parameter",
            token_request(&app, Some((&id, &secret)), &[grant, grant]).await,
            (400, "invalid_request"),
        ),
        (
            "unknown scope",
            token_request(&app, Some((&id, &secret)), &[grant, ("scope", "root")]).await,
            (400, "invalid_scope"),
        ),
        (
            "no granted scope",
            token_request(&app, Some((&id, &secret)), &[grant, ("scope", "audit:read")]).await,
            (400, "invalid_scope"),
        ),
    ];
    for (label, response, (status, code)) in cases {
        let basic = label == "wrong secret";
        let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(oauth_error(response).await, (status, code.to_owned()), "{label}");
        if basic {
            assert_eq!(challenge.as_deref(), Some("Basic realm=\"moat\""), "{label}");
        }
    }
    let json = app
        .http
        .post(app.url("/v1/oauth/token"))
        .json(&serde_json::json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(json).await, (400, "invalid_request".to_owned()), "JSON instead of a form");
}

#[tokio::test]
async fn rotated_secrets_and_disabled_clients_stop_working_at_once() {
    let app = spawn_app(Options::default()).await;
    let (_, id, old) = client(&app, "conversations:read").await;
    let grant = [("grant_type", "client_credentials")];
    let first: Value = token_request(&app, Some((&id, &old)), &grant).await.json().await.unwrap();
    let access = first["access_token"].as_str().unwrap().to_owned();

    let new = moat::admin::rotate_client_secret(&app.state.db, &id).await.unwrap();
    assert_ne!(new, old);
    assert_eq!(oauth_error(token_request(&app, Some((&id, &old)), &grant).await).await.1, "invalid_client");
    assert_eq!(token_request(&app, Some((&id, &new)), &grant).await.status(), 200);

    moat::admin::disable_client(&app.state.db, &id).await.unwrap();
    assert_eq!(oauth_error(token_request(&app, Some((&id, &new)), &grant).await).await.1, "invalid_client");
    assert_eq!(app.get_as(&access, "/v1/me").await.status(), 401, "a disabled client's live token");

    // Issued tokens and failed authentications are audited (never with the secret).
    let org: uuid::Uuid = app
        ._db
        .admin()
        .await
        .query_one("SELECT org_id FROM service_clients WHERE id = $1", &[&uuid::Uuid::parse_str(&id).unwrap()])
        .await
        .unwrap()
        .get(0);
    let admin = app.admin_token(org).await;
    let log: Value = app.get_as(&admin, "/v1/audit-log?limit=200").await.json().await.unwrap();
    let reasons: Vec<(&str, &str)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["detail"]["reason"].as_str().unwrap_or("")))
        .collect();
    for expected in [
        ("client_token_issued", ""),
        ("client_auth_failed", "wrong_secret"),
        ("client_auth_failed", "client_disabled"),
        ("client_secret_rotated", ""),
        ("client_disabled", ""),
    ] {
        assert!(reasons.contains(&expected), "{expected:?} missing from {reasons:?}");
    }
    assert!(!log.to_string().contains(&old) && !log.to_string().contains(&new), "a secret reached the audit log");
}

/// Users cannot use the client-credentials grant with their email and password.
#[tokio::test]
async fn user_passwords_are_not_client_secrets() {
    let app = spawn_app(Options::default()).await;
    let org = app.create_org("Acme").await;
    let (user, password) = app.create_user(org, "ada@example.com", Role::Admin).await;
    let grant = [("grant_type", "client_credentials")];
    for id in ["ada@example.com".to_owned(), user.to_string()] {
        let response = token_request(&app, Some((&id, &password)), &grant).await;
        assert_eq!(oauth_error(response).await.1, "invalid_client", "{id}");
    }
}

/// The per-client lockout is per client *and* IP: a stranger who knows a client id
/// cannot lock the real client out, and spellings of one id share a bucket.
#[tokio::test]
async fn a_stranger_cannot_lock_a_client_out_and_spellings_share_a_bucket() {
    let db = crate::harness::TestDb::migrated().await;
    let env = crate::harness::Env::production(&db).set("MOAT_TRUSTED_PROXIES", "127.0.0.1");
    let app = spawn_app(Options { env: Some(env), db: Some(db), ..Options::default() }).await;
    let (_, id, secret) = client(&app, "conversations:read").await;
    let uuid = Uuid::parse_str(&id).unwrap();
    let spellings = [id.to_uppercase(), uuid.simple().to_string(), format!("{{{id}}}"), id.clone(), id.clone()];
    let from = |ip: &'static str, id: String, secret: String| {
        let form = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
        app.http
            .post(app.url("/v1/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", ip)
            .body(form)
            .send()
    };
    for spelling in spellings {
        assert_eq!(from("203.0.113.66", spelling, "wrong".into()).await.unwrap().status(), 401);
    }
    let locked = from("203.0.113.66", id.clone(), secret.clone()).await.unwrap();
    assert_eq!(locked.status(), 429, "five failures under five spellings lock that client for that address");
    assert!(locked.headers().get("retry-after").is_some());
    assert_eq!(from("198.51.100.20", id.clone(), secret).await.unwrap().status(), 200, "the real client elsewhere");

    // A NUL in the client id is refused cleanly, and only "malformed" is recorded.
    let response = from("198.51.100.21", "a%00b".into(), "x".into()).await.unwrap();
    assert_eq!(oauth_error(response).await, (401, "invalid_client".to_owned()));
    let subjects: Vec<String> = app
        ._db
        .admin()
        .await
        .query("SELECT subject FROM audit_log WHERE event = 'client_auth_failed'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(subjects.iter().all(|s| *s == id || s == "malformed"), "{subjects:?}");
    assert!(subjects.contains(&"malformed".to_owned()));
}
