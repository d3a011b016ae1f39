//! The OpenAPI 3.1 document of the public listener, served at `GET /openapi.json`.
//!
//! Request and response schemas are derived (`utoipa::ToSchema`) on the wire types beside
//! their handlers. This module adds what the types cannot say: where each operation lives,
//! how it authenticates, every status it can answer with, and each dialect's error envelope.
//! The document is rendered once; requests get the same bytes.

use std::sync::LazyLock;

use axum::{
    body::Bytes,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::{
    ToSchema,
    openapi::{
        Components, ContentBuilder, Info, OpenApi, OpenApiBuilder, Paths, RefOr, Required,
        Response, ResponseBuilder, Schema,
        path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn},
        request_body::RequestBodyBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
        tag::TagBuilder,
    },
};

use super::{auth_grant, endorsed, enrollment, oauth};

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";
const BASIC: &str = "clientBasic";
const BEARER: &str = "bearerToken";

static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| {
    Bytes::from(serde_json::to_vec(&document_json()).expect("the document serializes"))
});

/// `GET /openapi.json`.
pub async fn serve() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, JSON),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        DOCUMENT.clone(),
    )
}

/// The document as JSON, with the few keywords utoipa's types cannot carry filled in.
fn document_json() -> Value {
    let mut doc = serde_json::to_value(document()).expect("the document serializes");
    fix_keywords(&mut doc);
    doc
}

