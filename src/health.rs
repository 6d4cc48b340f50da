//! Liveness, readiness and the metrics endpoints. Liveness and readiness
//! reveal no versions, host names, worker names or error text: causes are
//! logged, the answer is one word. `GET /metrics` needs the scope
//! `metrics:read`; `MOAT_METRICS_BIND` serves the same text unauthenticated
//! on a loopback address ([`serve_loopback`], for `serve` and `runner` alike).

use std::time::Duration;

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::db::{Pool, store};
use crate::http::{ApiError, Routes};
use crate::identity::{Access, Caller, Scope};
use crate::metrics::{Metrics, RenderError};

/// What these endpoints need.
#[derive(Clone)]
pub struct HealthState {
    pub db: Pool,
    pub metrics: Arc<Metrics>,
}

/// Readiness fails if the database has not answered within this bound.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    HealthState: FromRef<S>,
{
    Routes::new().get("/healthz", Access::Public, healthz).get("/readyz", Access::Public, readyz).get(
        "/metrics",
        Access::Scope(Scope::MetricsRead),
        scrape,
    )
}

#[derive(OpenApi)]
#[openapi(paths(healthz, readyz, scrape), components(schemas(Status)))]
pub struct Api;

/// One word, nothing else.
#[derive(Serialize, ToSchema)]
pub(crate) struct Status {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive", body = Status)))]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness: the database answered within 2 s.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "Ready", body = Status),
    (status = 503, description = "The database did not answer", body = Status),
))]
async fn readyz(State(state): State<HealthState>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, ping(&state)).await {
        Ok(Ok(())) => Json(Status { status: "ready" }).into_response(),
        Ok(Err(e)) => unavailable(&e),
        Err(_) => unavailable(&"no answer within the readiness timeout"),
    }
}

async fn ping(state: &HealthState) -> anyhow::Result<()> {
    let client = state.db.get().await?;
    client.batch_execute(store::PING).await?;
    Ok(())
}

fn unavailable(cause: &dyn std::fmt::Display) -> Response {
    tracing::warn!(error = %cause, "readiness check failed: database unavailable");
    (StatusCode::SERVICE_UNAVAILABLE, Json(Status { status: "unavailable" })).into_response()
}

/// Prometheus/OpenMetrics text (docs/operations.md lists every metric).
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "The metrics", content_type = "application/openmetrics-text")))]
async fn scrape(State(state): State<HealthState>, caller: Caller) -> Result<Response, ApiError> {
    // The same session check as every tenant transaction: a disabled scraper is refused at once.
    let mut client = state.db.get().await?;
    crate::db::tenant::begin(&mut client, caller.org, caller.principal()).await?.commit().await?;
    drop(client);
    let text = state.metrics.render(&state.db).await.map_err(|e| match e {
        RenderError::Db(e) => e.into(),
        RenderError::Encode => ApiError::internal(&e),
    })?;
    Ok(exposition(text))
}

fn exposition(text: String) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], text).into_response()
}

/// Binds `MOAT_METRICS_BIND` (config has checked it is a loopback address);
/// failing to bind fails startup.
pub async fn bind_loopback(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on MOAT_METRICS_BIND {addr}: {e}")))?;
    tracing::info!(address = %listener.local_addr()?, "metrics listening (loopback, unauthenticated)");
    Ok(listener)
}

/// Serves `GET /metrics` without authentication on the loopback `listener`
/// (for a scraper on the same host or pod), until `stop`.
pub fn serve_loopback(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    pool: Pool,
    stop: tokio_util::sync::CancellationToken,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, pool) = (metrics.clone(), pool.clone());
            async move {
                match metrics.render(&pool).await {
                    Ok(text) => exposition(text),
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics scrape failed");
                        (StatusCode::SERVICE_UNAVAILABLE, "metrics unavailable\n").into_response()
                    }
                }
            }
        }),
    );
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    });
}
