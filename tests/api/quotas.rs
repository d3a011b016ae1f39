//! Issuance quotas (#14 item 3): tokens per app per fixed UTC hour and day, exact across
//! replicas through leases taken from the store; 429 with `Retry-After` and the RateLimit
//! headers in each dialect's envelope; `quota.exceeded` in the audit trail; per-grant
//! request quotas on the bearer routes.

use std::sync::Arc;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use portcullis::authority::clock::FixedClock;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{Spawn, TestApp, TestClient, admin};
use crate::intercept::{Hooks, InterceptStore, When};

/// A moment `into` the current UTC hour, so a test knows where its windows end.
fn at_minute(minute: i64) -> DateTime<Utc> {
    Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap() + TimeDelta::minutes(minute)
}

async fn spawn_at(clock: &Arc<FixedClock>) -> TestApp {
    TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        ..Spawn::default()
    })
    .await
}

async fn quota_app(app: &TestApp, quota: Value) -> TestClient {
    app.create_app(json!({ "name": "metered", "quota": quota }))
        .await
}

async fn token(app: &TestApp, client: &TestClient) -> Response {
    app.oauth_basic(client, "grant_type=client_credentials")
        .await
}

fn header<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("an ASCII header"))
}

#[tokio::test]
async fn a_quota_issues_exactly_its_limit_then_answers_429_with_ratelimit_headers() {
    let clock = FixedClock::new(at_minute(20));
    let app = spawn_at(&clock).await;
    let client = quota_app(&app, json!({ "tokens_per_hour": 5 })).await;
    // 40 minutes left in the hour.
    let reset = 40 * 60;
    for issued in 1..=5 {
        let response = token(&app, &client).await;
        assert_eq!(response.status(), 200, "token {issued} of 5");
        assert_eq!(
            header(&response, "ratelimit-policy"),
            Some("\"hourly\";q=5;w=3600")
        );
        assert_eq!(
            header(&response, "ratelimit"),
            Some(format!("\"hourly\";r={};t={reset}", 5 - issued).as_str()),
            "a small quota is leased one token at a time, so the remainder is exact"
        );
    }
    let refused = token(&app, &client).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), Some("2400"));
    assert_eq!(
        header(&refused, "ratelimit-policy"),
        Some("\"hourly\";q=5;w=3600")
    );
    assert_eq!(
        header(&refused, "ratelimit"),
        Some(format!("\"hourly\";r=0;t={reset}").as_str())
    );
    assert_eq!(header(&refused, "cache-control"), Some("no-store"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("hourly quota"),
        "{body}"
    );

    // Every dialect refuses in its own envelope, with the same headers.
    let endorsed = app.endorsed_json(client.json(None)).await;
    assert_eq!(endorsed.status(), 429);
    assert_eq!(header(&endorsed, "retry-after"), Some("2400"));
    assert!(header(&endorsed, "ratelimit").is_some());
    let body: Value = endorsed.json().await.unwrap();
    assert_eq!(body["is_error"], true);
    assert_eq!(body["error"]["code"], "TOO_MANY_REQUESTS", "{body}");

    let enrolled = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": "workspace-1" }),
        )
        .await;
    assert_eq!(enrolled.status(), 201);
    let access = app
        .http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .json(&json!({
            "client_id": client.client_id,
            "client_secret": client.secret,
            "owner_id": "workspace-1",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(access.status(), 429);
    assert_eq!(header(&access, "retry-after"), Some("2400"));
    let body: Value = access.json().await.unwrap();
    assert_eq!(body["code"], "too_many_requests", "{body}");
}

#[tokio::test]
async fn an_app_without_a_quota_answers_as_before() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let shown = admin(
        &app,
        Method::GET,
        &format!("/admin/v1/apps/{}", client.id),
        None,
    )
    .await;
    let shown: Value = shown.json().await.unwrap();
    assert!(shown.get("quota").is_none(), "no quota field: {shown}");
    for _ in 0..3 {
        let response = token(&app, &client).await;
        assert_eq!(response.status(), 200);
        assert!(header(&response, "ratelimit").is_none());
        assert!(header(&response, "ratelimit-policy").is_none());
        let endorsed = app.endorsed_json(client.json(None)).await;
        assert_eq!(endorsed.status(), 200);
        assert!(header(&endorsed, "ratelimit").is_none());
        assert!(header(&endorsed, "ratelimit-policy").is_none());
    }
}

#[tokio::test]
async fn windows_are_fixed_utc_hours_and_days() {
    // 23:59 UTC: the hour and the day end together a minute later.
    let day = Utc::now().duration_trunc(TimeDelta::days(1)).unwrap();
    let clock = FixedClock::new(day + TimeDelta::minutes(23 * 60 + 59));
    let app = spawn_at(&clock).await;
    let client = quota_app(&app, json!({ "tokens_per_hour": 2, "tokens_per_day": 3 })).await;
    for _ in 0..2 {
        assert_eq!(token(&app, &client).await.status(), 200);
    }
    let refused = token(&app, &client).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), Some("60"));
    assert_eq!(
        header(&refused, "ratelimit-policy"),
        Some("\"hourly\";q=2;w=3600, \"daily\";q=3;w=86400")
    );
    assert_eq!(
        header(&refused, "ratelimit"),
        Some("\"hourly\";r=0;t=60, \"daily\";r=1;t=60")
    );

    // A new hour and a new day: both quotas start again.
    clock.advance(TimeDelta::seconds(60));
    for _ in 0..2 {
        assert_eq!(token(&app, &client).await.status(), 200);
    }
    assert_eq!(token(&app, &client).await.status(), 429, "the hour again");

    // The next hour has room, but the day allows one more only.
    clock.advance(TimeDelta::hours(1));
    assert_eq!(token(&app, &client).await.status(), 200);
    let refused = token(&app, &client).await;
    assert_eq!(refused.status(), 429, "the day is used up");
    assert_eq!(
        header(&refused, "retry-after"),
        Some((23 * 3600).to_string().as_str()),
        "until the day ends"
    );
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("daily quota"),
        "{body}"
    );
}

