//! Writes that cannot race: app secrets and settings. Each test forces the interleaving it
//! is about with the intercepting store's pauses and gatherings.

use std::future::Future;

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_TOKEN, Spawn, TestApp, TestClient},
    intercept::When,
};

/// An admin request that does not borrow the app, so it can run in a task of its own.
fn admin_request(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> impl Future<Output = Response> + Send + use<> {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.admin))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    async move { request.send().await.expect("admin request") }
}

fn rotate_secret(app: &TestApp, id: &str) -> impl Future<Output = Response> + Send + use<> {
    admin_request(
        app,
        Method::POST,
        &format!("/admin/v1/apps/{id}/rotate-secret"),
        Some(json!({ "grace_period_secs": 0 })),
    )
}

fn patch_app(
    app: &TestApp,
    id: &str,
    body: Value,
) -> impl Future<Output = Response> + Send + use<> {
    admin_request(
        app,
        Method::PATCH,
        &format!("/admin/v1/apps/{id}"),
        Some(body),
    )
}

async fn show_app(app: &TestApp, id: &str) -> Value {
    let response = admin_request(app, Method::GET, &format!("/admin/v1/apps/{id}"), None).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Client credentials: the status, and the token's body when issued.
async fn client_token(app: &TestApp, client: &TestClient) -> (u16, Value) {
    let response = app
        .oauth_basic(client, "grant_type=client_credentials")
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn sorted_statuses(responses: [Response; 2]) -> (Vec<u16>, Vec<Value>) {
    let mut out = Vec::new();
    for response in responses {
        let status = response.status().as_u16();
        out.push((status, response.json::<Value>().await.unwrap()));
    }
    out.sort_by_key(|(status, _)| *status);
    out.into_iter().unzip()
}

#[tokio::test]
async fn rotation_never_undoes_a_concurrent_update() {
    let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
    let client = app.default_app().await;

    let mut held = hooks.pause("rotate_application_secret", When::Before);
    let rotation = tokio::spawn(rotate_secret(&app, &client.id));
    // The rotation has read the app and hashed its new secret; it has not written yet.
    held.reached().await;
    let patched = patch_app(
        &app,
        &client.id,
        json!({ "allowed_scopes": "orders:read", "default_scopes": "orders:read" }),
    )
    .await;
    assert_eq!(patched.status(), 200);
    held.release();

    let rotated = rotation.await.unwrap();
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let shown = show_app(&app, &client.id).await;
    assert_eq!(
        (&shown["allowed_scopes"], &shown["default_scopes"]),
        (&json!("orders:read"), &json!("orders:read")),
        "the rotation kept the scopes patched meanwhile: {shown}"
    );
    assert_eq!(rotated["allowed_scopes"], "orders:read", "{rotated}");

    let new = TestClient {
        secret: rotated["client_secret"].as_str().unwrap().to_owned(),
        ..client.clone()
    };
    let (status, token) = client_token(&app, &new).await;
    assert_eq!(status, 200, "the new secret works");
    assert_eq!(token["scope"], "orders:read");
    assert_eq!(client_token(&app, &client).await.0, 401, "no grace asked");
}

#[tokio::test]
async fn concurrent_secret_rotations_have_exactly_one_winner() {
    let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
    let client = app.default_app().await;

    // Both rotations have read the app (and hashed a secret) before either writes.
    hooks.gather("rotate_application_secret", When::Before, 2);
    let (a, b) = tokio::join!(
        rotate_secret(&app, &client.id),
        rotate_secret(&app, &client.id)
    );
    let (statuses, bodies) = sorted_statuses([a, b]).await;
    assert_eq!(statuses, vec![200, 409], "{bodies:?}");
    assert!(
        bodies[1].get("client_secret").is_none(),
        "the loser hands out no secret: {}",
        bodies[1]
    );

    let winner = TestClient {
        secret: bodies[0]["client_secret"].as_str().unwrap().to_owned(),
        ..client.clone()
    };
    assert_eq!(
        client_token(&app, &winner).await.0,
        200,
        "the winner's works"
    );
    assert_eq!(client_token(&app, &client).await.0, 401, "no grace asked");

    // A retry after the conflict rotates from the winner's secret.
    let retried = rotate_secret(&app, &client.id).await;
    assert_eq!(retried.status(), 200);
}

#[tokio::test]
async fn concurrent_app_updates_never_undo_each_other() {
    let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
    let client = app.default_app().await;

    // Both updates have read the app before either writes.
    hooks.gather("update_application_settings", When::Before, 2);
    let (renamed, rescoped) = tokio::join!(
        patch_app(&app, &client.id, json!({ "name": "renamed" })),
        patch_app(
            &app,
            &client.id,
            json!({ "allowed_scopes": "orders:read orders:write", "default_scopes": "orders:read" }),
        )
    );
    assert_eq!(
        (renamed.status().as_u16(), rescoped.status().as_u16()),
        (200, 200)
    );
    let shown = show_app(&app, &client.id).await;
    assert_eq!(shown["name"], "renamed", "{shown}");
    assert_eq!(
        shown["allowed_scopes"], "orders:read orders:write",
        "{shown}"
    );
    assert_eq!(shown["default_scopes"], "orders:read", "{shown}");
    assert_eq!(
        client_token(&app, &client).await.0,
        200,
        "updates never touch the secret"
    );
}

#[tokio::test]
async fn concurrent_app_updates_keep_default_scopes_within_allowed_scopes() {
    let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
    let client = app
        .create_app(json!({
            "name": "scoped",
            "allowed_scopes": "orders:read orders:write",
            "default_scopes": "orders:read",
        }))
        .await;

    // Each change is valid against what both read; together they are not.
    hooks.gather("update_application_settings", When::Before, 2);
    let (narrowed, widened) = tokio::join!(
        patch_app(&app, &client.id, json!({ "allowed_scopes": "orders:read" })),
        patch_app(
            &app,
            &client.id,
            json!({ "default_scopes": "orders:read orders:write" }),
        )
    );
    let (statuses, bodies) = sorted_statuses([narrowed, widened]).await;
    assert_eq!(
        statuses,
        vec![200, 400],
        "the later one is judged against the earlier: {bodies:?}"
    );
    let shown = show_app(&app, &client.id).await;
    let settings = (
        shown["allowed_scopes"].as_str().unwrap(),
        shown["default_scopes"].as_str().unwrap(),
    );
    assert!(
        settings == ("orders:read", "orders:read")
            || settings == ("orders:read orders:write", "orders:read orders:write"),
        "the defaults stay within the allowed scopes: {settings:?}"
    );
}
