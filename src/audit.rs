//! The audit log: an append-only record of security events (logins, refresh
//! token reuse, clients created, rotated or disabled, users disabled…).
//!
//! Events are written in the same transaction as the change they describe,
//! so one never exists without the other. The runtime role can only INSERT
//! and SELECT the table (migration V2). Never put a password, secret or token
//! in an event.

use crate::ids::OrgId;
use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use deadpool_postgres::Transaction;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::db::tenant;
use crate::db::{DbError, Pool};
use crate::http::pagination::{Cursor, Page, Paged};
use crate::http::{ApiError, Routes};
use crate::identity::{Access, Caller, Scope};
use axum::extract::FromRef;

crate::db::statements! { "audit":
    INSERT_EVENT => "insert_event",
    LIST_EVENTS => "list_events",
}

/// One security event.
#[derive(Debug, Clone)]
pub struct Event {
    /// `None` only when no organization is known (e.g. a login for an unknown email).
    pub org: Option<OrgId>,
    /// `snake_case` name, e.g. `login_failed`.
    pub event: &'static str,
    /// Who did it: `user:<id>`, `client:<id>`, `cli`, or `anonymous`.
    pub actor: String,
    /// What it was done to (an email, a client id…).
    pub subject: Option<String>,
    pub ip: Option<IpAddr>,
    pub detail: Value,
}

impl Event {
    pub fn new(org: Option<OrgId>, event: &'static str, actor: impl Into<String>) -> Self {
        Self { org, event, actor: actor.into(), subject: None, ip: None, detail: Value::Object(Default::default()) }
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }
}

/// Appends `event` within `tx` (whose organization, if any, must be the event's).
pub async fn record(tx: &Transaction<'_>, event: &Event) -> Result<(), DbError> {
    let statement = tx.prepare_cached(INSERT_EVENT).await?;
    tx.execute(&statement, &[&event.org, &event.event, &event.actor, &event.subject, &event.ip, &event.detail]).await?;
    Ok(())
}

/// One page of `org`'s events, newest first (one more than the page's limit: the caller cuts it).
async fn list_events(tx: &Transaction<'_>, org: OrgId, page: &Page) -> Result<Vec<AuditEntry>, DbError> {
    let statement = tx.prepare_cached(LIST_EVENTS).await?;
    let (after_at, after_id) = (page.after.map(|c| c.at()), page.after.map(|c| c.id()));
    let rows = tx.query(&statement, &[&org, &after_at, &after_id, &(page.limit + 1)]).await?;
    Ok(rows.iter().map(AuditEntry::from).collect())
}

pub fn routes<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    Pool: FromRef<S>,
{
    Routes::new().get("/v1/audit-log", Access::Scope(Scope::AuditRead), list)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub(crate) struct Api;

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AuditEntry {
    id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    event: String,
    actor: Option<String>,
    subject: Option<String>,
    ip: Option<String>,
    detail: Value,
}

impl From<&Row> for AuditEntry {
    fn from(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            at: row.get("at"),
            event: row.get("event"),
            actor: row.get("actor"),
            subject: row.get("subject"),
            ip: row.get::<_, Option<IpAddr>>("ip").map(|ip| ip.to_string()),
            detail: row.get("detail"),
        }
    }
}

/// `GET /v1/audit-log`: the caller's organization's events, newest first.
#[utoipa::path(get, path = "/v1/audit-log", tag = "audit", params(crate::http::openapi::PageQuery),
    responses((status = 200, description = "One page of audit events", body = Paged<AuditEntry>)))]
async fn list(State(db): State<Pool>, caller: Caller, page: Page) -> Result<Json<Paged<AuditEntry>>, ApiError> {
    let mut client = db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let events = list_events(&tx, caller.org, &page).await?;
    tx.commit().await?;
    Ok(Json(Paged::from_rows(events, &page, |e| Cursor::new(e.at, e.id))))
}
