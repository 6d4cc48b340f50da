//! The application in-process on port 0: the same `App` the binary serves.

use std::net::SocketAddr;
use std::time::Duration;

use moat::App;
use moat::http::Routes;
use reqwest::header::HeaderMap;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::pg::TestDb;
use super::process::Env;

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
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
    pub extra: Option<Routes>,
    pub request_timeout: Option<Duration>,
    pub shutdown_grace: Option<Duration>,
    pub db: Option<TestDb>,
}

pub async fn spawn_app(options: Options) -> TestApp {
    init_logs();
    let db = match options.db {
        Some(db) => db,
        None => TestDb::migrated().await,
    };
    let env = options.env.unwrap_or_else(|| Env::production(&db));
    let outcome = moat::check::run(&env.vars()).await;
    assert!(outcome.problems.is_empty(), "test configuration refused:\n{}", outcome.report());
    let mut config = outcome.config.expect("config");
    if let Some(timeout) = options.request_timeout {
        config.request_timeout = timeout;
    }
    if let Some(grace) = options.shutdown_grace {
        config.shutdown_grace = grace;
    }
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let app = App::build_with(config, options.extra.unwrap_or_default()).await.expect("build app");
    let addr = app.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    TestApp { addr, http, _db: db, scheme, shutdown: Some(tx), task }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
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
