use axum::{Json, extract::State, http::header, response::IntoResponse};
use serde_json::{Value, json};

use super::{
    AppState,
    openapi::{AuthorizationServerMetadata, JwkSet},
};

#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    operation_id = "jwks",
    tag = "Discovery",
    summary = "The public signing keys (RFC 7517)",
    responses((status = 200, description = "The key set.", body = JwkSet)),
)]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let keys = state.authority.jwks();
    (
        // Short enough that a key published as `next` reaches caches before it signs.
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(Value::clone(&keys)),
    )
}

#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    operation_id = "authorizationServerMetadata",
    tag = "Discovery",
    summary = "RFC 8414 authorization server metadata",
    responses((status = 200, description = "The metadata.", body = AuthorizationServerMetadata)),
)]
pub async fn metadata(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=3600")],
        Json(Value::clone(&state.metadata)),
    )
}

/// RFC 8414 metadata advertising only what this server implements.
pub fn authorization_server_metadata(issuer: &str) -> Value {
    let base = issuer.trim_end_matches('/');
    json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}/oauth2/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{base}/oauth2/introspect"),
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "grant_types_supported": [
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        // No authorization endpoint exists, so no response type is supported.
        "response_types_supported": [],
    })
}