/// The wire dialects, each with its own error envelope.
#[derive(Debug, Clone, Copy)]
enum Dialect {
    Endorsed,
    OAuth,
    Access,
    LearnCard,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Self::Endorsed => "Endorsed",
            Self::OAuth => "OAuth",
            Self::Access => "Access",
            Self::LearnCard => "LearnCard",
        }
    }

    /// The error codes each status carries, as the dialect's error mapping produces them.
    fn codes(self, status: u16) -> &'static [&'static str] {
        match (self, status) {
            (Self::Endorsed, 400) => &["BAD_REQUEST"],
            (Self::Endorsed, 401) => &["UNAUTHENTICATED"],
            (Self::Endorsed, 403) => &["FORBIDDEN"],
            (Self::Endorsed, 413) => &["PAYLOAD_TOO_LARGE"],
            (Self::Endorsed, 415) => &["UNSUPPORTED_MEDIA_TYPE"],
            (Self::Endorsed, 429) => &["TOO_MANY_REQUESTS"],
            (Self::Endorsed, 500) => &["INTERNAL_SERVER_ERROR"],
            (Self::Endorsed, 503) => &["SERVICE_UNAVAILABLE"],
            (Self::OAuth, 400) => &[
                "invalid_request",
                "invalid_grant",
                "invalid_scope",
                "unsupported_grant_type",
            ],
            (Self::OAuth, 401) => &["invalid_client"],
            (Self::OAuth, 413) => &["invalid_request"],
            (Self::OAuth, 429 | 503) => &["temporarily_unavailable"],
            (Self::OAuth, 500) => &["server_error"],
            (Self::Access, 400) => &["bad_request", "validation"],
            (Self::Access, 401) => &["unauthorized"],
            (Self::Access, 403) => &["forbidden"],
            (Self::Access, 404) => &["not_found"],
            (Self::Access, 409) => &["conflict"],
            (Self::Access, 413) => &["payload_too_large"],
            (Self::Access, 415) => &["unsupported_media_type"],
            (Self::Access, 429) => &["too_many_requests"],
            (Self::Access, 500) => &["internal"],
            (Self::Access, 503) => &["unavailable"],
            (Self::LearnCard, 400) => &["BAD_REQUEST"],
            (Self::LearnCard, 401) => &["UNAUTHORIZED"],
            (Self::LearnCard, 403) => &["FORBIDDEN"],
            (Self::LearnCard, 404) => &["NOT_FOUND"],
            (Self::LearnCard, 413) => &["PAYLOAD_TOO_LARGE"],
            (Self::LearnCard, 415) => &["UNSUPPORTED_MEDIA_TYPE"],
            (Self::LearnCard, 429) => &["TOO_MANY_REQUESTS"],
            (Self::LearnCard, 500) => &["INTERNAL_SERVER_ERROR"],
            (Self::LearnCard, 503) => &["SERVICE_UNAVAILABLE"],
            (dialect, status) => panic!("{dialect:?} never answers {status}"),
        }
    }

    fn envelope(self) -> Value {
        match self {
            Self::Endorsed => json!({
                "description": "The Endorsed error envelope.",
                "type": "object",
                "required": ["is_error", "error"],
                "properties": {
                    "is_error": { "type": "boolean", "enum": [true] },
                    "error": {
                        "type": "object",
                        "required": ["code", "issues"],
                        "properties": {
                            "code": { "type": "string" },
                            "issues": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["message"],
                                    "properties": { "message": { "type": "string" } }
                                }
                            }
                        }
                    }
                }
            }),
            Self::OAuth => json!({
                "description": "The RFC 6749 §5.2 error response.",
                "type": "object",
                "required": ["error", "error_description"],
                "properties": {
                    "error": { "type": "string" },
                    "error_description": { "type": "string" }
                }
            }),
            Self::Access => json!({
                "description": "The Invopop Access error envelope; `fields` only for validation errors.",
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string" },
                    "message": { "type": "string" },
                    "fields": {
                        "type": "object",
                        "additionalProperties": { "type": "string" }
                    }
                }
            }),
            Self::LearnCard => json!({
                "description": "The LearnCard error envelope.",
                "type": "object",
                "required": ["message", "code", "issues"],
                "properties": {
                    "message": { "type": "string" },
                    "code": { "type": "string" },
                    "issues": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["message", "path"],
                            "properties": {
                                "message": { "type": "string" },
                                "path": { "type": "array", "items": { "type": "string" } }
                            }
                        }
                    }
                }
            }),
        }
    }

    /// The envelope with `code` narrowed to what this status carries.
    fn error_schema(self, status: u16) -> Value {
        let codes = self.codes(status);
        let code = json!({ "type": "string", "enum": codes });
        let narrowed = match self {
            Self::Endorsed => json!({
                "type": "object",
                "properties": { "error": { "type": "object", "properties": { "code": code } } }
            }),
            Self::OAuth => json!({ "type": "object", "properties": { "error": code } }),
            Self::Access | Self::LearnCard => {
                json!({ "type": "object", "properties": { "code": code } })
            }
        };
        json!({
            "allOf": [
                { "$ref": format!("#/components/schemas/{}Error", self.name()) },
                narrowed,
            ]
        })
    }

    /// The response for one error status, with the headers it carries.
    fn error_response(self, status: u16) -> Response {
        let mut response = ResponseBuilder::new()
            .description(error_description(status))
            .content(JSON, content(self.error_schema(status)))
            .header("x-request-id", request_id_header());
        if status == 429 {
            response = response.header(
                "Retry-After",
                header_schema(
                    json!({ "type": "string", "pattern": "^[1-9][0-9]*$" }),
                    "Seconds to wait before retrying.",
                ),
            );
        }
        if status == 401 {
            let when = match self {
                Self::OAuth => "Always: `Basic realm=\"portcullis\"`.",
                Self::Access | Self::LearnCard => "When the bearer token is missing or invalid.",
                Self::Endorsed => "Never sent.",
            };
            if !matches!(self, Self::Endorsed) {
                response = response.header(
                    "WWW-Authenticate",
                    header_schema(json!({ "type": "string" }), when),
                );
            }
        }
        response.build()
    }
}

fn error_description(status: u16) -> String {
    let what = match status {
        400 => "The request is malformed or invalid.",
        401 => "The credentials or bearer token are missing, invalid or insufficient.",
        403 => "The caller is known but may not do this.",
        404 => "Not found (another owner's or profile's object is indistinguishable).",
        409 => "Conflicts with an existing object.",
        413 => "The body is larger than 64 KiB.",
        415 => "The content type is not one this route reads.",
        429 => "Too many attempts; retry after `Retry-After` seconds.",
        500 => "Internal error; the body is opaque.",
        503 => "The store is unavailable; retry shortly.",
        other => panic!("no description for {other}"),
    };
    what.to_owned()
}

/// Tower's timeout layer answers before any dialect sees the request: no body.
fn timeout_response() -> Response {
    ResponseBuilder::new()
        .description("The request did not complete within `server.request_timeout_ms`; empty body.")
        .header("x-request-id", request_id_header())
        .build()
}

fn request_id_header() -> utoipa::openapi::header::Header {
    header_schema(
        json!({ "type": "string", "minLength": 1 }),
        "The caller's `x-request-id`, or a fresh one.",
    )
}

