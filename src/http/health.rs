use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use super::{
    AppState,
    openapi::{Healthy, Unhealthy},
};

/// Readiness must answer quickly even when the database hangs.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "live",
    tag = "Health",
    summary = "Liveness",
    responses((status = 200, description = "Alive.", body = inline(Healthy))),
)]
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "ready",
    tag = "Health",
    summary = "Readiness (checks the store)",
    responses(
        (status = 200, description = "Ready.", body = inline(Healthy)),
        (
            status = 503,
            description = "Draining for shutdown, or the store is unreachable.",
            body = inline(Unhealthy),
        ),
    ),
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.lifecycle.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        );
    }
    let store_ok = tokio::time::timeout(READY_CHECK_TIMEOUT, state.authority.store_ready())
        .await
        .unwrap_or(false);
    if store_ok {
        (StatusCode::OK, Json(json!({ "status": "ok" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "store": "unreachable" })),
        )
    }
}
