use std::{sync::Arc, time::Duration};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

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

/// Sends a request's head announcing `Content-Length: 10 GB`, and never a byte of its body.
/// Returns the status, the headers and the body of the answer, which must come at once.
async fn announce_a_huge_body(base: &str, head: &str) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!("{head}\r\nHost: portcullis.test\r\nContent-Length: 10000000000\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = async {
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().unwrap())
                    })
                    .expect("a content-length");
                if body.len() >= length {
                    let status = head[9..12].parse().unwrap();
                    return (status, head.to_owned(), serde_json::from_str(body).unwrap());
                }
            }
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection closed without an answer");
            received.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(2), answer)
        .await
        .unwrap_or_else(|_| panic!("{head}: no answer within 2 s"))
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_413_at_once_in_each_dialects_envelope() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let owner = app.owner_token("huge-body-owner", "authGrants:write").await;
    let json = "Content-Type: application/json";
    let form = "Content-Type: application/x-www-form-urlencoded";
    let cases = [
        (
            &app.base,
            format!("POST /api/v1/auth/tokens HTTP/1.1\r\n{json}"),
            "/error/code",
            "PAYLOAD_TOO_LARGE",
        ),
        (
            &app.base,
            format!("POST /oauth2/token HTTP/1.1\r\n{form}"),
            "/error",
            "invalid_request",
        ),
        (
            &app.base,
            format!("POST /oauth2/introspect HTTP/1.1\r\n{form}"),
            "/error",
            "invalid_request",
        ),
        (
            &app.base,
            format!("POST /access/v1/enrollment/authorize HTTP/1.1\r\n{json}"),
            "/code",
            "payload_too_large",
        ),
        (
            &app.base,
            format!("POST /auth-grant/create HTTP/1.1\r\n{json}\r\nAuthorization: Bearer {owner}"),
            "/code",
            "PAYLOAD_TOO_LARGE",
        ),
        (
            &app.admin,
            format!(
                "POST /admin/v1/apps HTTP/1.1\r\n{json}\r\nAuthorization: Bearer {ADMIN_TOKEN}"
            ),
            "/status",
            "413",
        ),
        (
            &app.admin,
            format!(
                "POST /admin/v1/apps/{}/rotate-secret HTTP/1.1\r\n{json}\r\nAuthorization: Bearer {ADMIN_TOKEN}",
                client.id
            ),
            "/status",
            "413",
        ),
    ];
    for (base, head, pointer, code) in cases {
        let (status, headers, body) = announce_a_huge_body(base, &head).await;
        assert_eq!(status, 413, "{head}");
        let found = match &body.pointer(pointer) {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            other => panic!("{head}: {pointer} is {other:?} in {body}"),
        };
        assert_eq!(found, code, "{head}: {body}");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("content-type: application/"),
            "{head}: {headers}"
        );
    }
}

#[tokio::test]
async fn every_bearer_route_challenges_a_missing_token_without_an_error_code() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    // Enrolling checks the application before the owner's token.
    let body = json!({ "client_id": client.client_id, "client_secret": client.secret,
                       "owner_id": "someone" });
    let id = "00000000-0000-4000-8000-000000000000";
    let public = [
        (Method::GET, "/access/v1/enrollment".to_owned()),
        (Method::PATCH, "/access/v1/enrollment".to_owned()),
        (Method::POST, "/access/v1/enrollment".to_owned()),
        (Method::PUT, format!("/access/v1/enrollment/{id}")),
        (Method::POST, "/auth-grant/create".to_owned()),
        (Method::GET, format!("/auth-grant/{id}")),
        (Method::DELETE, format!("/auth-grant/{id}")),
        (Method::POST, format!("/auth-grant/update/{id}")),
        (Method::POST, format!("/auth-grant/{id}/revoke")),
        (Method::POST, format!("/auth-grant/{id}/api-token")),
        (Method::POST, "/profile/auth-grants".to_owned()),
    ]
    .map(|(method, path)| (method, format!("{}{path}", app.base), ""));
    let admin = [(
        Method::GET,
        format!("{}/admin/v1/apps", app.admin),
        "realm=\"portcullis-admin\"",
    )];
    for (method, url, realm) in public.into_iter().chain(admin) {
        let (missing, invalid) = match realm {
            "" => (
                "Bearer".to_owned(),
                "Bearer error=\"invalid_token\"".to_owned(),
            ),
            realm => (
                format!("Bearer {realm}"),
                format!("Bearer {realm}, error=\"invalid_token\""),
            ),
        };
        for (token, challenge) in [(None, missing), (Some("not-a-token"), invalid)] {
            let mut request = app.http.request(method.clone(), &url).json(&body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {url} with {token:?}");
            assert_eq!(
                response.headers()["www-authenticate"],
                challenge.as_str(),
                "{method} {url} with {token:?}"
            );
        }
    }
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
