//! The audit trail: credential events are kept in the store (written in batches, flushed
//! here through the core's hook), listed and filtered by the admin API, paged without gaps
//! or repeats, purged after the retention; tokens issued are counted per credential per day.

use std::collections::HashSet;

use chrono::{TimeDelta, Utc};
use portcullis::authority::clock::{Clock, FixedClock};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Spawn, TestApp, TestClient, admin, captured_logs};

/// `GET /admin/v1/audit?{query}` after writing what is buffered.
async fn audit(app: &TestApp, query: &str) -> Value {
    app.authority
        .flush_audit()
        .await
        .expect("the trail is written");
    let response = admin(app, Method::GET, &format!("/admin/v1/audit?{query}"), None).await;
    assert_eq!(
        response.status(),
        200,
        "listing the audit trail with {query:?}"
    );
    response.json().await.unwrap()
}

fn events(page: &Value) -> &Vec<Value> {
    page["events"].as_array().expect("an events array")
}

fn names(page: &Value) -> Vec<&str> {
    events(page)
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

/// A token for `client`; returns the token.
async fn issue(app: &TestApp, client: &TestClient) -> String {
    let response = app
        .oauth_basic(client, "grant_type=client_credentials")
        .await;
    assert_eq!(response.status(), 200, "issuing a token");
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

fn jti_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

fn secret_id_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["secret_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn issued_failed_rotated_and_revoked_credentials_are_in_the_trail() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let token = issue(&app, &client).await;
    let jti = jti_of(&token);
    let secret_id = secret_id_of(&token);
    let wrong = TestClient {
        secret: "pcs_not-the-secret".to_owned(),
        ..client.clone()
    };
    let failed = app
        .oauth_basic(&wrong, "grant_type=client_credentials")
        .await;
    assert_eq!(failed.status(), 401);
    assert_eq!(app.revoke(&client, &token).await.status(), 200);
    let rotated = admin(
        &app,
        Method::POST,
        &format!("/admin/v1/apps/{}/rotate-secret", client.id),
        None,
    )
    .await;
    assert_eq!(rotated.status(), 200);
    let new_secret: Value = rotated.json().await.unwrap();
    let new_secret = new_secret["client_secret"].as_str().unwrap().to_owned();

    let page = audit(&app, &format!("app_id={}", client.id)).await;
    assert_eq!(
        names(&page),
        [
            "app.secret_rotated",
            "token.revoked",
            "auth.failed",
            "token.issued",
            "app.created"
        ],
        "newest first: {page:#}"
    );
    let all = events(&page);
    let issued = &all[3];
    assert_eq!(issued["app_id"], client.id.as_str());
    assert_eq!(issued["secret_id"], secret_id.as_str());
    assert_eq!(issued["client_id"], client.client_id.as_str());
    assert_eq!(issued["sub_kind"], "app");
    assert_eq!(issued["subject"], client.client_id.as_str());
    assert_eq!(
        issued["jti"],
        Value::Null,
        "issuance is summarised by default: a row names no single token"
    );
    assert_eq!(issued["detail"]["count"], 1);
    assert_eq!(issued["detail"]["last_at"], issued["at"]);
    assert_eq!(issued["source_ip"], "127.0.0.1");
    assert_eq!(issued["detail"]["grant_type"], "client_credentials");
    assert_eq!(issued["detail"]["scope"], "all:read all:write");
    assert!(issued["at"].as_str().unwrap().ends_with('Z'));

    let failed = &all[2];
    assert_eq!(failed["client_id"], client.client_id.as_str());
    assert_eq!(failed["reason"], "wrong or expired secret");
    assert_eq!(failed["source_ip"], "127.0.0.1");
    assert_eq!(failed["secret_id"], Value::Null, "no secret matched");

    let revoked = &all[1];
    assert_eq!(revoked["jti"], jti.as_str());
    assert_eq!(revoked["subject"], client.client_id.as_str());

    let rotation = &all[0];
    assert_ne!(rotation["secret_id"], secret_id.as_str(), "the new secret");
    assert!(rotation["secret_id"].is_string());

    let text = page.to_string();
    for secret in [&client.secret, &new_secret, &token] {
        assert!(
            !text.contains(secret.as_str()),
            "no secret or token in the trail"
        );
    }
    assert!(!text.contains("pcs_not-the-secret"));
}

#[tokio::test]
async fn every_filter_narrows_the_trail() {
    let app = TestApp::spawn().await;
    let one = app.default_app().await;
    let two = app.default_app().await;
    let first = issue(&app, &one).await;
    issue(&app, &two).await;
    let owner = app
        .owner_token("owner-7", "authGrants:read authGrants:write")
        .await;
    let response = app
        .http
        .post(format!("{}/auth-grant/create", app.base))
        .bearer_auth(&owner)
        .json(&json!({ "name": "ci", "scope": "authGrants:read" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let grant_id: String = response.json().await.unwrap();
    app.grant_api_token(&owner, &grant_id).await;

    let by_app = audit(&app, &format!("app_id={}", one.id)).await;
    assert_eq!(names(&by_app), ["token.issued", "app.created"]);
    let by_secret = audit(&app, &format!("secret_id={}", secret_id_of(&first))).await;
    assert_eq!(names(&by_secret), ["token.issued"]);
    assert_eq!(events(&by_secret)[0]["app_id"], one.id.as_str());
    let by_grant = audit(&app, &format!("grant_id={grant_id}")).await;
    assert_eq!(names(&by_grant), ["grant.api_token", "grant.created"]);
    let by_subject = audit(&app, "subject=owner-7").await;
    assert_eq!(
        names(&by_subject),
        ["grant.api_token", "grant.created", "token.minted"]
    );
    let by_event = audit(&app, "event=token.issued").await;
    let clients: HashSet<&str> = events(&by_event)
        .iter()
        .map(|e| e["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        clients,
        HashSet::from([one.client_id.as_str(), two.client_id.as_str()])
    );
    let both = audit(&app, &format!("event=app.created&app_id={}", two.id)).await;
    assert_eq!(events(&both).len(), 1);
    assert_eq!(events(&both)[0]["app_id"], two.id.as_str());

    let future = (Utc::now() + TimeDelta::hours(1)).to_rfc3339();
    let past = (Utc::now() - TimeDelta::hours(1)).to_rfc3339();
    let since_future = audit(&app, &format!("since={}", urlencode(&future))).await;
    assert!(
        events(&since_future).is_empty(),
        "nothing happened after now"
    );
    let until_past = audit(&app, &format!("until={}", urlencode(&past))).await;
    assert!(
        events(&until_past).is_empty(),
        "nothing happened before the test"
    );
    let window = audit(
        &app,
        &format!("since={}&until={}", urlencode(&past), urlencode(&future)),
    )
    .await;
    let everything = audit(&app, "").await;
    assert_eq!(events(&window).len(), events(&everything).len());
    assert!(events(&window).len() >= 8, "{everything:#}");
}

/// Today at 12:00 UTC: tests that move the clock by days and count per UTC day would
/// otherwise cross midnight by a minute when run just before it.
fn noon_today() -> chrono::DateTime<Utc> {
    use chrono::DurationRound;
    Utc::now().duration_trunc(TimeDelta::days(1)).unwrap() + TimeDelta::hours(12)
}

fn urlencode(raw: &str) -> String {
    raw.replace('+', "%2B").replace(':', "%3A")
}

/// A server keeping one audit row per token issued.
async fn spawn_with_a_row_per_token() -> TestApp {
    TestApp::spawn_with(Spawn {
        overrides: &[("PORTCULLIS__AUDIT__ISSUED_TOKENS", "each")],
        ..Spawn::default()
    })
    .await
}

#[tokio::test]
async fn tokens_issued_from_one_address_within_a_minute_are_one_row() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    for _ in 0..5 {
        issue(&app, &client).await;
    }
    let page = audit(&app, &format!("event=token.issued&app_id={}", client.id)).await;
    assert_eq!(events(&page).len(), 1, "{page:#}");
    let row = &events(&page)[0];
    assert_eq!(row["detail"]["count"], 5);
    assert_eq!(row["jti"], Value::Null);
    assert!(row["at"].as_str().unwrap() <= row["detail"]["last_at"].as_str().unwrap());
    let path = format!("/admin/v1/apps/{}/usage?days=1", client.id);
    assert_eq!(usage(&app, &path).await, [5], "the daily count agrees");
}

#[tokio::test]
async fn a_row_per_token_names_each_jti_when_configured() {
    let app = spawn_with_a_row_per_token().await;
    let client = app.default_app().await;
    let mut jtis = HashSet::new();
    for _ in 0..3 {
        jtis.insert(jti_of(&issue(&app, &client).await));
    }
    let page = audit(&app, &format!("event=token.issued&app_id={}", client.id)).await;
    let kept: HashSet<String> = events(&page)
        .iter()
        .map(|e| e["jti"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kept, jtis);
    assert!(
        events(&page)
            .iter()
            .all(|e| e["detail"].get("count").is_none())
    );
}

#[tokio::test]
async fn pages_return_every_event_exactly_once() {
    let app = spawn_with_a_row_per_token().await;
    let client = app.default_app().await;
    for _ in 0..23 {
        issue(&app, &client).await;
    }
    let everything = audit(&app, "limit=1000").await;
    let all: Vec<&str> = events(&everything)
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(all.len() >= 24, "23 tokens and the app: {}", all.len());
    assert_eq!(
        everything["next_cursor"],
        Value::Null,
        "one page holds them all"
    );

    let mut seen = Vec::new();
    let mut query = "limit=5".to_owned();
    let mut pages = 0;
    loop {
        let page = audit(&app, &query).await;
        pages += 1;
        assert!(events(&page).len() <= 5);
        seen.extend(
            events(&page)
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=5&cursor={cursor}"),
            None => break,
        }
        assert!(pages < 20, "pagination ends");
    }
    assert_eq!(
        seen, all,
        "same events, same order, none twice, none missed"
    );
}

#[tokio::test]
async fn events_past_the_retention_are_purged() {
    let clock = FixedClock::new(noon_today());
    let app = TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        overrides: &[("PORTCULLIS__AUDIT__RETENTION_DAYS", "2")],
        ..Spawn::default()
    })
    .await;
    let client = app.default_app().await;
    issue(&app, &client).await;
    app.authority.flush_audit().await.unwrap();
    clock.advance(TimeDelta::days(1));
    issue(&app, &client).await;
    app.authority.flush_audit().await.unwrap();
    assert_eq!(
        app.authority.purge_audit().await.unwrap(),
        0,
        "nothing is old yet"
    );

    clock.advance(TimeDelta::days(1) + TimeDelta::minutes(1));
    let before = events(&audit(&app, "").await).len();
    let purged = app.authority.purge_audit().await.unwrap();
    let after = events(&audit(&app, "").await).len();
    assert!(
        purged >= 2,
        "the app's creation and the first token are two days old"
    );
    assert_eq!(after as u64, before as u64 - purged);
    assert_eq!(app.authority.purge_audit().await.unwrap(), 0, "idempotent");
    let page = audit(&app, &format!("app_id={}", client.id)).await;
    assert_eq!(names(&page), ["token.issued"], "the younger event stays");
    // A day's count goes once the whole day is past the retention.
    clock.advance(TimeDelta::days(1));
    app.authority.purge_audit().await.unwrap();
    let path = format!("/admin/v1/apps/{}/usage?days=4", client.id);
    assert_eq!(usage(&app, &path).await, [0, 1, 0, 0]);
}

#[tokio::test]
async fn zero_retention_keeps_events_forever() {
    let clock = FixedClock::new(noon_today());
    let app = TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        overrides: &[("PORTCULLIS__AUDIT__RETENTION_DAYS", "0")],
        ..Spawn::default()
    })
    .await;
    app.default_app().await;
    app.authority.flush_audit().await.unwrap();
    clock.advance(TimeDelta::days(3650));
    assert_eq!(app.authority.purge_audit().await.unwrap(), 0);
    assert_eq!(names(&audit(&app, "").await)[0], "app.created");
}

async fn usage(app: &TestApp, path: &str) -> Vec<u64> {
    app.authority.flush_audit().await.unwrap();
    let response = admin(app, Method::GET, path, None).await;
    assert_eq!(response.status(), 200, "{path}");
    let body: Value = response.json().await.unwrap();
    body["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["issued"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn tokens_issued_are_counted_per_app_secret_and_grant_per_day() {
    let clock = FixedClock::new(noon_today());
    let app = TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        ..Spawn::default()
    })
    .await;
    let first = app.default_app().await;
    let other = app.default_app().await;
    let first_secret = secret_id_of(&issue(&app, &first).await);
    issue(&app, &first).await;
    issue(&app, &first).await;
    issue(&app, &other).await;
    // Some counted in one batch, some in the next: the counts add up in the store.
    app.authority.flush_audit().await.unwrap();
    clock.advance(TimeDelta::days(1));
    let added = admin(
        &app,
        Method::POST,
        &format!("/admin/v1/apps/{}/secrets", first.id),
        Some(json!({})),
    )
    .await;
    assert_eq!(added.status(), 201);
    let added: Value = added.json().await.unwrap();
    let second = TestClient {
        secret: added["client_secret"].as_str().unwrap().to_owned(),
        ..first.clone()
    };
    let second_secret = added["id"].as_str().unwrap().to_owned();
    issue(&app, &second).await;
    issue(&app, &second).await;
    issue(&app, &first).await;
    let owner = app
        .owner_token("owner-9", "authGrants:read authGrants:write")
        .await;
    let response = app
        .http
        .post(format!("{}/auth-grant/create", app.base))
        .bearer_auth(&owner)
        .json(&json!({ "scope": "authGrants:read" }))
        .send()
        .await
        .unwrap();
    let grant_id: String = response.json().await.unwrap();
    app.grant_api_token(&owner, &grant_id).await;
    app.grant_api_token(&owner, &grant_id).await;

    let app_path = format!("/admin/v1/apps/{}/usage?days=3", first.id);
    assert_eq!(usage(&app, &app_path).await, [0, 3, 3]);
    let other_path = format!("/admin/v1/apps/{}/usage?days=2", other.id);
    assert_eq!(usage(&app, &other_path).await, [1, 0]);
    let path = |secret: &str| format!("/admin/v1/apps/{}/secrets/{secret}/usage?days=2", first.id);
    assert_eq!(usage(&app, &path(&first_secret)).await, [3, 1]);
    assert_eq!(usage(&app, &path(&second_secret)).await, [0, 2]);
    let grant_path = format!("/admin/v1/grants/{grant_id}/usage?days=1");
    assert_eq!(usage(&app, &grant_path).await, [2]);

    let response = admin(
        &app,
        Method::GET,
        &format!("/admin/v1/apps/{}/usage", first.id),
        None,
    )
    .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["days"].as_array().unwrap().len(),
        30,
        "30 days by default"
    );
    let today = clock.now().date_naive().to_string();
    assert_eq!(body["days"][29]["day"], today.as_str(), "today last");
    assert_eq!(body["kind"], "app");
    assert_eq!(body["id"], first.id.as_str());
}

