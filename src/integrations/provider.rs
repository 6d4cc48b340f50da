//! Talking to a provider's token endpoint: the authorization-code exchange
//! (with the PKCE verifier) and the refresh-token grant.
//!
//! Each provider gets its own HTTP client: TLS 1.2+ with verified
//! certificates (the system's roots, or only the provider's `ca_file`), no
//! redirects, a deadline of `MOAT_PROVIDER_TIMEOUT`, built by the egress
//! policy (`MOAT_EGRESS_ALLOW`, addresses checked at connect time). Responses are classified
//! so the broker can answer honestly: `invalid_grant` means the refresh token
//! is dead; anything else is the provider being unavailable. Token material
//! is never logged.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Provider;
use crate::egress::{Egress, Refused};

/// A configured provider and its HTTP client.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    pub provider: Provider,
    http: reqwest::Client,
    egress: Egress,
}

/// Every configured provider, by name.
#[derive(Debug, Clone, Default)]
pub struct Providers(BTreeMap<String, ProviderClient>);

impl Providers {
    pub fn new(providers: &BTreeMap<String, Provider>, timeout: Duration, egress: &Egress) -> anyhow::Result<Self> {
        let mut clients = BTreeMap::new();
        for (name, provider) in providers {
            let tls = crate::tls::client_config(provider.ca_file.as_deref()).map_err(anyhow::Error::msg)?;
            // The egress policy's client: every address checked at connect time.
            let http = egress
                .client_builder()
                .tls_backend_preconfigured(tls)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(timeout)
                .connect_timeout(timeout)
                .user_agent("moat")
                .build()?;
            clients.insert(name.clone(), ProviderClient { provider: provider.clone(), http, egress: egress.clone() });
        }
        Ok(Self(clients))
    }

    pub fn get(&self, name: &str) -> Option<&ProviderClient> {
        self.0.get(name)
    }
}

/// Tokens from a successful token-endpoint call. `Debug` shows no token.
pub struct Tokens {
    pub access_token: String,
    /// `None` when the provider did not rotate the refresh token.
    pub refresh_token: Option<String>,
    pub expires_in: f64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens(expires_in={}, redacted)", self.expires_in)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The grant (refresh token or code) is dead: the user must connect again.
    #[error("the provider refused the grant (invalid_grant)")]
    InvalidGrant,
    /// Timeout, connection failure, 5xx, or an answer Moat cannot use.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The egress policy refused the destination (or an address it resolved to).
    #[error(transparent)]
    Refused(#[from] Refused),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<f64>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

/// Assumed lifetime when a provider does not say (RFC 6749 makes `expires_in` optional).
const DEFAULT_EXPIRES_IN: f64 = 3600.0;

impl ProviderClient {
    /// The refresh-token grant (RFC 6749 §6).
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, ProviderError> {
        self.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
    }

    /// The authorization-code grant with PKCE (RFC 6749 §4.1.3, RFC 7636).
    pub async fn exchange(&self, code: &str, verifier: &str, redirect_uri: &str) -> Result<Tokens, ProviderError> {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect_uri),
        ])
        .await
    }

    async fn token(&self, form: &[(&str, &str)]) -> Result<Tokens, ProviderError> {
        self.egress.check_url(&self.provider.token_url)?;
        let unavailable = |e: reqwest::Error| match crate::egress::refusal(&e) {
            Some(refused) => ProviderError::Refused(refused),
            None => ProviderError::Unavailable(describe(&e)),
        };
        let response = self
            .http
            .post(self.provider.token_url.clone())
            .basic_auth(&self.provider.client_id, Some(self.provider.client_secret.expose()))
            .header("accept", "application/json")
            .form(form)
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        let body = read_bounded(response).await?;
        // Some providers answer errors with 200: an `error` field wins over the status.
        let error = serde_json::from_slice::<ErrorResponse>(&body).ok().map(|e| oauth_error_code(&e.error));
        if let Some(code) = &error {
            if code == "invalid_grant" && (status.is_success() || status.is_client_error()) {
                return Err(ProviderError::InvalidGrant);
            }
            return Err(ProviderError::Unavailable(format!("{status} {code}")));
        }
        if !status.is_success() {
            return Err(ProviderError::Unavailable(format!("{status} (no OAuth error)")));
        }
        let tokens: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| ProviderError::Unavailable(format!("{status} with a body that is not a token response")))?;
        if tokens.access_token.is_empty() {
            return Err(ProviderError::Unavailable("an empty access token".into()));
        }
        let expires_in = tokens.expires_in.filter(|e| e.is_finite() && *e >= 0.0).unwrap_or(DEFAULT_EXPIRES_IN);
        Ok(Tokens {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token.filter(|t| !t.is_empty()),
            expires_in: expires_in.min(10.0 * 365.0 * 86400.0),
        })
    }
}

/// Largest token-endpoint answer read; a provider (or whatever answers in its
/// place) cannot make Moat buffer more.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The response body, at most [`MAX_RESPONSE_BYTES`] (more is a provider failure, read no further).
async fn read_bounded(response: reqwest::Response) -> Result<axum::body::Bytes, ProviderError> {
    use http_body_util::BodyExt as _;
    let body = http_body_util::Limited::new(reqwest::Body::from(response), MAX_RESPONSE_BYTES);
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ProviderError::Unavailable(format!("an answer larger than {MAX_RESPONSE_BYTES} bytes")))
        }
        Err(e) => Err(ProviderError::Unavailable(format!("reading the answer failed: {e}"))),
    }
}

/// An OAuth error code as safe to log: RFC 6749 codes are `[a-z_]`; anything
/// else the provider sent is replaced, and it is never longer than 40 characters.
fn oauth_error_code(raw: &str) -> String {
    if !raw.is_empty() && raw.len() <= 40 && raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        raw.to_owned()
    } else {
        "unrecognised_error".to_owned()
    }
}

/// A reqwest error without its URL (which could carry a code in a query string).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() { kind.to_owned() } else { format!("{kind}: {cause}") }
}
