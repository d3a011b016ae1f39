//! `GET /openapi.json`: a valid OpenAPI 3.1 document that documents every public route,
//! whose error responses are the ones the server really sends.
//!
//! The OpenAPI 3.1 meta-schema in tests/fixtures is the official one (2022-10-07), as
//! bundled by the `openapi-spec-validator` Python package (Apache-2.0).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Spawn, TestApp};

const OPENAPI_3_1_SCHEMA: &str = include_str!("../fixtures/openapi-3.1-schema.json");
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn fetch_document(app: &TestApp) -> Value {
    let response = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

#[tokio::test]
async fn document_is_valid_openapi_3_1() {
    let app = TestApp::spawn().await;
    let doc = fetch_document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );

    assert_valid_openapi_3_1(&doc);
}

/// Valid against the official OpenAPI 3.1 meta-schema, each component schema valid JSON
/// Schema too.
pub fn assert_valid_openapi_3_1(doc: &Value) {
    let meta: Value = serde_json::from_str(OPENAPI_3_1_SCHEMA).unwrap();
    let validator = jsonschema::draft202012::new(&meta).expect("the meta-schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "not valid OpenAPI 3.1: {errors:#?}");

    // The meta-schema leaves schema objects open; each must be valid JSON Schema too.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        if let Err(e) = jsonschema::meta::validate(schema) {
            panic!("components.schemas.{name} is not valid JSON Schema: {e}");
        }
    }
}

#[tokio::test]
async fn every_ref_resolves() {
    let app = TestApp::spawn().await;
    let doc = fetch_document(&app).await;
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 20, "the document uses components: {refs:?}");
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} points outside the document"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }
}

pub fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                refs.push(r.clone());
            }
            map.values().for_each(|v| collect_refs(v, refs));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

pub fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if METHODS.contains(&method.as_str()) {
                operations.insert((path.clone(), method.clone()));
            }
        }
    }
    operations
}

/// The router and the document are built from one list (`OpenApiRouter`), so a route cannot
/// be served undocumented; what remains to prove is that each documented operation is served.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = TestApp::spawn().await;
    let doc = fetch_document(&app).await;
    let documented = documented_operations(&doc);
    assert!(documented.len() >= 20, "{documented:?}");
    for expected in [
        ("/access/v1/enrollment", "patch"),
        ("/access/v1/enrollment", "post"),
        ("/auth-grant/{id}", "delete"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            documented.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} is documented"
        );
    }

    // The live server serves each of them: neither the fallback nor 405.
    for (path, method) in &documented {
        let url = format!("{}{}", app.base, path.replace("{id}", "x"));
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = app.http.request(method.clone(), &url).send().await.unwrap();
        let status = response.status();
        assert_ne!(status, 405, "{method} {path}");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(
            body["error"], "not_found",
            "{method} {path} hit the fallback"
        );
    }

    // Each operation has a unique id and documents 408 (the timeout layer covers all).
    let mut ids = BTreeSet::new();
    for (path, method) in &documented {
        let operation = &doc["paths"][path][method];
        let id = operation["operationId"].as_str().unwrap();
        assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
        assert!(
            operation["responses"]["408"].is_object(),
            "{method} {path} documents 408"
        );
    }
}

/// The schema documented for a response, with the document's components in scope.
fn response_validator(doc: &Value, path: &str, method: &str, status: u16) -> jsonschema::Validator {
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(response.is_object(), "{method} {path} documents {status}");
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} {status} has a JSON schema"
    );
    let rooted = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    jsonschema::draft202012::new(&rooted).expect("the response schema compiles")
}

