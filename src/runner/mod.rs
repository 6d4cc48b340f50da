//! `moat runner`: executes runs. Needs no inbound port; any number run
//! against one database.
//!
//! - **Claims** queued runs with `FOR UPDATE SKIP LOCKED` (through
//!   `moat_claim_runs`), woken by NOTIFY on `moat_runs`, with a fallback poll.
//! - **Commands** (cancel, answers) are rows in `run_commands`; a NOTIFY on
//!   `moat_commands` with ids wakes the runner, and it also re-reads unapplied
//!   commands of its runs after every LISTEN (re)connect and on the poll, so
//!   a notification lost during a disconnect delays a command, never drops it.
//! - **Leases** are fenced by epoch (see [`execute`]), and every instance
//!   recovers runs whose lease expired ([`crate::runs::recovery`]).
//!
//! The in-memory registry of this runner's own runs is per-instance state
//! (docs/caches.md): correctness never depends on it — the tables do.

pub mod agents;
mod context;
mod exec;
mod execute;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio_postgres::types::Type;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use context::{AgentError, Answer, RunContext};

use crate::config::runner::RunnerConfig;
use crate::db::Pool;
use crate::db::listen::{self, Notification};
use crate::ids::OrgId;
use crate::runs::events::{CHANNEL_COMMANDS, CHANNEL_RUNS};
use crate::runs::{recovery, store};

/// What the dispatcher needs to reach one of this runner's runs.
#[derive(Clone)]
struct Handle {
    org: OrgId,
    cancel: CancellationToken,
    answers: mpsc::UnboundedSender<Answer>,
}

