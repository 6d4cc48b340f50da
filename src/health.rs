//! Liveness and readiness. Neither reveals versions, host names, worker names
//! or error text: causes are logged, the answer is one word.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::AppState;
use crate::auth::Access;
use crate::db::store;
use crate::http::Routes;

/// Readiness fails if the database has not answered within this bound.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> Routes {
    Routes::new().get("/healthz", Access::Public, healthz).get("/readyz", Access::Public, readyz)
}

#[derive(OpenApi)]
#[openapi(paths(healthz, readyz), components(schemas(Status)))]
pub(crate) struct Api;

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
async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, ping(&state)).await {
        Ok(Ok(())) => Json(Status { status: "ready" }).into_response(),
        Ok(Err(e)) => unavailable(&e),
        Err(_) => unavailable(&"no answer within the readiness timeout"),
    }
}

async fn ping(state: &AppState) -> anyhow::Result<()> {
    let client = state.db.get().await?;
    client.batch_execute(store::PING).await?;
    Ok(())
}

fn unavailable(cause: &dyn std::fmt::Display) -> Response {
    tracing::warn!(error = %cause, "readiness check failed: database unavailable");
    (StatusCode::SERVICE_UNAVAILABLE, Json(Status { status: "unavailable" })).into_response()
}
