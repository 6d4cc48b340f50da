//! Periodic housekeeping: purging expired rate-limit rows, refresh tokens
//! and families, and sealed refresh tokens past their grace window.
//!
//! Safe with any number of instances: the purge is one database function
//! that takes a transaction-scoped advisory lock (others skip that round),
//! deletes only expired rows, in bounded batches. Nothing here is needed for
//! correctness — expired rows are already refused where they are read — it
//! only keeps tables small.

use std::time::Duration;

use tokio_postgres::types::Type;
use tokio_util::sync::CancellationToken;

use crate::db::Pool;

pub const PURGE_EXPIRED: &str = include_str!("../sql/maintenance/purge_expired.sql");
pub const STATEMENTS: &[(&str, &str)] = &[("maintenance/purge_expired", PURGE_EXPIRED)];

/// How often each instance tries to purge.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// Rows per table per round.
const BATCH: i32 = 5000;

/// One purge round; returns how many rows it removed or cleared (0 if another instance held the lock).
pub async fn purge_once(pool: &Pool) -> anyhow::Result<i64> {
    let client = pool.get().await?;
    let row = client.query_typed_one(PURGE_EXPIRED, &[(&BATCH, Type::INT4)]).await?;
    Ok(row.get("purged"))
}

/// Purges every [`PURGE_INTERVAL`] until `stop` is cancelled.
pub async fn run(pool: Pool, stop: CancellationToken) {
    // The first round comes one interval after start, not in the start-up burst.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + PURGE_INTERVAL, PURGE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match purge_once(&pool).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "purged expired rows"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "purging expired rows failed; will retry"),
        }
    }
}
