//! `POST /v1/oauth/token`: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4).
//!
//! Form-encoded; the client authenticates with HTTP Basic or with
//! `client_id`/`client_secret` form fields (never both). The token carries
//! the intersection of the requested and the granted scopes. Errors use
//! RFC 6749 §5.2 bodies (`{"error":"invalid_client",…}`), not Moat's shape,
//! because OAuth client libraries parse them.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use uuid::Uuid;

use super::AuthState;
use super::session::MALFORMED;
use super::store;
use crate::audit::{self, Event};
use crate::db::tenant::{self, Lookup};
use crate::http::ClientIp;
use crate::identity::password;
use crate::identity::{PrincipalKind, Scope, Scopes, SessionRef};
use crate::ids::{ClientId, OrgId};
use crate::limits::{self, TOKEN_PER_CLIENT, TOKEN_PER_IP, Verdict};

/// An RFC 6749 §5.2 error.
struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: &'static str,
    /// Set when the client tried HTTP Basic: the 401 then challenges Basic.
    basic: bool,
    retry_after: Option<u64>,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: &'static str) -> Self {
        Self { status, code, description, basic: false, retry_after: None }
    }

    fn invalid_client(basic: bool) -> Self {
        Self { basic, ..Self::new(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed") }
    }

    fn invalid_request(description: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "error_description": self.description });
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.basic { "Basic realm=\"moat\"" } else { "Bearer" };
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn internal(e: impl Into<anyhow::Error>) -> OAuthError {
    let e: anyhow::Error = e.into();
    let lost = e.downcast_ref::<tokio_postgres::Error>().is_some_and(crate::db::connection_lost);
    if lost || e.downcast_ref::<deadpool_postgres::PoolError>().is_some() {
        tracing::warn!(error = %format!("{e:#}"), "token endpoint: the database is unavailable");
        return OAuthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the service is temporarily unavailable",
        );
    }
    tracing::error!(error = %format!("{e:#}"), "token endpoint failed");
    OAuthError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "an internal error occurred")
}

/// The client-credentials grant fields (`application/x-www-form-urlencoded`;
/// the client may authenticate with HTTP Basic instead).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the form `issue` parses by hand
pub(super) struct TokenForm {
    #[schema(example = "client_credentials")]
    grant_type: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    /// Space-separated scopes; at most the client's own.
    scope: Option<String>,
}

/// An OAuth 2.0 error (RFC 6749 §5.2).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct OAuthErrorBody {
    #[schema(example = "invalid_client")]
    error: String,
    error_description: String,
}