#[tokio::test]
async fn bad_filters_and_ranges_are_400() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let cases = [
        ("/admin/v1/audit?app_id=nope", "app_id must be a UUID"),
        ("/admin/v1/audit?secret_id=1", "secret_id must be a UUID"),
        ("/admin/v1/audit?grant_id=x", "grant_id must be a UUID"),
        ("/admin/v1/audit?since=yesterday", "since must be RFC 3339"),
        ("/admin/v1/audit?until=2030-01-01", "until needs a time"),
        (
            "/admin/v1/audit?since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z",
            "until before since",
        ),
        ("/admin/v1/audit?limit=0", "limit at least 1"),
        ("/admin/v1/audit?limit=1001", "limit at most 1000"),
        ("/admin/v1/audit?limit=ten", "limit is a number"),
        (
            "/admin/v1/audit?cursor=garbage",
            "a cursor comes from a page",
        ),
        ("/admin/v1/audit?event=token.stolen", "no such event"),
        ("/admin/v1/audit?subject=", "an empty subject"),
        (
            "/admin/v1/audit?colour=red",
            "unknown parameters are refused",
        ),
    ];
    let days = |q: &str| format!("/admin/v1/apps/{}/usage?{q}", client.id);
    let usage_cases = [
        (days("days=0"), "days at least 1"),
        (days("days=367"), "days at most 366"),
        (days("days=week"), "days is a number"),
    ];
    let long_subject = format!("/admin/v1/audit?subject={}", "s".repeat(300));
    let all = cases
        .iter()
        .map(|(p, why)| (p.to_string(), *why))
        .chain(usage_cases.iter().map(|(p, why)| (p.clone(), *why)))
        .chain([(long_subject, "a subject longer than any kept")]);
    for (path, why) in all {
        let response = admin(&app, Method::GET, &path, None).await;
        assert_eq!(response.status(), 400, "{why}: {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{why}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], 400, "{why}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{why}"
        );
    }
}

