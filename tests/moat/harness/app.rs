//! The application in-process on port 0: the same `App` the binary serves.

use std::net::SocketAddr;
use std::time::Duration;

use moat::http::Routes;
use moat::{App, AppState};
use reqwest::header::HeaderMap;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use moat::identity::{PrincipalKind, Role, Scopes};
use uuid::Uuid;

use super::pg::TestDb;
use super::process::Env;

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// The app's own state: its pool (runtime role), keys and configuration.
    pub state: AppState,
    /// Kept so the database lives as long as the app.
    pub _db: TestDb,
    scheme: &'static str,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Options for [`spawn_app`]; `Default` is a valid production app on a migrated database.
#[derive(Default)]
pub struct Options {
    pub env: Option<Env>,
    pub extra: Option<Routes<AppState>>,
    pub request_timeout: Option<Duration>,
    pub shutdown_grace: Option<Duration>,
    pub db: Option<TestDb>,
    /// Adjusts the validated configuration (test seams that no environment variable reaches).
    pub configure: Option<fn(&mut moat::config::Config)>,
}

pub async fn spawn_app(options: Options) -> TestApp {
    init_logs();
    let db = match options.db {
        Some(db) => db,
        None => TestDb::migrated().await,
    };
    let env = options.env.unwrap_or_else(|| Env::production(&db));
    let outcome = moat::app::check::run(&env.vars()).await;
    assert!(outcome.problems.is_empty(), "test configuration refused:\n{}", outcome.report());
    let mut config = outcome.config.expect("config");
    if let Some(timeout) = options.request_timeout {
        config.request_timeout = timeout;
    }
    if let Some(grace) = options.shutdown_grace {
        config.shutdown_grace = grace;
    }
    if let Some(configure) = options.configure {
        configure(&mut config);
    }
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let app = App::build_with(config, options.extra.unwrap_or_default()).await.expect("build app");
    let addr = app.local_addr().expect("local addr");
    let state = app.state().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    TestApp { addr, http, state, _db: db, scheme, shutdown: Some(tx), task }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    /// `GET path` with a bearer token.
    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(token).send().await.expect("request")
    }

    /// A new organization (through the same code as `moat admin create-org`).
    pub async fn create_org(&self, name: &str) -> Uuid {
        moat::admin::create_org(&self.state.db, name).await.expect("create org").0
    }

    /// A new user with a random password; returns its id and password.
    pub async fn create_user(&self, org: Uuid, email: &str, role: Role) -> (Uuid, String) {
        let password = moat::admin::generate_password();
        let id =
            moat::admin::create_user(&self.state.db, org, email, role, password.clone()).await.expect("create user");
        (id, password)
    }

    /// `POST /v1/auth/login`.
    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/v1/auth/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("login request")
    }

    /// An organization with one user of `role`, logged in: `(org, user, access token)`.
    pub async fn signed_in(&self, role: Role) -> (Uuid, Uuid, String) {
        let org = self.create_org("Signed-in org").await;
        let email = format!("{}@example.com", Uuid::new_v4());
        let (user, password) = self.create_user(org, &email, role).await;
        let response = self.login(&email, &password).await;
        assert_eq!(response.status(), 200, "login failed");
        let body: serde_json::Value = response.json().await.expect("login body");
        (org, user, body["access_token"].as_str().expect("access_token").to_owned())
    }

    /// An access token of a new admin user of `org`, obtained by logging in.
    pub async fn admin_token(&self, org: Uuid) -> String {
        let email = format!("admin-{}@example.com", Uuid::new_v4());
        let (_, password) = self.create_user(org, &email, Role::Admin).await;
        let body: serde_json::Value = self.login(&email, &password).await.json().await.expect("login body");
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// An access token minted directly with the app's keys (any scopes, any principal).
    pub fn token(&self, kind: PrincipalKind, id: Uuid, org: Uuid, scopes: &Scopes) -> String {
        self.state
            .tokens
            .mint_access(self.state.config.access_token_ttl, kind, id, org.into(), scopes, Default::default())
            .expect("mint")
            .access_token
    }

    /// Triggers graceful shutdown and waits for the server to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("server did not stop")
            .expect("server task")
    }
}

/// Logs from in-process apps only when `TEST_LOG` is set.
fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        moat::telemetry::init(moat::config::LogFormat::Text, Some("debug"));
    }
}

/// The headers every response must carry (and the ones it must not).
pub fn assert_security_headers(headers: &HeaderMap, context: &str) {
    let expect = [
        ("strict-transport-security", "max-age=31536000; includeSubDomains"),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("cache-control", "no-store"),
    ];
    for (name, value) in expect {
        assert_eq!(headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{context}: header {name}");
    }
    for absent in ["server", "x-powered-by", "x-moat-dev-mode"] {
        assert!(headers.get(absent).is_none(), "{context}: unexpected header {absent}");
    }
}

/// Reads `{"error":{"code","message"}}` and returns the code, asserting the shape.
pub async fn error_code(response: reqwest::Response) -> String {
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(content_type.starts_with("application/json"), "error content type {content_type}");
    let body: serde_json::Value = response.json().await.expect("json error body");
    let error = body.get("error").unwrap_or_else(|| panic!("no error object: {body}"));
    assert!(error.get("message").and_then(|m| m.as_str()).is_some_and(|m| !m.is_empty()), "message: {body}");
    error.get("code").and_then(|c| c.as_str()).unwrap_or_else(|| panic!("no code: {body}")).to_owned()
}
