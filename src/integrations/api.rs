//! Integration metadata (list, get, delete), importing tokens, and the broker endpoint.
//!
//! Responses carry metadata only: no token, ciphertext or key id ever leaves
//! through the API (tests assert it).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::IntegrationsState;
use super::broker::{self, aad};
use super::error::IntegrationError;
use super::store;
use crate::audit::{self, Event};
use crate::db::tenant;
use crate::http::ApiJson;
use crate::http::pagination::{Cursor, Page, Paged};
use crate::identity::Caller;

/// Longest token accepted on import.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest `expires_in` accepted on import (ten years).
const MAX_EXPIRES_IN: f64 = 10.0 * 365.0 * 86400.0;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct IntegrationView {
    id: Uuid,
    provider: String,
    account: String,
    status: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    last_refreshed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<&Row> for IntegrationView {
    fn from(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            provider: row.get("provider"),
            account: row.get("account"),
            status: row.get("status"),
            expires_at: row.get("access_expires_at"),
            last_refreshed_at: row.get("last_refreshed_at"),
            created_at: row.get("created_at"),
        }
    }
}

fn parse_id(raw: &str) -> Result<Uuid, IntegrationError> {
    Uuid::parse_str(raw).map_err(|_| IntegrationError::NotFound)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportBody {
    provider: String,
    account: String,
    access_token: String,
    refresh_token: Option<String>,
    expires_in: f64,
}

/// `POST /v1/integrations`: import tokens obtained elsewhere (migrations, tests).
#[utoipa::path(post, path = "/v1/integrations", tag = "integrations", request_body = ImportBody, responses(
    (status = 201, description = "Imported (tokens sealed; never returned)", body = IntegrationView),
    (status = 404, description = "`unknown_provider`: no such provider is configured", body = crate::http::openapi::ErrorBody),
    (status = 409, description = "This provider and account are already connected", body = crate::http::openapi::ErrorBody),
))]
pub(super) async fn import(
    State(state): State<IntegrationsState>,
    caller: Caller,
    ApiJson(body): ApiJson<ImportBody>,
) -> Result<Response, IntegrationError> {
    if state.providers.get(&body.provider).is_none() {
        return Err(IntegrationError::UnknownProvider);
    }
    let account = valid_account(&body.account)?;
    if body.access_token.is_empty()
        || body.access_token.len() > MAX_TOKEN_LEN
        || body.refresh_token.as_ref().is_some_and(|t| t.is_empty() || t.len() > MAX_TOKEN_LEN)
    {
        return Err(IntegrationError::Invalid("tokens must be 1 to 16384 bytes"));
    }
    if !(0.0..=MAX_EXPIRES_IN).contains(&body.expires_in) {
        return Err(IntegrationError::Invalid("expires_in must be 0 to 315360000 seconds"));
    }
    let id = Uuid::new_v4();
    let access = state.sealer.seal(body.access_token.as_bytes(), &aad(id, "access_token"))?;
    let refresh = body.refresh_token.map(|t| state.sealer.seal(t.as_bytes(), &aad(id, "refresh_token"))).transpose()?;
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(store::INSERT_INTEGRATION).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
        &id,
        &caller.org,
        &caller.actor(),
        &body.provider,
        &account,
        &access,
        &refresh,
        &state.sealer.key_id(),
        &body.expires_in,
    ];
    match tx.query_one(&statement, &params).await {
        Ok(_) => {}
        Err(e) if e.as_db_error().and_then(|d| d.constraint()) == Some("integrations_account_key") => {
            return Err(IntegrationError::Exists);
        }
        Err(e) => return Err(e.into()),
    }
    let event = Event::new(Some(caller.org), "integration_imported", caller.actor())
        .subject(id.to_string())
        .detail(serde_json::json!({ "provider": body.provider }));
    audit::record(&tx, &event).await?;
    let row = tx.query_one(&tx.prepare_cached(store::GET_INTEGRATION).await?, &[&id, &caller.org]).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(IntegrationView::from(&row))).into_response())
}

pub(super) fn valid_account(raw: &str) -> Result<String, IntegrationError> {
    let account = raw.trim();
    if account.is_empty() || account.chars().count() > 200 || account.chars().any(char::is_control) {
        return Err(IntegrationError::Invalid("account must be 1 to 200 printable characters"));
    }
    Ok(account.to_owned())
}

