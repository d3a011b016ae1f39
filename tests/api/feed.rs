//! What a replica learns from the others, and never unlearns: revocations survive the
//! periodic reload.

use reqwest::Response;
use serde_json::Value;

use crate::{
    helpers::{Spawn, TestApp, TestClient},
    intercept::When,
};

async fn app_token(app: &TestApp, client: &TestClient) -> String {
    let response = app
        .oauth_basic(client, "grant_type=client_credentials")
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn revoke(app: &TestApp, caller: &TestClient, token: &str) -> Response {
    app.http
        .post(format!("{}/oauth2/revoke", app.base))
        .basic_auth(&caller.client_id, Some(&caller.secret))
        .form(&[("token", token), ("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap()
}

async fn is_active(app: &TestApp, caller: &TestClient, token: &str) -> bool {
    let response = app
        .http
        .post(format!("{}/oauth2/introspect", app.base))
        .basic_auth(&caller.client_id, Some(&caller.secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["active"] == true
}

/// The status of a bearer-protected route called with `token`.
async fn bearer_status(app: &TestApp, token: &str) -> u16 {
    app.http
        .post(format!("{}/profile/auth-grants", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn revocation_survives_a_concurrent_reload() {
    let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
    let client = app.default_app().await;
    let token = app_token(&app, &client).await;
    assert!(is_active(&app, &client, &token).await);

    // The periodic reload has read the store, and holds what it read...
    let mut read = hooks.pause("revocations_since", When::After);
    let reload = tokio::spawn({
        let authority = app.authority.clone();
        async move { authority.maintain().await }
    });
    read.reached().await;
    // ...when the token is revoked; only then is the reload's result applied.
    assert_eq!(revoke(&app, &client, &token).await.status(), 200);
    read.release();
    reload.await.unwrap();

    assert!(
        !is_active(&app, &client, &token).await,
        "a reload that read before the revocation brought the token back"
    );
    assert_eq!(bearer_status(&app, &token).await, 401);
}
