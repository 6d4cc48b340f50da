//! Connecting an integration in the browser: the OAuth authorization-code
//! flow with PKCE (S256).
//!
//! `connect` (bearer, `integrations:write`) stores a pending flow — a random
//! single-use `state` (only its hash is kept), the organization and user that
//! started it, the sealed PKCE verifier, ten minutes to live — and sets a
//! browser-binding cookie whose hash the flow also keeps. `callback` (public:
//! it arrives from the provider) consumes the state first, whatever happens
//! next, then requires the same browser's cookie, so a victim lured to a
//! callback URL carrying someone else's state connects nothing. A wrong,
//! reused or expired state is a 400 and nothing is stored.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::SameSite;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::IntegrationsState;
use super::api::valid_account;
use super::broker::{self, aad};
use super::error::IntegrationError;
use super::store;
use crate::audit::{self, Event};
use crate::db::tenant::{self, Lookup};
use crate::http::cookies;
use crate::identity::password::random_secret;
use crate::identity::{Caller, PrincipalKind, Scopes, SessionRef};
use crate::ids::OrgId;

/// How long a started connect flow stays usable (also the cookie's lifetime).
const FLOW_TTL_SECS: i64 = 600;
const MAX_STATE_LEN: usize = 256;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ConnectQuery {
    /// A label for this connection (default: the provider's name); reconnecting the same label replaces it.
    account: Option<String>,
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn verifier_aad(state_hash: &[u8; 32]) -> Vec<u8> {
    format!("oauth_states.code_verifier:{}", hex(state_hash)).into_bytes()
}

fn redirect_uri(state: &IntegrationsState) -> String {
    format!("{}/v1/integrations/callback", state.config.public_url.origin().ascii_serialization())
}

fn secure(state: &IntegrationsState) -> bool {
    state.config.public_url.scheme() == "https"
}

/// One cookie per flow (two tabs connecting at once keep their own), named
/// after the state's hash; `__Host-` (Secure, Path=/, no Domain) whenever the
/// public URL is https.
fn cookie_name(state: &IntegrationsState, state_hash: &[u8; 32]) -> String {
    let prefix = if secure(state) { "__Host-moat_connect_" } else { "moat_connect_" };
    format!("{prefix}{}", &hex(state_hash)[..16])
}

/// SameSite=Lax, not Strict: the callback is a top-level navigation from the
/// provider's site, and Strict cookies are withheld from those.
fn binding_cookie(state: &IntegrationsState, state_hash: &[u8; 32], value: &str, max_age: i64) -> Option<HeaderValue> {
    cookies::set(&cookie_name(state, state_hash), value, SameSite::Lax, secure(state), max_age)
}

/// `GET /v1/integrations/{provider}/connect`: 302 to the provider (or, with
/// `Accept: application/json`, `{"authorize_url"}` for single-page apps).
#[utoipa::path(get, path = "/v1/integrations/{provider}/connect", tag = "integrations",
    params(("provider" = String, Path, description = "A configured provider's name"), ConnectQuery), responses(
    (status = 200, description = "With `Accept: application/json`: where to send the browser", body = AuthorizeUrl),
    (status = 302, description = "To the provider's authorization page (`Location`); sets the flow's binding cookie"),
    (status = 404, description = "`unknown_provider`", body = crate::http::openapi::ErrorBody),
))]
pub(super) async fn connect(
    State(state): State<IntegrationsState>,
    caller: Caller,
    Path(provider_name): Path<String>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
) -> Result<Response, IntegrationError> {
    let provider = state.providers.get(&provider_name).ok_or(IntegrationError::UnknownProvider)?;
    let account = valid_account(query.account.as_deref().unwrap_or(&provider_name))?;
    let (flow_state, binding, verifier) = (random_secret(32), random_secret(32), random_secret(32));
    let state_hash = sha256(&flow_state);
    let challenge = URL_SAFE_NO_PAD.encode(sha256(&verifier));
    let sealed_verifier = state.sealer.seal(verifier.as_bytes(), &verifier_aad(&state_hash))?;

    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    // Reconnecting replaces tokens: only the integration's creator may, or an
    // org member could swap a colleague's connection for their own account.
    let statement = tx.prepare_cached(store::FIND_ACCOUNT).await?;
    if let Some(existing) = tx.query_opt(&statement, &[&caller.org, &provider_name, &account]).await?
        && existing.get::<_, String>("created_by") != caller.actor()
    {
        return Err(IntegrationError::Exists);
    }
    let statement = tx.prepare_cached(store::INSERT_STATE).await?;
    let binding_hash = sha256(&binding).to_vec();
    tx.execute(
        &statement,
        &[
            &state_hash.to_vec(),
            &caller.org,
            &caller.actor(),
            &provider_name,
            &account,
            &binding_hash,
            &sealed_verifier,
            &caller.session.sid,
            &caller.session.generation,
        ],
    )
    .await?;
    tx.commit().await?;

    let mut url = provider.provider.authorize_url.clone();
    {
        let mut pairs = url.query_pairs_mut();
        pairs
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.provider.client_id)
            .append_pair("redirect_uri", &redirect_uri(&state))
            .append_pair("state", &flow_state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if !provider.provider.scopes.is_empty() {
            pairs.append_pair("scope", &provider.provider.scopes.join(" "));
        }
        for (key, value) in &provider.provider.authorize_params {
            pairs.append_pair(key, value);
        }
    }
    let wants_json =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"));
    let mut response = if wants_json {
        Json(AuthorizeUrl { authorize_url: url.to_string() }).into_response()
    } else {
        let mut response = StatusCode::FOUND.into_response();
        let location = HeaderValue::from_str(url.as_str()).map_err(anyhow::Error::from)?;
        response.headers_mut().insert(header::LOCATION, location);
        response
    };
    if let Some(cookie) = binding_cookie(&state, &state_hash, &binding, FLOW_TTL_SECS) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// Where the flow continues in the browser.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct AuthorizeUrl {
    authorize_url: String,
}

