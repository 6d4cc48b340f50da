//! Prometheus metrics through `prometheus-client`, with an explicit registry
//! per process (held by the application state and the runner's shared state).
//! A toolkit: what records and renders them. The endpoints that expose them
//! (`GET /metrics`, scope `metrics:read`; the loopback-only
//! `MOAT_METRICS_BIND`) are in [`crate::health`].
//!
//! Labels are bounded: HTTP requests are labelled by **route template**
//! (`/v1/runs/{id}`, never a raw path — ids are not labels), method and
//! status. Gauges that describe shared state (runs by status) are read from
//! PostgreSQL at scrape time. Every metric is documented in
//! docs/operations.md.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::db::Pool;

crate::db::statements! { "metrics":
    RUN_COUNTS => "run_counts",
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
    /// The run's error code (`runner_lost`, `run_timeout`, …; empty when none): a bounded set.
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    /// A purge step (`crate::maintenance::steps`): a fixed set.
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    environment: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Which process the registry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    Serve,
    Runner,
}

/// This process's metrics. Every field exists in both processes; only the
/// ones that describe the process are registered (and so exported).
pub struct Metrics {
    registry: Registry,
    process: Process,
    provider_latency: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    runner_claims: Counter,
    runner_claim_duration: Histogram,
    runner_queue_wait: Histogram,
    runner_active: Gauge,
    runner_commands: Family<KindLabels, Counter>,
    runner_command_latency: Family<KindLabels, Histogram, fn() -> Histogram>,
    queue_depth: Gauge,
    pool_wait: Histogram,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: Family<HttpLabels, Histogram, fn() -> Histogram>,
    broker_calls: Family<OutcomeLabels, Counter>,
    rate_limited: Counter,
    websockets_open: Gauge,
    pool_connections: Gauge,
    pool_available: Gauge,
    pool_waiting: Gauge,
    runs: Family<StatusLabels, Gauge>,
    dev_bypass: Gauge<u64, AtomicU64>,
    purge_last_success: Gauge<f64, AtomicU64>,
    connections_open: Gauge,
    connections_max: Gauge,
    connections_refused: Counter,
    purge_rows: Family<StepLabels, Counter>,
    purge_failures: Family<StepLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Metrics {
    pub fn new(environment: &str) -> Self {
        Self::for_process(Process::Serve, environment)
    }

    pub fn for_process(process: Process, environment: &str) -> Self {
        let metrics = Self {
            registry: Registry::with_prefix("moat"),
            process,
            http_requests: Family::default(),
            http_latency: Family::new_with_constructor(latency_histogram),
            broker_calls: Family::default(),
            rate_limited: Counter::default(),
            websockets_open: Gauge::default(),
            pool_connections: Gauge::default(),
            pool_available: Gauge::default(),
            pool_waiting: Gauge::default(),
            runs: Family::default(),
            dev_bypass: Gauge::default(),
            purge_last_success: Gauge::default(),
            connections_open: Gauge::default(),
            connections_max: Gauge::default(),
            connections_refused: Counter::default(),
            purge_rows: Family::default(),
            purge_failures: Family::default(),
            provider_latency: Family::new_with_constructor(latency_histogram),
            runner_claims: Counter::default(),
            runner_claim_duration: latency_histogram(),
            runner_queue_wait: latency_histogram(),
            runner_active: Gauge::default(),
            runner_commands: Family::default(),
            runner_command_latency: Family::new_with_constructor(latency_histogram),
            queue_depth: Gauge::default(),
            // 0.1 ms … ~3 s.
            pool_wait: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        };
        metrics.register(environment)
    }

    fn register(mut self, environment: &str) -> Self {
        let r = &mut self.registry;
        if self.process == Process::Serve {
            r.register(
                "http_requests",
                "HTTP requests by route template, method and status",
                self.http_requests.clone(),
            );
            r.register("http_request_duration_seconds", "HTTP request latency", self.http_latency.clone());
            r.register("broker_calls", "Credential broker calls by outcome", self.broker_calls.clone());
            r.register("rate_limited", "Requests refused by an abuse limit", self.rate_limited.clone());
            r.register("websockets_open", "Open WebSocket streams on this instance", self.websockets_open.clone());
            r.register(
                "http_connections_open",
                "Open client connections (HTTP and WebSocket)",
                self.connections_open.clone(),
            );
            r.register("http_connections_max", "MOAT_MAX_CONNECTIONS", self.connections_max.clone());
            r.register(
                "http_connections_refused",
                "Connections closed at once because MOAT_MAX_CONNECTIONS were open",
                self.connections_refused.clone(),
            );
            r.register(
                "runs",
                "Runs by status and error code (all organizations, read at scrape time)",
                self.runs.clone(),
            );
            r.register(
                "purge_last_success_timestamp_seconds",
                "When this instance last completed a purge round with every step succeeding (unix time; 0: never)",
                self.purge_last_success.clone(),
            );
            r.register("purge_rows", "Rows purged (deleted or cleared), by purge step", self.purge_rows.clone());
            r.register("purge_failures", "Purge steps that failed, by step", self.purge_failures.clone());
        } else {
            r.register("runner_claims", "Runs this runner claimed", self.runner_claims.clone());
            r.register(
                "runner_claim_duration_seconds",
                "One claim transaction (moat_claim_runs), start to commit",
                self.runner_claim_duration.clone(),
            );
            r.register(
                "runner_queue_wait_seconds",
                "From a run's creation to its start by a runner (first attempts)",
                self.runner_queue_wait.clone(),
            );
            r.register("runner_active_runs", "Runs this runner is executing", self.runner_active.clone());
            r.register("runner_commands_applied", "Commands applied to runs, by kind", self.runner_commands.clone());
            r.register(
                "runner_command_latency_seconds",
                "From a command's commit to its application by the runner, by kind",
                self.runner_command_latency.clone(),
            );
        }
        r.register("queue_depth", "Queued runs, all organizations (read at scrape time)", self.queue_depth.clone());
        r.register(
            "provider_request_duration_seconds",
            "OAuth provider token-endpoint calls made by this process",
            self.provider_latency.clone(),
        );
        r.register("db_pool_connections", "Database connections held by the pool", self.pool_connections.clone());
        r.register("db_pool_available", "Idle database connections in the pool", self.pool_available.clone());
        r.register("db_pool_waiting", "Callers waiting for a database connection", self.pool_waiting.clone());
        r.register("db_pool_wait_seconds", "How long each database connection checkout waited", self.pool_wait.clone());
        r.register(
            "dev_bypass_events",
            "DEV_BYPASS lines this process logged (a production process reads 0)",
            self.dev_bypass.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").into(), environment: environment.into() })
            .set(1);
        r.register("build_info", "The running build", build);
        r.register("up", "Always 1 while the process serves", ConstCounter::new(1u64));
        self
    }

    /// The exposition text, with the scrape-time gauges read from `pool` and PostgreSQL.
    pub async fn render(&self, pool: &Pool) -> Result<String, RenderError> {
        let status = pool.status();
        self.pool_connections.set(i64::try_from(status.size).unwrap_or(i64::MAX));
        self.pool_available.set(i64::try_from(status.available).unwrap_or(i64::MAX));
        self.pool_waiting.set(i64::try_from(status.waiting).unwrap_or(i64::MAX));
        self.dev_bypass.set(crate::devmode::bypass_count());
        let client = pool.get().await?;
        let rows = client.query_typed(RUN_COUNTS, &[]).await?;
        let mut queued = 0;
        // Statuses that dropped to zero have no row: start from an empty family
        // (after the query, so a concurrent scrape never sees it half-built for long).
        self.runs.clear();
        for row in rows {
            let labels = StatusLabels { status: row.get("status"), error: row.get("error") };
            let count = row.get::<_, i64>("count");
            if labels.status == "queued" {
                queued += count;
            }
            self.runs.get_or_create(&labels).set(count);
        }
        self.queue_depth.set(queued);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).map_err(|_| RenderError::Encode)?;
        Ok(text)
    }

    /// The histogram the pool records its checkout waits in.
    pub fn pool_wait_histogram(&self) -> Histogram {
        self.pool_wait.clone()
    }

    pub fn provider_latency(&self, provider: &str, elapsed: Duration) {
        self.provider_latency
            .get_or_create(&ProviderLabels { provider: provider.into() })
            .observe(elapsed.as_secs_f64());
    }

    /// One claim transaction that took `duration` and claimed `runs` runs.
    pub fn claimed(&self, duration: Duration, runs: usize) {
        self.runner_claims.inc_by(u64::try_from(runs).unwrap_or(u64::MAX));
        self.runner_claim_duration.observe(duration.as_secs_f64());
    }

    pub fn queue_wait(&self, waited_secs: f64) {
        self.runner_queue_wait.observe(waited_secs.max(0.0));
    }

    pub fn active_runs(&self, active: usize) {
        self.runner_active.set(i64::try_from(active).unwrap_or(i64::MAX));
    }

    pub fn command_applied(&self, kind: &str, latency_secs: f64) {
        let labels = KindLabels { kind: kind.into() };
        self.runner_commands.get_or_create(&labels).inc();
        self.runner_command_latency.get_or_create(&labels).observe(latency_secs.max(0.0));
    }

    pub fn broker_outcome(&self, outcome: &str) {
        self.broker_calls.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    /// Lists every purge step from the start (at 0), so a step that never ran
    /// is visible too (`crate::maintenance` names them).
    pub fn purge_steps<'a>(&self, steps: impl IntoIterator<Item = &'a str>) {
        for step in steps {
            let _ = self.purge_rows.get_or_create(&StepLabels { step: step.to_owned() });
            let _ = self.purge_failures.get_or_create(&StepLabels { step: step.to_owned() });
        }
    }

    /// Records one purge round: rows purged and failures by step.
    pub fn purge_round<'a>(
        &self,
        purged: impl IntoIterator<Item = (&'a str, i64)>,
        failed: impl IntoIterator<Item = &'a str>,
    ) {
        let mut succeeded = true;
        for (step, rows) in purged {
            let counter = self.purge_rows.get_or_create(&StepLabels { step: step.to_owned() });
            counter.inc_by(u64::try_from(rows).unwrap_or(0));
        }
        for step in failed {
            succeeded = false;
            self.purge_failures.get_or_create(&StepLabels { step: step.to_owned() }).inc();
        }
        if succeeded {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            self.purge_last_success.set(now.as_secs_f64());
        }
    }

    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    pub fn connection_limit(&self, max: usize) {
        self.connections_max.set(i64::try_from(max).unwrap_or(i64::MAX));
    }

    pub fn connection_opened(&self) {
        self.connections_open.inc();
    }

    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn websocket_opened(&self) {
        self.websockets_open.inc();
    }

    pub fn websocket_closed(&self) {
        self.websockets_open.dec();
    }
}

impl Metrics {
    /// Counts and times one request by its route template (called by the
    /// outermost middleware, `http::edge`, so timeouts and caught panics count too).
    /// `method` must come from a closed set (`crate::http::method_label`): labels are never taken raw from a request.
    pub fn record_http(&self, route: &str, method: &'static str, status: u16, elapsed: Duration) {
        let labels = HttpLabels { route: route.to_owned(), method: method.to_owned(), status };
        self.http_requests.get_or_create(&labels).inc();
        self.http_latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }
}

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the scrape-time gauges could not be read: {0}")]
    Db(#[from] crate::db::DbError),
    #[error("the metrics could not be encoded")]
    Encode,
}

crate::db::from_db_errors!(RenderError);
