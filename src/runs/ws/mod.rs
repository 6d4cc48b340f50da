//! The real-time edge: a WebSocket per conversation, checked in five steps
//! before the upgrade (docs/websocket.md).
//!
//! 1. Token extraction (query `token=`, or subprotocol `moat.token.<t>`): none → 401.
//! 2. Signature, `aud` `moat:ws`, expiry and single use (`jti` consumed in
//!    PostgreSQL) → otherwise 401.
//! 3. Organization from the token only.
//! 4. Ownership: the token's `conv` equals the path and the conversation
//!    belongs to the token's organization — a database query on every
//!    connection → otherwise 404, like a missing conversation.
//! 5. Accept.
//!
//! Also before the upgrade: a foreign `Origin` → 403; too many sockets for one
//! principal on this instance → 429. Any failure is a plain HTTP error. The
//! socket never outlives the session that minted its token. Commands from the
//! socket take the same durable path as the HTTP API ([`crate::runs::commands`]).
//! Tokens ride in URLs, so nothing here ever logs a query string or a token.

pub mod hub;
mod socket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use uuid::Uuid;

use crate::db::tenant;
use crate::http::{ApiError, Routes};
use crate::identity::{Access, Caller, PrincipalKind, Scope, Scopes, SessionRef};
use crate::ids::OrgId;
use crate::runs::RunsState;

/// Audience of WebSocket tokens (never accepted as API tokens, and vice versa).
pub const WS_AUDIENCE: &str = "moat:ws";
/// Lifetime of a ws-token: long enough to connect, too short to be worth stealing.
pub const TOKEN_TTL_SECS: i64 = 30;
/// Concurrent sockets per principal on one instance.
pub const MAX_SOCKETS_PER_PRINCIPAL: usize = 16;

/// The claims of a ws-token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WsClaims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub org: Uuid,
    pub conv: Uuid,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    pub kind: PrincipalKind,
    /// When the access token that minted this one expires: the socket closes then.
    pub session_exp: i64,
    /// The minting token's login session: the socket closes when it is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    /// The minting client token's secret generation: the socket closes on a rotation.
    #[serde(default, rename = "sgen", skip_serializing_if = "Option::is_none")]
    pub secret_gen: Option<i32>,
}

/// Live sockets per principal on this instance (per-instance; docs/caches.md).
#[derive(Clone, Default)]
pub struct Sockets {
    open: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// One open socket's place in [`Sockets`]; leaving frees it.
pub struct SocketSlot {
    open: Arc<Mutex<HashMap<Uuid, usize>>>,
    principal: Uuid,
}

impl Sockets {
    fn acquire(&self, principal: Uuid) -> Option<SocketSlot> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(principal).or_default();
        if *count >= MAX_SOCKETS_PER_PRINCIPAL {
            return None;
        }
        *count += 1;
        Some(SocketSlot { open: self.open.clone(), principal })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.principal);
            }
        }
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(mint, stream))]
pub(crate) struct Api;

/// A single-use token for one stream of one conversation.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct WsToken {
    token: String,
    /// Seconds until it expires (at most 30, never past the session).
    expires_in: i64,
}

pub fn routes<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    RunsState: FromRef<S>,
{
    Routes::new()
        .post("/v1/conversations/{id}/ws-token", Access::Scope(Scope::ConversationsRead), mint)
        // Public to the bearer guard: authenticated by its own single-use ws-token (the five steps below).
        .get("/v1/conversations/{id}/stream", Access::Public, stream)
}

/// `POST /v1/conversations/{id}/ws-token`.
#[utoipa::path(post, path = "/v1/conversations/{id}/ws-token", tag = "streams",
    params(("id" = Uuid, Path, description = "Conversation id")),
    responses((status = 200, description = "A single-use stream token", body = WsToken)))]