/// `GET /v1/integrations/callback?code=…&state=…`: where the provider sends the browser back.
#[utoipa::path(get, path = "/v1/integrations/callback", tag = "integrations",
    params(
        ("state" = Option<String>, Query, description = "The flow's single-use state"),
        ("code" = Option<String>, Query, description = "The provider's authorization code"),
    ),
    responses(
    (status = 303, description = "Connected: to the web app (`Location`)"),
    (status = 400, description = "`invalid_state` (missing, tampered, foreign, expired or used) or a provider error", body = crate::http::openapi::ErrorBody),
    (status = 409, description = "The flow's browser cookie is missing", body = crate::http::openapi::ErrorBody),
    (status = 502, description = "The provider could not be reached or refused the code", body = crate::http::openapi::ErrorBody),
))]
pub(super) async fn callback(
    State(state): State<IntegrationsState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, IntegrationError> {
    let flow_state = params.get("state").filter(|s| !s.is_empty() && s.len() <= MAX_STATE_LEN);
    let Some(flow_state) = flow_state else {
        return Ok(IntegrationError::InvalidState.into_response());
    };
    let state_hash = sha256(flow_state);
    let result = complete(&state, &state_hash, &params, &headers).await;
    let mut response = match result {
        Ok(id) => {
            let origin = state.config.public_url.origin().ascii_serialization();
            let target = format!("{origin}/app/integrations?connected={id}");
            let mut response = StatusCode::SEE_OTHER.into_response();
            let location = HeaderValue::from_str(&target).map_err(anyhow::Error::from)?;
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        Err(e) => e.into_response(),
    };
    // This flow's binding cookie has done its job either way (other flows' are untouched).
    if let Some(clear) = binding_cookie(&state, &state_hash, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    Ok(response)
}

/// The consumed flow.
struct Flow {
    org: OrgId,
    created_by: String,
    /// The session that started the flow (checked again when it completes).
    session: SessionRef,
    provider: String,
    account: String,
    verifier: String,
}

async fn complete(
    state: &IntegrationsState,
    state_hash: &[u8; 32],
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Uuid, IntegrationError> {
    let flow = consume(state, state_hash, headers).await?;
    if params.contains_key("error") {
        return Err(IntegrationError::ProviderDenied);
    }
    let code = params.get("code").filter(|c| !c.is_empty() && c.len() <= 4096).ok_or(IntegrationError::InvalidState)?;
    let provider = state.providers.get(&flow.provider).ok_or(IntegrationError::UnknownProvider)?;
    // No database connection is held during the exchange.
    let tokens = match provider.exchange(code, &flow.verifier, &redirect_uri(state)).await {
        Ok(tokens) => tokens,
        Err(super::provider::ProviderError::InvalidGrant) => return Err(IntegrationError::ProviderDenied),
        Err(super::provider::ProviderError::Unavailable(cause)) => {
            tracing::warn!(provider = %flow.provider, %cause, "code exchange failed");
            return Err(IntegrationError::ProviderUnavailable { retry_after: 1 });
        }
        Err(super::provider::ProviderError::Refused(refused)) => {
            audit_refusal(state, &flow, &refused).await?;
            return Err(IntegrationError::EgressRefused);
        }
    };
    store(state, &flow, tokens).await
}

/// Records an egress refusal in the organization that started the flow.
async fn audit_refusal(
    state: &IntegrationsState,
    flow: &Flow,
    refused: &crate::egress::Refused,
) -> Result<(), IntegrationError> {
    let mut client = state.db.get().await?;
    let tx = client.transaction().await?;
    tenant::set_org(&tx, flow.org).await?;
    let event = crate::audit::Event::new(Some(flow.org), "egress_refused", flow.created_by.clone()).detail(
        serde_json::json!({ "provider": flow.provider, "destination": refused.destination, "reason": refused.reason }),
    );
    crate::audit::record(&tx, &event).await?;
    tx.commit().await?;
    Ok(())
}

/// Consumes the state (single use, whatever happens next) and checks the browser binding.
async fn consume(
    state: &IntegrationsState,
    state_hash: &[u8; 32],
    headers: &HeaderMap,
) -> Result<Flow, IntegrationError> {
    let mut client = state.db.get().await?;
    let tx = client.transaction().await?;
    tenant::set_lookup(&tx, Lookup::State(state_hash)).await?;
    let statement = tx.prepare_cached(store::CONSUME_STATE).await?;
    let row = tx.query_opt(&statement, &[&state_hash.to_vec()]).await?;
    tx.commit().await?;
    let row = row.ok_or(IntegrationError::InvalidState)?;
    if !row.get::<_, bool>("fresh") {
        return Err(IntegrationError::InvalidState);
    }
    let binding = cookies::read(headers, &cookie_name(state, state_hash)).ok_or(IntegrationError::InvalidState)?;
    if sha256(&binding).as_slice() != row.get::<_, Vec<u8>>("binding_hash").as_slice() {
        return Err(IntegrationError::InvalidState);
    }
    let sealed: Vec<u8> = row.get("code_verifier");
    let verifier = String::from_utf8(state.sealer.open(&sealed, &verifier_aad(state_hash))?)
        .map_err(|_| IntegrationError::Internal(anyhow::anyhow!("sealed verifier is not text")))?;
    Ok(Flow {
        org: row.get("org_id"),
        created_by: row.get("created_by"),
        session: SessionRef { sid: row.get("starter_sid"), generation: row.get("starter_generation") },
        provider: row.get("provider"),
        account: row.get("account"),
        verifier,
    })
}

/// Stores the tokens as the principal that started the flow, if still enabled:
/// a new integration, or a reconnect of that principal's own.
async fn store(
    state: &IntegrationsState,
    flow: &Flow,
    tokens: super::provider::Tokens,
) -> Result<Uuid, IntegrationError> {
    let caller = starter(flow.org, &flow.created_by, flow.session)?;
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(store::FIND_ACCOUNT).await?;
    let existing = tx.query_opt(&statement, &[&flow.org, &flow.provider, &flow.account]).await?;
    let key_id = state.sealer.key_id();
    let reconnected = match existing {
        Some(row) if row.get::<_, String>("created_by") != flow.created_by => return Err(IntegrationError::Exists),
        Some(row) => {
            let id: Uuid = row.get("id");
            broker::lock(&tx, id, state.config.provider_timeout).await?;
            // A reconnect without a new refresh token keeps the old one (re-sealed under the current key).
            let refresh = match &tokens.refresh_token {
                Some(token) => Some(token.clone()),
                None => {
                    let statement = tx.prepare_cached(store::READ_FOR_REFRESH).await?;
                    let old = tx.query_opt(&statement, &[&id, &flow.org]).await?;
                    let sealed = old.and_then(|r| r.get::<_, Option<Vec<u8>>>("refresh_token"));
                    sealed
                        .map(|s| state.sealer.open(&s, &aad(id, "refresh_token")))
                        .transpose()?
                        .and_then(|p| String::from_utf8(p).ok())
                }
            };
            let access = state.sealer.seal(tokens.access_token.as_bytes(), &aad(id, "access_token"))?;
            let refresh = refresh.map(|t| state.sealer.seal(t.as_bytes(), &aad(id, "refresh_token"))).transpose()?;
            let statement = tx.prepare_cached(store::RECONNECT).await?;
            let updated =
                tx.execute(&statement, &[&id, &flow.org, &access, &refresh, &key_id, &tokens.expires_in]).await?;
            (updated == 1).then_some(id)
        }
        None => None,
    };
    let id = match reconnected {
        Some(id) => id,
        // New (or deleted while this flow ran): insert.
        None => {
            let id = Uuid::new_v4();
            let access = state.sealer.seal(tokens.access_token.as_bytes(), &aad(id, "access_token"))?;
            let refresh = tokens
                .refresh_token
                .as_ref()
                .map(|t| state.sealer.seal(t.as_bytes(), &aad(id, "refresh_token")))
                .transpose()?;
            let statement = tx.prepare_cached(store::INSERT_INTEGRATION).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
                &id,
                &flow.org,
                &flow.created_by,
                &flow.provider,
                &flow.account,
                &access,
                &refresh,
                &key_id,
                &tokens.expires_in,
            ];
            match tx.query_one(&statement, &params).await {
                Ok(_) => id,
                Err(e) if e.as_db_error().and_then(|d| d.constraint()) == Some("integrations_account_key") => {
                    return Err(IntegrationError::Exists);
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let event = Event::new(Some(flow.org), "integration_connected", flow.created_by.clone())
        .subject(id.to_string())
        .detail(serde_json::json!({ "provider": flow.provider, "reconnect": reconnected.is_some() }));
    audit::record(&tx, &event).await?;
    tx.commit().await?;
    Ok(id)
}

/// The principal (and session) that started a flow, from its `user:<id>` / `client:<id>` actor string.
fn starter(org: OrgId, actor: &str, session: SessionRef) -> Result<Caller, IntegrationError> {
    let bad = || IntegrationError::Internal(anyhow::anyhow!("unreadable flow starter {actor:?}"));
    let (kind, id) = actor.split_once(':').ok_or_else(bad)?;
    let kind = match kind {
        "user" => PrincipalKind::User,
        "client" => PrincipalKind::Client,
        _ => return Err(bad()),
    };
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok(Caller { id, kind, org, scopes: Scopes::default(), expires_at: 0, session })
}
