//! Executing one claimed run: `run.started`, the agent (stopped promptly by
//! cancel, lease loss, timeout or a shutdown hand-back), heartbeats, and the
//! final status — every write fenced by the claim's lease epoch.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::agents;
use super::context::{AgentError, Limits, RunContext, RunRef, patiently, scope, writer};
use crate::runs::events::{self, Kind, NewEvent};
use crate::runs::store;

/// A run this runner claimed.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub run: RunRef,
    pub agent: String,
    pub input: Value,
}

/// How the run ends, as this runner sees it.
enum Ending {
    Succeeded,
    Failed(&'static str),
    Cancelled,
    /// Lease lost: another instance owns the outcome; write nothing.
    Fenced,
    /// Shutdown grace exceeded: back to the queue for another runner.
    HandBack,
}

pub(super) async fn execute(
    shared: Arc<Shared>,
    claim: Claim,
    answers: mpsc::UnboundedReceiver<super::Answer>,
    cancel: CancellationToken,
) {
    let run = claim.run;
    let fenced = CancellationToken::new();
    let done = CancellationToken::new();
    tokio::spawn(heartbeat(shared.clone(), run, fenced.clone(), done.clone()));
    // Whatever happens below (even a panic), the heartbeat stops and the slot is freed.
    let _leave = Leave { shared: shared.clone(), run: run.run, done: done.clone() };

    // One batch id for every attempt: a retried `run.started` is appended once.
    let started = uuid::Uuid::new_v4();
    let ending = match patiently("starting the run", run.run, || start(&shared, run, started)).await {
        Ok(true) => drive(&shared, &claim, answers, &cancel, &fenced).await,
        Ok(false) => Ending::Fenced,
        Err(e) => {
            tracing::error!(run = %run.run, error = %format!("{e:#}"), "cannot start the run");
            Ending::Fenced
        }
    };
    if let Err(e) = patiently("recording the run's end", run.run, || finish(&shared, run, &ending)).await {
        tracing::error!(run = %run.run, error = %format!("{e:#}"), "cannot record the run's end; its lease will expire");
    }
}

/// Stops the heartbeat and frees the runner slot when a run's task ends, however it ends.
struct Leave {
    shared: Arc<Shared>,
    run: uuid::Uuid,
    done: CancellationToken,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.done.cancel();
        self.shared.forget(self.run);
    }
}

/// Appends `run.started` (as the batch `batch`); `false` if the claim was already fenced out.
async fn start(shared: &Shared, run: RunRef, batch: uuid::Uuid) -> anyhow::Result<bool> {
    let mut client = shared.pool.get().await?;
    let tx = client.transaction().await?;
    scope(&tx, run.org).await?;
    let event = NewEvent::new(Kind::RunStarted, json!({ "run_id": run.run }));
    let first = events::append_once(&tx, batch, (run.conversation, run.run, run.epoch), &[event], 0).await?;
    let statement = tx.prepare_cached(store::QUEUE_WAIT).await?;
    let wait = tx.query_opt(&statement, &[&run.run, &run.org]).await?;
    tx.commit().await?;
    if let Some(wait) = wait.filter(|row| row.get::<_, i32>("attempt") == 1) {
        shared.metrics.queue_wait(wait.get("waited_secs"));
    }
    Ok(first.is_some())
}

async fn drive(
    shared: &Shared,
    claim: &Claim,
    answers: mpsc::UnboundedReceiver<super::Answer>,
    cancel: &CancellationToken,
    fenced: &CancellationToken,
) -> Ending {
    let Some(agent) = agents::get(&claim.agent, &shared.config.agents) else {
        return Ending::Failed("unknown_agent");
    };
    let (tx, rx) = mpsc::channel(1024);
    let write = tokio::spawn(writer(shared.pool.clone(), claim.run, rx, fenced.clone()));
    let limits = Limits { max_events: shared.config.max_events, max_output_bytes: shared.config.max_output_bytes };
    let mut ctx = RunContext::new(claim.run, claim.input.clone(), shared.pool.clone(), tx, answers, limits)
        .with_tokens(shared.tokens.clone())
        .with_metrics(shared.metrics.clone())
        .with_process_groups(shared.groups.clone());
    // A panicking agent fails its run; it does not take the runner or the slot with it.
    let guarded = std::panic::AssertUnwindSafe(agent.run(&mut ctx));
    let outcome = tokio::select! {
        result = futures_util::FutureExt::catch_unwind(guarded) => result.unwrap_or(Err(AgentError::Failed("agent_panicked"))),
        () = cancel.cancelled() => Err(AgentError::Cancelled),
        () = fenced.cancelled() => Err(AgentError::Fenced),
        () = tokio::time::sleep(shared.config.max_duration) => Err(AgentError::Limit("run_timeout")),
        () = shared.hand_back.cancelled() => return hand_back(ctx, write).await,
    };
    // Everything emitted before the end is written before the final event.
    drop(ctx);
    let written = write.await.unwrap_or(false);
    if !written || fenced.is_cancelled() {
        return Ending::Fenced;
    }
    match outcome {
        Ok(()) => Ending::Succeeded,
        Err(AgentError::Failed(code) | AgentError::Limit(code)) => Ending::Failed(code),
        Err(AgentError::Cancelled) => Ending::Cancelled,
        Err(AgentError::Fenced) => Ending::Fenced,
        Err(AgentError::Internal(e)) => {
            tracing::error!(run = %claim.run.run, error = %format!("{e:#}"), "agent error");
            Ending::Failed("agent_error")
        }
    }
}

