//! Stale-run recovery: runs whose lease expired (their runner died or stalled)
//! end as `failed` with error `runner_lost` and a `run.failed` event.
//!
//! Every `serve` and `runner` instance does this every [`INTERVAL`]; it is
//! safe with many at once: `moat_recover_runs` (V10) claims stale runs with
//! `FOR UPDATE SKIP LOCKED` and bumps their lease epoch (fencing out the old
//! holder), and the event is appended in the same transaction.
//!
//! An unavailable database is not evidence that a runner died: each tick
//! first advances, in a statement of its own, the clock of when any Moat
//! process last reached the database (`moat_advance_clock`); a tick that
//! finds it older than twice [`INTERVAL`] gives that time back to every lease
//! that was still valid (after a gap longer than [`OUTAGE`], a whole lease),
//! before any lease is judged. So a PostgreSQL restart
//! or failover longer than the lease fails no run whose runner comes back
//! and heartbeats; a runner that died meanwhile loses its runs one lease of
//! database availability after the database returns.

use std::time::Duration;

use serde_json::json;
use tokio_postgres::types::Type;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::events::{self, Kind, NewEvent};
use super::store;
use crate::db::Pool;
use crate::db::tenant;
use crate::ids::OrgId;

/// How often each instance looks for stale runs (and advances the database clock).
pub const INTERVAL: Duration = Duration::from_secs(1);
/// A gap in the database clock this long was an outage: live leases restart whole.
pub const OUTAGE: Duration = Duration::from_secs(3);
const BATCH: i32 = 200;

/// One round; returns how many runs it ended.
pub async fn recover_once(pool: &Pool) -> anyhow::Result<usize> {
    let mut client = pool.get().await?;
    let (tick, outage) = (INTERVAL.as_secs_f64(), OUTAGE.as_secs_f64());
    client.query_typed_one(store::ADVANCE_CLOCK, &[(&tick, Type::FLOAT8), (&outage, Type::FLOAT8)]).await?;
    let tx = client.transaction().await?;
    let statement = tx.prepare_cached(store::RECOVER_RUNS).await?;
    let stale = tx.query(&statement, &[&BATCH]).await?;
    for row in &stale {
        let (run, org, conversation): (Uuid, OrgId, Uuid) =
            (row.get("run_id"), row.get("org_id"), row.get("conversation_id"));
        tenant::set_org(&tx, org).await?;
        let statement = tx.prepare_cached(store::EXPIRE_INPUTS).await?;
        tx.execute(&statement, &[&run, &org]).await?;
        let event = NewEvent::new(Kind::RunFailed, json!({ "run_id": run, "error": "runner_lost" }));
        events::append(&tx, conversation, Some(run), None, &[event], 0).await?;
        tracing::warn!(%run, "run's lease expired: its runner is gone; marked failed (runner_lost)");
    }
    tx.commit().await?;
    Ok(stale.len())
}

/// Recovers every [`INTERVAL`] until `stop` is cancelled.
pub async fn run(pool: Pool, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = recover_once(&pool).await {
            tracing::warn!(error = %format!("{e:#}"), "stale-run recovery failed; will retry");
        }
    }
}
