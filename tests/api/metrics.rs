//! `GET /metrics` on the admin listener: Prometheus text with the counters and gauges an
//! operator needs. The recorder is process-wide, so each check compares a before and an
//! after around its own requests.

use reqwest::StatusCode;

use crate::helpers::{ADMIN_TOKEN, Spawn, TestApp, TestClient};

pub async fn scrape(app: &TestApp) -> String {
    let response = app
        .http
        .get(format!("{}/metrics", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    response.text().await.unwrap()
}

/// The value of the sample whose name and labels contain every one of `parts`, or 0.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && labels.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_need_the_admin_token() {
    let app = TestApp::spawn().await;
    let url = format!("{}/metrics", app.admin);
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 401);
    let wrong = app
        .http
        .get(&url)
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(scrape(&app).await.contains("# TYPE portcullis_"));
}

#[tokio::test]
async fn metrics_count_requests_tokens_failures_and_limits_and_show_queue_and_pool() {
    let app = TestApp::spawn_with(Spawn {
        overrides: &[(
            "PORTCULLIS__RATE_LIMIT__REQUESTS_PER_CLIENT_PER_SECOND",
            "2",
        )],
        ..Spawn::default()
    })
    .await;
    let client = app.default_app().await;
    let before = scrape(&app).await;

    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = app
            .oauth_basic(&client, "grant_type=client_credentials")
            .await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429], "this test's own limiter fired");
    let wrong = TestClient {
        secret: "pcs_not-the-right-secret-at-all".into(),
        ..client.clone()
    };
    assert_eq!(
        app.oauth_basic(&wrong, "grant_type=client_credentials")
            .await
            .status(),
        401
    );
    let bad_bearer = app
        .http
        .get(format!("{}/auth-grant/{}", app.base, uuid::Uuid::new_v4()))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_bearer.status(), 401);
    let missing = app
        .http
        .get(format!("{}/no/such/route", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let after = scrape(&app).await;
    let delta =
        |name: &str, labels: &[&str]| sample(&after, name, labels) - sample(&before, name, labels);

    let token_route = ["route=\"/oauth2/token\"", "method=\"POST\""];
    assert!(
        delta(
            "portcullis_http_requests_total",
            &[&token_route[..], &["status=\"200\""]].concat()
        ) >= 2.0
    );
    assert!(
        delta(
            "portcullis_http_requests_total",
            &[&token_route[..], &["status=\"429\""]].concat()
        ) >= 1.0
    );
    assert!(
        delta(
            "portcullis_http_requests_total",
            &[&token_route[..], &["status=\"401\""]].concat()
        ) >= 1.0
    );
    assert!(
        delta(
            "portcullis_http_requests_total",
            &["route=\"unmatched\"", "status=\"404\""]
        ) >= 1.0,
        "unknown paths share one label instead of one per path"
    );
    assert!(
        !after.contains("no/such/route"),
        "raw paths never become labels"
    );
    assert!(
        delta(
            "portcullis_http_request_duration_seconds_count",
            &token_route
        ) >= 4.0,
        "latency is a histogram per route"
    );
    assert!(after.contains("portcullis_http_request_duration_seconds_bucket{"));
    assert!(
        delta(
            "portcullis_tokens_issued_total",
            &["grant_type=\"client_credentials\""]
        ) >= 2.0
    );
    assert!(delta("portcullis_auth_failures_total", &["kind=\"client\""]) >= 1.0);
    assert!(delta("portcullis_auth_failures_total", &["kind=\"bearer\""]) >= 1.0);
    assert!(
        delta(
            "portcullis_rate_limited_total",
            &["limit=\"client_requests\""]
        ) >= 1.0
    );
    assert!(after.contains("portcullis_argon2_queue_depth "));
    assert!(sample(&after, "portcullis_db_pool_connections", &["state=\"max\""]) >= 1.0);
    assert!(after.contains("portcullis_db_pool_connections{state=\"in_use\"}"));

    // Admin API calls are counted too, under their templates (never with ids).
    let app_id = &client.id;
    let shown = app
        .http
        .get(format!("{}/admin/v1/apps/{app_id}", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    let again = scrape(&app).await;
    assert!(again.contains("route=\"/admin/v1/apps/{id}\""));
    assert!(!again.contains(app_id.as_str()));
}
