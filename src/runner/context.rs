//! What an agent sees of its run: its input, `emit` and `ask`.
//!
//! Every emitted string passes through the credential sanitizer first.
//! Events go to a per-run writer that appends them in small batches (every
//! ~20 ms or 64 events, one transaction and one NOTIFY per batch), each
//! append fenced by the run's lease epoch: once the run is no longer this
//! runner's, nothing more is written and the run is stopped.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::Pool;
use crate::ids::OrgId;
use crate::runs::events::{self, Kind, NewEvent};
use crate::runs::store;
use crate::sanitize::{sanitize, sanitize_value};

const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// A runner's transactions are short and never wait on anything outside the
/// database; a session idle inside one this long (the runner stalled) is ended
/// by PostgreSQL, releasing the run rows it locked so recovery can proceed.
const IDLE_IN_TRANSACTION: &str = "5s";

/// Starts a runner transaction's context: the run's organization and the
/// idle bound, both transaction-local (so it works behind a pooler), one round trip.
pub(super) async fn scope(tx: &deadpool_postgres::Transaction<'_>, org: OrgId) -> Result<(), tokio_postgres::Error> {
    let statement = tx.prepare_cached(store::BEGIN_RUNNER).await?;
    tx.query_one(&statement, &[&org.to_string(), &IDLE_IN_TRANSACTION]).await.map(|_| ())
}
const BATCH_MAX: usize = 64;

/// Why an agent stopped without succeeding.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent failed; the code is stored on the run and in `run.failed`.
    #[error("agent failed: {0}")]
    Failed(&'static str),
    /// A per-run bound was exceeded.
    #[error("run limit exceeded: {0}")]
    Limit(&'static str),
    #[error("cancelled")]
    Cancelled,
    /// The run is no longer this runner's (lease lost): write nothing more.
    #[error("fenced out")]
    Fenced,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<tokio_postgres::Error> for AgentError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Internal(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for AgentError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Internal(e.into())
    }
}

/// The run an agent executes, as the runner holds it.
#[derive(Debug, Clone, Copy)]
pub struct RunRef {
    pub run: Uuid,
    pub org: OrgId,
    pub conversation: Uuid,
    pub epoch: i64,
}

/// An answer delivered by the command dispatcher.
#[derive(Debug, Clone)]
pub struct Answer {
    pub command_id: Uuid,
    pub input_id: Uuid,
    pub value: Value,
}

pub(super) enum WriterMessage {
    Event(NewEvent, i64),
    Flush(oneshot::Sender<bool>),
}

/// Per-run bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: u64,
    pub max_output_bytes: u64,
}

pub struct RunContext {
    run: RunRef,
    input: Value,
    pool: Pool,
    writer: mpsc::Sender<WriterMessage>,
    answers: mpsc::UnboundedReceiver<Answer>,
    limits: Limits,
    events: u64,
    output_bytes: u64,
    tokens: Option<crate::integrations::broker::Deps>,
    groups: super::exec::ProcessGroups,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl RunContext {
    pub(super) fn new(
        run: RunRef,
        input: Value,
        pool: Pool,
        writer: mpsc::Sender<WriterMessage>,
        answers: mpsc::UnboundedReceiver<Answer>,
        limits: Limits,
    ) -> Self {
        Self {
            run,
            input,
            pool,
            writer,
            answers,
            limits,
            events: 0,
            output_bytes: 0,
            tokens: None,
            groups: super::exec::ProcessGroups::default(),
            metrics: None,
        }
    }

    pub(super) fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub(super) fn with_process_groups(mut self, groups: super::exec::ProcessGroups) -> Self {
        self.groups = groups;
        self
    }

    /// Where external agents register their process groups.
    pub(super) fn process_groups(&self) -> super::exec::ProcessGroups {
        self.groups.clone()
    }

    pub(super) fn with_tokens(mut self, tokens: Option<crate::integrations::broker::Deps>) -> Self {
        self.tokens = tokens;
        self
    }

    pub fn input(&self) -> &Value {
        &self.input
    }

    pub fn run_id(&self) -> Uuid {
        self.run.run
    }

    /// A short-lived access token for an integration of the run's
    /// organization, through the broker (refreshed exactly once under any
    /// concurrency; the agent never sees a refresh token). Allowed only for a
    /// provider in `allowed` (the agent's declaration), on behalf of the run's
    /// creator while still enabled and granted `integrations:use`. Returns the
    /// token and its expiry (RFC 3339), or an error code for the agent.
    pub async fn integration_token(
        &self,
        integration: &str,
        allowed: &[String],
    ) -> Result<(String, String), &'static str> {
        let deps = self.tokens.as_ref().ok_or("tokens_unavailable")?;
        let id = Uuid::parse_str(integration).map_err(|_| "not_found")?;
        let caller = self.creator(id, allowed).await?;
        match crate::integrations::broker::access_token_with(deps, &caller, id).await {
            Ok(issued) => {
                let expires =
                    issued.expires_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
                Ok((issued.access_token, expires))
            }
            Err(e) => Err(token_error_code(&e)),
        }
    }