fn header_schema(schema: Value, description: &str) -> utoipa::openapi::header::Header {
    utoipa::openapi::header::HeaderBuilder::new()
        .schema(typed::<RefOr<Schema>>(schema))
        .description(Some(description))
        .build()
}

fn content(schema: Value) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(typed::<RefOr<Schema>>(schema)))
        .build()
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A hand-written piece of the document as utoipa's type. The round trip must be lossless:
/// a keyword utoipa does not model would otherwise vanish without a word.
fn typed<T: DeserializeOwned + serde::Serialize>(value: Value) -> T {
    let typed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("utoipa cannot read {value}: {e}"));
    debug_assert_eq!(
        serde_json::to_value(&typed).expect("serializes"),
        value,
        "utoipa dropped or changed part of a hand-written schema"
    );
    typed
}

/// How an operation authenticates.
#[derive(Debug, Clone, Copy)]
enum Auth {
    None,
    /// HTTP Basic, or `client_id` + `client_secret` in the body (`client_secret_post`).
    Client,
    /// Client credentials as for `Client`, optionally with a bearer enrollment token.
    ClientOrBearer,
    Bearer,
}

/// One documented operation.
struct Op {
    method: HttpMethod,
    path: &'static str,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    description: &'static str,
    auth: Auth,
    /// The request body schema, sent as JSON or as a form.
    body: Option<Body>,
    ok: Success,
    errors: Option<(Dialect, &'static [u16])>,
    links: &'static [(&'static str, &'static str)],
}

#[derive(Clone, Copy)]
enum Body {
    /// JSON and form, the same schema.
    JsonOrForm(&'static str, bool),
    /// Forms only.
    Form(&'static str),
}

enum Success {
    Json(&'static str, Value),
    Empty(&'static str),
}

/// Every public operation. `tests/api/openapi.rs` checks this against the router.
fn operations() -> Vec<Op> {
    use HttpMethod::{Delete, Get, Patch, Post, Put};
    const TOKEN_ERRORS: &[u16] = &[400, 401, 403, 413, 415, 429, 500, 503];
    const OAUTH_ERRORS: &[u16] = &[400, 401, 413, 429, 500, 503];
    let id_link: &[(&str, &str)] = &[
        ("show", "showAuthGrant"),
        ("update", "updateAuthGrant"),
        ("revoke", "revokeAuthGrant"),
        ("delete", "deleteAuthGrant"),
        ("apiToken", "createAuthGrantApiToken"),
    ];
    let enrollment = |description| Success::Json(description, schema_ref("EnrollmentResponse"));
    vec![
        Op {
            method: Post,
            path: "/api/v1/auth/tokens",
            id: "createEndorsedToken",
            tag: "Endorsed",
            summary: "Issue an access token (client_credentials)",
            description: "Client credentials travel in the body. A body without a content type is read as a form.",
            auth: Auth::None,
            body: Some(Body::JsonOrForm("CreateTokenRequest", true)),
            ok: Success::Json("The token.", schema_ref("EndorsedTokenResponse")),
            errors: Some((Dialect::Endorsed, TOKEN_ERRORS)),
            links: &[],
        },
        Op {
            method: Post,
            path: "/oauth2/token",
            id: "oauthToken",
            tag: "OAuth 2.0",
            summary: "Token endpoint: client_credentials and RFC 8693 token exchange",
            description: "client_credentials authenticates the client by HTTP Basic (`client_secret_basic`) or in the form (`client_secret_post`), never both. Token exchange needs no client authentication: its `subject_token` (an auth-grant API token) is the credential.",
            auth: Auth::Client,
            body: Some(Body::Form("OAuthTokenRequest")),
            ok: Success::Json(
                "RFC 6749 §5.1 token response.",
                schema_ref("OAuthTokenResponse"),
            ),
            errors: Some((Dialect::OAuth, OAUTH_ERRORS)),
            links: &[],
        },
        Op {
            method: Post,
            path: "/oauth2/introspect",
            id: "oauthIntrospect",
            tag: "OAuth 2.0",
            summary: "RFC 7662 token introspection",
            description: "Unknown, expired, revoked or foreign tokens are `{\"active\":false}`.",
            auth: Auth::Client,
            body: Some(Body::Form("TokenParameterRequest")),
            ok: Success::Json("The token's state.", schema_ref("IntrospectionResponse")),
            errors: Some((Dialect::OAuth, OAUTH_ERRORS)),
            links: &[],
        },
        Op {
            method: Post,
            path: "/oauth2/revoke",
            id: "oauthRevoke",
            tag: "OAuth 2.0",
            summary: "RFC 7009 token revocation",
            description: "200 even for unknown tokens.",
            auth: Auth::Client,
            body: Some(Body::Form("TokenParameterRequest")),
            ok: Success::Empty("Revoked, or nothing to revoke; empty body."),
            errors: Some((Dialect::OAuth, OAUTH_ERRORS)),
            links: &[],
        },
        Op {
            method: Post,
            path: "/access/v1/enrollment/authorize",
            id: "authorizeEnrollment",
            tag: "Access",
            summary: "Issue an enrollment token",
            description: "The application authenticates in the body, by HTTP Basic, or both (as the official Go client does; both must name the same credentials). The enrollment is named by `id`, `owner_id`, or an `Authorization: Bearer` enrollment token being renewed (then the credentials go in the body).",
            auth: Auth::ClientOrBearer,
            body: Some(Body::JsonOrForm("AuthorizeEnrollmentRequest", true)),
            ok: enrollment("The enrollment with a new token."),
            errors: Some((
                Dialect::Access,
                &[400, 401, 403, 404, 413, 415, 429, 500, 503],
            )),
            links: &[],
        },
        Op {
            method: Get,
            path: "/access/v1/enrollment",
            id: "showEnrollment",
            tag: "Access",
            summary: "The bearer token's enrollment",
            description: "",
            auth: Auth::Bearer,
            body: None,
            ok: enrollment("The enrollment, without a token."),
            errors: Some((Dialect::Access, &[401, 403, 404, 429, 500, 503])),
            links: &[],
        },
        Op {
            method: Patch,
            path: "/access/v1/enrollment",
            id: "updateEnrollment",
            tag: "Access",
            summary: "Replace the bearer token's enrollment data",
            description: "",
            auth: Auth::Bearer,
            body: Some(Body::JsonOrForm("UpdateEnrollmentRequest", true)),
            ok: enrollment("The updated enrollment."),
            errors: Some((
                Dialect::Access,
                &[400, 401, 403, 404, 413, 415, 429, 500, 503],
            )),
            links: &[],
        },
        Op {
            method: Post,
            path: "/access/v1/enrollment",
            id: "updateEnrollmentByPost",
            tag: "Access",
            summary: "Replace the bearer token's enrollment data (as the official client sends it)",
            description: "",
            auth: Auth::Bearer,
            body: Some(Body::JsonOrForm("UpdateEnrollmentRequest", true)),
            ok: enrollment("The updated enrollment."),
            errors: Some((
                Dialect::Access,
                &[400, 401, 403, 404, 413, 415, 429, 500, 503],
            )),
            links: &[],
        },
        Op {
            method: Put,
            path: "/access/v1/enrollment/{id}",
            id: "createEnrollment",
            tag: "Access",
            summary: "Enroll an owner (idempotent for the same app, owner and id)",
            description: "The bearer token must speak for `owner_id`; the application's credentials go in the body.",
            auth: Auth::Bearer,
            body: Some(Body::JsonOrForm("CreateEnrollmentRequest", true)),
            ok: enrollment("The enrollment."),
            errors: Some((
                Dialect::Access,
                &[400, 401, 403, 409, 413, 415, 429, 500, 503],
            )),
            links: &[],
        },
        Op {
            method: Post,
            path: "/auth-grant/create",
            id: "createAuthGrant",
            tag: "Auth grants",
            summary: "Create an auth grant (scope authGrants:write)",
            description: "403 when the requested scope exceeds the caller's, when the caller's token derives from a grant, or when the profile holds the maximum number of active grants.",
            auth: Auth::Bearer,
            body: Some(Body::JsonOrForm("CreateAuthGrantRequest", false)),
            ok: Success::Json(
                "The new grant's id.",
                json!({ "type": "string", "format": "uuid" }),
            ),
            errors: Some((
                Dialect::LearnCard,
                &[400, 401, 403, 413, 415, 429, 500, 503],
            )),
            links: id_link,
        },
        Op {
            method: Get,
            path: "/auth-grant/{id}",
            id: "showAuthGrant",
            tag: "Auth grants",
            summary: "Show an auth grant (scope authGrants:read)",
            description: "",
            auth: Auth::Bearer,
            body: None,
            ok: Success::Json("The grant.", schema_ref("AuthGrantResponse")),
            errors: Some((Dialect::LearnCard, &[401, 404, 429, 500, 503])),
            links: &[],
        },
        Op {
            method: Delete,
            path: "/auth-grant/{id}",
            id: "deleteAuthGrant",
            tag: "Auth grants",
            summary: "Delete a revoked auth grant (scope authGrants:delete)",
            description: "An active grant must be revoked first (401).",
            auth: Auth::Bearer,
            body: None,
            ok: Success::Json("Deleted.", json!({ "type": "boolean", "enum": [true] })),
            errors: Some((Dialect::LearnCard, &[401, 404, 429, 500, 503])),
            links: &[],
        },
        Op {
            method: Post,
            path: "/auth-grant/update/{id}",
            id: "updateAuthGrant",
            tag: "Auth grants",
            summary: "Rename or redescribe an auth grant (scope authGrants:write)",
            description: "",
            auth: Auth::Bearer,
            body: Some(Body::JsonOrForm("UpdateAuthGrantRequest", true)),
            ok: Success::Json(
                "`true` if changed; `false` when only non-updatable fields were sent.",
                json!({ "type": "boolean" }),
            ),
            errors: Some((
                Dialect::LearnCard,
                &[400, 401, 404, 413, 415, 429, 500, 503],
            )),
            links: &[],
        },
        Op {
            method: Post,
            path: "/auth-grant/{id}/revoke",
            id: "revokeAuthGrant",
            tag: "Auth grants",
            summary: "Revoke an auth grant (scope authGrants:write; idempotent)",
            description: "",
            auth: Auth::Bearer,
            body: None,
            ok: Success::Json("Revoked.", json!({ "type": "boolean", "enum": [true] })),
            errors: Some((Dialect::LearnCard, &[401, 404, 429, 500, 503])),
            links: &[],
        },
        Op {
            method: Post,
            path: "/auth-grant/{id}/api-token",
            id: "createAuthGrantApiToken",
            tag: "Auth grants",
            summary: "Mint an API token acting with the grant's scope (scope authGrants:read)",
            description: "401 when the grant is revoked or expired.",
            auth: Auth::Bearer,
            body: None,
            ok: Success::Json(
                "The token (a JWT).",
                json!({ "type": "string", "minLength": 1 }),
            ),
            errors: Some((Dialect::LearnCard, &[401, 403, 404, 429, 500, 503])),
            links: &[],
        },
        Op {
            method: Post,
            path: "/profile/auth-grants",
            id: "listAuthGrants",
            tag: "Auth grants",
            summary: "List the caller's auth grants, newest first (scope authGrants:read)",
            description: "",
            auth: Auth::Bearer,
            body: Some(Body::JsonOrForm("ListAuthGrantsRequest", false)),
            ok: Success::Json(
                "At most `limit` grants.",
                json!({ "type": "array", "items": schema_ref("AuthGrantResponse") }),
            ),
            errors: Some((Dialect::LearnCard, &[400, 401, 413, 415, 429, 500, 503])),
            links: &[],
        },
        Op {
            method: Get,
            path: "/.well-known/jwks.json",
            id: "jwks",
            tag: "Discovery",
            summary: "The public signing keys (RFC 7517)",
            description: "",
            auth: Auth::None,
            body: None,
            ok: Success::Json("The key set.", schema_ref("JwkSet")),
            errors: None,
            links: &[],
        },
        Op {
            method: Get,
            path: "/.well-known/oauth-authorization-server",
            id: "authorizationServerMetadata",
            tag: "Discovery",
            summary: "RFC 8414 authorization server metadata",
            description: "",
            auth: Auth::None,
            body: None,
            ok: Success::Json("The metadata.", schema_ref("AuthorizationServerMetadata")),
            errors: None,
            links: &[],
        },
        Op {
            method: Get,
            path: "/openapi.json",
            id: "openapi",
            tag: "Discovery",
            summary: "This document",
            description: "",
            auth: Auth::None,
            body: None,
            ok: Success::Json(
                "OpenAPI 3.1.",
                json!({
                    "type": "object",
                    "required": ["openapi", "info", "paths"],
                    "properties": { "openapi": { "type": "string", "pattern": "^3\\.1\\." } }
                }),
            ),
            errors: None,
            links: &[],
        },
        Op {
            method: Get,
            path: "/health/live",
            id: "live",
            tag: "Health",
            summary: "Liveness",
            description: "",
            auth: Auth::None,
            body: None,
            ok: Success::Json("Alive.", health_schema(&["ok"])),
            errors: None,
            links: &[],
        },
        Op {
            method: Get,
            path: "/health/ready",
            id: "ready",
            tag: "Health",
            summary: "Readiness (checks the store)",
            description: "",
            auth: Auth::None,
            body: None,
            ok: Success::Json("Ready.", health_schema(&["ok"])),
            errors: None,
            links: &[],
        },
    ]
}

fn health_schema(statuses: &[&str]) -> Value {
    json!({
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": { "type": "string", "enum": statuses },
            "store": { "type": "string", "enum": ["unreachable"] }
        }
    })
}

/// The derived schemas of the wire types, under the names the operations refer to.
fn wire_schemas() -> Vec<(String, RefOr<Schema>)> {
    let mut schemas = Vec::new();
    fn add<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>, name: &str) {
        schemas.push((name.to_owned(), T::schema()));
        T::schemas(schemas);
    }
    add::<endorsed::CreateTokenRequest>(&mut schemas, "CreateTokenRequest");
    add::<endorsed::TokenResponse>(&mut schemas, "EndorsedTokenResponse");
    add::<oauth::TokenRequest>(&mut schemas, "OAuthTokenRequest");
    add::<oauth::TokenResponse>(&mut schemas, "OAuthTokenResponse");
    add::<oauth::TokenParameterRequest>(&mut schemas, "TokenParameterRequest");
    add::<oauth::IntrospectedClaims>(&mut schemas, "IntrospectedClaims");
    add::<enrollment::AuthorizeEnrollmentRequest>(&mut schemas, "AuthorizeEnrollmentRequest");
    add::<enrollment::UpdateEnrollmentRequest>(&mut schemas, "UpdateEnrollmentRequest");
    add::<enrollment::CreateEnrollmentRequest>(&mut schemas, "CreateEnrollmentRequest");
    add::<enrollment::EnrollmentResponse>(&mut schemas, "EnrollmentResponse");
    add::<auth_grant::CreateAuthGrantRequest>(&mut schemas, "CreateAuthGrantRequest");
    add::<auth_grant::ListAuthGrantsRequest>(&mut schemas, "ListAuthGrantsRequest");
    add::<auth_grant::UpdateAuthGrantRequest>(&mut schemas, "UpdateAuthGrantRequest");
    add::<auth_grant::AuthGrantResponse>(&mut schemas, "AuthGrantResponse");
    schemas
}

/// Schemas of documents that are not wire types of ours.
fn other_schemas() -> Vec<(String, Value)> {
    let mut schemas: Vec<(String, Value)> = [
        Dialect::Endorsed,
        Dialect::OAuth,
        Dialect::Access,
        Dialect::LearnCard,
    ]
    .into_iter()
    .map(|d| (format!("{}Error", d.name()), d.envelope()))
    .collect();
    // `IntrospectionResponse` flattens optional claims, which derives to a schema that
    // rejects `{"active":false}`; its two shapes are spelled out instead.
    schemas.push((
        "IntrospectionResponse".into(),
        json!({
            "description": "RFC 7662 §2.2: an inactive token is `{\"active\":false}` and nothing else.",
            "oneOf": [
                {
                    "type": "object",
                    "required": ["active"],
                    "properties": { "active": { "type": "boolean", "enum": [false] } },
                    "additionalProperties": false
                },
                {
                    "allOf": [
                        schema_ref("IntrospectedClaims"),
                        {
                            "type": "object",
                            "required": ["active"],
                            "properties": { "active": { "type": "boolean", "enum": [true] } }
                        }
                    ]
                }
            ]
        }),
    ));
    schemas.push((
        "JwkSet".into(),
        json!({
            "type": "object",
            "required": ["keys"],
            "properties": {
                "keys": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["kty", "kid", "alg", "use"],
                        "properties": {
                            "kty": { "type": "string" },
                            "kid": { "type": "string" },
                            "alg": { "type": "string" },
                            "use": { "type": "string", "enum": ["sig"] }
                        }
                    }
                }
            }
        }),
    ));
    schemas.push((
        "AuthorizationServerMetadata".into(),
        json!({
            "type": "object",
            "required": [
                "issuer",
                "token_endpoint",
                "jwks_uri",
                "grant_types_supported",
                "response_types_supported"
            ],
            "properties": {
                "issuer": { "type": "string" },
                "token_endpoint": { "type": "string" },
                "jwks_uri": { "type": "string" },
                "introspection_endpoint": { "type": "string" },
                "revocation_endpoint": { "type": "string" },
                "grant_types_supported": { "type": "array", "items": { "type": "string" } },
                "response_types_supported": { "type": "array", "items": { "type": "string" } }
            }
        }),
    ));
    schemas.push((
        "RouteNotFound".into(),
        json!({
            "description": "Any path no route serves.",
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": { "type": "string", "enum": ["not_found"] },
                "message": { "type": "string" }
            }
        }),
    ));
    schemas
}