async fn mint(
    State(state): State<RunsState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WsToken>, ApiError> {
    let conversation = Uuid::parse_str(&id).map_err(|_| ApiError::not_found())?;
    owned(&state, &caller, conversation).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let exp = (now + TOKEN_TTL_SECS).min(caller.expires_at);
    let claims = WsClaims {
        iss: state.tokens.issuer().to_owned(),
        aud: WS_AUDIENCE.to_owned(),
        sub: caller.id,
        org: caller.org.0,
        conv: conversation,
        scope: caller.scopes.to_string(),
        iat: now,
        exp,
        jti: Uuid::new_v4(),
        kind: caller.kind,
        session_exp: caller.expires_at,
        sid: caller.session.sid,
        secret_gen: caller.session.generation,
    };
    let token = state.tokens.sign(&claims).map_err(|e| ApiError::internal(&e))?;
    Ok(Json(WsToken { token, expires_in: exp - now }))
}

/// The conversation exists and is the caller's organization's (else 404, like a missing one).
async fn owned(state: &RunsState, caller: &Caller, conversation: Uuid) -> Result<(), ApiError> {
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(crate::runs::store::GET_CONVERSATION).await?;
    let found = tx.query_opt(&statement, &[&conversation, &caller.org]).await?.is_some();
    tx.commit().await?;
    if found { Ok(()) } else { Err(ApiError::not_found()) }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// The ws-token (or send it as the `Sec-WebSocket-Protocol` `moat.token.<T>` instead).
    token: Option<String>,
    /// Replay events after this sequence number, then stream live.
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
}

/// `GET /v1/conversations/{id}/stream?token=T[&after=SEQ]`: a WebSocket
/// (protocol in docs/websocket.md). Authenticated by its own single-use
/// token, checked before the upgrade.
#[utoipa::path(get, path = "/v1/conversations/{id}/stream", tag = "streams",
    params(("id" = Uuid, Path, description = "Conversation id"), StreamQuery), responses(
    (status = 101, description = "Switching to the WebSocket protocol"),
    (status = 400, description = "Not a WebSocket upgrade, or `invalid_after`", body = crate::http::openapi::ErrorBody),
    (status = 401, description = "`invalid_token`: missing, forged, expired, used or for another conversation", body = crate::http::openapi::ErrorBody),
    (status = 403, description = "`forbidden_origin`", body = crate::http::openapi::ErrorBody),
    (status = 404, description = "No such conversation in the token's organization", body = crate::http::openapi::ErrorBody),
    (status = 429, description = "Too many open streams for this user", body = crate::http::openapi::ErrorBody),
))]
async fn stream(
    State(state): State<RunsState>,
    Path(id): Path<String>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // A malformed `after` would silently skip the replay: refuse it instead.
    let after = match query.after.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(after)) if after >= 0 => Some(after),
        Some(_) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_after",
                "after must be a sequence number (0 or more)",
            )
            .into_response();
        }
    };
    match check(&state, &id, &query, &headers).await {
        Ok((caller, claims, subprotocol)) => {
            let Ok(upgrade) = upgrade else {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "websocket_required",
                    "this endpoint speaks WebSocket only",
                )
                .into_response();
            };
            let Some(slot) = state.sockets.acquire(caller.id) else {
                let mut response = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_sockets",
                    "too many open sockets; close one first",
                )
                .into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return response;
            };
            // Single use: consumed last, once every other check passed.
            match consume(&state, &claims).await {
                Ok(true) => {}
                Ok(false) => return invalid_token(),
                Err(e) => return e.into_response(),
            }
            let upgrade = upgrade
                .max_message_size(socket::MAX_MESSAGE_BYTES)
                .max_frame_size(socket::MAX_MESSAGE_BYTES)
                // Small buffers: an idle socket should cost kilobytes, not tungstenite's default 128 KiB.
                .read_buffer_size(4 * 1024)
                .write_buffer_size(0)
                .max_write_buffer_size(socket::MAX_WRITE_BUFFER);
            let upgrade = if subprotocol { upgrade.protocols(["moat.v1"]) } else { upgrade };
            upgrade
                .on_upgrade(move |ws| async move {
                    let metrics = state.metrics.clone();
                    metrics.websocket_opened();
                    socket::serve(state, ws, caller, claims, after, slot).await;
                    metrics.websocket_closed();
                })
                .into_response()
        }
        Err(response) => response,
    }
}

fn invalid_token() -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "a valid, unused WebSocket token is required")
            .into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
    response
}

/// The checks before the upgrade; on success the caller, the claims, and whether the token came as a subprotocol.
async fn check(
    state: &RunsState,
    id: &str,
    query: &StreamQuery,
    headers: &HeaderMap,
) -> Result<(Caller, WsClaims, bool), Response> {
    // Cross-site WebSocket hijacking: a browser always sends Origin.
    if let Some(origin) = headers.get(header::ORIGIN)
        && !allowed_origin(state, origin.to_str().unwrap_or(""))
    {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden_origin", "this origin may not open a stream")
            .into_response());
    }
    // 1. Token extraction.
    let from_protocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix("moat.token."))
        .map(str::to_owned);
    // Browsers fail the handshake unless the server selects a protocol they offered.
    let subprotocol = from_protocol.is_some() || offered(headers, "moat.v1");
    let Some(token) = query.token.clone().filter(|t| !t.is_empty()).or(from_protocol) else {
        return Err(ApiError::unauthorized().into_response());
    };
    // 2. Signature, audience, expiry (single use is checked last, in step 5's transaction).
    let claims: WsClaims = state.tokens.verify(&token, WS_AUDIENCE).map_err(|_| invalid_token())?;
    // 3. The organization comes from the token, and only from it.
    let scopes = Scopes::parse(&claims.scope).map_err(|_| invalid_token())?;
    // The session that minted the token must still be alive (verification allows clock leeway).
    if claims.session_exp <= time::OffsetDateTime::now_utc().unix_timestamp() {
        return Err(invalid_token());
    }
    let session = SessionRef { sid: claims.sid, generation: claims.secret_gen };
    let caller = Caller {
        id: claims.sub,
        kind: claims.kind,
        org: OrgId(claims.org),
        scopes,
        expires_at: claims.session_exp,
        session,
    };
    // 4. Ownership, checked in the database on every connection.
    let conversation = Uuid::parse_str(id).map_err(|_| ApiError::not_found().into_response())?;
    if claims.conv != conversation || !caller.scopes.contains(Scope::ConversationsRead) {
        return Err(ApiError::not_found().into_response());
    }
    owned(state, &caller, conversation).await.map_err(IntoResponse::into_response)?;
    Ok((caller, claims, subprotocol))
}

fn offered(headers: &HeaderMap, protocol: &str) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == protocol)
}

fn allowed_origin(state: &RunsState, origin: &str) -> bool {
    origin == state.config.public_url.origin().ascii_serialization()
        || state.config.allowed_origins.iter().any(|allowed| allowed == origin)
}

/// Records the token's `jti`; `false` when it was already used.
async fn consume(state: &RunsState, claims: &WsClaims) -> Result<bool, ApiError> {
    let mut client = state.db.get().await?;
    let tx = client.transaction().await?;
    tenant::set_org(&tx, OrgId(claims.org)).await?;
    let statement = tx.prepare_cached(crate::runs::store::CONSUME_TOKEN).await?;
    let fresh = tx.query_opt(&statement, &[&claims.jti, &claims.org, &(claims.exp as f64 + 60.0)]).await?.is_some();
    tx.commit().await?;
    Ok(fresh)
}
