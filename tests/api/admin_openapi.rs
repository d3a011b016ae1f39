//! `GET /admin/v1/openapi.json`: a valid OpenAPI 3.1 document of the admin listener, behind
//! the admin token, that documents every admin route, and whose schemas are the shapes the
//! server really sends.

use std::collections::BTreeSet;

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_TOKEN, TestApp},
    openapi::{assert_valid_openapi_3_1, collect_refs, documented_operations},
};

async fn fetch_admin_document(app: &TestApp) -> Value {
    let response = app
        .http
        .get(format!("{}/admin/v1/openapi.json", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

#[tokio::test]
async fn admin_document_is_valid_openapi_3_1_behind_the_admin_token() {
    let app = TestApp::spawn().await;
    for token in [None, Some("wrong-token")] {
        let mut request = app.http.get(format!("{}/admin/v1/openapi.json", app.admin));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            401,
            "{token:?}: the document needs the token"
        );
    }
    // Not on the public listener: that one has its own document.
    let public = app
        .http
        .get(format!("{}/admin/v1/openapi.json", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);

    let doc = fetch_admin_document(&app).await;
    assert_valid_openapi_3_1(&doc);
    assert_eq!(
        doc["security"],
        json!([{ "adminToken": [] }]),
        "every operation needs the admin token"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["adminToken"]["scheme"],
        "bearer"
    );

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

/// A documented path with its parameters filled in with ids that exist nowhere.
fn concrete(path: &str) -> String {
    path.replace("{id}", "00000000-0000-7000-8000-000000000000")
        .replace("{secret_id}", "00000000-0000-7000-8000-000000000001")
}

async fn admin_request(app: &TestApp, method: Method, path: &str) -> Response {
    app.http
        .request(method, format!("{}{path}", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
}

/// The router and the document are built from one list (`OpenApiRouter`); this proves each
/// documented operation is served, and that no other method is served on a documented path.
#[tokio::test]
async fn every_documented_admin_operation_is_served() {
    let app = TestApp::spawn().await;
    let doc = fetch_admin_document(&app).await;
    let documented = documented_operations(&doc);
    assert!(documented.len() >= 26, "{documented:?}");
    for expected in [
        ("/admin/v1/apps/{id}/secrets", "post"),
        ("/admin/v1/apps/{id}/secrets/{secret_id}", "delete"),
        ("/admin/v1/audit", "get"),
        ("/admin/v1/grants/{id}/usage", "get"),
        ("/admin/v1/openapi.json", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            documented.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} is documented"
        );
    }

    let paths: BTreeSet<&String> = documented.iter().map(|(path, _)| path).collect();
    for path in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = admin_request(&app, http_method, &concrete(path)).await;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if documented.contains(&(path.clone(), method.to_owned())) {
                assert_ne!(status, 405, "{method} {path} is documented but not served");
                assert_ne!(
                    body["detail"], "no such admin route",
                    "{method} {path} hit the fallback"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is served but not documented");
            }
        }
    }

    // Each operation has a unique id, documents 401 (the token guards every route) and 408
    // (the timeout layer covers all), and each error answer is a problem.
    let mut ids = BTreeSet::new();
    for (path, method) in &documented {
        let operation = &doc["paths"][path][method];
        let id = operation["operationId"].as_str().unwrap();
        assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
        // Every query parameter is an optional filter or flag; path parameters are ids.
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let name = &parameter["name"];
            match parameter["in"].as_str().unwrap() {
                "query" => assert_eq!(parameter["required"], false, "{method} {path} ?{name}"),
                "path" => assert_eq!(
                    parameter["schema"]["format"], "uuid",
                    "{method} {path} {name}"
                ),
                other => panic!("{method} {path}: a parameter in {other}"),
            }
        }
        for status in ["401", "408"] {
            assert!(
                operation["responses"][status].is_object(),
                "{method} {path} documents {status}"
            );
        }
        for (status, response) in operation["responses"].as_object().unwrap() {
            if status.starts_with('4') && status != "408" || status.starts_with('5') {
                assert!(
                    response["content"]["application/problem+json"].is_object(),
                    "{method} {path} {status} is a problem"
                );
            }
        }
    }
}

/// Whether `candidate` (a path as written in code or docs, with `{…}`, `{}` or `$VAR` for an
/// id) names the documented `template`.
fn names_template(candidate: &str, template: &str) -> bool {
    let is_param = |segment: &str| segment.starts_with('{') || segment.starts_with('$');
    let candidate: Vec<&str> = candidate.split('/').collect();
    let template: Vec<&str> = template.split('/').collect();
    candidate.len() == template.len()
        && candidate.iter().zip(&template).all(
            |(c, t)| {
                if is_param(t) { !c.is_empty() } else { c == t }
            },
        )
}

/// Every admin path written anywhere in the router's source, the README, the tests and the
/// scripts: the router's own list can only hold what the scan finds there.
fn admin_paths_in(text: &str) -> Vec<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-{}$./".contains(c);
    text.match_indices("/admin/v1/")
        .map(|(at, _)| {
            let path: String = text[at..].chars().take_while(|c| allowed(*c)).collect();
            path.trim_end_matches(['.', '/']).to_owned()
        })
        .filter(|path| path.len() > "/admin/v1".len())
        .collect()
}

#[tokio::test]
async fn every_admin_route_written_anywhere_is_documented() {
    let app = TestApp::spawn().await;
    let doc = fetch_admin_document(&app).await;
    let templates: BTreeSet<String> = documented_operations(&doc)
        .into_iter()
        .map(|(path, _)| path)
        .collect();

    let root = env!("CARGO_MANIFEST_DIR");
    let mut files = vec![
        format!("{root}/src/http/admin.rs"),
        format!("{root}/README.md"),
    ];
    for dir in ["tests/api", "scripts"] {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            files.push(entry.unwrap().path().display().to_string());
        }
    }
    // Paths tests write on purpose to reach nothing.
    let unrouted = ["/admin/v1/no-such-route"];
    let mut seen = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for path in admin_paths_in(&text) {
            if unrouted.contains(&path.as_str()) {
                continue;
            }
            seen += 1;
            assert!(
                templates.iter().any(|t| names_template(&path, t)),
                "{path} (in {file}) is not a documented admin path"
            );
        }
    }
    assert!(seen > 100, "the scan found the admin paths in use: {seen}");

    // The scan reads what it should: an undocumented path is caught.
    let undocumented = concat!("/admin/v1/apps/{id}/", "quota");
    assert!(!templates.iter().any(|t| names_template(undocumented, t)));
    assert_eq!(
        admin_paths_in("curl \"$ADMIN/admin/v1/apps/$APP_ID/secrets?x=1\". `/admin/v1/keys`."),
        ["/admin/v1/apps/$APP_ID/secrets", "/admin/v1/keys"]
    );

    // And anything else reaches the fallback, which is documented.
    let response = admin_request(&app, Method::GET, "/admin/v1/no-such-route").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    let schema = rooted(
        &doc,
        &doc["components"]["responses"]["NoSuchRoute"]["content"]["application/problem+json"]["schema"],
    );
    assert!(
        jsonschema::draft202012::is_valid(&schema, &body),
        "{body} matches NoSuchRoute"
    );
}

