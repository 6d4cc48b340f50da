//! Periodic housekeeping: the purge of rows that have served their purpose
//! (expired rate-limit buckets, refresh tokens and families, connect flows,
//! used ws-token ids, sealed refresh-token copies past their grace window,
//! anonymous audit events after 90 days).
//!
//! Each table is one [`steps`] entry: a `SECURITY DEFINER` function of its
//! own, run as its own statement by the runtime role, so that one failing step
//! never rolls back the others, and each is bounded (a batch, repeated while
//! full, up to [`MAX_BATCHES`]). Safe with any number of instances: each step
//! takes a transaction-scoped try-lock (others skip it that round). Nothing
//! here is needed for correctness — expired rows are already refused where
//! they are read — it keeps tables bounded (docs/operations.md lists every
//! table and its bound).
//!
//! Unattended work must say when it fails: the outcome of every round is in
//! the metrics (last fully successful round, rows purged per table, failures
//! per step), and a failing step is logged once when it starts failing and
//! once when it recovers — not every round.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_postgres::types::Type;
use tokio_util::sync::CancellationToken;

use crate::db::Pool;
use crate::metrics::Metrics;

crate::db::statements! { "maintenance":
    RATE_LIMITS => "rate_limits",
    REFRESH_FAMILIES => "refresh_families",
    REFRESH_TOKENS => "refresh_tokens",
    REFRESH_TOKENS_SEALED => "refresh_tokens_sealed",
    OAUTH_STATES => "oauth_states",
    WS_TOKENS_USED => "ws_tokens_used",
    AUDIT_LOG_ANONYMOUS => "audit_log_anonymous",
}

/// Every purge step: `(name, statement)`; the name is the metric label and the SQL file.
pub fn steps() -> impl Iterator<Item = (&'static str, &'static str)> {
    STATEMENTS.iter().map(|(name, sql)| (name.trim_start_matches("maintenance/"), *sql))
}

/// Default for `MOAT_PURGE_INTERVAL`: how often each instance purges.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// Rows per step and statement.
const BATCH: i32 = 5000;
/// Full batches one step may take per round (bounds a round's work; the rest waits for the next).
pub const MAX_BATCHES: usize = 20;

/// What one round did.
#[derive(Debug, Default)]
pub struct Round {
    /// Rows removed or cleared, by step.
    pub purged: Vec<(&'static str, i64)>,
    /// Steps that failed, with the error.
    pub failed: Vec<(&'static str, String)>,
}

impl Round {
    pub fn total(&self) -> i64 {
        self.purged.iter().map(|(_, n)| n).sum()
    }

    pub fn succeeded(&self) -> bool {
        self.failed.is_empty()
    }
}

/// One purge round: every step, each independently.
pub async fn purge_once(pool: &Pool) -> Round {
    let mut round = Round::default();
    for (name, sql) in steps() {
        match step(pool, sql).await {
            Ok(n) => round.purged.push((name, n)),
            Err(e) => round.failed.push((name, format!("{e:#}"))),
        }
    }
    round
}

async fn step(pool: &Pool, sql: &str) -> anyhow::Result<i64> {
    let client = pool.get().await?;
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let n: i64 = client.query_typed_one(sql, &[(&BATCH, Type::INT4)]).await?.get("purged");
        total += n;
        if n < i64::from(BATCH) {
            break;
        }
    }
    Ok(total)
}

/// Purges every `interval` until `stop` is cancelled, recording each round in `metrics`.
pub async fn run(pool: Pool, metrics: std::sync::Arc<Metrics>, interval: Duration, stop: CancellationToken) {
    // The first round comes one interval after start, not in the start-up burst.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = BTreeSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let round = purge_once(&pool).await;
        metrics.purge_round(round.purged.iter().copied(), round.failed.iter().map(|(step, _)| *step));
        report(&round, &mut failing);
    }
}

/// Logs a step's failure when its failure streak starts and its recovery when it ends.
fn report(round: &Round, failing: &mut BTreeSet<&'static str>) {
    for (name, error) in &round.failed {
        if failing.insert(name) {
            tracing::warn!(step = name, error = %error, "purge step failed; retrying every round, logged again only once it recovers");
        }
    }
    for (name, purged) in &round.purged {
        if failing.remove(name) {
            tracing::info!(step = name, purged, "purge step recovered");
        }
    }
    if round.total() > 0 {
        tracing::debug!(purged = round.total(), "purged expired rows");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_streak_is_logged_once() {
        let mut failing = BTreeSet::new();
        let failed = || Round { purged: vec![("a", 1)], failed: vec![("b", "boom".into())] };
        report(&failed(), &mut failing);
        assert!(failing.contains("b"));
        report(&failed(), &mut failing);
        assert_eq!(failing.len(), 1);
        report(&Round { purged: vec![("a", 0), ("b", 3)], failed: Vec::new() }, &mut failing);
        assert!(failing.is_empty());
    }

    #[test]
    fn every_step_has_its_statement() {
        assert_eq!(steps().count(), STATEMENTS.len());
        for ((name, sql), (registered, same)) in steps().zip(STATEMENTS) {
            assert_eq!(format!("maintenance/{name}"), *registered);
            assert_eq!(sql, *same);
            assert!(sql.contains("AS purged"), "{name}");
        }
    }
}
