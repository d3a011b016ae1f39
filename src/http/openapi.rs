//! The OpenAPI 3.1 document of the public listener, served at `GET /openapi.json`.
//!
//! The document is generated from the router: each handler carries its `#[utoipa::path]`
//! (method, path, body, security, success and the error statuses it can answer with), and
//! `OpenApiRouter` collects them as the routes are registered, so a route cannot be served
//! without being documented. Request and response schemas are derived (`utoipa::ToSchema`) on
//! the wire types beside their handlers. This module adds what every route shares — each
//! dialect's error envelope with the codes its table gives each status, `x-request-id` on
//! every answer, the timeout's 408 — and renders the document once, when the router is built.

use std::{collections::BTreeMap, marker::PhantomData};

use axum::{Extension, body::Bytes, http::header, response::IntoResponse};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::{
    IntoResponses, ToSchema,
    openapi::{
        Components, ContentBuilder, Info, OpenApi, OpenApiBuilder, RefOr, Response,
        ResponseBuilder, Schema,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        tag::TagBuilder,
    },
};

use super::{
    auth_grant::LearnCard,
    endorsed::Endorsed,
    enrollment::Access,
    error::{Dialect, Failure},
    oauth::{self, OAuth},
};

const JSON: &str = "application/json";
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A dialect as the document describes it.
pub trait Documented: Dialect {
    /// Its envelope's schema is `#/components/schemas/{NAME}Error`.
    const NAME: &'static str;
    /// Where in the envelope the code sits.
    const CODE_AT: &'static [&'static str];
    /// When its 401s carry `WWW-Authenticate`, if they ever do.
    const CHALLENGE: Option<&'static str>;

    fn envelope_schema() -> Value;
}

/// The error answers an operation documents, in `D`'s envelope: `Errors<Access, 401, 404>`.
/// Unused slots are 0.
pub struct Errors<
    D,
    const A: u16,
    const B: u16 = 0,
    const C: u16 = 0,
    const E: u16 = 0,
    const F: u16 = 0,
    const G: u16 = 0,
    const H: u16 = 0,
    const I: u16 = 0,
    const J: u16 = 0,
>(PhantomData<D>);

impl<
    D: Documented,
    const A: u16,
    const B: u16,
    const C: u16,
    const E: u16,
    const F: u16,
    const G: u16,
    const H: u16,
    const I: u16,
    const J: u16,
> IntoResponses for Errors<D, A, B, C, E, F, G, H, I, J>
{
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [A, B, C, E, F, G, H, I, J]
            .into_iter()
            .filter(|status| *status != 0)
            .map(|status| (status.to_string(), RefOr::T(error_response::<D>(status))))
            .collect()
    }
}

/// The codes `D` gives the failures it answers with `status`, as its table says.
fn codes<D: Documented>(status: u16) -> Vec<&'static str> {
    let mut codes = Vec::new();
    for failure in Failure::ALL {
        let (answered, code) = D::answer(failure);
        if answered.as_u16() == status && !codes.contains(&code) {
            codes.push(code);
        }
    }
    assert!(!codes.is_empty(), "{} never answers {status}", D::NAME);
    codes
}

/// `D`'s envelope with the code narrowed to what `status` carries.
fn error_schema<D: Documented>(status: u16) -> Value {
    let narrowed = D::CODE_AT.iter().rev().fold(
        json!({ "type": "string", "enum": codes::<D>(status) }),
        |inner, key| json!({ "type": "object", "properties": { *key: inner } }),
    );
    json!({ "allOf": [schema_ref(&format!("{}Error", D::NAME)), narrowed] })
}

/// The response for one error status, with the headers it carries.
fn error_response<D: Documented>(status: u16) -> Response {
    let mut response = ResponseBuilder::new()
        .description(error_description(status))
        .content(JSON, content(error_schema::<D>(status)));
    if status == 429 {
        response = response.header(
            "Retry-After",
            header_schema(
                json!({ "type": "string", "pattern": "^[1-9][0-9]*$" }),
                "Seconds to wait before retrying.",
            ),
        );
    }
    if let (401, Some(when)) = (status, D::CHALLENGE) {
        response = response.header(
            "WWW-Authenticate",
            header_schema(json!({ "type": "string" }), when),
        );
    }
    response.build()
}

fn error_description(status: u16) -> &'static str {
    match status {
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
    }
}

/// Tower's timeout layer answers before any dialect sees the request: no body.
fn timeout_response() -> Response {
    ResponseBuilder::new()
        .description("The request did not complete within `server.request_timeout_ms`; empty body.")
        .build()
}

fn request_id_header() -> utoipa::openapi::header::Header {
    header_schema(
        json!({ "type": "string", "minLength": 1 }),
        "The caller's `x-request-id`, or a fresh one.",
    )
}

pub(super) fn header_schema(schema: Value, description: &str) -> utoipa::openapi::header::Header {
    utoipa::openapi::header::HeaderBuilder::new()
        .schema(Some(typed::<RefOr<Schema>>(schema)))
        .description(Some(description))
        .build()
}

pub(super) fn content(schema: Value) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(typed::<RefOr<Schema>>(schema)))
        .build()
}

