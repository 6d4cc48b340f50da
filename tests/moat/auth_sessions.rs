//! Browser sessions: login that does not tell accounts apart, refresh tokens
//! that rotate, detect reuse and tolerate a second tab, and logout.

use std::time::{Duration, Instant};

use moat::identity::Role;
use serde_json::Value;
use uuid::Uuid;

use crate::harness::{Env, Options, TestApp, TestDb, error_code, spawn_app};

const COOKIE: &str = "__Host-moat_refresh";

async fn app_with(grace: &str) -> TestApp {
    let db = TestDb::migrated().await;
    let env = Env::production(&db).set("MOAT_REFRESH_REUSE_GRACE", grace);
    spawn_app(Options { env: Some(env), db: Some(db), ..Options::default() }).await
}

/// The refresh token from a response's Set-Cookie, with the cookie's attributes.
fn set_cookie(response: &reqwest::Response) -> (String, String) {
    let header = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(COOKIE))
        .unwrap_or_else(|| panic!("no {COOKIE} cookie in {:?}", response.headers()));
    let value = header.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    (value, header)
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.http.post(app.url("/v1/auth/refresh")).header("cookie", format!("{COOKIE}={token}")).send().await.unwrap()
}

async fn login_token(app: &TestApp, email: &str, password: &str) -> String {
    let response = app.login(email, password).await;
    assert_eq!(response.status(), 200);
    set_cookie(&response).0
}

#[tokio::test]
async fn login_issues_an_access_token_and_a_locked_down_refresh_cookie() {
    let app = app_with("10s").await;
    let org = app.create_org("Acme").await;
    let (user, password) = app.create_user(org, "Ada@Example.com", Role::Member).await;
    // Emails are case-insensitive.
    let response = app.login("  ada@EXAMPLE.com", &password).await;
    assert_eq!(response.status(), 200);
    let (_, cookie) = set_cookie(&response);
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(attribute), "missing {attribute}: {cookie}");
    }
    assert!(!cookie.contains("Domain"), "__Host- cookies carry no Domain: {cookie}");
    assert_eq!(response.headers().get("cache-control").unwrap(), "no-store");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let me: serde_json::Value =
        app.get_as(body["access_token"].as_str().unwrap(), "/v1/me").await.json().await.unwrap();
    assert_eq!(me["id"], user.to_string());
    assert_eq!(me["kind"], "user");
    assert_eq!(me["org"], org.to_string());
    assert_eq!(me["role"], "member");
    let scopes: Vec<&str> = me["scopes"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(scopes.contains(&"conversations:write") && !scopes.contains(&"audit:read"), "{scopes:?}");
}

