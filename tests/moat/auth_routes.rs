//! Bearer + scope everywhere, never fail-open: every registered route outside
//! a short public allowlist is attacked without a token, with a forged one,
//! and with a valid token lacking exactly its scope — in production and in
//! development mode alike.

use axum::http::Method;
use moat::identity::{Access, PrincipalKind, Scope, Scopes};
use uuid::Uuid;

use crate::harness::{Env, Options, TestApp, TestDb, assert_security_headers, error_code, spawn_app};

/// The only routes that answer without a bearer token (each authenticates otherwise or is a probe).
const PUBLIC: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/refresh"),
    ("POST", "/v1/auth/logout"),
    ("POST", "/v1/oauth/token"),
    // Arrives from the OAuth provider; authenticated by its single-use state and the browser-binding cookie.
    ("GET", "/v1/integrations/callback"),
    // Authenticated by its own single-use WebSocket token, checked in five steps before the upgrade.
    ("GET", "/v1/conversations/{id}/stream"),
    // The browser app's static files (no data; the app authenticates every API call itself).
    ("GET", "/"),
    ("GET", "/assets/{name}"),
    // The API's description (its shape is no secret; no data).
    ("GET", "/v1/openapi.json"),
];

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { Uuid::new_v4().to_string() } else { seg.to_owned() })
        .collect::<Vec<_>>()
        .join("/")
}

async fn send(app: &TestApp, method: &Method, path: &str, token: Option<&str>) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
    let mut request = app.http.request(method, app.url(path)).header("content-type", "application/json").body("{}");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn attack_every_route(app: &TestApp, production: bool) {
    let table = moat::app::route_table();
    let public: Vec<(String, &str)> =
        table.iter().filter(|r| r.access == Access::Public).map(|r| (r.method.to_string(), r.path)).collect();
    let expected: Vec<(String, &str)> = PUBLIC.iter().map(|(m, p)| ((*m).to_owned(), *p)).collect();
    assert_eq!(public, expected, "the public allowlist changed: review it and update this test deliberately");

    let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
    let forged = {
        let mut token = app.token(PrincipalKind::User, id, org, &Scope::ALL.iter().copied().collect());
        token.pop();
        token.push('x');
        token
    };
    let protected: Vec<_> = table.iter().filter(|r| r.access != Access::Public).collect();
    assert!(protected.len() >= 4, "{protected:?}");
    for route in protected {
        let path = concrete(route.path);
        let label = format!("{} {}", route.method, route.path);

        let response = send(app, &route.method, &path, None).await;
        assert_eq!(response.status(), 401, "{label} without a token");
        let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
        assert!(challenge.as_deref().is_some_and(|c| c.starts_with("Bearer")), "{label}: {challenge:?}");
        if production {
            assert_security_headers(response.headers(), &label);
        }
        assert_eq!(error_code(response).await, "unauthorized", "{label}");

        let response = send(app, &route.method, &path, Some(&forged)).await;
        assert_eq!(response.status(), 401, "{label} with a forged token");
        assert_eq!(error_code(response).await, "invalid_token", "{label}");

        if let Access::Scope(required) = route.access {
            let others: Scopes = Scope::ALL.iter().copied().filter(|s| *s != required).collect();
            let token = app.token(PrincipalKind::User, id, org, &others);
            let response = send(app, &route.method, &path, Some(&token)).await;
            assert_eq!(response.status(), 403, "{label} without scope {required}");
            let challenge = response.headers().get("www-authenticate").unwrap().to_str().unwrap().to_owned();
            assert!(challenge.contains("insufficient_scope") && challenge.contains(required.as_str()), "{challenge}");
            assert_eq!(error_code(response).await, "insufficient_scope", "{label}");
        }
    }
}

#[tokio::test]
async fn every_protected_route_refuses_missing_forged_and_underscoped_tokens() {
    attack_every_route(&spawn_app(Options::default()).await, true).await;
}

/// Development mode relaxes startup checks, never authentication.
#[tokio::test]
async fn development_mode_does_not_open_any_route() {
    let db = TestDb::migrated().await;
    let env = Env::production(&db).set("MOAT_ENV", "development");
    let app = spawn_app(Options { env: Some(env), db: Some(db), ..Options::default() }).await;
    attack_every_route(&app, false).await;
}

/// A scope check that passes still needs the principal to exist and be enabled.
#[tokio::test]
async fn a_valid_signature_for_an_unknown_principal_is_refused() {
    let app = spawn_app(Options::default()).await;
    let token = app.token(PrincipalKind::User, Uuid::new_v4(), Uuid::new_v4(), &Scope::ALL.iter().copied().collect());
    let response = app.get_as(&token, "/v1/me").await;
    assert_eq!(response.status(), 401);
    assert_eq!(error_code(response).await, "invalid_token");
}

/// A valid, unexpired token whose user was disabled is refused on every
/// protected route, `/metrics` included — not only where a query happens to
/// run. A request whose shape is invalid may be refused for that first (it
/// reads and writes nothing); with a well-formed body it is refused too.
#[tokio::test]
async fn every_protected_route_refuses_a_disabled_principal() {
    let app = spawn_app(Options::default()).await;
    let org = app.create_org("Acme").await;
    let email = format!("{}@example.com", Uuid::new_v4());
    let (user, _) = app.create_user(org, &email, moat::identity::Role::Admin).await;
    let token = app.token(PrincipalKind::User, user, org, &Scope::ALL.iter().copied().collect());
    assert_eq!(app.get_as(&token, "/v1/me").await.status(), 200);
    moat::admin::disable_user(&app.state.db, &email).await.unwrap();
    let shape = ["invalid_request", "invalid_upload", "unknown_provider"];
    let mut answered = Vec::new();
    for route in moat::app::route_table().iter().filter(|r| r.access != Access::Public) {
        let response = send(&app, &route.method, &concrete(route.path), Some(&token)).await;
        let status = response.status().as_u16();
        let code = if status >= 400 { error_code(response).await } else { String::new() };
        let refused = (status, code.as_str()) == (401, "invalid_token");
        let malformed = matches!(status, 400 | 404 | 422) && shape.contains(&code.as_str());
        if !(refused || malformed) {
            answered.push(format!("{} {} -> {status} {code}", route.method, route.path));
        }
    }
    assert!(answered.is_empty(), "a disabled principal was not refused:\n{}", answered.join("\n"));
    // Well-formed bodies for the routes that check their shape first.
    let conv = Uuid::new_v4();
    for (path, body) in [
        ("/v1/conversations".to_owned(), serde_json::json!({"title": "t", "agent": "demo"})),
        (format!("/v1/conversations/{conv}/runs"), serde_json::json!({"input": {}})),
        (format!("/v1/inputs/{}", Uuid::new_v4()), serde_json::json!({"value": "yes"})),
    ] {
        let response = app.http.post(app.url(&path)).bearer_auth(&token).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(error_code(response).await, "invalid_token", "{path}");
    }
}
