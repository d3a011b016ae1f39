use serde_json::{Value, json};

use crate::helpers::{TestApp, verify_token};

#[tokio::test]
async fn json_body_with_scope_array_issues_a_token() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let response = app
        .endorsed_json(client.json(Some(json!(["all:read"]))))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["is_error"], false);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], "1209600", "expires_in is a string");
    assert_eq!(body["scope"], json!(["all:read"]));
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys.len(),
        5,
        "exactly is_error, access_token, token_type, expires_in, scope: {keys:?}"
    );
    let (_, claims) = verify_token(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["scope"], "all:read");
}

#[tokio::test]
async fn json_scope_string_is_space_delimited() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let body: Value = app
        .endorsed_json(client.json(Some(json!("all:write all:read"))))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["scope"], json!(["all:read", "all:write"]));
}

#[tokio::test]
async fn omitted_scope_gets_the_apps_default_scopes() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let body: Value = app
        .endorsed_json(client.json(None))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["scope"], json!(["all:read", "all:write"]));
}

#[tokio::test]
async fn form_body_and_body_without_content_type_are_both_forms() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    for content_type in [Some("application/x-www-form-urlencoded"), None] {
        let response = app
            .post_raw(
                "/api/v1/auth/tokens",
                content_type,
                client.form("scope=all%3Aread"),
            )
            .await;
        assert_eq!(response.status(), 200, "content type {content_type:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["scope"], json!(["all:read"]));
    }
}

#[tokio::test]
async fn other_content_types_are_415_in_the_endorsed_envelope() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let response = app
        .post_raw("/api/v1/auth/tokens", Some("text/plain"), client.form(""))
        .await;
    assert_eq!(response.status(), 415);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["is_error"], true);
    assert_eq!(body["error"]["code"], "UNSUPPORTED_MEDIA_TYPE");
}

#[tokio::test]
async fn a_scope_beyond_the_allowed_ones_is_refused_not_reduced() {
    let app = TestApp::spawn().await;
    let client = app
        .create_app(json!({ "name": "narrow", "allowed_scopes": "orders:read" }))
        .await;
    let response = app
        .endorsed_json(client.json(Some(json!(["orders:read", "orders:write"]))))
        .await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "FORBIDDEN");
    let message = body["error"]["issues"][0]["message"].as_str().unwrap();
    assert!(message.contains("orders:write"), "{message}");
}

#[tokio::test]
async fn bad_requests_get_the_endorsed_envelope() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let cases = [
        (
            Some("application/json"),
            "{not json".to_owned(),
            "malformed JSON",
        ),
        (
            Some("application/json"),
            json!({"client_id": client.client_id, "client_secret": client.secret}).to_string(),
            "missing grant_type",
        ),
        (
            Some("application/json"),
            json!({"client_id": client.client_id, "client_secret": client.secret,
                   "grant_type": "password"})
            .to_string(),
            "unsupported grant_type",
        ),
        (
            Some("application/json"),
            json!({"grant_type": "client_credentials"}).to_string(),
            "missing credentials",
        ),
        (
            Some("application/json"),
            client.json(Some(json!(["not-a-scope"]))).to_string(),
            "malformed scope",
        ),
        (
            Some("application/json"),
            client.json(Some(json!({"an": "object"}))).to_string(),
            "scope of the wrong type",
        ),
        (
            None,
            format!("{}&client_id=again", client.form("")),
            "repeated form parameter",
        ),
    ];
    for (content_type, body, why) in cases {
        let response = app
            .post_raw("/api/v1/auth/tokens", content_type, body)
            .await;
        assert_eq!(response.status(), 400, "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["is_error"], true, "{why}");
        assert_eq!(body["error"]["code"], "BAD_REQUEST", "{why}");
        assert!(
            body["error"]["issues"][0]["message"].is_string(),
            "{why}: {body}"
        );
    }
}
