//! Events: the append-only, gapless, per-conversation log every run writes.
//!
//! Appends go through `moat_append_events` (migration V4): sequence numbers
//! come from the conversation row, locked until commit, so they are gapless
//! and commit in order; a fenced append (with a lease epoch) writes nothing
//! once the run left that epoch. Each batch sends one `moat_events` NOTIFY.

use deadpool_postgres::Transaction;
use serde_json::Value;
use uuid::Uuid;

use super::store;

/// NOTIFY channels (payloads carry ids only; the tables are the truth).
pub const CHANNEL_RUNS: &str = "moat_runs";
pub const CHANNEL_COMMANDS: &str = "moat_commands";
pub const CHANNEL_EVENTS: &str = "moat_events";
/// A session was revoked in the organization named by the payload (sent by the triggers of V9).
pub const CHANNEL_REVOCATIONS: &str = "moat_revocations";

/// The kinds of event a run produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RunQueued,
    RunStarted,
    MessageDelta,
    ToolStarted,
    ToolCompleted,
    InputRequested,
    InputAnswered,
    RunSucceeded,
    RunFailed,
    RunCancelled,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunQueued => "run.queued",
            Self::RunStarted => "run.started",
            Self::MessageDelta => "message.delta",
            Self::ToolStarted => "tool.started",
            Self::ToolCompleted => "tool.completed",
            Self::InputRequested => "input.requested",
            Self::InputAnswered => "input.answered",
            Self::RunSucceeded => "run.succeeded",
            Self::RunFailed => "run.failed",
            Self::RunCancelled => "run.cancelled",
        }
    }
}

/// One event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: Kind,
    pub data: Value,
}

impl NewEvent {
    pub fn new(kind: Kind, data: Value) -> Self {
        Self { kind, data }
    }
}

/// Appends `events` to `conversation` inside `tx` (a tenant transaction).
/// `fence`: `Some(epoch)` appends only while the run holds that lease epoch.
/// Returns the first sequence number, or `None` when fenced out.
pub async fn append(
    tx: &Transaction<'_>,
    conversation: Uuid,
    run: Option<Uuid>,
    fence: Option<i64>,
    events: &[NewEvent],
    output_bytes: i64,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let datas: Vec<&Value> = events.iter().map(|e| &e.data).collect();
    let statement = tx.prepare_cached(store::APPEND_EVENTS).await?;
    let row = tx.query_one(&statement, &[&conversation, &run, &fence, &kinds, &datas, &output_bytes]).await?;
    Ok(row.get("first_seq"))
}

/// A runner's fenced append of `events` as the batch `batch`: applying the
/// same batch again (a retry after a commit whose outcome was lost) writes
/// nothing and returns `Some(0)`. `None` when fenced out.
pub async fn append_once(
    tx: &Transaction<'_>,
    batch: Uuid,
    run: (Uuid, Uuid, i64),
    events: &[NewEvent],
    output_bytes: i64,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let (conversation, run, epoch) = run;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let datas: Vec<&Value> = events.iter().map(|e| &e.data).collect();
    let statement = tx.prepare_cached(store::APPEND_RUN_EVENTS).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
        [&batch, &conversation, &run, &epoch, &kinds, &datas, &output_bytes];
    Ok(tx.query_one(&statement, &params).await?.get("first_seq"))
}

/// Sends a NOTIFY (delivered at commit).
pub async fn notify(tx: &Transaction<'_>, channel: &str, payload: &str) -> Result<(), tokio_postgres::Error> {
    let statement = tx.prepare_cached(store::NOTIFY).await?;
    tx.query_one(&statement, &[&channel, &payload]).await.map(|_| ())
}