/// Two replicas over one database, each with its own leases.
async fn two_replicas(clock: &Arc<FixedClock>, hooks: Option<Arc<Hooks>>) -> (TestApp, TestApp) {
    let wrap = |hooks: Option<Arc<Hooks>>| -> Option<
        Box<dyn FnOnce(portcullis::store::DynStore) -> portcullis::store::DynStore + Send>,
    > {
        hooks.map(|hooks| Box::new(move |inner| InterceptStore::wrap_with(inner, hooks)) as Box<_>)
    };
    let a = TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        wrap_store: wrap(hooks.clone()),
        ..Spawn::default()
    })
    .await;
    let b = TestApp::spawn_on(
        a.database(),
        Spawn {
            clock: Some(clock.clone()),
            wrap_store: wrap(hooks),
            ..Spawn::default()
        },
    )
    .await;
    (a, b)
}

#[tokio::test]
async fn two_replicas_sharing_one_quota_issue_exactly_the_limit() {
    let clock = FixedClock::new(at_minute(10));
    let (a, b) = two_replicas(&clock, None).await;
    // 3 tokens per lease: the replicas interleave their leases.
    let client = quota_app(&a, json!({ "tokens_per_day": 30 })).await;

    // A burst on both at once, then one at a time on each until both refuse.
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..40 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let request = replica
            .http
            .post(format!("{}/oauth2/token", replica.base))
            .basic_auth(&client.client_id, Some(&client.secret))
            .form(&[("grant_type", "client_credentials")]);
        burst.spawn(async move { request.send().await.unwrap().status().as_u16() });
    }
    let statuses = burst.join_all().await;
    let mut issued = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(issued <= 30, "{issued} tokens issued against a quota of 30");
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        for (replica, open) in [(&a, &mut a_open), (&b, &mut b_open)] {
            if *open {
                match token(replica, &client).await.status().as_u16() {
                    200 => issued += 1,
                    429 => *open = false,
                    other => panic!("unexpected {other}"),
                }
            }
        }
    }
    assert_eq!(issued, 30, "both replicas together issue the limit exactly");
}

