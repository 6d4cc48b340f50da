//! A fake OAuth provider over HTTPS, standing in for the external party.
//!
//! Authorize and token endpoints, PKCE (S256) verification, **single-use
//! rotating refresh tokens** (a reused one → `invalid_grant`), counters, and
//! knobs for latency and failures. Its certificate is signed by a CA made at
//! test time; Moat trusts it through the provider's `ca_file`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;

pub const CLIENT_ID: &str = "moat-test-client";
pub const CLIENT_SECRET: &str = "fake-provider-client-secret-for-tests";

/// What the token endpoint does with refresh requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Answer 500.
    ServerError,
    /// Hold the request until released, then answer 503 without rotating anything.
    Hang,
    /// Answer `{"error":"invalid_grant"}` with status 200, as some providers do.
    InvalidGrantWith200,
    /// Answer 200 with a body that never ends (an access token growing forever), rotating nothing.
    Endless,
}

#[derive(Default)]
struct Inner {
    /// code → (challenge, redirect_uri)
    codes: HashMap<String, (String, String)>,
    /// refresh token → still usable
    refresh_tokens: HashMap<String, bool>,
    refreshes: u64,
    refresh_attempts: u64,
    latency: Duration,
    failure: Option<Failure>,
    access_ttl: u64,
    counter: u64,
    /// The code exchange answers without a refresh token (as on some re-consents).
    omit_refresh_on_exchange: bool,
    /// Rotate at once, then wait this long before answering (a slow response).
    delay_after_rotation: Duration,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    release: Arc<Notify>,
}

pub struct FakeProvider {
    pub addr: SocketAddr,
    pub ca_file: PathBuf,
    shared: Shared,
    _dir: tempfile::TempDir,
}

