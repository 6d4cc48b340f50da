//! The HTTP side of runs: conversations, runs, events, cancel and answers.
//!
//! Commands never reach a runner directly: a cancel or an answer is a row in
//! `run_commands` committed with a NOTIFY that carries only ids.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::commands;
use super::error::RunError;
use super::events::{self, CHANNEL_RUNS, Kind, NewEvent};
use super::store;
use crate::db::tenant;
use crate::http::ApiJson;
use crate::http::pagination::{Cursor, MAX_LIMIT, Page, Paged};
use crate::identity::Caller;
use crate::runs::RunsState;

fn parse_id(raw: &str) -> Result<Uuid, RunError> {
    Uuid::parse_str(raw).map_err(|_| RunError::NotFound)
}

fn constraint(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().and_then(|d| d.constraint())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ConversationView {
    id: Uuid,
    title: String,
    agent: String,
    created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<&Row> for ConversationView {
    fn from(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            title: row.get("title"),
            agent: row.get("agent"),
            created_by: row.get("created_by"),
            created_at: row.get("created_at"),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewConversation {
    #[schema(example = "Quarterly report")]
    title: String,
    /// `demo`, or an agent declared in MOAT_AGENTS_FILE.
    #[schema(example = "demo")]
    agent: String,
}

/// Starts a conversation with an agent.
#[utoipa::path(post, path = "/v1/conversations", tag = "runs", request_body = NewConversation, responses(
    (status = 201, description = "Created", body = ConversationView),
    (status = 422, description = "`unknown_agent` or `invalid_request`", body = crate::http::openapi::ErrorBody),
))]
pub(super) async fn create_conversation(
    State(state): State<RunsState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewConversation>,
) -> Result<Response, RunError> {
    let title = body.title.trim();
    if title.is_empty() || title.chars().count() > 200 || title.chars().any(char::is_control) {
        return Err(RunError::Invalid("title must be 1 to 200 printable characters"));
    }
    if body.agent != "demo" && !state.config.agent_names.contains(&body.agent) {
        return Err(RunError::UnknownAgent);
    }
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(store::INSERT_CONVERSATION).await?;
    let row = tx.query_one(&statement, &[&Uuid::new_v4(), &caller.org, &title, &body.agent, &caller.actor()]).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(ConversationView::from(&row))).into_response())
}

/// The organization's conversations, newest first.
#[utoipa::path(get, path = "/v1/conversations", tag = "runs", params(crate::http::openapi::PageQuery),
    responses((status = 200, description = "One page of conversations", body = Paged<ConversationView>)))]
pub(super) async fn list_conversations(
    State(state): State<RunsState>,
    caller: Caller,
    page: Page,
) -> Result<Json<Paged<ConversationView>>, RunError> {
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(store::LIST_CONVERSATIONS).await?;
    let (after_at, after_id) = (page.after.map(|c| c.at()), page.after.map(|c| c.id()));
    let rows = tx.query(&statement, &[&caller.org, &after_at, &after_id, &(page.limit + 1)]).await?;
    tx.commit().await?;
    let items = rows.iter().map(ConversationView::from).collect();
    Ok(Json(Paged::from_rows(items, &page, |c| Cursor::new(c.created_at, c.id))))
}

/// One conversation.
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "runs", params(("id" = Uuid, Path, description = "Conversation id")),
    responses((status = 200, description = "The conversation", body = ConversationView)))]
pub(super) async fn get_conversation(
    State(state): State<RunsState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ConversationView>, RunError> {
    let id = parse_id(&id)?;
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(store::GET_CONVERSATION).await?;
    let row = tx.query_opt(&statement, &[&id, &caller.org]).await?;
    tx.commit().await?;
    row.as_ref().map(|r| Json(ConversationView::from(r))).ok_or(RunError::NotFound)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RunView {
    id: Uuid,
    conversation_id: Uuid,
    status: String,
    attempt: i32,
    error_code: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    finished_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_input: Option<Value>,
}

impl From<&Row> for RunView {
    fn from(row: &Row) -> Self {
        let pending_input = row.try_get::<_, Option<Uuid>>("pending_input_id").ok().flatten().map(
            |id| json!({ "id": id, "question": row.try_get::<_, Option<String>>("pending_question").ok().flatten() }),
        );
        Self {
            id: row.get("id"),
            conversation_id: row.get("conversation_id"),
            status: row.get("status"),
            attempt: row.get("attempt"),
            error_code: row.get("error_code"),
            created_at: row.get("created_at"),
            started_at: row.get("started_at"),
            finished_at: row.get("finished_at"),
            pending_input,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRun {
    /// The agent's input: a JSON object.
    #[schema(value_type = Object)]
    input: Value,
}

/// `POST /v1/conversations/{id}/runs`: queues a run (one active run per conversation).
/// Queues a run of the conversation's agent; a runner claims it.
#[utoipa::path(post, path = "/v1/conversations/{id}/runs", tag = "runs", params(("id" = Uuid, Path, description = "Conversation id")),
    request_body = NewRun, responses(
    (status = 202, description = "Queued", body = RunView),
    (status = 409, description = "`run_in_progress`: one active run per conversation", body = crate::http::openapi::ErrorBody),
))]
pub(super) async fn create_run(
    State(state): State<RunsState>,
    caller: Caller,
    Path(conversation): Path<String>,
    ApiJson(body): ApiJson<NewRun>,
) -> Result<Response, RunError> {
    let conversation = parse_id(&conversation)?;
    if !body.input.is_object() {
        return Err(RunError::Invalid("input must be a JSON object"));
    }
    if !crate::sanitize::storable(&body.input) {
        return Err(RunError::Invalid("input must not contain the NUL character (\\u0000)"));
    }
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(store::GET_CONVERSATION).await?;
    tx.query_opt(&statement, &[&conversation, &caller.org]).await?.ok_or(RunError::NotFound)?;
    let id = Uuid::new_v4();
    let statement = tx.prepare_cached(store::INSERT_RUN).await?;
    let row = match tx.query_one(&statement, &[&id, &conversation, &caller.org, &body.input, &caller.actor()]).await {
        Ok(row) => row,
        Err(e) if constraint(&e) == Some("runs_one_active_per_conversation") => return Err(RunError::RunInProgress),
        Err(e) => return Err(e.into()),
    };
    let queued = NewEvent::new(Kind::RunQueued, json!({ "run_id": id }));
    events::append(&tx, conversation, Some(id), None, &[queued], 0).await?;
    events::notify(&tx, CHANNEL_RUNS, &id.to_string()).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(RunView::from(&row))).into_response())
}

/// One run.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = Uuid, Path, description = "Run id")),
    responses((status = 200, description = "The run", body = RunView)))]