#[tokio::test]
async fn replicas_racing_for_the_last_lease_never_over_issue() {
    let clock = FixedClock::new(at_minute(10));
    let hooks = Arc::new(Hooks::default());
    let (a, b) = two_replicas(&clock, Some(hooks.clone())).await;
    let client = quota_app(&a, json!({ "tokens_per_hour": 2 })).await;
    assert_eq!(token(&a, &client).await.status(), 200);

    // One token is left and both replicas decide to lease it: each reaches the store only
    // once the other has, so neither has seen the other's lease. The conditional upsert
    // decides: one gets it, the other nothing.
    hooks.gather("lease_quota", When::Before, 2);
    let (from_a, from_b) = tokio::join!(token(&a, &client), token(&b, &client));
    let mut statuses = [from_a.status().as_u16(), from_b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 429],
        "exactly one replica issues the last token"
    );
    assert_eq!(token(&a, &client).await.status(), 429);
    assert_eq!(token(&b, &client).await.status(), 429);
}

#[tokio::test]
async fn a_quota_refusal_is_an_audit_event_and_a_warning() {
    let clock = FixedClock::new(at_minute(30));
    let app = spawn_at(&clock).await;
    let client = quota_app(&app, json!({ "tokens_per_hour": 1 })).await;
    assert_eq!(token(&app, &client).await.status(), 200);
    for _ in 0..3 {
        assert_eq!(token(&app, &client).await.status(), 429);
    }
    app.authority.flush_audit().await.unwrap();
    let page = admin(
        &app,
        Method::GET,
        &format!("/admin/v1/audit?event=quota.exceeded&app_id={}", client.id),
        None,
    )
    .await;
    assert_eq!(page.status(), 200);
    let page: Value = page.json().await.unwrap();
    let events = page["events"].as_array().unwrap();
    assert_eq!(
        events.len(),
        1,
        "refusals a client repeats are one row per minute: {page}"
    );
    let event = &events[0];
    assert_eq!(event["detail"]["count"], 3, "{event}");
    assert_eq!(event["reason"], "token quota", "{event}");
    assert_eq!(event["client_id"], client.client_id.as_str());
    assert_eq!(event["detail"]["window"], "hourly", "{event}");
    assert!(event["secret_id"].is_string(), "{event}");
    assert!(event["source_ip"].is_string(), "{event}");
}

#[tokio::test]
async fn a_refused_request_spends_no_use_of_a_counted_secret() {
    let clock = FixedClock::new(at_minute(30));
    let app = spawn_at(&clock).await;
    let client = quota_app(&app, json!({ "tokens_per_hour": 1 })).await;
    let created = admin(
        &app,
        Method::POST,
        &format!("/admin/v1/apps/{}/secrets", client.id),
        Some(json!({ "max_uses": 2 })),
    )
    .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let counted = TestClient {
        secret: created["client_secret"].as_str().unwrap().to_owned(),
        ..client.clone()
    };
    assert_eq!(token(&app, &counted).await.status(), 200, "use 1 of 2");
    for _ in 0..3 {
        assert_eq!(token(&app, &counted).await.status(), 429);
    }
    let scope = app
        .oauth_basic(&counted, "grant_type=client_credentials&scope=not:granted")
        .await;
    assert_eq!(scope.status(), 400, "a scope refusal");
    clock.advance(TimeDelta::hours(1));
    assert_eq!(
        token(&app, &counted).await.status(),
        200,
        "refusals spent no use: use 2 of 2"
    );
    clock.advance(TimeDelta::hours(1));
    assert_eq!(
        token(&app, &counted).await.status(),
        401,
        "then the secret is used up"
    );
}