    /// The run's creator as a caller for the broker, if allowed to use `integration` here.
    async fn creator(&self, integration: Uuid, allowed: &[String]) -> Result<crate::identity::Caller, &'static str> {
        use crate::identity::{PrincipalKind, Role, Scope, Scopes};
        let row = async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            scope(&tx, self.run.org).await?;
            let row =
                tx.query_opt(crate::runs::store::TOKEN_GRANT, &[&self.run.run, &self.run.org, &integration]).await?;
            tx.commit().await?;
            Ok::<_, anyhow::Error>(row)
        }
        .await
        .map_err(|e| {
            tracing::warn!(run = %self.run.run, error = %format!("{e:#}"), "token grant lookup failed");
            "token_error"
        })?
        .ok_or("not_found")?;
        let provider: Option<String> = row.get("provider");
        let provider = provider.ok_or("not_found")?;
        if !allowed.contains(&provider) {
            return Err("provider_not_allowed");
        }
        let created_by: String = row.get("created_by");
        let (kind, id) = created_by.split_once(':').ok_or("creator_inactive")?;
        let id = Uuid::parse_str(id).map_err(|_| "creator_inactive")?;
        let (kind, scopes) = match kind {
            "user" => {
                let role: Option<String> = row.get("user_role");
                let role = role.as_deref().and_then(|r| {
                    if r == "admin" {
                        Some(Role::Admin)
                    } else if r == "member" {
                        Some(Role::Member)
                    } else {
                        None
                    }
                });
                (PrincipalKind::User, role.ok_or("creator_inactive")?.scopes())
            }
            "client" => {
                let scopes: Option<Vec<String>> = row.get("client_scopes");
                let scopes = scopes.ok_or("creator_inactive")?.join(" ");
                (PrincipalKind::Client, Scopes::parse(&scopes).map_err(|_| "creator_inactive")?)
            }
            _ => return Err("creator_inactive"),
        };
        if !scopes.contains(Scope::IntegrationsUse) {
            return Err("forbidden");
        }
        let expires_at = time::OffsetDateTime::now_utc().unix_timestamp() + 60;
        Ok(crate::identity::Caller { id, kind, org: self.run.org, scopes, expires_at, session: Default::default() })
    }

    /// Emits one event (sanitized), counted against the run's bounds.
    pub async fn emit(&mut self, kind: Kind, mut data: Value) -> Result<(), AgentError> {
        sanitize_value(&mut data);
        // Everything an agent writes counts, not only message text.
        let bytes = data.to_string().len() as u64;
        self.events += 1;
        self.output_bytes += bytes;
        if self.events > self.limits.max_events {
            return Err(AgentError::Limit("event_limit_exceeded"));
        }
        if self.output_bytes > self.limits.max_output_bytes {
            return Err(AgentError::Limit("output_limit_exceeded"));
        }
        let message = WriterMessage::Event(NewEvent::new(kind, data), i64::try_from(bytes).unwrap_or(i64::MAX));
        self.writer.send(message).await.map_err(|_| AgentError::Fenced)
    }

    /// Waits until everything emitted so far is committed.
    pub async fn flush(&self) -> Result<(), AgentError> {
        let (ack, done) = oneshot::channel();
        self.writer.send(WriterMessage::Flush(ack)).await.map_err(|_| AgentError::Fenced)?;
        match done.await {
            Ok(true) => Ok(()),
            _ => Err(AgentError::Fenced),
        }
    }

    /// Asks the user a question: the run waits in `waiting_input` until an
    /// answer arrives (first answer wins, through whichever path). Both writes
    /// wait out an unreachable database ([`patiently`]) and are safe to retry
    /// after a commit whose outcome was lost (the question's id and each
    /// write's batch id are chosen once).
    pub async fn ask(&mut self, question: &str) -> Result<Value, AgentError> {
        self.flush().await?;
        let question = sanitize(question).into_owned();
        let (input_id, batch) = (Uuid::new_v4(), Uuid::new_v4());
        let asked = patiently("asking a question", self.run.run, || self.request_input(input_id, batch, &question));
        if !asked.await? {
            return Err(AgentError::Fenced);
        }
        loop {
            let answer = self.answers.recv().await.ok_or(AgentError::Fenced)?;
            if answer.input_id != input_id {
                continue;
            }
            let mut value = answer.value.clone();
            sanitize_value(&mut value);
            let batch = Uuid::new_v4();
            let applied = patiently("recording an answer", self.run.run, || self.apply_answer(&answer, &value, batch));
            match applied.await? {
                Applied::Now(latency) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.command_applied("input", latency);
                    }
                    return Ok(value);
                }
                Applied::Before => return Ok(value),
                Applied::Duplicate => continue, // a second delivery of an answer already applied
                Applied::Fenced => return Err(AgentError::Fenced),
            }
        }
    }

    /// The question, the `waiting_input` status and `input.requested`, in one
    /// transaction; `false` when the run is no longer this runner's.
    async fn request_input(&self, input_id: Uuid, batch: Uuid, question: &str) -> anyhow::Result<bool> {
        let run = self.run;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        scope(&tx, run.org).await?;
        let statement = tx.prepare_cached(store::SET_STATUS).await?;
        if tx.execute(&statement, &[&run.run, &run.org, &run.epoch, &"waiting_input"]).await? == 0 {
            return Ok(false);
        }
        let statement = tx.prepare_cached(store::REQUEST_INPUT).await?;
        tx.execute(&statement, &[&input_id, &run.run, &run.conversation, &run.org, &question]).await?;
        let event = NewEvent::new(Kind::InputRequested, json!({ "input_id": input_id, "question": question }));
        let appended = events::append_once(&tx, batch, (run.conversation, run.run, run.epoch), &[event], 0).await?;
        if appended.is_none() {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Applies an answer: the command, the `running` status and `input.answered`, in one transaction.
    async fn apply_answer(&self, answer: &Answer, value: &Value, batch: Uuid) -> anyhow::Result<Applied> {
        let run = self.run;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        scope(&tx, run.org).await?;
        let statement = tx.prepare_cached(store::APPLY_COMMAND).await?;
        let Some(applied) = tx.query_opt(&statement, &[&answer.command_id, &run.org]).await? else {
            // Applied already: by this very write, if a commit's outcome was lost (its batch is the run's last).
            let statement = tx.prepare_cached(store::BATCH_APPLIED).await?;
            let ours = tx.query_one(&statement, &[&run.run, &run.org, &batch]).await?.get::<_, bool>("applied");
            return Ok(if ours { Applied::Before } else { Applied::Duplicate });
        };
        let statement = tx.prepare_cached(store::SET_STATUS).await?;
        if tx.execute(&statement, &[&run.run, &run.org, &run.epoch, &"running"]).await? == 0 {
            return Ok(Applied::Fenced);
        }
        let event = NewEvent::new(Kind::InputAnswered, json!({ "input_id": answer.input_id, "value": value }));
        if events::append_once(&tx, batch, (run.conversation, run.run, run.epoch), &[event], 0).await?.is_none() {
            return Ok(Applied::Fenced);
        }
        tx.commit().await?;
        Ok(Applied::Now(applied.get("latency_secs")))
    }
}

/// What recording an answer did.
enum Applied {
    /// Recorded now (with the command's latency, for the metrics).
    Now(f64),
    /// Recorded by an earlier attempt whose commit's outcome was lost.
    Before,
    /// Another delivery of an answer recorded earlier.
    Duplicate,
    /// The run is no longer this runner's.
    Fenced,
}

/// The per-run writer: batches events, appends them fenced; on fencing it
/// cancels `fenced` and stops. Returns whether everything was written.
pub(super) async fn writer(
    pool: Pool,
    run: RunRef,
    mut rx: mpsc::Receiver<WriterMessage>,
    fenced: CancellationToken,
) -> bool {
    let mut batch: Vec<NewEvent> = Vec::new();
    let mut bytes = 0i64;
    loop {
        let mut acks = Vec::new();
        let mut closed = false;
        match rx.recv().await {
            None => closed = true,
            Some(WriterMessage::Event(event, b)) => {
                batch.push(event);
                bytes += b;
            }
            Some(WriterMessage::Flush(ack)) => acks.push(ack),
        }
        if !closed && acks.is_empty() {
            let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
            while batch.len() < BATCH_MAX {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(WriterMessage::Event(event, b))) => {
                        batch.push(event);
                        bytes += b;
                    }
                    Ok(Some(WriterMessage::Flush(ack))) => {
                        acks.push(ack);
                        break;
                    }
                    Ok(None) => {
                        closed = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let ok = batch.is_empty() || append_batch(&pool, run, &batch, bytes).await;
        batch.clear();
        bytes = 0;
        for ack in acks {
            let _ = ack.send(ok);
        }
        if !ok {
            fenced.cancel();
            return false;
        }
        if closed {
            return true;
        }
    }
}

/// Appends one batch; `false` when fenced out (or the database keeps failing).
/// While the database is unreachable it waits ([`patiently`]): an outage is
/// not a reason to give up a run. Every attempt carries the same batch id, so
/// a retry after a commit whose outcome was lost cannot append it twice.
async fn append_batch(pool: &Pool, run: RunRef, batch: &[NewEvent], bytes: i64) -> bool {
    let id = Uuid::new_v4();
    for attempt in 0..3u32 {
        let result: anyhow::Result<Option<i64>> = patiently("appending events", run.run, || async {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            scope(&tx, run.org).await?;
            let first = events::append_once(&tx, id, (run.conversation, run.run, run.epoch), batch, bytes).await?;
            tx.commit().await?;
            Ok(first)
        })
        .await;
        match result {
            Ok(Some(_)) => return true,
            Ok(None) => {
                tracing::warn!(run = %run.run, "run's lease is no longer ours; stopping it without writing");
                return false;
            }
            // Patience exhausted: the database has been unreachable for PATIENCE.
            Err(e) if crate::db::unreachable(&e) => {
                tracing::warn!(run = %run.run, error = %format!("{e:#}"), "appending events failed; giving up");
                return false;
            }
            Err(e) => {
                tracing::warn!(run = %run.run, attempt, error = %format!("{e:#}"), "appending events failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
    false
}

/// The code an agent gets when the broker cannot serve a token.
fn token_error_code(e: &crate::integrations::IntegrationError) -> &'static str {
    use crate::integrations::IntegrationError as E;
    match e {
        E::NotFound => "not_found",
        E::CallerInactive => "creator_inactive",
        E::NeedsReauth => "needs_reauth",
        E::ProviderUnavailable { .. } | E::RefreshBusy | E::Db(crate::db::DbError::Unavailable(_)) => {
            "provider_unavailable"
        }
        E::EgressRefused => "egress_refused",
        _ => "token_error",
    }
}

/// How long a runner keeps retrying a run's writes while the database is
/// unreachable (a restart, a failover): longer than any failover, shorter
/// than forever. Leases are given back for the time nobody could reach the
/// database (`crate::runs::recovery`), so the run is still this runner's.
pub(super) const PATIENCE: Duration = Duration::from_secs(300);

/// Runs `attempt` until it succeeds, fails for a reason other than an
/// unreachable database, or [`PATIENCE`] has passed (backing off 100 ms to
/// 1 s; logged once when the wait starts and once when it ends).
pub(super) async fn patiently<T, F, Fut>(what: &str, run: Uuid, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut delay = Duration::from_millis(100);
    let mut waiting = false;
    loop {
        match attempt().await {
            Ok(value) => {
                if waiting {
                    tracing::info!(%run, "{what}: the database is reachable again");
                }
                return Ok(value);
            }
            Err(e) if crate::db::unreachable(&e) && tokio::time::Instant::now() < deadline => {
                if !waiting {
                    tracing::warn!(%run, error = %format!("{e:#}"), "{what}: the database is unreachable; retrying until it is back");
                    waiting = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}