fn document() -> OpenApi {
    let mut paths = Paths::new();
    for op in operations() {
        let (path, method, operation) = build_operation(op);
        paths.add_path_operation(path, vec![method], operation);
    }

    let mut components = Components::new();
    components.schemas.extend(wire_schemas());
    for (name, schema) in other_schemas() {
        components.schemas.insert(name, typed(schema));
    }
    components.add_security_scheme(
        BASIC,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Basic)
                .description(Some(
                    "client_secret_basic: the application's client_id and client_secret, each form-urlencoded (RFC 6749 §2.3.1). Where an operation also lists no-auth, the credentials may instead travel in the body as client_id and client_secret (client_secret_post), never both.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "An access token issued by this server: an enrollment token (Access routes), an owner token minted by the admin API, or an auth-grant API token (auth-grant routes need authGrants:* scopes).",
                ))
                .build(),
        ),
    );
    components.responses.insert(
        "NoSuchRoute".into(),
        RefOr::T(
            ResponseBuilder::new()
                .description("Any path no route serves.")
                .content(JSON, content(schema_ref("RouteNotFound")))
                .header("x-request-id", request_id_header())
                .build(),
        ),
    );

    let tags = [
        ("Endorsed", "Endorsed-compatible token issuing."),
        ("OAuth 2.0", "RFC 6749, 7662, 7009 and 8693."),
        (
            "Access",
            "Invopop Access-compatible enrollments. As in the Go service they mirror, a request body's field names match exactly or else case-insensitively (`{\"Data\":…}` is `data`); two keys for one field are refused.",
        ),
        ("Auth grants", "LearnCard-compatible auth grants."),
        ("Discovery", "Keys, metadata and this document."),
        ("Health", "Liveness and readiness."),
    ]
    .map(|(name, description)| {
        TagBuilder::new()
            .name(name)
            .description(Some(description))
            .build()
    });

    let mut info = Info::new("Portcullis", env!("CARGO_PKG_VERSION"));
    info.description = Some(
        "Credentials in, short-lived signed JWTs out, in four wire dialects. Every response carries `x-request-id`. A path no route serves answers 404 with `#/components/responses/NoSuchRoute`; a known path with another method answers 405 with `Allow`. Every route may answer 408 (empty body) when the request outlives the server's timeout."
            .into(),
    );
    OpenApiBuilder::new()
        .info(info)
        .paths(paths)
        .components(Some(components))
        .tags(Some(tags))
        .build()
}