pub(super) async fn get_run(
    State(state): State<RunsState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RunView>, RunError> {
    let id = parse_id(&id)?;
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(store::GET_RUN).await?;
    let row = tx.query_opt(&statement, &[&id, &caller.org]).await?;
    tx.commit().await?;
    row.as_ref().map(|r| Json(RunView::from(r))).ok_or(RunError::NotFound)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Only events with a larger sequence number (default 0: from the start).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// At most this many (default 50, capped at 200).
    #[param(value_type = Option<i64>, minimum = 1)]
    limit: Option<String>,
}

/// One page of events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct EventsPage {
    items: Vec<EventView>,
    /// The last sequence number returned (or `after` when none): pass it as `after`.
    next_after: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Cancelled {
    run_id: Uuid,
    #[schema(example = "cancelling")]
    status: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Answered {
    input_id: Uuid,
    #[schema(example = "answered")]
    status: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct EventView {
    seq: i64,
    run_id: Option<Uuid>,
    kind: String,
    data: Value,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

/// `GET /v1/conversations/{id}/events?after=SEQ&limit=N`: events in sequence order.
/// The conversation's events in sequence order, after `after`.
#[utoipa::path(get, path = "/v1/conversations/{id}/events", tag = "runs", params(("id" = Uuid, Path, description = "Conversation id"), EventsQuery),
    responses(
    (status = 200, description = "Events after `after`; pass `next_after` to continue", body = EventsPage),
    (status = 422, description = "`after` or `limit` malformed", body = crate::http::openapi::ErrorBody),
))]
pub(super) async fn list_events(
    State(state): State<RunsState>,
    caller: Caller,
    Path(conversation): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventsPage>, RunError> {
    let conversation = parse_id(&conversation)?;
    let after = match query.after.as_deref() {
        None => 0,
        Some(raw) => {
            raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or(RunError::Invalid("after must be a sequence number"))?
        }
    };
    let limit = match query.limit.as_deref() {
        None => crate::http::pagination::DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or(RunError::Invalid("limit must be at least 1"))?
            .min(MAX_LIMIT),
    };
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(store::GET_CONVERSATION).await?;
    tx.query_opt(&statement, &[&conversation, &caller.org]).await?.ok_or(RunError::NotFound)?;
    let statement = tx.prepare_cached(store::LIST_EVENTS).await?;
    let rows = tx.query(&statement, &[&conversation, &caller.org, &after, &limit]).await?;
    tx.commit().await?;
    let items: Vec<EventView> = rows
        .iter()
        .map(|r| EventView {
            seq: r.get("seq"),
            run_id: r.get("run_id"),
            kind: r.get("kind"),
            data: r.get("data"),
            at: r.get("at"),
        })
        .collect();
    let last = items.last().map_or(after, |e| e.seq);
    Ok(Json(EventsPage { items, next_after: last }))
}

/// `POST /v1/runs/{id}/cancel`: 202, idempotent; 409 once the run has finished.
/// Cancels a run: queued runs end at once, running ones through their runner.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = Uuid, Path, description = "Run id")), responses(
    (status = 202, description = "`cancelled` (it was queued) or `cancelling`", body = Cancelled),
    (status = 409, description = "`run_finished`", body = crate::http::openapi::ErrorBody),
))]
pub(super) async fn cancel(
    State(state): State<RunsState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, RunError> {
    let id = parse_id(&id)?;
    let answer = commands::cancel(&state.db, &caller, id, None).await?;
    Ok((StatusCode::ACCEPTED, Json(Cancelled { run_id: id, status: answer.as_str() })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Answer {
    /// Any JSON value the question expects.
    value: Value,
}

/// `POST /v1/inputs/{id}`: the first answer wins, atomically; a second is 409.
/// Answers a question a run asked.
#[utoipa::path(post, path = "/v1/inputs/{id}", tag = "runs", params(("id" = Uuid, Path, description = "Input id (from `input.requested`)")),
    request_body = Answer, responses(
    (status = 200, description = "Answered", body = Answered),
    (status = 409, description = "`input_already_answered` or `input_expired`", body = crate::http::openapi::ErrorBody),
))]
pub(super) async fn answer(
    State(state): State<RunsState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Answer>,
) -> Result<Json<Answered>, RunError> {
    let id = parse_id(&id)?;
    commands::answer(&state.db, &caller, id, body.value, None).await?;
    Ok(Json(Answered { input_id: id, status: "answered" }))
}