/// Unknown email, wrong password and disabled user: same status, same body, comparable time.
#[tokio::test]
async fn failed_logins_are_indistinguishable() {
    let app = app_with("10s").await;
    let org = app.create_org("Acme").await;
    let (_, password) = app.create_user(org, "real@example.com", Role::Member).await;
    let (_, gone_password) = app.create_user(org, "gone@example.com", Role::Member).await;
    moat::admin::disable_user(&app.state.db, "gone@example.com").await.unwrap();

    let cases = [
        ("unknown email", "nobody@example.com", password.as_str()),
        ("wrong password", "real@example.com", "not the password at all"),
        ("disabled user", "gone@example.com", gone_password.as_str()),
    ];
    let mut bodies = Vec::new();
    let mut timings: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    // Interleaved, so load from other tests weighs on every case alike.
    for round in 0..5 {
        for (i, (label, email, password)) in cases.iter().enumerate() {
            // Distinct unknown emails keep the per-email limit out of the way.
            let email = if i == 0 { format!("nobody{round}@example.com") } else { (*email).to_owned() };
            let started = Instant::now();
            let response = app.login(&email, password).await;
            timings[i].push(started.elapsed());
            assert_eq!(response.status(), 401, "{label}");
            assert!(response.headers().get("set-cookie").is_none(), "{label} set a cookie");
            bodies.push(crate::harness::http::without_request_id(&response.text().await.unwrap()));
        }
    }
    // The same email fails at most 5 times here: the lockout starts after the 5th.
    timings.iter_mut().for_each(|t| t.sort());
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "bodies differ: {bodies:?}");
    assert_eq!(
        bodies[0],
        serde_json::json!({"error": {"code": "invalid_credentials", "message": "the email or password is incorrect"}})
    );
    // Each failure is audited with its real reason (visible to admins only).
    let admin = app.admin_token(org).await;
    let log: Value = app.get_as(&admin, "/v1/audit-log?limit=200").await.json().await.unwrap();
    let failures: Vec<(&str, &str)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "login_failed")
        .map(|e| (e["subject"].as_str().unwrap(), e["detail"]["reason"].as_str().unwrap()))
        .collect();
    assert!(failures.contains(&("real@example.com", "wrong_password")), "{failures:?}");
    assert!(failures.contains(&("gone@example.com", "user_disabled")), "{failures:?}");
    assert!(!log.to_string().contains("not the password at all"), "a password reached the audit log");
    let anonymous: i64 = app
        ._db
        .admin()
        .await
        .query_one("SELECT count(*) FROM audit_log WHERE org_id IS NULL AND event = 'login_failed' AND detail->>'reason' = 'unknown_email'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(anonymous, 5, "unknown-email failures are audited without an organization");
    // Medians within a factor of three: every case pays for one argon2 verification
    // (skipping it for unknown emails would make them about ten times faster).
    let medians: Vec<f64> = timings.iter().map(|s| s[s.len() / 2].as_secs_f64()).collect();
    let (min, max) = medians.iter().fold((f64::MAX, 0f64), |(lo, hi), m| (lo.min(*m), hi.max(*m)));
    assert!(max / min < 3.0, "login timings differ by account state: {timings:?}");
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_whole_session() {
    let app = app_with("1s").await;
    let org = app.create_org("Acme").await;
    let (user, password) = app.create_user(org, "ada@example.com", Role::Admin).await;
    let first = login_token(&app, "ada@example.com", &password).await;

    let response = refresh(&app, &first).await;
    assert_eq!(response.status(), 200);
    let (second, _) = set_cookie(&response);
    assert_ne!(first, second, "refresh must rotate the token");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(app.get_as(body["access_token"].as_str().unwrap(), "/v1/me").await.status(), 200);

    // After the grace window, the first token comes back: someone copied it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let response = refresh(&app, &first).await;
    assert_eq!(response.status(), 401);
    let cleared = set_cookie(&response).1;
    assert!(cleared.contains("Max-Age=0"), "the cookie must be cleared: {cleared}");
    assert_eq!(error_code(response).await, "invalid_session");
    // The whole family is revoked: the legitimate current token no longer works either.
    assert_eq!(refresh(&app, &second).await.status(), 401);

    let admin = app.admin_token(org).await;
    let log: serde_json::Value = app.get_as(&admin, "/v1/audit-log").await.json().await.unwrap();
    let reuse: Vec<_> =
        log["items"].as_array().unwrap().iter().filter(|e| e["event"] == "refresh_reuse_detected").collect();
    assert_eq!(reuse.len(), 1, "{log}");
    assert_eq!(reuse[0]["actor"], format!("user:{user}"));
}

/// Two tabs refreshing with the same cookie at once: both succeed with the same current token.
#[tokio::test]
async fn a_duplicate_refresh_within_the_grace_window_gets_the_current_token() {
    let app = app_with("10s").await;
    let org = app.create_org("Acme").await;
    let (_, password) = app.create_user(org, "ada@example.com", Role::Member).await;
    let first = login_token(&app, "ada@example.com", &password).await;

    let (a, b) = tokio::join!(refresh(&app, &first), refresh(&app, &first));
    assert_eq!((a.status(), b.status()), (reqwest::StatusCode::OK, reqwest::StatusCode::OK));
    let (a, b) = (set_cookie(&a).0, set_cookie(&b).0);
    assert_eq!(a, b, "both tabs must end up with the family's current token");
    assert_ne!(a, first);
    // A third late duplicate (still in grace) also gets it, and the session lives on.
    assert_eq!(set_cookie(&refresh(&app, &first).await).0, a);
    let response = refresh(&app, &a).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn logout_revokes_the_session_and_clears_the_browser() {
    let app = app_with("10s").await;
    let org = app.create_org("Acme").await;
    let (_, password) = app.create_user(org, "ada@example.com", Role::Member).await;
    let token = login_token(&app, "ada@example.com", &password).await;
    let response =
        app.http.post(app.url("/v1/auth/logout")).header("cookie", format!("{COOKIE}={token}")).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers().get("clear-site-data").unwrap(), "\"cookies\", \"storage\"");
    assert!(set_cookie(&response).1.contains("Max-Age=0"));
    assert_eq!(refresh(&app, &token).await.status(), 401, "a logged-out token must not refresh");
    // Logging out again, or without a cookie, is harmless.
    assert_eq!(app.http.post(app.url("/v1/auth/logout")).send().await.unwrap().status(), 204);
    let admin = app.admin_token(org).await;
    let log: Value = app.get_as(&admin, "/v1/audit-log").await.json().await.unwrap();
    assert!(log["items"].as_array().unwrap().iter().any(|e| e["event"] == "logout"), "{log}");
}

#[tokio::test]
async fn cookie_endpoints_refuse_other_origins_and_bad_cookies() {
    let app = app_with("10s").await;
    let org = app.create_org("Acme").await;
    let (_, password) = app.create_user(org, "ada@example.com", Role::Member).await;
    let token = login_token(&app, "ada@example.com", &password).await;
    for path in ["/v1/auth/refresh", "/v1/auth/logout"] {
        let response = app
            .http
            .post(app.url(path))
            .header("cookie", format!("{COOKIE}={token}"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
        assert_eq!(error_code(response).await, "forbidden_origin");
    }
    let same_origin = app
        .http
        .post(app.url("/v1/auth/refresh"))
        .header("cookie", format!("{COOKIE}={token}"))
        .header("origin", "https://moat.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status(), 200, "Moat's own origin is allowed");
    for bad in [String::new(), "x".repeat(10_000), Uuid::new_v4().to_string(), "'; DROP TABLE users; --".into()] {
        assert_eq!(refresh(&app, &bad).await.status(), 401, "{bad:.20}");
    }
    let cross_site = app
        .http
        .post(app.url("/v1/auth/refresh"))
        .header("cookie", format!("{COOKIE}={token}"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403, "Sec-Fetch-Site: cross-site");
    let none = app.http.post(app.url("/v1/auth/refresh")).send().await.unwrap();
    assert_eq!(none.status(), 401);
}

#[tokio::test]
async fn malformed_login_bodies_get_clear_errors() {
    let app = app_with("10s").await;
    let post = |body: &'static str| {
        app.http.post(app.url("/v1/auth/login")).header("content-type", "application/json").body(body).send()
    };
    assert_eq!(error_code(post("{").await.unwrap()).await, "invalid_json");
    assert_eq!(error_code(post(r#"{"email":"a@b.c"}"#).await.unwrap()).await, "invalid_request");
    assert_eq!(
        error_code(post(r#"{"email":"a@b.c","password":"x","admin":true}"#).await.unwrap()).await,
        "invalid_request"
    );
    // Control characters never reach the database (PostgreSQL refuses NUL in text: that would be a 500).
    let nul = post(r#"{"email":"ada\u0000@example.com","password":"x"}"#).await.unwrap();
    assert_eq!(nul.status(), 401);
    assert_eq!(error_code(nul).await, "invalid_credentials");
    let long = format!(r#"{{"email":"a@b.c","password":"{}"}}"#, "p".repeat(2000));
    let response =
        app.http.post(app.url("/v1/auth/login")).header("content-type", "application/json").body(long).send();
    assert_eq!(error_code(response.await.unwrap()).await, "invalid_request");
}

/// What someone types into the email field may be their password: a value that is
/// not a plausible email is audited as "malformed", never as typed.
#[tokio::test]
async fn a_password_typed_as_the_email_never_reaches_the_audit_log() {
    let app = app_with("10s").await;
    let response = app.login("correct horse battery staple", "ada@example.com").await;
    assert_eq!(response.status(), 401);
    let subjects: Vec<Option<String>> = app
        ._db
        .admin()
        .await
        .query("SELECT subject FROM audit_log WHERE event = 'login_failed'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(subjects, [Some("malformed".to_owned())]);
}

/// During a rolling upgrade an instance of the previous release may rotate a
/// tagged session and hand out an untagged token. Refreshing with it on this
/// release works (the family is tagged anew), and the older tokens' reuse is
/// still detected (their rows are kept).
#[tokio::test]
async fn a_session_refreshed_by_the_previous_release_keeps_working_and_detecting_reuse() {
    let app = spawn_app(Options::default()).await;
    let org = app.create_org("Acme").await;
    let (_, password) = app.create_user(org, "ada@example.com", Role::Member).await;
    let login = app.login("ada@example.com", &password).await;
    let (tagged, _) = set_cookie(&login);
    // The previous release rotates it: marks it used long ago, stores an untagged successor.
    let old_format = moat::identity::password::random_secret(32);
    let admin = app._db.admin().await;
    admin
        .execute(
            "WITH used AS (UPDATE refresh_tokens SET used_at = now() - interval '1 hour' RETURNING family_id, org_id)
             INSERT INTO refresh_tokens (family_id, org_id, token_hash, expires_at, tagged)
             SELECT family_id, org_id, sha256(convert_to($1, 'UTF8')), now() + interval '1 day', false FROM used",
            &[&old_format],
        )
        .await
        .unwrap();
    let response = refresh(&app, &old_format).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    // The purge keeps every earlier row of the family now; the first token's reuse revokes the session.
    let kept: i64 = admin.query_one("SELECT count(*) FROM refresh_tokens WHERE NOT tagged", &[]).await.unwrap().get(0);
    assert_eq!(kept, 2);
    assert_eq!(refresh(&app, &tagged).await.status(), 401);
    let revoked: String = admin.query_one("SELECT revoked_reason FROM refresh_families", &[]).await.unwrap().get(0);
    assert_eq!(revoked, "reuse");
}
