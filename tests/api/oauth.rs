use serde_json::{Value, json};

use crate::helpers::{TestApp, verify_token};

#[tokio::test]
async fn client_secret_basic_issues_an_rfc6749_response() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let response = app
        .oauth_basic(&client, "grant_type=client_credentials&scope=all%3Aread")
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600, "a number here");
    assert_eq!(body["scope"], "all:read", "a string here");
    let (_, claims) = verify_token(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
}

#[tokio::test]
async fn client_secret_post_issues_a_token() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let response = app
        .post_raw(
            "/oauth2/token",
            Some("application/x-www-form-urlencoded"),
            client.form(""),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["scope"], "all:read all:write");
}

#[tokio::test]
async fn both_authentication_methods_at_once_is_invalid_request() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let response = app.oauth_basic(&client, &client.form("")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn failed_basic_auth_is_401_with_a_basic_challenge() {
    let app = TestApp::spawn().await;
    let mut client = app.default_app().await;
    client.secret = "pcs_wrong_secret_wrong_secret".into();
    let response = app
        .oauth_basic(&client, "grant_type=client_credentials")
        .await;
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Basic"), "{challenge}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn oauth_errors_follow_rfc6749_section_5_2() {
    let app = TestApp::spawn().await;
    let client = app
        .create_app(json!({ "name": "narrow", "allowed_scopes": "orders:read" }))
        .await;
    let cases = [
        ("grant_type=password", "unsupported_grant_type"),
        ("scope=orders%3Aread", "invalid_request"),
        (
            "grant_type=client_credentials&scope=orders%3Awrite",
            "invalid_scope",
        ),
        ("grant_type=client_credentials&scope=bogus", "invalid_scope"),
        (
            "grant_type=client_credentials&grant_type=client_credentials",
            "invalid_request",
        ),
    ];
    for (form, error) in cases {
        let response = app.oauth_basic(&client, form).await;
        assert_eq!(response.status(), 400, "{form}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{form}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{form}");
        assert!(body["error_description"].is_string(), "{form}");
    }
}

#[tokio::test]
async fn an_unsupported_grant_type_names_every_supported_one() {
    let app = TestApp::spawn().await;
    let response = app
        .post_raw(
            "/oauth2/token",
            Some("application/x-www-form-urlencoded"),
            "grant_type=password",
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type");
    let description = body["error_description"].as_str().unwrap();
    for grant in [
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:token-exchange",
    ] {
        assert!(description.contains(grant), "{description:?} names {grant}");
    }
}

#[tokio::test]
async fn json_bodies_are_refused_at_the_oauth_endpoint() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let response = app
        .post_raw(
            "/oauth2/token",
            Some("application/json"),
            client.json(None).to_string(),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn metadata_advertises_only_what_exists() {
    let app = TestApp::spawn().await;
    let metadata: Value = app
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], crate::helpers::ISSUER);
    assert_eq!(
        metadata["token_endpoint"],
        format!("{}/oauth2/token", crate::helpers::ISSUER)
    );
    assert_eq!(
        metadata["grant_types_supported"],
        json!([
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ])
    );
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(
        metadata["introspection_endpoint"],
        format!("{}/oauth2/introspect", crate::helpers::ISSUER)
    );
    assert_eq!(
        metadata["revocation_endpoint"],
        format!("{}/oauth2/revoke", crate::helpers::ISSUER)
    );
    assert!(
        metadata.get("authorization_endpoint").is_none(),
        "no authorization endpoint exists"
    );
}