pub(crate) struct Shared {
    pool: Pool,
    heartbeat_pool: Pool,
    config: RunnerConfig,
    id: String,
    /// This runner's active runs (per-instance; see the module docs).
    active: Arc<Mutex<HashMap<Uuid, Handle>>>,
    wake: Notify,
    /// Cancelled when the shutdown grace is over: remaining runs go back to the queue.
    hand_back: CancellationToken,
    /// The broker, for agents' token requests (when an agent declares `providers`).
    tokens: Option<crate::integrations::broker::Deps>,
    /// External agents' process groups still alive (killed when the runner exits).
    groups: exec::ProcessGroups,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Shared {
    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Handle>> {
        self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn forget(&self, run: Uuid) {
        let mut active = self.active();
        active.remove(&run);
        self.metrics.active_runs(active.len());
        drop(active);
        self.wake.notify_one();
    }
}

/// Runs until `shutdown` resolves, then stops claiming, lets runs finish
/// within the grace period and hands the rest back.
pub async fn run(config: RunnerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Runs hold a connection only while writing, so the pool need not grow with concurrency.
    let environment = if config.environment.dev_mode().is_some() { "development" } else { "production" };
    let metrics = Arc::new(crate::metrics::Metrics::for_process(crate::metrics::Process::Runner, environment));
    let pool = config.database.pool(config.concurrency.min(32) + 8).map_err(anyhow::Error::msg)?;
    let pool = pool.with_wait_histogram(metrics.pool_wait_histogram());
    // Heartbeats get connections of their own: busy writers must not starve the
    // lease renewals of healthy runs.
    let heartbeat_pool =
        config.database.pool(4).map_err(anyhow::Error::msg)?.with_wait_histogram(metrics.pool_wait_histogram());
    let id = format!("runner-{}", Uuid::new_v4());
    let tokens = match &config.agent_tokens {
        None => None,
        Some(t) => Some(crate::integrations::broker::Deps {
            db: pool.clone(),
            sealer: Arc::new(crate::crypto::Sealer::new(t.encryption_key.clone(), t.previous_encryption_keys.clone())),
            providers: Arc::new(crate::integrations::Providers::new(&t.providers, t.provider_timeout, &t.egress)?),
            broker: crate::integrations::broker::Broker::new(config.concurrency.min(32) + 8),
            min_validity: t.min_validity,
            provider_timeout: t.provider_timeout,
            refresh_lock: true,
            metrics: metrics.clone(),
        }),
    };
    let shared = Arc::new(Shared {
        pool: pool.clone(),
        heartbeat_pool,
        config,
        id,
        active: Arc::default(),
        wake: Notify::new(),
        hand_back: CancellationToken::new(),
        tokens,
        groups: exec::ProcessGroups::default(),
        metrics,
    });
    let stop = CancellationToken::new();
    if let Some(addr) = shared.config.metrics_bind {
        let listener = crate::health::bind_loopback(addr).await?;
        crate::health::serve_loopback(listener, shared.metrics.clone(), pool.clone(), stop.clone());
    }
    tokio::spawn(recovery::run(pool.clone(), stop.clone()));
    tokio::spawn(poll(shared.clone(), stop.clone()));
    if shared.config.listen.enabled {
        tokio::spawn(listen_loop(shared.clone(), stop.clone()));
    }
    tracing::info!(runner = %shared.id, concurrency = shared.config.concurrency, listen = shared.config.listen.enabled, "runner started");

    tokio::pin!(shutdown);
    loop {
        claim_all(&shared).await;
        tokio::select! {
            () = &mut shutdown => break,
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(shared.config.poll) => {}
        }
    }

    tracing::info!(active = shared.active().len(), "runner stopping: no new claims, finishing runs");
    let deadline = tokio::time::Instant::now() + shared.config.shutdown_grace;
    while !shared.active().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !shared.active().is_empty() {
        tracing::info!(active = shared.active().len(), "shutdown grace over: handing the remaining runs back");
        shared.hand_back.cancel();
        let hard = tokio::time::Instant::now() + Duration::from_secs(10);
        while !shared.active().is_empty() && tokio::time::Instant::now() < hard {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.cancel();
    // Agents' cleanup may still be inside its grace period: nothing outlives the runner.
    shared.groups.kill_all();
    tracing::info!("runner stopped");
    Ok(())
}

/// Claims as many runs as there are free slots.
async fn claim_all(shared: &Arc<Shared>) {
    loop {
        let free = shared.config.concurrency.saturating_sub(shared.active().len());
        if free == 0 {
            return;
        }
        match claim(shared, free).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "claiming runs failed; will retry");
                return;
            }
        }
    }
}

async fn claim(shared: &Arc<Shared>, max: usize) -> anyhow::Result<usize> {
    let mut client = shared.pool.get().await?;
    let started = std::time::Instant::now();
    let tx = client.transaction().await?;
    let statement = tx.prepare_cached(store::CLAIM_RUNS).await?;
    let lease = shared.config.lease.as_secs_f64();
    let rows = tx.query(&statement, &[&shared.id, &i32::try_from(max).unwrap_or(100), &lease]).await?;
    tx.commit().await?;
    shared.metrics.claimed(started.elapsed(), rows.len());
    let claimed = !rows.is_empty();
    for row in &rows {
        let run = context::RunRef {
            run: row.get("run_id"),
            org: row.get("org_id"),
            conversation: row.get("conversation_id"),
            epoch: row.get("lease_epoch"),
        };
        let claim = execute::Claim { run, agent: row.get("agent"), input: row.get("input") };
        let (answers_tx, answers_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        {
            let mut active = shared.active();
            active.insert(run.run, Handle { org: run.org, cancel: cancel.clone(), answers: answers_tx });
            shared.metrics.active_runs(active.len());
        }
        tracing::info!(run = %run.run, attempt = row.get::<_, i32>("attempt"), "claimed run");
        tokio::spawn(execute::execute(shared.clone(), claim, answers_rx, cancel));
    }
    if claimed {
        // A command committed between the claim and the registration above found
        // no handle to wake: pick it up now rather than at the next poll.
        if let Err(e) = sweep(shared).await {
            tracing::warn!(error = %format!("{e:#}"), "command catch-up after a claim failed; the poll will retry");
        }
    }
    Ok(rows.len())
}

/// Delivers one command to the run it is for, if this runner holds it. The
/// notification or poll only says *that* something happened: the command is
/// read from `run_commands` (in the run's organization, for that run, not yet
/// applied) before anything is done, so a forged NOTIFY achieves nothing.
async fn dispatch(shared: &Shared, run: Uuid, command: Uuid) {
    let Some(handle) = shared.active().get(&run).cloned() else {
        return;
    };
    let (kind, payload) = match read_command(shared, handle.org, run, command).await {
        Ok(Some(found)) => found,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%run, error = %format!("{e:#}"), "reading a command failed; the poll will retry");
            return;
        }
    };
    match kind.as_str() {
        "cancel" => handle.cancel.cancel(),
        "input" => {
            let input_id = payload.get("input_id").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok());
            if let Some(input_id) = input_id {
                let value = payload.get("value").cloned().unwrap_or(Value::Null);
                let _ = handle.answers.send(Answer { command_id: command, input_id, value });
            }
        }
        _ => {}
    }
}

