//! Liveness and readiness. Neither reveals versions, host names, worker names
//! or error text: causes are logged, the answer is one word.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;
use crate::auth::Access;
use crate::db::store;
use crate::http::Routes;

/// Readiness fails if the database has not answered within this bound.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> Routes {
    Routes::new().get("/healthz", Access::Public, healthz).get("/readyz", Access::Public, readyz)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, ping(&state)).await {
        Ok(Ok(())) => Json(json!({ "status": "ready" })).into_response(),
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
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable" }))).into_response()
}