fn rooted(doc: &Value, schema: &Value) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    })
}

/// Checks a real answer against what the document says `method path` answers with `status`:
/// the media type, the headers it marks required, and the body's schema.
async fn assert_documented(
    doc: &Value,
    why: &str,
    path: &str,
    method: &str,
    response: Response,
) -> Value {
    let status = response.status().as_u16();
    let documented = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(
        documented.is_object(),
        "{why}: {method} {path} does not document {status}"
    );
    for (name, header) in documented["headers"].as_object().into_iter().flatten() {
        if header["required"] == true {
            assert!(
                response
                    .headers()
                    .contains_key(name.to_ascii_lowercase().as_str()),
                "{why}: documented header {name} missing"
            );
        }
    }
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let Some(content) = documented["content"].as_object() else {
        assert_eq!(
            content_type, None,
            "{why}: {status} is documented without a body"
        );
        return Value::Null;
    };
    let content_type = content_type.expect("a body has a content type");
    let (media, media_type) = content
        .iter()
        .find(|(media, _)| content_type.starts_with(media.as_str()))
        .unwrap_or_else(|| panic!("{why}: {content_type} is not documented for {status}"));
    let body: Value = if media.ends_with("json") {
        response.json().await.unwrap()
    } else {
        Value::String(response.text().await.unwrap())
    };
    let schema = rooted(doc, &media_type["schema"]);
    let validator = jsonschema::draft202012::new(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{why}: {body} does not match the schema documented for {method} {path} {status}: {errors:#?}"
    );
    body
}

#[tokio::test]
async fn admin_answers_match_their_documented_schemas() {
    let app = TestApp::spawn().await;
    let doc = fetch_admin_document(&app).await;
    let admin = |method: Method, path: &str| {
        app.http
            .request(method, format!("{}{path}", app.admin))
            .bearer_auth(ADMIN_TOKEN)
    };

    // Apps: created with every optional field, so the optional parts are checked too.
    let response = admin(Method::POST, "/admin/v1/apps")
        .json(&json!({
            "name": "documented",
            "allowed_scopes": "invoices:read invoices:write",
            "default_scopes": "invoices:read",
            "sandbox": true,
            "allowed_cidrs": ["127.0.0.1", "::1"],
            "token_bound_cidrs": ["10.0.0.0/8"],
            "quota": { "tokens_per_hour": 1000, "tokens_per_day": 10000 },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created = assert_documented(&doc, "app create", "/admin/v1/apps", "post", response).await;
    let app_id = created["id"].as_str().unwrap().to_owned();
    let client_id = created["client_id"].as_str().unwrap().to_owned();
    let first_secret = created["client_secret"].as_str().unwrap().to_owned();
    let imported = admin(Method::POST, "/admin/v1/apps")
        .json(&json!({ "name": "imported", "client_id": "legacy-client",
                       "client_secret": "a-legacy-secret-of-some-length" }))
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 201);
    assert_documented(&doc, "app import", "/admin/v1/apps", "post", imported).await;

    // A token, so that the audit trail, the usage counts and `last_used_at` hold something.
    let token = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .basic_auth(&client_id, Some(&first_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);

    let app_path = format!("/admin/v1/apps/{app_id}");
    let secrets_path = format!("{app_path}/secrets");
    let response = admin(Method::POST, &secrets_path)
        .json(&json!({
            "description": "ci runner",
            "expires_in": 86400,
            "max_uses": 10,
            "allowed_cidrs": ["192.0.2.0/24"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let secret = assert_documented(
        &doc,
        "secret create",
        "/admin/v1/apps/{id}/secrets",
        "post",
        response,
    )
    .await;
    let secret_id = secret["id"].as_str().unwrap().to_owned();
    // An empty body is a secret with every default.
    let response = admin(Method::POST, &secrets_path).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert_documented(
        &doc,
        "bare secret",
        "/admin/v1/apps/{id}/secrets",
        "post",
        response,
    )
    .await;

    let response = admin(Method::GET, &secrets_path).send().await.unwrap();
    let listed = assert_documented(
        &doc,
        "secrets list",
        "/admin/v1/apps/{id}/secrets",
        "get",
        response,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 3);

    let enrollment = admin(Method::POST, "/admin/v1/enrollments")
        .json(&json!({ "app_id": app_id, "owner_id": "owner-1", "data": { "plan": "pro" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(enrollment.status(), 201);
    let enrollment = assert_documented(
        &doc,
        "enrollment create",
        "/admin/v1/enrollments",
        "post",
        enrollment,
    )
    .await;
    let enrollment_path = format!(
        "/admin/v1/enrollments/{}",
        enrollment["id"].as_str().unwrap()
    );

    let minted = admin(Method::POST, "/admin/v1/tokens")
        .json(
            &json!({ "sub": "owner-1", "sub_kind": "owner", "scope": "authGrants:read",
                       "expires_in": 60 }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 200);
    assert_documented(&doc, "mint", "/admin/v1/tokens", "post", minted).await;

    // The trail is written behind the requests; wait until the token's event is listed.
    let audit_path = format!("/admin/v1/audit?app_id={app_id}&limit=2");
    let mut page = Value::Null;
    for _ in 0..100 {
        let response = admin(Method::GET, &audit_path).send().await.unwrap();
        page = assert_documented(&doc, "audit list", "/admin/v1/audit", "get", response).await;
        if page["events"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(page["events"].as_array().unwrap().len(), 2, "{page}");
    assert!(page["next_cursor"].is_string(), "a page follows: {page}");
    let next = format!(
        "/admin/v1/audit?app_id={app_id}&limit=1000&cursor={}",
        page["next_cursor"].as_str().unwrap()
    );
    let response = admin(Method::GET, &next).send().await.unwrap();
    let last = assert_documented(&doc, "audit last page", "/admin/v1/audit", "get", response).await;
    assert!(last["next_cursor"].is_null(), "{last}");

    // The rest of the successful answers, one call each.
    let secret_usage = admin(Method::GET, &format!("{secrets_path}/{secret_id}/usage"))
        .send()
        .await
        .unwrap();
    let rotated = admin(Method::POST, &format!("{app_path}/rotate-secret"))
        .json(&json!({ "grace_period_secs": 60 }))
        .send()
        .await
        .unwrap();
    let revoked = admin(
        Method::DELETE,
        &format!("{secrets_path}/{secret_id}?revoke_tokens=true"),
    )
    .send()
    .await
    .unwrap();
    let updated = admin(Method::PATCH, &app_path)
        .json(&json!({ "name": "renamed", "allowed_cidrs": [], "quota": { "tokens_per_day": 5 } }))
        .send()
        .await
        .unwrap();
    let cases: Vec<(&str, &str, &str, Response)> = vec![
        (
            "rotate",
            "/admin/v1/apps/{id}/rotate-secret",
            "post",
            rotated,
        ),
        (
            "revoke",
            "/admin/v1/apps/{id}/secrets/{secret_id}",
            "delete",
            revoked,
        ),
        ("update", "/admin/v1/apps/{id}", "patch", updated),
        (
            "apps list",
            "/admin/v1/apps",
            "get",
            admin(Method::GET, "/admin/v1/apps").send().await.unwrap(),
        ),
        (
            "app show",
            "/admin/v1/apps/{id}",
            "get",
            admin(Method::GET, &app_path).send().await.unwrap(),
        ),
        (
            "app usage",
            "/admin/v1/apps/{id}/usage",
            "get",
            admin(Method::GET, &format!("{app_path}/usage?days=2"))
                .send()
                .await
                .unwrap(),
        ),
        (
            "secret usage",
            "/admin/v1/apps/{id}/secrets/{secret_id}/usage",
            "get",
            secret_usage,
        ),
        (
            "enrollments list",
            "/admin/v1/enrollments",
            "get",
            admin(
                Method::GET,
                &format!("/admin/v1/enrollments?app_id={app_id}"),
            )
            .send()
            .await
            .unwrap(),
        ),
        (
            "enrollment disable",
            "/admin/v1/enrollments/{id}/disable",
            "post",
            admin(Method::POST, &format!("{enrollment_path}/disable"))
                .send()
                .await
                .unwrap(),
        ),
        (
            "enrollment show",
            "/admin/v1/enrollments/{id}",
            "get",
            admin(Method::GET, &enrollment_path).send().await.unwrap(),
        ),
        (
            "keys list",
            "/admin/v1/keys",
            "get",
            admin(Method::GET, "/admin/v1/keys").send().await.unwrap(),
        ),
        (
            "metrics",
            "/metrics",
            "get",
            admin(Method::GET, "/metrics").send().await.unwrap(),
        ),
        (
            "app disable",
            "/admin/v1/apps/{id}/disable",
            "post",
            admin(Method::POST, &format!("{app_path}/disable"))
                .send()
                .await
                .unwrap(),
        ),
        (
            "enrollment delete",
            "/admin/v1/enrollments/{id}",
            "delete",
            admin(Method::DELETE, &enrollment_path)
                .send()
                .await
                .unwrap(),
        ),
    ];
    for (why, path, method, response) in cases {
        assert!(
            response.status().is_success(),
            "{why}: {}",
            response.status()
        );
        assert_documented(&doc, why, path, method, response).await;
    }
}

#[tokio::test]
async fn admin_errors_are_the_documented_problems() {
    let app = TestApp::spawn().await;
    let doc = fetch_admin_document(&app).await;
    let client = app
        .create_app(json!({ "name": "taken", "allowed_scopes": "invoices:read",
                            "client_id": "taken-client", "client_secret": "a-secret-long-enough" }))
        .await;
    let app_path = format!("/admin/v1/apps/{}", client.id);
    let missing = "/admin/v1/apps/00000000-0000-7000-8000-000000000000";

    struct Case {
        why: &'static str,
        method: Method,
        path: String,
        template: &'static str,
        body: Option<(&'static str, String)>,
        token: Option<&'static str>,
        status: u16,
    }
    let case =
        |why, method, path: &str, template, body: Option<(&'static str, String)>, status| Case {
            why,
            method,
            path: path.to_owned(),
            template,
            body,
            token: Some(ADMIN_TOKEN),
            status,
        };
    let json = |value: Value| Some(("application/json", value.to_string()));
    let cases = [
        Case {
            token: None,
            ..case(
                "no token",
                Method::GET,
                "/admin/v1/apps",
                "/admin/v1/apps",
                None,
                401,
            )
        },
        Case {
            token: Some("wrong"),
            ..case(
                "a wrong token",
                Method::POST,
                "/admin/v1/keys/rotate",
                "/admin/v1/keys/rotate",
                None,
                401,
            )
        },
        case(
            "an unknown app",
            Method::GET,
            missing,
            "/admin/v1/apps/{id}",
            None,
            404,
        ),
        case(
            "an id that cannot exist",
            Method::DELETE,
            "/admin/v1/enrollments/x",
            "/admin/v1/enrollments/{id}",
            None,
            404,
        ),
        case(
            "a taken client_id",
            Method::POST,
            "/admin/v1/apps",
            "/admin/v1/apps",
            json(json!({ "name": "again", "client_id": "taken-client",
                         "client_secret": "another-secret-long-enough" })),
            409,
        ),
        case(
            "a name too long",
            Method::POST,
            "/admin/v1/apps",
            "/admin/v1/apps",
            json(json!({ "name": "x".repeat(201) })),
            400,
        ),
        case(
            "a malformed CIDR",
            Method::PATCH,
            &app_path,
            "/admin/v1/apps/{id}",
            json(json!({ "token_bound_cidrs": ["10.0.0.0/99"] })),
            400,
        ),
        case(
            "a field the app does not have",
            Method::POST,
            "/admin/v1/apps",
            "/admin/v1/apps",
            json(json!({ "name": "x", "colour": "red" })),
            422,
        ),
        case(
            "a body that is not JSON",
            Method::POST,
            "/admin/v1/tokens",
            "/admin/v1/tokens",
            Some(("application/json", "{".into())),
            400,
        ),
        case(
            "no JSON content type",
            Method::POST,
            "/admin/v1/enrollments",
            "/admin/v1/enrollments",
            Some(("text/plain", "{}".into())),
            415,
        ),
        case(
            "a body over 64 KiB",
            Method::POST,
            &format!("{app_path}/secrets"),
            "/admin/v1/apps/{id}/secrets",
            json(json!({ "description": "x".repeat(70 * 1024) })),
            413,
        ),
        case(
            "a secret both expiring at and in",
            Method::POST,
            &format!("{app_path}/secrets"),
            "/admin/v1/apps/{id}/secrets",
            json(json!({ "expires_at": "2099-01-01T00:00:00Z", "expires_in": 60 })),
            400,
        ),
        case(
            "an unknown secret",
            Method::DELETE,
            &format!("{app_path}/secrets/00000000-0000-7000-8000-000000000000"),
            "/admin/v1/apps/{id}/secrets/{secret_id}",
            None,
            404,
        ),
        case(
            "an unknown audit filter",
            Method::GET,
            "/admin/v1/audit?colour=red",
            "/admin/v1/audit",
            None,
            400,
        ),
        case(
            "a limit too high",
            Method::GET,
            "/admin/v1/audit?limit=1001",
            "/admin/v1/audit",
            None,
            400,
        ),
        case(
            "too many days",
            Method::GET,
            &format!("{app_path}/usage?days=367"),
            "/admin/v1/apps/{id}/usage",
            None,
            400,
        ),
        case(
            "an unknown grant",
            Method::GET,
            "/admin/v1/grants/00000000-0000-4000-8000-000000000000/usage",
            "/admin/v1/grants/{id}/usage",
            None,
            404,
        ),
        case(
            "a scope beyond the app's",
            Method::POST,
            "/admin/v1/tokens",
            "/admin/v1/tokens",
            json(json!({ "sub": "taken-client", "sub_kind": "app", "scope": "invoices:write" })),
            400,
        ),
    ];
    for case in cases {
        let mut request = app
            .http
            .request(case.method.clone(), format!("{}{}", app.admin, case.path));
        if let Some(token) = case.token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, body)) = case.body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), case.status, "{}", case.why);
        let method = case.method.as_str().to_ascii_lowercase();
        let body = assert_documented(&doc, case.why, case.template, &method, response).await;
        assert_eq!(body["status"], case.status, "{}", case.why);
    }
}