/// An unapplied command of `run`: its kind and payload.
async fn read_command(
    shared: &Shared,
    org: OrgId,
    run: Uuid,
    command: Uuid,
) -> anyhow::Result<Option<(String, Value)>> {
    let mut client = shared.pool.get().await?;
    let tx = client.transaction().await?;
    context::scope(&tx, org).await?;
    let statement = tx.prepare_cached(store::COMMAND_BY_ID).await?;
    let row = tx.query_opt(&statement, &[&command, &org, &run]).await?;
    tx.commit().await?;
    Ok(row.map(|r| (r.get("kind"), r.get("payload"))))
}

/// Re-reads every unapplied command of this runner's runs.
async fn sweep(shared: &Shared) -> anyhow::Result<()> {
    if shared.active().is_empty() {
        return Ok(());
    }
    let rows = {
        let client = shared.pool.get().await?;
        client.query_typed(store::PENDING_COMMANDS, &[(&shared.id, Type::TEXT)]).await?
    };
    for row in rows {
        dispatch(shared, row.get("run_id"), row.get("command_id")).await;
    }
    Ok(())
}

/// The fallback poll: commands and queued runs, whatever happened to NOTIFY.
async fn poll(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(shared.config.poll) => {}
        }
        if let Err(e) = sweep(&shared).await {
            tracing::warn!(error = %format!("{e:#}"), "command poll failed; will retry");
        }
        shared.wake.notify_one();
    }
}

/// Keeps a LISTEN connection up; after each (re)connect, catches up on
/// anything missed while it was down.
async fn listen_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let (tx, mut rx) = mpsc::unbounded_channel::<Notification>();
        match listen::listen(&shared.config.listen.database, &[CHANNEL_RUNS, CHANNEL_COMMANDS], tx).await {
            Ok(listener) => {
                backoff = Duration::from_millis(200);
                tracing::info!("LISTEN connection up");
                if let Err(e) = sweep(&shared).await {
                    tracing::warn!(error = %format!("{e:#}"), "catch-up after (re)connect failed; the poll will retry");
                }
                shared.wake.notify_one();
                let mut closed = listener.closed;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = &mut closed => break,
                        notification = rx.recv() => match notification {
                            Some((channel, payload)) => on_notification(&shared, &channel, &payload).await,
                            None => break,
                        },
                    }
                }
                tracing::warn!("LISTEN connection lost; reconnecting (commands meanwhile are caught up on reconnect)");
            }
            Err(e) => tracing::warn!(error = %e, "LISTEN connection failed; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn on_notification(shared: &Shared, channel: &str, payload: &str) {
    match channel {
        CHANNEL_RUNS => shared.wake.notify_one(),
        CHANNEL_COMMANDS => {
            // `<run>:<command>:<kind>`: ids and a kind, nothing else.
            let mut parts = payload.splitn(3, ':');
            let (Some(run), Some(command)) = (parts.next(), parts.next()) else {
                return;
            };
            if let (Ok(run), Ok(command)) = (Uuid::parse_str(run), Uuid::parse_str(command)) {
                dispatch(shared, run, command).await;
            }
        }
        _ => {}
    }
}