fn build_operation(op: Op) -> (&'static str, HttpMethod, utoipa::openapi::path::Operation) {
    let mut builder = OperationBuilder::new()
        .operation_id(Some(op.id))
        .tag(op.tag)
        .summary(Some(op.summary))
        .description((!op.description.is_empty()).then_some(op.description));

    if op.path.contains("{id}") {
        builder = builder.parameter(
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(typed::<RefOr<Schema>>(json!({ "type": "string" }))))
                .build(),
        );
    }

    if let Some(body) = op.body {
        let (name, json, required) = match body {
            Body::JsonOrForm(name, required) => (name, true, required),
            Body::Form(name) => (name, false, true),
        };
        let mut request = RequestBodyBuilder::new()
            .required(Some(if required {
                Required::True
            } else {
                Required::False
            }))
            .description(Some(if json {
                "JSON, or the same fields as a form."
            } else {
                "A form."
            }));
        if json {
            request = request.content(JSON, content(schema_ref(name)));
        }
        request = request.content(FORM, content(schema_ref(name)));
        builder = builder.request_body(Some(request.build()));
    }

    let securities: Vec<SecurityRequirement> = match op.auth {
        Auth::None => Vec::new(),
        Auth::Client => vec![
            SecurityRequirement::new(BASIC, Vec::<String>::new()),
            SecurityRequirement::default(),
        ],
        Auth::ClientOrBearer => vec![
            SecurityRequirement::new(BASIC, Vec::<String>::new()),
            SecurityRequirement::new(BEARER, Vec::<String>::new()),
            SecurityRequirement::default(),
        ],
        Auth::Bearer => vec![SecurityRequirement::new(BEARER, Vec::<String>::new())],
    };
    if !securities.is_empty() {
        builder = builder.securities(Some(securities));
    }

    let mut ok = ResponseBuilder::new().header("x-request-id", request_id_header());
    ok = match op.ok {
        Success::Json(description, schema) => {
            ok.description(description).content(JSON, content(schema))
        }
        Success::Empty(description) => ok.description(description),
    };
    for (name, operation_id) in op.links {
        ok = ok.link(
            *name,
            utoipa::openapi::link::LinkBuilder::new()
                .operation_id(*operation_id)
                .parameter("id", "$response.body")
                .build(),
        );
    }
    builder = builder.response("200", ok.build());
    if op.path == "/health/ready" {
        builder = builder.response(
            "503",
            ResponseBuilder::new()
                .description("Draining for shutdown, or the store is unreachable.")
                .content(JSON, content(health_schema(&["draining", "unavailable"])))
                .header("x-request-id", request_id_header())
                .build(),
        );
    }
    builder = builder.response("408", timeout_response());
    if let Some((dialect, statuses)) = op.errors {
        for &status in statuses {
            builder = builder.response(
                StatusCode::from_u16(status)
                    .expect("a status")
                    .as_str()
                    .to_owned(),
                RefOr::T(dialect.error_response(status)),
            );
        }
    }
    (op.path, op.method, builder.build())
}

