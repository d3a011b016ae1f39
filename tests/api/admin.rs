use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp};

#[tokio::test]
async fn the_admin_api_requires_the_admin_token() {
    let app = TestApp::spawn().await;
    for token in [None, Some("wrong-token"), Some("")] {
        let mut request = app.http.get(format!("{}/admin/v1/apps", app.admin));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{token:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert!(response.headers().contains_key("www-authenticate"));
    }
}

#[tokio::test]
async fn applications_can_be_created_listed_shown_updated_disabled_and_deleted() {
    let app = TestApp::spawn().await;
    let response = app
        .admin_post(
            "/admin/v1/apps",
            json!({ "name": "billing", "allowed_scopes": "invoices:read invoices:write",
                    "default_scopes": "invoices:read", "sandbox": true }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    assert!(secret.starts_with("pcs_") && secret.len() >= 47, "{secret}");
    assert!(created["client_id"].as_str().unwrap().starts_with("pcc_"));
    assert_eq!(created["sandbox"], true);
    assert_eq!(created["default_scopes"], "invoices:read");
    let id = created["id"].as_str().unwrap();
    let url = format!("{}/admin/v1/apps/{id}", app.admin);

    let listed: Value = app
        .http
        .get(format!("{}/admin/v1/apps", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0].get("client_secret").is_none(), "shown once only");

    let shown: Value = app
        .http
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["name"], "billing");
    assert!(shown["created_at"].as_str().unwrap().ends_with('Z'));

    let updated = app
        .http
        .patch(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": "billing-v2", "default_scopes": "invoices:write" }))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["name"], "billing-v2");
    assert_eq!(updated["default_scopes"], "invoices:write");

    let disabled: Value = app
        .admin_post(&format!("/admin/v1/apps/{id}/disable"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(disabled["disabled"], true);
    let enabled: Value = app
        .admin_post(&format!("/admin/v1/apps/{id}/enable"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(enabled["disabled"], false);

    let deleted = app
        .http
        .delete(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app
        .http
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn a_deleted_app_can_no_longer_get_tokens() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    assert_eq!(app.endorsed_json(client.json(None)).await.status(), 200);
    let url = format!("{}/admin/v1/apps/{}", app.admin, client.id);
    app.http
        .delete(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(app.endorsed_json(client.json(None)).await.status(), 401);
}

#[tokio::test]
async fn narrowing_allowed_scopes_takes_effect_at_once() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    assert_eq!(
        app.endorsed_json(client.json(Some(json!(["all:write"]))))
            .await
            .status(),
        200
    );
    let response = app
        .http
        .patch(format!("{}/admin/v1/apps/{}", app.admin, client.id))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "allowed_scopes": "all:read", "default_scopes": "all:read" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.endorsed_json(client.json(Some(json!(["all:write"]))))
            .await
            .status(),
        403
    );
}

#[tokio::test]
async fn invalid_admin_input_is_a_problem_with_a_4xx_status() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({}), 422, "missing name"),
        (json!({ "name": "" }), 400, "empty name"),
        (
            json!({ "name": "x", "allowed_scopes": "nope" }),
            400,
            "malformed scope",
        ),
        (
            json!({ "name": "x", "allowed_scopes": "a:read", "default_scopes": "a:write" }),
            400,
            "defaults beyond allowed",
        ),
        (
            json!({ "name": "x", "client_id": "only-the-id" }),
            400,
            "half an import",
        ),
        (
            json!({ "name": "x", "client_id": "id", "client_secret": "short" }),
            400,
            "imported secret too short",
        ),
        (
            json!({ "name": "x", "surprise": true }),
            422,
            "unknown field",
        ),
    ];
    for (body, status, why) in cases {
        let response = app.admin_post("/admin/v1/apps", body).await;
        assert_eq!(response.status(), status, "{why}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{why}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], status, "{why}");
        assert!(problem["detail"].is_string(), "{why}");
    }
    let response = app
        .http
        .post(format!("{}/admin/v1/apps", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{broken")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    let missing = app
        .http
        .get(format!("{}/admin/v1/apps/not-a-uuid", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