#[tokio::test]
async fn usage_of_what_does_not_exist_is_404() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let missing = uuid::Uuid::now_v7();
    for path in [
        format!("/admin/v1/apps/{missing}/usage"),
        "/admin/v1/apps/not-an-id/usage".to_owned(),
        format!("/admin/v1/apps/{}/secrets/{missing}/usage", client.id),
        format!("/admin/v1/apps/{missing}/secrets/{missing}/usage"),
        format!("/admin/v1/grants/{missing}/usage"),
    ] {
        let response = admin(&app, Method::GET, &path, None).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["detail"], "no such resource");
    }
}

#[tokio::test]
async fn the_trail_needs_the_admin_token() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(format!("{}/admin/v1/audit", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn events_waiting_at_shutdown_are_written() {
    let app = TestApp::spawn().await;
    let db = app.database();
    let client = app.default_app().await;
    for _ in 0..3 {
        issue(&app, &client).await;
    }
    app.shutdown().await.unwrap();
    let again = TestApp::spawn_on(db, Spawn::default()).await;
    let page = audit(&again, "event=token.issued").await;
    assert_eq!(events(&page).len(), 1);
    assert_eq!(events(&page)[0]["detail"]["count"], 3);
}

#[tokio::test]
async fn log_lines_keep_the_fields_they_had() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let jti = jti_of(&issue(&app, &client).await);
    let logs = captured_logs();
    let line = logs
        .lines()
        .find(|l| l.contains("event=\"token.issued\"") && l.contains(&jti))
        .expect("the token.issued line");
    let fields: Vec<&str> = line
        .split_whitespace()
        .filter_map(|word| word.split_once('=').map(|(name, _)| name))
        .collect();
    assert_eq!(
        fields,
        [
            "event",
            "grant_type",
            "client_id",
            "scope",
            "jti",
            "source_ip"
        ],
        "{line}"
    );
}