/// The organization's integrations (metadata only; tokens never leave the broker).
#[utoipa::path(get, path = "/v1/integrations", tag = "integrations", params(crate::http::openapi::PageQuery),
    responses((status = 200, description = "One page of integrations", body = Paged<IntegrationView>)))]
pub(super) async fn list(
    State(state): State<IntegrationsState>,
    caller: Caller,
    page: Page,
) -> Result<Json<Paged<IntegrationView>>, IntegrationError> {
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(store::LIST_INTEGRATIONS).await?;
    let (after_at, after_id) = (page.after.map(|c| c.at()), page.after.map(|c| c.id()));
    let rows = tx.query(&statement, &[&caller.org, &after_at, &after_id, &(page.limit + 1)]).await?;
    tx.commit().await?;
    let items = rows.iter().map(IntegrationView::from).collect();
    Ok(Json(Paged::from_rows(items, &page, |i| Cursor::new(i.created_at, i.id))))
}

/// One integration's metadata.
#[utoipa::path(get, path = "/v1/integrations/{id}", tag = "integrations", params(("id" = Uuid, Path, description = "Integration id")),
    responses((status = 200, description = "The integration", body = IntegrationView)))]
pub(super) async fn get(
    State(state): State<IntegrationsState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<IntegrationView>, IntegrationError> {
    let id = parse_id(&id)?;
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(store::GET_INTEGRATION).await?;
    let row = tx.query_opt(&statement, &[&id, &caller.org]).await?;
    tx.commit().await?;
    row.as_ref().map(|r| Json(IntegrationView::from(r))).ok_or(IntegrationError::NotFound)
}

/// Deletes an integration and its sealed tokens.
#[utoipa::path(delete, path = "/v1/integrations/{id}", tag = "integrations", params(("id" = Uuid, Path, description = "Integration id")),
    responses((status = 204, description = "Deleted")))]
pub(super) async fn delete(
    State(state): State<IntegrationsState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, IntegrationError> {
    let id = parse_id(&id)?;
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    // Wait for an in-flight refresh so it cannot write into a deleted row's place.
    broker::lock(&tx, id, state.config.provider_timeout).await?;
    let statement = tx.prepare_cached(store::DELETE_INTEGRATION).await?;
    let row = tx.query_opt(&statement, &[&id, &caller.org]).await?.ok_or(IntegrationError::NotFound)?;
    let event = Event::new(Some(caller.org), "integration_deleted", caller.actor())
        .subject(id.to_string())
        .detail(serde_json::json!({ "provider": row.get::<_, String>("provider") }));
    audit::record(&tx, &event).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct BrokerResponse {
    access_token: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

/// `POST /v1/integrations/{id}/access-token`: the credential broker.
#[utoipa::path(post, path = "/v1/integrations/{id}/access-token", tag = "integrations",
    params(("id" = Uuid, Path, description = "Integration id")), responses(
    (status = 200, description = "A provider access token valid for at least a minute", body = BrokerResponse),
    (status = 409, description = "`needs_reauth`: the user must reconnect; `refresh_busy`: retry", body = crate::http::openapi::ErrorBody),
    (status = 502, description = "`provider_unavailable` (with `Retry-After`) or `egress_refused`", body = crate::http::openapi::ErrorBody),
))]
pub(super) async fn access_token(
    State(state): State<IntegrationsState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BrokerResponse>, IntegrationError> {
    let id = parse_id(&id)?;
    let result = broker::access_token(&state, &caller, id).await;
    state.metrics.broker_outcome(match &result {
        Ok(issued) if issued.refreshed => "refreshed",
        Ok(_) => "cached",
        Err(IntegrationError::RefreshBusy) => "refresh_busy",
        Err(IntegrationError::NeedsReauth) => "needs_reauth",
        Err(IntegrationError::ProviderUnavailable { .. }) => "provider_unavailable",
        Err(IntegrationError::EgressRefused) => "egress_refused",
        Err(_) => "error",
    });
    let issued = result?;
    Ok(Json(BrokerResponse { access_token: issued.access_token, expires_at: issued.expires_at }))
}