/// Fills the gaps in utoipa 5's output: its header object has no `required` (every header
/// this document names is always sent, except the conditional challenge), and its link
/// object serializes `operation_id` where OpenAPI says `operationId`.
fn fix_keywords(doc: &mut Value) {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(headers)) = map.get_mut("headers") {
                    for (name, header) in headers.iter_mut() {
                        if !name.eq_ignore_ascii_case("www-authenticate") {
                            header["required"] = Value::Bool(true);
                        }
                    }
                }
                if let Some(Value::Object(links)) = map.get_mut("links") {
                    for link in links.values_mut().filter_map(Value::as_object_mut) {
                        if let Some(id) = link.remove("operation_id") {
                            link.insert("operationId".into(), id);
                        }
                    }
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(doc);
}

// Field schemas the wire types refer to with `#[schema(schema_with = …)]`.

fn string_enum(values: &[&str]) -> Schema {
    typed(json!({ "type": "string", "enum": values }))
}

pub(super) fn client_credentials_grant() -> Schema {
    string_enum(&["client_credentials"])
}

pub(super) fn oauth_grant_type() -> Schema {
    string_enum(&["client_credentials", oauth::TOKEN_EXCHANGE])
}

pub(super) fn subject_token_type() -> Schema {
    string_enum(&[
        "urn:ietf:params:oauth:token-type:access_token",
        "urn:ietf:params:oauth:token-type:jwt",
    ])
}