async fn hand_back(ctx: RunContext, write: tokio::task::JoinHandle<bool>) -> Ending {
    drop(ctx);
    if write.await.unwrap_or(false) { Ending::HandBack } else { Ending::Fenced }
}

/// Records the end in one transaction, fenced: the final event and status.
async fn finish(shared: &Shared, run: RunRef, ending: &Ending) -> anyhow::Result<()> {
    let (event, status, error): (NewEvent, &str, Option<&str>) = match ending {
        Ending::Fenced => return Ok(()),
        Ending::Succeeded => (NewEvent::new(Kind::RunSucceeded, json!({ "run_id": run.run })), "succeeded", None),
        Ending::Failed(code) => {
            (NewEvent::new(Kind::RunFailed, json!({ "run_id": run.run, "error": code })), "failed", Some(*code))
        }
        Ending::Cancelled => (NewEvent::new(Kind::RunCancelled, json!({ "run_id": run.run })), "cancelled", None),
        Ending::HandBack => {
            (NewEvent::new(Kind::RunQueued, json!({ "run_id": run.run, "reason": "runner_shutdown" })), "queued", None)
        }
    };
    let mut client = shared.pool.get().await?;
    let tx = client.transaction().await?;
    scope(&tx, run.org).await?;
    // A cancel that arrived while handing back wins: the run ends cancelled, not re-run.
    let (event, status) = if status == "queued" && cancel_pending(&tx, run).await? {
        (NewEvent::new(Kind::RunCancelled, json!({ "run_id": run.run })), "cancelled")
    } else {
        (event, status)
    };
    if events::append(&tx, run.conversation, Some(run.run), Some(run.epoch), &[event], 0).await?.is_none() {
        return Ok(()); // fenced out meanwhile: the outcome is someone else's
    }
    // Whatever the ending, questions the run asked no longer stand.
    let statement = tx.prepare_cached(store::EXPIRE_INPUTS).await?;
    tx.execute(&statement, &[&run.run, &run.org]).await?;
    if status == "queued" {
        let statement = tx.prepare_cached(store::REQUEUE_RUN).await?;
        tx.execute(&statement, &[&run.run, &run.org, &run.epoch]).await?;
        events::notify(&tx, events::CHANNEL_RUNS, &run.run.to_string()).await?;
    } else {
        let statement = tx.prepare_cached(store::FINISH_RUN).await?;
        tx.execute(&statement, &[&run.run, &run.org, &run.epoch, &status, &error]).await?;
    }
    if status == "cancelled" {
        let statement = tx.prepare_cached(store::APPLY_CANCELS).await?;
        let applied = tx.query(&statement, &[&run.run, &run.org]).await?;
        tx.commit().await?;
        for row in applied {
            shared.metrics.command_applied("cancel", row.get("latency_secs"));
        }
        return Ok(());
    }
    tx.commit().await?;
    Ok(())
}

async fn cancel_pending(tx: &deadpool_postgres::Transaction<'_>, run: RunRef) -> Result<bool, tokio_postgres::Error> {
    let statement = tx.prepare_cached(store::PENDING_CANCEL).await?;
    Ok(tx.query_one(&statement, &[&run.run, &run.org]).await?.get("pending"))
}

/// Renews the lease every heartbeat; when the lease is no longer ours, fences
/// the run. After a failed renewal (the database unreachable) it tries again
/// within [`RETRY_HEARTBEAT`], so a lease given back after an outage is renewed at once.
async fn heartbeat(shared: Arc<Shared>, run: RunRef, fenced: CancellationToken, done: CancellationToken) {
    let lease = shared.config.lease.as_secs_f64();
    let (mut next, mut failing) = (shared.config.heartbeat, false);
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(next) => {}
        }
        let renewed: anyhow::Result<u64> = async {
            let mut client = shared.heartbeat_pool.get().await?;
            let tx = client.transaction().await?;
            scope(&tx, run.org).await?;
            let statement = tx.prepare_cached(store::HEARTBEAT).await?;
            let n = tx.execute(&statement, &[&run.run, &run.org, &run.epoch, &lease]).await?;
            tx.commit().await?;
            Ok(n)
        }
        .await;
        match renewed {
            Ok(0) => {
                if !done.is_cancelled() {
                    tracing::warn!(run = %run.run, "lease lost (the run was recovered elsewhere); stopping it");
                    fenced.cancel();
                }
                return;
            }
            Ok(_) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(run = %run.run, "heartbeat renewed the lease again");
                }
                next = shared.config.heartbeat;
            }
            Err(e) => {
                // Logged once per failure streak (an outage would otherwise log twice a second per run).
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(run = %run.run, error = %format!("{e:#}"), "heartbeat failed; retrying");
                }
                next = shared.config.heartbeat.min(RETRY_HEARTBEAT);
            }
        }
    }
}

/// The longest wait before a failed lease renewal is tried again.
const RETRY_HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(500);
