//! Cancel and answer: the two commands the edge may send, shared by the HTTP
//! endpoints and the WebSocket. Each is one transaction that writes a durable
//! row in `run_commands` and a NOTIFY carrying only ids; the edge never
//! reaches a runner.

use serde_json::{Value, json};
use uuid::Uuid;

use super::error::RunError;
use super::events::{self, CHANNEL_COMMANDS, Kind, NewEvent};
use super::store;
use crate::db::Pool;
use crate::db::tenant;
use crate::identity::Caller;

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The run was still queued: cancelled on the spot.
    Now,
    /// A runner holds it: the command is on its way.
    Requested,
}

impl Cancelled {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Now => "cancelled",
            Self::Requested => "cancelling",
        }
    }
}

/// Cancels run `id` (idempotent); `RunFinished` once it ended. With
/// `conversation`, the run must belong to it (`RunNotInConversation`).
pub async fn cancel(pool: &Pool, caller: &Caller, id: Uuid, conversation: Option<Uuid>) -> Result<Cancelled, RunError> {
    let mut client = pool.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(store::LOCK_RUN).await?;
    let run = tx.query_opt(&statement, &[&id, &caller.org]).await?.ok_or(RunError::NotFound)?;
    let (status, run_conversation): (String, Uuid) = (run.get("status"), run.get("conversation_id"));
    if conversation.is_some_and(|c| c != run_conversation) {
        return Err(RunError::RunNotInConversation);
    }
    let outcome = match status.as_str() {
        "queued" => {
            let statement = tx.prepare_cached(store::CANCEL_QUEUED).await?;
            tx.execute(&statement, &[&id, &caller.org]).await?;
            let event = NewEvent::new(Kind::RunCancelled, json!({ "run_id": id, "by": caller.actor() }));
            events::append(&tx, run_conversation, Some(id), None, &[event], 0).await?;
            Cancelled::Now
        }
        "running" | "waiting_input" => {
            let statement = tx.prepare_cached(store::PENDING_CANCEL).await?;
            if !tx.query_one(&statement, &[&id, &caller.org]).await?.get::<_, bool>("pending") {
                let command = Uuid::new_v4();
                let statement = tx.prepare_cached(store::INSERT_COMMAND).await?;
                tx.execute(&statement, &[&command, &id, &caller.org, &"cancel", &json!({}), &caller.actor()]).await?;
                events::notify(&tx, CHANNEL_COMMANDS, &format!("{id}:{command}:cancel")).await?;
            }
            Cancelled::Requested
        }
        _ => return Err(RunError::RunFinished),
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Answers input request `id`: the first answer wins, atomically. With
/// `conversation`, the question must belong to it.
pub async fn answer(
    pool: &Pool,
    caller: &Caller,
    id: Uuid,
    value: Value,
    conversation: Option<Uuid>,
) -> Result<(), RunError> {
    if !crate::sanitize::storable(&value) {
        return Err(RunError::Invalid("value must not contain the NUL character (\\u0000)"));
    }
    let mut client = pool.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    // Locks the run: the answer and the run's end cannot cross.
    let statement = tx.prepare_cached(store::INPUT_STATUS).await?;
    let current = tx.query_opt(&statement, &[&id, &caller.org]).await?.ok_or(RunError::NotFound)?;
    if conversation.is_some_and(|c| c != current.get::<_, Uuid>("conversation_id")) {
        return Err(RunError::NotFound);
    }
    match current.get::<_, String>("status").as_str() {
        "answered" => return Err(RunError::AlreadyAnswered),
        "pending" if current.get::<_, String>("run_status") == "waiting_input" => {}
        // The run ended or was handed back: the question no longer stands.
        _ => return Err(RunError::InputExpired),
    }
    let statement = tx.prepare_cached(store::ANSWER_INPUT).await?;
    let Some(row) = tx.query_opt(&statement, &[&id, &caller.org, &value, &caller.actor()]).await? else {
        return Err(RunError::AlreadyAnswered);
    };
    let run: Uuid = row.get("run_id");
    let command = Uuid::new_v4();
    let payload = json!({ "input_id": id, "value": value });
    let statement = tx.prepare_cached(store::INSERT_COMMAND).await?;
    tx.execute(&statement, &[&command, &run, &caller.org, &"input", &payload, &caller.actor()]).await?;
    events::notify(&tx, CHANNEL_COMMANDS, &format!("{run}:{command}:input")).await?;
    tx.commit().await?;
    Ok(())
}