pub(super) fn requested_token_type() -> Schema {
    string_enum(&["urn:ietf:params:oauth:token-type:access_token"])
}

pub(super) fn bearer_token_type() -> Schema {
    string_enum(&["Bearer"])
}

pub(super) fn always_false() -> Schema {
    typed(json!({ "type": "boolean", "enum": [false] }))
}

pub(super) fn subject_kind() -> Schema {
    string_enum(&["app", "owner"])
}

pub(super) fn grant_status() -> Schema {
    string_enum(&["active", "revoked"])
}

/// RFC 3339 UTC with milliseconds, as every timestamp we render.
const TIMESTAMP_PATTERN: &str = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$";

pub(super) fn timestamp() -> Schema {
    typed(json!({ "type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN }))
}

pub(super) fn nullable_timestamp() -> Schema {
    typed(json!({
        "type": ["string", "null"],
        "format": "date-time",
        "pattern": TIMESTAMP_PATTERN
    }))
}

pub(super) fn grant_expiry() -> Schema {
    typed(json!({
        "description": "RFC 3339 UTC (`Z` only), in the future; absent or null: never expires.",
        "type": ["string", "null"],
        "format": "date-time",
        "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"
    }))
}

pub(super) fn grant_updates() -> Schema {
    typed(json!({
        "description": "Only name and description can change; other fields are ignored.",
        "type": "object",
        "properties": {
            "name": { "type": "string" },
            "description": { "type": "string" }
        }
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_builds() {
        let doc = super::document_json();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    }
}
