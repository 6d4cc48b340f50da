//! Stale-run recovery: runs whose lease expired (their runner died or stalled)
//! end as `failed` with error `runner_lost` and a `run.failed` event.
//!
//! Every `serve` and `runner` instance does this periodically; it is safe
//! with many at once: `moat_fail_stale_runs` claims stale runs with `FOR
//! UPDATE SKIP LOCKED` and bumps their lease epoch (fencing out the old
//! holder), and the event is appended in the same transaction.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::events::{self, Kind, NewEvent};
use super::store;
use crate::db::Pool;
use crate::db::tenant;

/// How often each instance looks for stale runs.
pub const INTERVAL: Duration = Duration::from_secs(2);
const BATCH: i32 = 200;

/// One round; returns how many runs it ended.
pub async fn recover_once(pool: &Pool) -> anyhow::Result<usize> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let statement = tx.prepare_cached(store::FAIL_STALE).await?;
    let stale = tx.query(&statement, &[&BATCH]).await?;
    for row in &stale {
        let (run, org, conversation): (Uuid, Uuid, Uuid) =
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