fn required_headers(doc: &Value, path: &str, method: &str, status: u16) -> Vec<String> {
    doc["paths"][path][method]["responses"][status.to_string()]["headers"]
        .as_object()
        .map(|headers| {
            headers
                .iter()
                .filter(|(_, h)| h["required"] == true)
                .map(|(name, _)| name.to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn error_responses_match_their_documented_envelopes() {
    // One failed verification per client is allowed, so the second one is a 429.
    let app = TestApp::spawn_with(Spawn {
        overrides: &[(
            "PORTCULLIS__RATE_LIMIT__VERIFICATIONS_PER_CLIENT_PER_MINUTE",
            "1",
        )],
        ..Spawn::default()
    })
    .await;
    let doc = fetch_document(&app).await;
    let client = app.default_app().await;
    // Left alone by the rate limit that `client` runs into.
    let other = app.create_app(json!({ "name": "other" })).await;
    let wrong_secret = json!({
        "client_id": client.client_id,
        "client_secret": "wrong",
        "grant_type": "client_credentials",
    });

    struct Case {
        why: &'static str,
        path: &'static str,
        doc_path: &'static str,
        method: &'static str,
        content_type: Option<&'static str>,
        body: String,
        bearer: Option<&'static str>,
        status: u16,
    }
    let case = |why, path, method, content_type, body: &str, bearer, status| Case {
        why,
        path,
        doc_path: path,
        method,
        content_type,
        body: body.to_owned(),
        bearer,
        status,
    };
    let cases = [
        case(
            "Endorsed: a content type it does not read",
            "/api/v1/auth/tokens",
            "post",
            Some("text/plain"),
            "x",
            None,
            415,
        ),
        case(
            "Endorsed: grant_type missing",
            "/api/v1/auth/tokens",
            "post",
            Some("application/json"),
            "{}",
            None,
            400,
        ),
        case(
            "Endorsed: a wrong secret",
            "/api/v1/auth/tokens",
            "post",
            Some("application/json"),
            &wrong_secret.to_string(),
            None,
            401,
        ),
        case(
            "Endorsed: the next wrong secret is over the limit",
            "/api/v1/auth/tokens",
            "post",
            Some("application/json"),
            &wrong_secret.to_string(),
            None,
            429,
        ),
        case(
            "OAuth: no client authentication",
            "/oauth2/token",
            "post",
            Some("application/x-www-form-urlencoded"),
            "grant_type=client_credentials",
            None,
            401,
        ),
        case(
            "OAuth: an unsupported grant type",
            "/oauth2/token",
            "post",
            Some("application/x-www-form-urlencoded"),
            "grant_type=password",
            None,
            400,
        ),
        case(
            "OAuth: introspection without a token parameter",
            "/oauth2/introspect",
            "post",
            Some("application/x-www-form-urlencoded"),
            &format!(
                "client_id={}&client_secret={}",
                other.client_id, other.secret
            ),
            None,
            400,
        ),
        case(
            "Access: no bearer token",
            "/access/v1/enrollment",
            "get",
            None,
            "",
            None,
            401,
        ),
        case(
            "Access: a content type it does not read",
            "/access/v1/enrollment/authorize",
            "post",
            Some("text/plain"),
            "x",
            None,
            415,
        ),
        case(
            "Access: no enrollment named",
            "/access/v1/enrollment/authorize",
            "post",
            Some("application/json"),
            &json!({ "client_id": other.client_id, "client_secret": other.secret }).to_string(),
            None,
            400,
        ),
        case(
            "LearnCard: no bearer token",
            "/auth-grant/create",
            "post",
            None,
            "",
            None,
            401,
        ),
        case(
            "LearnCard: a forged bearer token",
            "/profile/auth-grants",
            "post",
            None,
            "",
            Some("not-a-jwt"),
            401,
        ),
    ];
    let oversized = Case {
        why: "LearnCard: a body over 64 KiB",
        path: "/auth-grant/create",
        doc_path: "/auth-grant/create",
        method: "post",
        content_type: Some("application/json"),
        body: format!("{{\"name\":\"{}\"}}", "x".repeat(70 * 1024)),
        bearer: None,
        status: 413,
    };
    let missing_grant_case = || Case {
        why: "LearnCard: an unknown grant with a valid owner token",
        path: "/auth-grant/00000000-0000-4000-8000-000000000000",
        doc_path: "/auth-grant/{id}",
        method: "get",
        content_type: None,
        body: String::new(),
        bearer: None,
        status: 404,
    };
    let missing_grant = missing_grant_case();
    // Percent-decoding to invalid UTF-8 once got axum's plain-text 400.
    let undecodable_grant = Case {
        why: "LearnCard: an id that is not UTF-8 cannot exist",
        path: "/auth-grant/%FF/revoke",
        doc_path: "/auth-grant/{id}/revoke",
        method: "post",
        status: 404,
        ..missing_grant_case()
    };
    let undecodable_enrollment = Case {
        why: "Access: an enrollment id that is not UTF-8",
        path: "/access/v1/enrollment/%FF",
        doc_path: "/access/v1/enrollment/{id}",
        method: "put",
        content_type: Some("application/json"),
        body: "{}".into(),
        status: 400,
        ..missing_grant_case()
    };
    let owner_token = mint_owner_token(&app).await;

    for case in cases.into_iter().chain([
        oversized,
        missing_grant,
        undecodable_grant,
        undecodable_enrollment,
    ]) {
        let method = Method::from_bytes(case.method.to_uppercase().as_bytes()).unwrap();
        let mut request = app
            .http
            .request(method, format!("{}{}", app.base, case.path))
            .body(case.body.clone());
        if let Some(ct) = case.content_type {
            request = request.header("content-type", ct);
        }
        match (case.bearer, case.status) {
            (Some(token), _) => request = request.bearer_auth(token),
            // Past authentication, so the status is the body's or the lookup's.
            (None, 404 | 413) => request = request.bearer_auth(&owner_token),
            (None, _) => {}
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), case.status, "{}", case.why);
        for header in required_headers(&doc, case.doc_path, case.method, case.status) {
            assert!(
                response.headers().contains_key(header.as_str()),
                "{}: documented header {header} missing",
                case.why
            );
        }
        let body: Value = response.json().await.unwrap();
        let validator = response_validator(&doc, case.doc_path, case.method, case.status);
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{}: {body} does not match its documented schema: {errors:?}",
            case.why
        );
    }

    // The fallback's body is documented as a shared response.
    let response = app
        .http
        .get(format!("{}/no/such/route", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [doc["components"]["responses"]["NoSuchRoute"]["content"]["application/json"]["schema"]],
    });
    assert!(
        jsonschema::draft202012::is_valid(&schema, &body),
        "{body} matches RouteNotFound"
    );
}

async fn mint_owner_token(app: &TestApp) -> String {
    let response = app
        .admin_post(
            "/admin/v1/tokens",
            json!({ "sub": "openapi-owner", "sub_kind": "owner", "scope": "authGrants:read" }),
        )
        .await;
    assert!(response.status().is_success(), "minting an owner token");
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}
