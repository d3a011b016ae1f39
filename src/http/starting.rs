//! What a listener serves while the core cannot be built yet (the store is unreachable at
//! start): liveness answers, readiness says "starting", everything else is a fast 503.
//! Once the core exists, each request goes straight to its router.

use std::sync::{Arc, OnceLock};

use axum::{
    Json, Router,
    extract::Request,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;
use tower::ServiceExt;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use super::REQUEST_ID;

/// Which listener a gate stands in front of; only the public one has health routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Public,
    Admin,
}

pub fn gate(slot: Arc<OnceLock<Router>>, surface: Surface) -> Router {
    Router::new()
        .fallback(move |request: Request| {
            let slot = slot.clone();
            async move {
                match slot.get() {
                    Some(router) => match router.clone().oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                    None => starting(surface, request.uri().path()),
                }
            }
        })
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
}

fn starting(surface: Surface, path: &str) -> Response {
    match (surface, path) {
        (Surface::Public, "/health/live") => Json(json!({ "status": "ok" })).into_response(),
        (Surface::Public, "/health/ready") => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "starting", "store": "unreachable" })),
        )
            .into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            Json(json!({
                "error": "unavailable",
                "message": "starting: the database is not reachable yet",
            })),
        )
            .into_response(),
    }
}