pub(super) fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A hand-written piece of the document as utoipa's type. The round trip must be lossless:
/// a keyword utoipa does not model would otherwise vanish without a word.
pub(super) fn typed<T: DeserializeOwned + serde::Serialize>(value: Value) -> T {
    let typed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("utoipa cannot read {value}: {e}"));
    debug_assert_eq!(
        serde_json::to_value(&typed).expect("serializes"),
        value,
        "utoipa dropped or changed part of a hand-written schema"
    );
    typed
}

/// What the operations' own annotations do not say: the info, tags, security schemes, each
/// dialect's error envelope and the fallback's answer. The router adds the operations.
pub fn base() -> OpenApi {
    let mut components = Components::new();
    for (name, schema) in [
        envelope::<Endorsed>(),
        envelope::<OAuth>(),
        envelope::<Access>(),
        envelope::<LearnCard>(),
        (
            "RouteNotFound".to_owned(),
            json!({
                "description": "Any path no route serves.",
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": { "type": "string", "enum": ["not_found"] },
                    "message": { "type": "string" }
                }
            }),
        ),
    ] {
        components.schemas.insert(name, typed(schema));
    }
    components.add_security_scheme(
        "clientBasic",
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
        "bearerToken",
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
        .components(Some(components))
        .tags(Some(tags))
        .build()
}

fn envelope<D: Documented>() -> (String, Value) {
    (format!("{}Error", D::NAME), D::envelope_schema())
}

/// The rendered document, the same bytes for every request.
#[derive(Clone)]
pub struct Document(Bytes);

impl Document {
    /// The rendered bytes (JSON).
    pub fn bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// Adds what every operation shares, as the layers around every route make it true.
    pub fn render(document: OpenApi) -> Self {
        let mut doc = serde_json::to_value(document).expect("the document serializes");
        let timeout = serde_json::to_value(timeout_response()).expect("serializes");
        let request_id = serde_json::to_value(request_id_header()).expect("serializes");
        let operations = doc["paths"]
            .as_object_mut()
            .into_iter()
            .flat_map(|paths| paths.values_mut())
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.iter_mut())
            .filter(|(key, _)| METHODS.contains(&key.as_str()))
            .map(|(_, operation)| operation);
        for operation in operations {
            let responses = &mut operation["responses"];
            responses["408"] = timeout.clone();
            for response in responses
                .as_object_mut()
                .into_iter()
                .flat_map(|r| r.values_mut())
            {
                response["headers"]["x-request-id"] = request_id.clone();
            }
        }
        fix_keywords(&mut doc);
        Self(Bytes::from(
            serde_json::to_vec(&doc).expect("the document serializes"),
        ))
    }
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "Discovery",
    summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1.", body = inline(OpenApiDocument))),
)]
pub async fn serve(Extension(document): Extension<Document>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, JSON),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        document.0,
    )
}

/// Fills the gaps in utoipa's output: its header object has no `required` (every header this
/// document names is always sent, except the conditional challenge), and it renders an
/// optional body (`Option<T>`) as a body that may be JSON `null`, where OpenAPI says
/// `required: false`.
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
                if let Some(Value::Object(body)) = map.get_mut("requestBody") {
                    optional_body(body);
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(doc);
}

fn optional_body(body: &mut serde_json::Map<String, Value>) {
    if body.contains_key("required") {
        return;
    }
    let schemas = body
        .get_mut("content")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|content| content.values_mut())
        .map(|media| &mut media["schema"]);
    for schema in schemas {
        if let Some([some, null]) = schema["oneOf"].as_array().map(Vec::as_slice)
            && *null == json!({ "type": "null" })
        {
            *schema = some.clone();
        }
    }
    body.insert("required".into(), Value::Bool(false));
}

/// A schema written out in JSON, for what is not a derived wire type of ours.
macro_rules! json_schema {
    ($(#[$doc:meta])* $name:ident = $schema:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                typed($schema)
            }
        }

        impl ToSchema for $name {}
    };
}

json_schema!(
    /// This document.
    OpenApiDocument = json!({
        "type": "object",
        "required": ["openapi", "info", "paths"],
        "properties": { "openapi": { "type": "string", "pattern": "^3\\.1\\." } }
    })
);

json_schema!(
    /// `true`, the only answer of routes that succeed or fail.
    True = json!({ "type": "boolean", "enum": [true] })
);

json_schema!(
    /// A new auth grant's id.
    GrantIdString = json!({ "type": "string", "format": "uuid" })
);

json_schema!(
    /// A token, as a bare JSON string.
    TokenString = json!({ "type": "string", "minLength": 1 })
);

json_schema!(
    JwkSet = json!({
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
    })
);

json_schema!(
    AuthorizationServerMetadata = json!({
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
    })
);

json_schema!(
    /// Alive, or ready.
    Healthy = health_schema(&["ok"])
);

json_schema!(
    /// Not ready.
    Unhealthy = health_schema(&["draining", "unavailable"])
);

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
    fn the_document_is_built_from_the_router() {
        let (_, document) = super::super::public_routes().split_for_parts();
        let super::Document(bytes) = super::Document::render(document);
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert!(doc["paths"]["/openapi.json"]["get"].is_object());
    }
}