#[tokio::test]
async fn quotas_are_set_shown_replaced_and_lifted_through_the_admin_api() {
    let clock = FixedClock::new(at_minute(30));
    let app = spawn_at(&clock).await;
    let client = quota_app(&app, json!({ "tokens_per_hour": 1 })).await;
    let path = format!("/admin/v1/apps/{}", client.id);
    let shown: Value = admin(&app, Method::GET, &path, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["quota"], json!({ "tokens_per_hour": 1 }));
    assert_eq!(token(&app, &client).await.status(), 200);
    assert_eq!(token(&app, &client).await.status(), 429);

    // A larger quota applies at once (the leases of the old one are not reused).
    let updated = admin(
        &app,
        Method::PATCH,
        &path,
        Some(json!({ "quota": { "tokens_per_hour": 2, "tokens_per_day": 10 } })),
    )
    .await;
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(
        updated["quota"],
        json!({ "tokens_per_hour": 2, "tokens_per_day": 10 })
    );
    assert_eq!(token(&app, &client).await.status(), 200, "the second of 2");
    assert_eq!(token(&app, &client).await.status(), 429);

    // Other changes leave the quota alone; null lifts it.
    let renamed: Value = admin(
        &app,
        Method::PATCH,
        &path,
        Some(json!({ "name": "renamed" })),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(renamed["quota"]["tokens_per_hour"], 2);
    let lifted = admin(&app, Method::PATCH, &path, Some(json!({ "quota": null }))).await;
    assert_eq!(lifted.status(), 200);
    let lifted: Value = lifted.json().await.unwrap();
    assert!(lifted.get("quota").is_none(), "{lifted}");
    let response = token(&app, &client).await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "ratelimit").is_none());
}

#[tokio::test]
async fn bad_quotas_are_refused() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let path = format!("/admin/v1/apps/{}", client.id);
    // Numbers out of range break the quota's rule (400); bodies of the wrong shape are
    // refused as every other malformed app body is (422).
    for (quota, why, status, says) in [
        (
            json!({ "tokens_per_hour": 0 }),
            "zero",
            400,
            "quota.tokens_per_hour",
        ),
        (
            json!({ "tokens_per_day": -1 }),
            "negative",
            400,
            "quota.tokens_per_day",
        ),
        (
            json!({ "tokens_per_hour": 1_000_000_001u64 }),
            "above 1e9",
            400,
            "quota.tokens_per_hour",
        ),
        (
            json!({ "tokens_per_day": 1e30 }),
            "beyond any integer",
            400,
            "quota.tokens_per_day",
        ),
        (
            json!({ "tokens_per_day": 2.5 }),
            "a fraction",
            400,
            "quota.tokens_per_day",
        ),
        (json!({}), "no window", 400, "quota"),
        (
            json!({ "tokens_per_hour": "5" }),
            "a string",
            422,
            "tokens_per_hour",
        ),
        (
            json!({ "tokens_per_minute": 5 }),
            "unknown window",
            422,
            "tokens_per_minute",
        ),
        (json!(5), "not an object", 422, "quota"),
    ] {
        for (method, path, body) in [
            (
                Method::POST,
                "/admin/v1/apps",
                json!({ "name": "bad", "quota": quota }),
            ),
            (Method::PATCH, path.as_str(), json!({ "quota": quota })),
        ] {
            let response = admin(&app, method.clone(), path, Some(body)).await;
            assert_eq!(response.status(), status, "{method} {why}");
            let problem: Value = response.json().await.unwrap();
            assert!(
                problem["detail"].as_str().unwrap().contains(says),
                "{method} {why}: {problem}"
            );
        }
    }
    let apps: Value = admin(&app, Method::GET, "/admin/v1/apps", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(apps.as_array().unwrap().len(), 1, "nothing was created");
    assert!(apps[0].get("quota").is_none(), "nothing was changed");
}

