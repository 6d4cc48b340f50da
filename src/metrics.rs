//! Prometheus metrics (`GET /metrics`, scope `metrics:read`), through
//! `prometheus-client` with an explicit registry in [`crate::AppState`].
//!
//! Labels are bounded: HTTP requests are labelled by **route template**
//! (`/v1/runs/{id}`, never a raw path — ids are not labels), method and
//! status. Gauges that describe shared state (runs by status) are read from
//! PostgreSQL at scrape time. Every metric is documented in
//! docs/operations.md.

use std::sync::atomic::AtomicU64;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;
use crate::auth::{Access, Scope};
use crate::http::{ApiError, Routes};

const RUN_COUNTS: &str = include_str!("../sql/metrics/run_counts.sql");
pub const STATEMENTS: &[(&str, &str)] = &[("metrics/run_counts", RUN_COUNTS)];

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
struct BuildLabels {
    version: String,
    environment: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// This instance's metrics.
pub struct Metrics {
    registry: Registry,
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
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Metrics {
    pub fn new(environment: &str) -> Self {
        let mut registry = Registry::with_prefix("moat");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route template, method and status", http_requests.clone());
        let http_latency = Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("http_request_duration_seconds", "HTTP request latency", http_latency.clone());
        let broker_calls = Family::<OutcomeLabels, Counter>::default();
        registry.register("broker_calls", "Credential broker calls by outcome", broker_calls.clone());
        let rate_limited = Counter::default();
        registry.register("rate_limited", "Requests refused by an abuse limit", rate_limited.clone());
        let websockets_open = Gauge::default();
        registry.register("websockets_open", "Open WebSocket streams on this instance", websockets_open.clone());
        let pool_connections = Gauge::default();
        registry.register("db_pool_connections", "Database connections held by the pool", pool_connections.clone());
        let pool_available = Gauge::default();
        registry.register("db_pool_available", "Idle database connections in the pool", pool_available.clone());
        let pool_waiting = Gauge::default();
        registry.register("db_pool_waiting", "Requests waiting for a database connection", pool_waiting.clone());
        let runs = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "runs",
            "Runs by status and error code (all organizations, read at scrape time)",
            runs.clone(),
        );
        let dev_bypass = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "dev_bypass_events",
            "DEV_BYPASS lines this process logged (a production process reads 0)",
            dev_bypass.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").into(), environment: environment.into() })
            .set(1);
        registry.register("build_info", "The running build", build);
        registry.register("up", "Always 1 while the process serves", ConstCounter::new(1u64));
        Self {
            registry,
            http_requests,
            http_latency,
            broker_calls,
            rate_limited,
            websockets_open,
            pool_connections,
            pool_available,
            pool_waiting,
            runs,
            dev_bypass,
        }
    }

    pub fn broker_outcome(&self, outcome: &str) {
        self.broker_calls.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    pub fn websocket_opened(&self) {
        self.websockets_open.inc();
    }

    pub fn websocket_closed(&self) {
        self.websockets_open.dec();
    }
}

pub fn routes() -> Routes {
    Routes::new().get("/metrics", Access::Scope(Scope::MetricsRead), scrape)
}

/// Counts and times every request by its route template.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let labels = HttpLabels { route, method, status: response.status().as_u16() };
    state.metrics.http_requests.get_or_create(&labels).inc();
    state.metrics.http_latency.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

async fn scrape(State(state): State<AppState>) -> Result<Response, ApiError> {
    let metrics = &state.metrics;
    let pool = state.db.status();
    metrics.pool_connections.set(i64::try_from(pool.size).unwrap_or(i64::MAX));
    metrics.pool_available.set(i64::try_from(pool.available).unwrap_or(i64::MAX));
    metrics.pool_waiting.set(i64::try_from(pool.waiting).unwrap_or(i64::MAX));
    metrics.dev_bypass.set(crate::dev::bypass_count());
    let client = state.db.get().await?;
    for row in client.query_typed(RUN_COUNTS, &[]).await? {
        let labels = StatusLabels { status: row.get("status"), error: row.get("error") };
        metrics.runs.get_or_create(&labels).set(row.get::<_, i64>("count"));
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics.registry)
        .map_err(|e| ApiError::internal(&std::io::Error::other(e.to_string())))?;
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], text).into_response())
}
