//! The OpenAPI 3.1 document of the admin listener, served at `GET /admin/v1/openapi.json`
//! behind the admin token like every other admin route.
//!
//! Built as the public document is (see `openapi`): each admin handler carries its
//! `#[utoipa::path]`, the wire types beside it derive their schemas, and the admin router is
//! an `OpenApiRouter`, so a route cannot be served without being documented. This module
//! adds what the admin operations share: the bearer scheme, the RFC 9457 problem each error
//! status answers with, and the field schemas the derives refer to.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use utoipa::{
    IntoResponses,
    openapi::{
        Components, Info, OpenApi, OpenApiBuilder, RefOr, Response, ResponseBuilder, Schema,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
        tag::TagBuilder,
    },
};

use super::{
    BODY_LIMIT_BYTES,
    openapi::{content, header_schema, schema_ref, typed},
};
use crate::{
    authority::audit::Event,
    domain::{CidrList, KeyState, SecretState, SigningAlgorithm},
};

pub const PROBLEM_JSON: &str = "application/problem+json";
const SECURITY: &str = "adminToken";

/// The error answers an operation documents, each an RFC 9457 problem whose `status` is the
/// answer's: `Problems<401, 404>`. Unused slots are 0.
///
/// Unlike the public dialects' `Errors`, the statuses are not derived from the dialect's
/// failure table: JSON bodies the admin API cannot read keep the status axum's extractor
/// chose (422 for a body of the wrong shape), which no failure maps to.
pub struct Problems<
    const A: u16,
    const B: u16 = 0,
    const C: u16 = 0,
    const D: u16 = 0,
    const E: u16 = 0,
    const F: u16 = 0,
    const G: u16 = 0,
    const H: u16 = 0,
    const I: u16 = 0,
>;

impl<
    const A: u16,
    const B: u16,
    const C: u16,
    const D: u16,
    const E: u16,
    const F: u16,
    const G: u16,
    const H: u16,
    const I: u16,
> IntoResponses for Problems<A, B, C, D, E, F, G, H, I>
{
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [A, B, C, D, E, F, G, H, I]
            .into_iter()
            .filter(|status| *status != 0)
            .map(|status| (status.to_string(), RefOr::T(problem_response(status))))
            .collect()
    }
}

fn problem_response(status: u16) -> Response {
    let schema = json!({
        "allOf": [
            schema_ref("Problem"),
            { "type": "object", "properties": { "status": { "type": "integer", "enum": [status] } } }
        ]
    });
    let mut response = ResponseBuilder::new()
        .description(problem_description(status))
        .content(PROBLEM_JSON, content(schema));
    if status == 401 {
        response = response.header(
            "WWW-Authenticate",
            header_schema(
                json!({ "type": "string", "pattern": "^Bearer realm=\"portcullis-admin\"" }),
                "Always sent: `Bearer realm=\"portcullis-admin\"`, with `error=\"invalid_token\"` when a wrong token was sent.",
            ),
        );
    }
    response.build()
}

fn problem_description(status: u16) -> &'static str {
    match status {
        400 => "The request is malformed, or a field breaks a rule (`detail` names it).",
        401 => "The admin bearer token is missing or wrong.",
        404 => "No such resource (an id that cannot exist is simply not found).",
        409 => "Conflicts with the current state (`detail` says how); some may be retried.",
        413 => "The body is larger than 64 KiB.",
        415 => "The body must be sent as `application/json`.",
        422 => {
            "The JSON body has the wrong shape: an unknown field, a missing one, or a wrong type."
        }
        500 => "Internal error; the body is opaque.",
        503 => "The store is unavailable; retry shortly.",
        other => panic!("no description for {other}"),
    }
}

