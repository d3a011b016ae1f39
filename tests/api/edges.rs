use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_TOKEN, Spawn, TestApp},
    intercept::{Health, Hooks},
};

#[tokio::test]
async fn oversized_bodies_are_413_in_each_dialects_envelope() {
    let app = TestApp::spawn().await;
    let big = format!(
        "grant_type=client_credentials&pad={}",
        "x".repeat(70 * 1024)
    );
    let response = app.post_raw("/api/v1/auth/tokens", None, big.clone()).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["is_error"], true);
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");

    let response = app
        .post_raw(
            "/oauth2/token",
            Some("application/x-www-form-urlencoded"),
            big,
        )
        .await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn invalid_utf8_and_nul_bytes_are_4xx_never_5xx() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let bodies: [(Option<&str>, Vec<u8>); 4] = [
        (Some("application/json"), b"{\"client_id\":\"\xff\xfe\"}".to_vec()),
        (None, b"client_id=\xff&client_secret=x&grant_type=client_credentials".to_vec()),
        (
            None,
            format!("{}%00", client.form("")).into_bytes(),
        ),
        (
            Some("application/json"),
            json!({"client_id": "a\u{0}b", "client_secret": "x", "grant_type": "client_credentials"})
                .to_string()
                .into_bytes(),
        ),
    ];
    for path in ["/api/v1/auth/tokens", "/oauth2/token"] {
        for (content_type, body) in &bodies {
            let status = app
                .post_raw(path, *content_type, body.clone())
                .await
                .status();
            assert!(
                status.is_client_error(),
                "{path} {content_type:?}: {status}"
            );
        }
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_echoes_the_callers() {
    let app = TestApp::spawn().await;
    for path in ["/health/live", "/no/such/route", "/.well-known/jwks.json"] {
        let response = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("x-request-id"), "{path}");
    }
    let response = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let admin = app
        .http
        .get(format!("{}/admin/v1/apps", app.admin))
        .send()
        .await
        .unwrap();
    assert!(admin.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(format!("{}/nope", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

async fn flaky_app(overrides: &[(&str, &str)]) -> (TestApp, Arc<Hooks>) {
    TestApp::spawn_intercepted(Spawn {
        overrides,
        ..Spawn::default()
    })
    .await
}

#[tokio::test]
async fn a_store_outage_gives_fast_503s_and_recovers_without_restart() {
    let (app, mode) = flaky_app(&[]).await;
    let warm = app.default_app().await;
    let cold = app.default_app().await;
    assert_eq!(app.endorsed_json(warm.json(None)).await.status(), 200);

    mode.set_health(Health::Down);
    let ready = app
        .http
        .get(format!("{}/health/ready", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let live = app
        .http
        .get(format!("{}/health/live", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200, "liveness does not depend on the store");

    let response = app.endorsed_json(cold.json(None)).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(
        !body.to_string().contains("PoolTimedOut"),
        "no internals leak"
    );

    let response = app
        .oauth_basic(&cold, "grant_type=client_credentials")
        .await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");

    let admin = app
        .http
        .get(format!("{}/admin/v1/apps", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 503);
    assert_eq!(admin.headers()["content-type"], "application/problem+json");

    assert_eq!(
        app.endorsed_json(warm.json(None)).await.status(),
        200,
        "a verified credential keeps working from the cache"
    );

    mode.set_health(Health::Healthy);
    assert_eq!(app.endorsed_json(cold.json(None)).await.status(), 200);
    let ready = app
        .http
        .get(format!("{}/health/ready", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn a_hanging_store_hits_the_request_timeout() {
    let (app, mode) = flaky_app(&[
        ("PORTCULLIS__SERVER__REQUEST_TIMEOUT_MS", "1500"),
        ("PORTCULLIS__DATABASE__ACQUIRE_TIMEOUT_MS", "500"),
    ])
    .await;
    let client = app.default_app().await;
    mode.set_health(Health::Hanging);
    let started = std::time::Instant::now();
    let response = app.endorsed_json(client.json(None)).await;
    assert_eq!(response.status(), 408);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
}

#[tokio::test]
async fn shutdown_drains_and_exits_cleanly() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    assert_eq!(app.endorsed_json(client.json(None)).await.status(), 200);
    app.shutdown().await.expect("a clean exit");
}