impl FakeProvider {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "fake provider CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
                )
                .unwrap();
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner { access_ttl: 3600, ..Inner::default() })),
            release: Arc::new(Notify::new()),
        };
        let app =
            Router::new().route("/authorize", get(authorize)).route("/token", post(token)).with_state(shared.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
        let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
        tokio::spawn(async move { server.serve(app.into_make_service()).await });
        Self { addr, ca_file, shared, _dir: dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// The `MOAT_EGRESS_ALLOW` entry that lets Moat reach this provider (a loopback address: explicit).
    pub fn egress_allow(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// A providers file naming this provider `fake`, its secret in `FAKE_PROVIDER_SECRET`.
    pub fn providers_file(&self, dir: &std::path::Path) -> PathBuf {
        let path = dir.join("providers.toml");
        let text = format!(
            "[providers.fake]\nauthorize_url = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"FAKE_PROVIDER_SECRET\"\nscopes = [\"calendar.read\", \"offline\"]\nca_file = \"{}\"\n[providers.fake.authorize_params]\naccess_type = \"offline\"\n",
            self.url("/authorize"),
            self.url("/token"),
            self.ca_file.display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A new live refresh token, as if issued earlier (for imported integrations).
    pub fn issue_refresh_token(&self) -> String {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.counter += 1;
        let token = format!("rt-seed-{}-{}", inner.counter, uuid::Uuid::new_v4());
        inner.refresh_tokens.insert(token.clone(), true);
        token
    }

    /// Successful refreshes so far.
    pub fn refreshes(&self) -> u64 {
        self.shared.inner.lock().unwrap().refreshes
    }

    /// Refresh requests received so far, successful or not.
    pub fn refresh_attempts(&self) -> u64 {
        self.shared.inner.lock().unwrap().refresh_attempts
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared.inner.lock().unwrap().latency = latency;
    }

    pub fn set_access_ttl(&self, secs: u64) {
        self.shared.inner.lock().unwrap().access_ttl = secs;
    }

    /// Refreshes rotate the token immediately but answer only after `delay`.
    pub fn set_delay_after_rotation(&self, delay: Duration) {
        self.shared.inner.lock().unwrap().delay_after_rotation = delay;
    }

    pub fn omit_refresh_on_exchange(&self, omit: bool) {
        self.shared.inner.lock().unwrap().omit_refresh_on_exchange = omit;
    }

    pub fn set_failure(&self, failure: Option<Failure>) {
        let hung = self.shared.inner.lock().unwrap().failure == Some(Failure::Hang);
        self.shared.inner.lock().unwrap().failure = failure;
        if hung {
            self.shared.release.notify_waiters();
        }
    }
}

async fn authorize(State(shared): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let ok = q.get("response_type").map(String::as_str) == Some("code")
        && q.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && q.get("code_challenge_method").map(String::as_str) == Some("S256")
        && q.get("code_challenge").is_some_and(|c| c.len() == 43)
        && q.contains_key("state")
        && q.contains_key("redirect_uri");
    if !ok {
        return (StatusCode::BAD_REQUEST, "bad authorize request").into_response();
    }
    let code = format!("code-{}", uuid::Uuid::new_v4());
    shared.inner.lock().unwrap().codes.insert(code.clone(), (q["code_challenge"].clone(), q["redirect_uri"].clone()));
    let mut target = url::Url::parse(&q["redirect_uri"]).unwrap();
    target.query_pairs_mut().append_pair("code", &code).append_pair("state", &q["state"]);
    Redirect::to(target.as_str()).into_response()
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

fn client_authenticated(headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    match basic {
        Some(pair) => pair == format!("{CLIENT_ID}:{CLIENT_SECRET}"),
        None => {
            form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
        }
    }
}

async fn token(
    State(shared): State<Shared>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    if !client_authenticated(&headers, &form) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let grant = shared.inner.lock().unwrap().codes.remove(form.get("code").map(String::as_str).unwrap_or(""));
            let Some((challenge, redirect_uri)) = grant else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if computed != challenge || form.get("redirect_uri") != Some(&redirect_uri) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            issue(&shared, false)
        }
        Some("refresh_token") => {
            let (latency, failure) = {
                let mut inner = shared.inner.lock().unwrap();
                inner.refresh_attempts += 1;
                (inner.latency, inner.failure)
            };
            if failure == Some(Failure::Hang) {
                shared.release.notified().await;
                return oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
            }
            tokio::time::sleep(latency).await;
            if failure == Some(Failure::ServerError) {
                return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
            }
            if failure == Some(Failure::InvalidGrantWith200) {
                return oauth_error(StatusCode::OK, "invalid_grant");
            }
            if failure == Some(Failure::Endless) {
                let head =
                    futures_util::stream::once(async { Ok::<_, std::io::Error>(b"{\"access_token\":\"".to_vec()) });
                let tail = futures_util::stream::repeat_with(|| Ok(vec![b'a'; 64 * 1024]));
                let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(head, tail));
                return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
            }
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            {
                let mut inner = shared.inner.lock().unwrap();
                match inner.refresh_tokens.get_mut(&presented) {
                    Some(live) if *live => *live = false,
                    _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant"),
                }
            }
            let delay = shared.inner.lock().unwrap().delay_after_rotation;
            let response = issue(&shared, true);
            tokio::time::sleep(delay).await;
            response
        }
        _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    }
}

fn issue(shared: &Shared, refresh: bool) -> Response {
    let mut inner = shared.inner.lock().unwrap();
    inner.counter += 1;
    if refresh {
        inner.refreshes += 1;
    }
    let n = inner.counter;
    let access = format!("at-{n}-{}", uuid::Uuid::new_v4());
    let mut body = json!({ "access_token": access, "token_type": "Bearer", "expires_in": inner.access_ttl });
    if refresh || !inner.omit_refresh_on_exchange {
        let refresh_token = format!("rt-{n}-{}", uuid::Uuid::new_v4());
        inner.refresh_tokens.insert(refresh_token.clone(), true);
        body["refresh_token"] = json!(refresh_token);
    }
    axum::Json(body).into_response()
}
