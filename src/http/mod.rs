//! The HTTP adapters: the only place axum appears. One module per dialect; handlers
//! translate and delegate to the core.
//!
//! Every rule the dialects share lives once, parameterised by the dialect: the error core
//! (`error`: status, code, message, retry-after, challenge, field, one `IntoResponse`), body
//! reading (`body`), bearer tokens (`bearer`) and client credentials (`client_auth`). A
//! dialect module says only how its envelope looks, which code each failure gets, and which
//! of the shared rules its routes follow.

mod admin;
mod admin_openapi;
mod auth_grant;
mod bearer;
mod body;
mod client_auth;
pub mod connections;
mod edge;
mod endorsed;
mod enrollment;
mod error;
pub mod extract;
mod health;
mod oauth;
mod openapi;
pub mod starting;
mod wellknown;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Extension, Json, Router, extract::DefaultBodyLimit, http::StatusCode, response::IntoResponse,
};
use secrecy::SecretString;
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::authority::Authority;
use extract::TrustedProxies;
pub use starting::Surface;
pub use wellknown::authorization_server_metadata as wellknown_metadata;
// The dialects' request bodies, public so the fuzz targets can feed them bytes.
pub use auth_grant::{CreateAuthGrantRequest, ListAuthGrantsRequest, UpdateAuthGrantRequest};
pub use endorsed::CreateTokenRequest;
pub use enrollment::{
    AuthorizeEnrollmentRequest, CreateEnrollmentRequest, UpdateEnrollmentRequest,
};
pub use oauth::{TokenParameterRequest, TokenRequest};

/// Every request body is bounded; larger bodies get 413 in the route's own envelope.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

use edge::{EdgeLayer, REQUEST_ID};
pub use edge::{HEADER_VALUE_LIMIT_BYTES, HEADERS_LIMIT_BYTES};

/// What every handler can reach: one `Arc`, so the per-request copy each extractor takes
/// is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub authority: Arc<Authority>,
    pub trusted_proxies: Arc<TrustedProxies>,
    pub lifecycle: Arc<Lifecycle>,
    /// RFC 8414 metadata, rendered once.
    pub metadata: Arc<serde_json::Value>,
    /// How long a rotated-out secret keeps working unless the rotation says otherwise.
    pub secret_grace: Duration,
}

/// Shared between the listeners and the shutdown path.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
}

impl Lifecycle {
    /// Readiness turns false first, so the gateway stops sending before we stop serving.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Every public route, in one place: the router and its OpenAPI document are built from
/// this one list, so no route is served undocumented.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(endorsed::create_token))
        .routes(routes!(oauth::token))
        .routes(routes!(oauth::introspect))
        .routes(routes!(oauth::revoke))
        .routes(routes!(enrollment::authorize))
        .routes(routes!(
            enrollment::show,
            enrollment::update,
            enrollment::update_by_post
        ))
        .routes(routes!(enrollment::create))
        .routes(routes!(auth_grant::create))
        .routes(routes!(auth_grant::show, auth_grant::delete))
        .routes(routes!(auth_grant::update))
        .routes(routes!(auth_grant::revoke))
        .routes(routes!(auth_grant::api_token))
        .routes(routes!(auth_grant::list))
        .routes(routes!(wellknown::jwks))
        .routes(routes!(wellknown::metadata))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(openapi::serve))
}

/// The public listener's router; its OpenAPI document is rendered here, once.
pub fn public_router(state: AppState, request_timeout: Duration) -> Router {
    let (routes, document) = public_routes().split_for_parts();
    let routes = routes
        .fallback(not_found)
        .layer(Extension(openapi::Document::render(document)))
        .with_state(state);
    with_common_layers(routes, request_timeout)
}

/// The admin API, behind the admin bearer token.
pub fn admin_router(
    state: AppState,
    admin_token: SecretString,
    request_timeout: Duration,
) -> Router {
    with_common_layers(admin::router(state, admin_token), request_timeout)
}

fn with_common_layers(router: Router, request_timeout: Duration) -> Router {
    router
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(EdgeLayer { request_timeout })
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "not_found", "message": "no such route" })),
    )
}