/// OAuth 2.0 token endpoint: client credentials only.
#[utoipa::path(post, path = "/v1/oauth/token", tag = "auth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "An access token", body = crate::identity::jwt::AccessToken),
        (status = 400, description = "Malformed request, unsupported grant or scope", body = OAuthErrorBody),
        (status = 401, description = "Client authentication failed", body = OAuthErrorBody),
        (status = 429, description = "Too many attempts", body = OAuthErrorBody),
        (status = 500, description = "Internal error", body = OAuthErrorBody),
        (status = 503, description = "The database is unavailable (retry)", body = OAuthErrorBody),
))]
pub(super) async fn token(
    State(state): State<AuthState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match issue(&state, ip, &headers, &body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn issue(
    state: &AuthState,
    ip: std::net::IpAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let form_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    });
    if !form_type {
        return Err(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded"));
    }
    let mut form: HashMap<String, String> = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(body) {
        // RFC 6749 §3.2: parameters must not be included more than once.
        if form.insert(key.into_owned(), value.into_owned()).is_some() {
            return Err(OAuthError::invalid_request("a parameter is repeated"));
        }
    }
    let basic = basic_credentials(headers)?;
    let used_basic = basic.is_some();
    let (client_id, secret) = match (basic, form.get("client_id"), form.get("client_secret")) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(OAuthError::invalid_request("use one client authentication method, not two"));
        }
        (Some(credentials), None, None) => credentials,
        (None, Some(id), Some(secret)) => (id.clone(), secret.clone()),
        (None, _, _) => return Err(OAuthError::invalid_client(false)),
    };
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            ));
        }
        None => return Err(OAuthError::invalid_request("grant_type is required")),
    }
    let requested = match form.get("scope") {
        None => None,
        Some(raw) => Some(Scopes::parse(raw).map_err(|_| {
            OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", "a requested scope does not exist")
        })?),
    };
    if secret.len() > password::MAX_LEN {
        return Err(OAuthError::invalid_client(used_basic));
    }
    // Counted under the canonical id, so other spellings of one UUID share a bucket;
    // anything that is not a UUID shares one "malformed" bucket and is never looked up.
    let id = Uuid::parse_str(&client_id).ok();
    let canonical = id.map_or_else(|| MALFORMED.to_owned(), |id| id.to_string());
    let ip_key = limits::ip_key(ip);
    let client_key = format!("{canonical} {ip_key}");
    let verdict = state
        .limiter
        .hit_in_order(&state.db, &[(TOKEN_PER_IP, &ip_key), (TOKEN_PER_CLIENT, &client_key)])
        .await
        .map_err(internal)?;
    if let Verdict::Limited { retry_after } = verdict {
        state.metrics.rate_limited();
        let limited = OAuthError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many attempts; retry later");
        return Err(OAuthError { retry_after: Some(retry_after), ..limited });
    }

    let client_row = match id {
        None => None,
        Some(id) => {
            let mut db = state.db.get().await.map_err(internal)?;
            let tx = db.transaction().await.map_err(internal)?;
            tenant::set_lookup(&tx, Lookup::Client(id)).await.map_err(internal)?;
            let client = store::find_client(&tx, ClientId(id)).await.map_err(internal)?;
            tx.commit().await.map_err(internal)?;
            client
        }
    };
    let stored = client_row.as_ref().map_or_else(|| state.hasher.dummy().to_owned(), |c| c.secret_hash.clone());
    let matches = state.hasher.verify(secret, stored).await.map_err(internal)?;
    let known = client_row.as_ref().map(|c| (c.org, c.disabled));
    let Some(client) = client_row.filter(|c| matches && !c.disabled) else {
        let reason = match known {
            None => "unknown_client",
            Some((_, true)) => "client_disabled",
            Some((_, false)) => "wrong_secret",
        };
        let event = Event::new(known.map(|(org, _)| org), "client_auth_failed", "anonymous")
            .subject(canonical)
            .ip(ip)
            .detail(json!({ "reason": reason }));
        record(state, &event).await.map_err(internal)?;
        return Err(OAuthError::invalid_client(used_basic));
    };
    state.limiter.succeed(&state.db, TOKEN_PER_CLIENT, &client_key).await.map_err(internal)?;

    let granted: Scopes = client.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
    let scopes = match requested {
        None => granted,
        Some(requested) => requested.intersection(&granted),
    };
    if scopes.is_empty() {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "none of the requested scopes is granted",
        ));
    }
    let (id, org) = (client.id, client.org);
    let generation = SessionRef { sid: None, generation: Some(client.secret_generation) };
    let mut access = state
        .tokens
        .mint_access(state.config.access_token_ttl, PrincipalKind::Client, id.0, org, &scopes, generation)
        .map_err(internal)?;
    access.scope = Some(scopes.to_string());
    record(state, &Event::new(Some(org), "client_token_issued", format!("client:{id}")).ip(ip))
        .await
        .map_err(internal)?;
    let mut response = Json(access).into_response();
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Audits `event` in a transaction of its own (set to the event's organization, if any).
async fn record(state: &AuthState, event: &Event) -> anyhow::Result<()> {
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    // The same round trips whether or not the organization is known.
    tenant::set_org(&tx, event.org.unwrap_or(OrgId::NIL)).await?;
    audit::record(&tx, event).await?;
    tx.commit().await?;
    Ok(())
}

/// `Authorization: Basic` credentials, each part form-url-decoded (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| OAuthError::invalid_client(true))?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(OAuthError::invalid_client(true));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(true));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| OAuthError::invalid_client(true))?;
    let (id, secret) = decoded.split_once(':').ok_or_else(|| OAuthError::invalid_client(true))?;
    let unescape =
        |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8().ok().map(|v| v.into_owned());
    match (unescape(id), unescape(secret)) {
        (Some(id), Some(secret)) => Ok(Some((id, secret))),
        _ => Err(OAuthError::invalid_client(true)),
    }
}