/// What the operations' own annotations do not say: the info, tags, the admin token's
/// scheme (required by every operation) and the problem envelope.
pub fn base() -> OpenApi {
    let mut components = Components::new();
    components.schemas.insert(
        "Problem".into(),
        typed(json!({
            "description": "RFC 9457 problem details, sent as `application/problem+json`.",
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": { "type": "string", "enum": ["about:blank"] },
                "title": { "type": "string", "description": "The status's reason phrase." },
                "status": { "type": "integer", "minimum": 400, "maximum": 599 },
                "detail": { "type": "string" }
            }
        })),
    );
    components.add_security_scheme(
        SECURITY,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The configured `admin.token`, compared in constant time. Every admin route requires it, this document included.",
                ))
                .build(),
        ),
    );
    components.responses.insert(
        "NoSuchRoute".into(),
        RefOr::T(
            ResponseBuilder::new()
                .description("Any path no admin route serves, with or without the token.")
                .content(PROBLEM_JSON, content(schema_ref("Problem")))
                .build(),
        ),
    );

    let tags = [
        (
            "Apps",
            "Applications (OAuth clients): scopes, network binding, enable/disable, rotation.",
        ),
        (
            "Secrets",
            "An application's several secrets: create (shown once), list, revoke.",
        ),
        ("Enrollments", "Applications installed for an owner."),
        (
            "Audit",
            "The credential audit trail and per-day usage counts.",
        ),
        ("Keys", "Signing keys and their rotation."),
        ("Tokens", "Tokens minted for an upstream login system."),
        ("Operations", "Metrics and this document."),
    ]
    .map(|(name, description)| {
        TagBuilder::new()
            .name(name)
            .description(Some(description))
            .build()
    });

    let mut info = Info::new("Portcullis admin API", env!("CARGO_PKG_VERSION"));
    info.description = Some(format!(
        "The admin listener (default 127.0.0.1:8081). Every route requires `Authorization: Bearer <admin.token>`. Errors are RFC 9457 problems (`application/problem+json`). Bodies are bounded at {BODY_LIMIT_BYTES} bytes. Every response carries `x-request-id`. A path no route serves answers 404 with `#/components/responses/NoSuchRoute`; a known path with another method answers 405 with `Allow`. Every route may answer 408 (empty body) when the request outlives the server's timeout. Timestamps are RFC 3339 UTC with milliseconds."
    ));
    OpenApiBuilder::new()
        .info(info)
        .components(Some(components))
        .tags(Some(tags))
        .security(Some([SecurityRequirement::new(
            SECURITY,
            Vec::<String>::new(),
        )]))
        .build()
}

// Field schemas the admin wire types refer to with `#[schema(schema_with = …)]`.

fn string_enum(values: &[&str]) -> Schema {
    typed(json!({ "type": "string", "enum": values }))
}

pub(super) fn uuid() -> Schema {
    typed(json!({ "type": "string", "format": "uuid" }))
}

pub(super) fn nullable_uuid() -> Schema {
    typed(json!({ "type": ["string", "null"], "format": "uuid" }))
}

fn cidrs(description: &str, nullable: bool) -> Value {
    json!({
        "description": description,
        "type": if nullable { json!(["array", "null"]) } else { json!("array") },
        "maxItems": CidrList::MAX_ENTRIES,
        "items": {
            "type": "string",
            "description": "An IPv4 or IPv6 CIDR block (`203.0.113.0/24`) or a bare address (a /32 or /128).",
            "minLength": 1
        }
    })
}

/// A CIDR allowlist as a request sets it.
pub(super) fn cidr_list_request() -> Schema {
    typed(cidrs(
        "Replaces the list; absent, null or `[]`: no binding.",
        true,
    ))
}

/// A CIDR allowlist as responses show it: canonical, never empty (omitted instead).
pub(super) fn cidr_list() -> Schema {
    typed(cidrs(
        "Canonical form (host bits cleared). Omitted when nothing is bound.",
        false,
    ))
}

/// Space-delimited `resource:action` scopes.
pub(super) fn scopes() -> Schema {
    typed(json!({
        "type": "string",
        "description": "Space-delimited `resource:action` scopes, e.g. `all:read all:write`."
    }))
}

pub(super) fn nullable_scopes() -> Schema {
    typed(json!({
        "type": ["string", "null"],
        "description": "Space-delimited `resource:action` scopes, e.g. `all:read all:write`."
    }))
}

pub(super) fn subject_kind() -> Schema {
    string_enum(&["app", "owner"])
}

pub(super) fn nullable_subject_kind() -> Schema {
    typed(json!({ "type": ["string", "null"], "enum": ["app", "owner", null] }))
}

pub(super) fn secret_status() -> Schema {
    let states = [
        SecretState::Active,
        SecretState::Expired,
        SecretState::UsedUp,
    ];
    string_enum(&states.map(SecretState::as_str))
}

/// Every event the trail records, from the list the trail itself keeps.
pub(super) fn audit_event() -> Schema {
    string_enum(&Event::ALL.map(Event::name))
}

pub(super) fn usage_kind() -> Schema {
    string_enum(&["app", "secret", "grant"])
}

pub(super) fn key_algorithm() -> Schema {
    use SigningAlgorithm as A;
    string_enum(&[A::ES256, A::EdDSA, A::RS256, A::HS256].map(A::as_str))
}

pub(super) fn key_state() -> Schema {
    string_enum(&[KeyState::Next, KeyState::Current, KeyState::Retired].map(KeyState::as_str))
}

pub(super) fn day() -> Schema {
    typed(json!({ "type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$" }))
}

/// Any JSON value, each type named: the bare `{}` that means the same sends schemathesis 4.32's
/// example generator into an internal error on this operation.
pub(super) fn any_json() -> Schema {
    typed(json!({
        "description": "Any JSON up to 64 KiB.",
        "type": ["object", "array", "string", "number", "boolean", "null"]
    }))
}