async fn create_grant(app: &TestApp, owner_token: &str, body: Value) -> Response {
    app.http
        .post(format!("{}/auth-grant/create", app.base))
        .bearer_auth(owner_token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn show_grant(app: &TestApp, token: &str, id: &str) -> Response {
    app.http
        .get(format!("{}/auth-grant/{id}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_grant_request_quota_refuses_its_tokens_past_it_until_the_minute_ends() {
    let clock = FixedClock::new(at_minute(30) + TimeDelta::seconds(15));
    let app = spawn_at(&clock).await;
    let owner = app.owner_token("profile-1", "all:read all:write").await;
    let created = create_grant(
        &app,
        &owner,
        json!({ "name": "metered", "scope": "authGrants:read", "requestsPerMinute": 3 }),
    )
    .await;
    assert_eq!(created.status(), 200);
    let id: String = created.json().await.unwrap();
    let grant_token = app.grant_api_token(&owner, &id).await;

    // The owner's own token is not the grant's: it is never counted.
    let shown = show_grant(&app, &owner, &id).await;
    assert_eq!(shown.status(), 200);
    let shown: Value = shown.json().await.unwrap();
    assert_eq!(shown["requestsPerMinute"], 3, "{shown}");

    for i in 1..=3 {
        let response = show_grant(&app, &grant_token, &id).await;
        assert_eq!(response.status(), 200, "request {i} of 3");
    }
    let refused = show_grant(&app, &grant_token, &id).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), Some("45"));
    assert_eq!(
        header(&refused, "ratelimit-policy"),
        Some("\"minutely\";q=3;w=60")
    );
    assert_eq!(header(&refused, "ratelimit"), Some("\"minutely\";r=0;t=45"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "TOO_MANY_REQUESTS", "{body}");

    // Token exchange is a request with the grant's token too.
    let exchange = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", grant_token.as_str()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(exchange.status(), 429);

    clock.advance(TimeDelta::seconds(45));
    assert_eq!(
        show_grant(&app, &grant_token, &id).await.status(),
        200,
        "a new minute"
    );

    app.authority.flush_audit().await.unwrap();
    let page: Value = admin(
        &app,
        Method::GET,
        &format!("/admin/v1/audit?event=quota.exceeded&grant_id={id}"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let events = page["events"].as_array().unwrap();
    let refusals: u64 = events
        .iter()
        .map(|e| e["detail"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(refusals, 2, "{page}");
    assert!(
        events
            .iter()
            .all(|e| e["detail"]["window"] == "minutely" && e["reason"] == "grant request quota"),
        "{page}"
    );
}

#[tokio::test]
async fn a_grant_without_a_request_quota_and_bad_quotas() {
    let app = TestApp::spawn().await;
    let owner = app.owner_token("profile-1", "all:read all:write").await;
    for (value, why) in [
        (json!(0), "zero"),
        (json!(-1), "negative"),
        (json!(1_000_001), "above the maximum"),
        (json!("5"), "a string"),
    ] {
        let response = create_grant(
            &app,
            &owner,
            json!({ "name": "bad", "requestsPerMinute": value }),
        )
        .await;
        assert_eq!(response.status(), 400, "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "BAD_REQUEST", "{why}: {body}");
    }
    let created = create_grant(&app, &owner, json!({ "scope": "authGrants:read" })).await;
    let id: String = created.json().await.unwrap();
    let grant_token = app.grant_api_token(&owner, &id).await;
    for _ in 0..5 {
        let response = show_grant(&app, &grant_token, &id).await;
        assert_eq!(response.status(), 200);
        assert!(header(&response, "ratelimit").is_none());
        let body: Value = response.json().await.unwrap();
        assert!(body.get("requestsPerMinute").is_none(), "{body}");
    }
}
