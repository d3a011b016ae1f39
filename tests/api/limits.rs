//! Abuse limits: request rates per IP and per client (and what they guarantee across
//! replicas), the per-profile cap on active auth grants, bounded headers, and a sweep of
//! hostile bodies over every route that takes one.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Spawn, TestApp, TestClient};

async fn spawn(overrides: &[(&str, &str)]) -> TestApp {
    TestApp::spawn_with(Spawn {
        overrides,
        ..Spawn::default()
    })
    .await
}

/// One request to a client-authenticating route, by name.
async fn call_route(
    app: &TestApp,
    route: &str,
    client: &TestClient,
    token: &str,
) -> reqwest::Response {
    let http = &app.http;
    let request = match route {
        "oauth2/token" => http
            .post(format!("{}/oauth2/token", app.base))
            .basic_auth(&client.client_id, Some(&client.secret))
            .form(&[("grant_type", "client_credentials")]),
        "endorsed" => http
            .post(format!("{}/api/v1/auth/tokens", app.base))
            .json(&client.json(None)),
        "authorize" => http
            .post(format!("{}/access/v1/enrollment/authorize", app.base))
            .json(
                &json!({ "client_id": client.client_id, "client_secret": client.secret,
                           "owner_id": "limited-owner" }),
            ),
        "introspect" => http
            .post(format!("{}/oauth2/introspect", app.base))
            .basic_auth(&client.client_id, Some(&client.secret))
            .form(&[("token", token)]),
        "revoke" => http
            .post(format!("{}/oauth2/revoke", app.base))
            .basic_auth(&client.client_id, Some(&client.secret))
            .form(&[("token", "not-a-token-of-ours")]),
        // RFC 8693: the grant's token is the only credential.
        "exchange" => http.post(format!("{}/oauth2/token", app.base)).form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", token),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
        ]),
        other => panic!("unknown route {other}"),
    };
    request.send().await.unwrap()
}

/// An enrolled client, and an auth grant's API token (introspected, and exchanged).
async fn client_with_enrollment(app: &TestApp) -> (TestClient, String) {
    let client = app.default_app().await;
    let enrolled = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": "limited-owner" }),
        )
        .await;
    assert_eq!(enrolled.status(), 201);
    let owner = app
        .owner_token("someone", "authGrants:read authGrants:write all:read")
        .await;
    let grant: String = create_grant(app, &owner).await.json().await.unwrap();
    let token = app.grant_api_token(&owner, &grant).await;
    (client, token)
}

#[tokio::test]
async fn every_client_authenticating_route_is_limited_per_ip_with_retry_after() {
    for route in [
        "oauth2/token",
        "endorsed",
        "authorize",
        "introspect",
        "revoke",
        "exchange",
    ] {
        let app = spawn(&[("PORTCULLIS__RATE_LIMIT__REQUESTS_PER_IP_PER_SECOND", "3")]).await;
        let (client, token) = client_with_enrollment(&app).await;
        let mut statuses = Vec::new();
        let mut retry_after = None;
        // At 3 per second, twenty back-to-back requests cannot all be admitted.
        for _ in 0..20 {
            let response = call_route(&app, route, &client, &token).await;
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            }
            statuses.push(response.status().as_u16());
        }
        assert!(
            statuses[..3].iter().all(|s| *s == 200),
            "{route}: {statuses:?}"
        );
        assert!(statuses.contains(&429), "{route}: {statuses:?}");
        assert!(
            retry_after.is_some_and(|s| s >= 1),
            "{route}: Retry-After {retry_after:?}"
        );
    }
}

#[tokio::test]
async fn the_client_limit_counts_only_requests_that_proved_to_be_that_client() {
    let app = spawn(&[(
        "PORTCULLIS__RATE_LIMIT__REQUESTS_PER_CLIENT_PER_SECOND",
        "3",
    )])
    .await;
    let victim = app.default_app().await;
    let bystander = app.default_app().await;
    let stranger = TestClient {
        secret: "pcs_a-guess-that-is-not-the-secret".into(),
        ..victim.clone()
    };
    for _ in 0..10 {
        let status = call_route(&app, "oauth2/token", &stranger, "")
            .await
            .status();
        assert_eq!(
            status, 401,
            "wrong secrets are refused, and cost the victim nothing"
        );
    }
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            call_route(&app, "oauth2/token", &victim, "")
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    assert_eq!(
        call_route(&app, "oauth2/token", &bystander, "")
            .await
            .status(),
        200,
        "another client's allowance is its own"
    );
}

/// The documented decision: rate limits are counted in each replica's memory (no database
/// round trip on the token path). What that guarantees: each replica enforces the limit on
/// its own, so N replicas admit at most N times the configured rate.
#[tokio::test]
async fn rate_limits_are_per_replica_so_n_replicas_admit_at_most_n_times_the_limit() {
    let overrides = [(
        "PORTCULLIS__RATE_LIMIT__REQUESTS_PER_CLIENT_PER_SECOND",
        "3",
    )];
    let first = spawn(&overrides).await;
    let second = TestApp::spawn_on(
        first.database(),
        Spawn {
            overrides: &overrides,
            ..Spawn::default()
        },
    )
    .await;
    let client = first.default_app().await;
    let mut admitted = 0;
    let mut allowance = 0.0;
    for replica in [&first, &second] {
        let started = std::time::Instant::now();
        let mut statuses = Vec::new();
        for _ in 0..12 {
            statuses.push(
                call_route(replica, "oauth2/token", &client, "")
                    .await
                    .status()
                    .as_u16(),
            );
        }
        assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
        assert!(
            statuses[3..].contains(&429),
            "each replica enforces the limit: {statuses:?}"
        );
        admitted += statuses.iter().filter(|s| **s == 200).count();
        // The burst, plus what refills at 3/s while the requests were sent.
        allowance += 4.0 + 3.0 * started.elapsed().as_secs_f64();
    }
    assert!(
        admitted >= 6 && admitted as f64 <= allowance,
        "two replicas admitted {admitted}, allowed {allowance:.1}"
    );
}

async fn create_grant(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/auth-grant/create", app.base))
        .bearer_auth(token)
        .json(&json!({ "name": "capped" }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_profile_holds_at_most_the_configured_number_of_active_grants() {
    let app = spawn(&[("PORTCULLIS__GRANTS__MAX_ACTIVE_PER_PROFILE", "3")]).await;
    let token = app
        .owner_token("capped-profile", "authGrants:write all:read")
        .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let response = create_grant(&app, &token).await;
        assert_eq!(response.status(), 200);
        ids.push(response.json::<String>().await.unwrap());
    }
    let refused = create_grant(&app, &token).await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "FORBIDDEN");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("maximum number of active auth grants")
    );

    let other = app
        .owner_token("another-profile", "authGrants:write all:read")
        .await;
    assert_eq!(
        create_grant(&app, &other).await.status(),
        200,
        "the cap is per profile"
    );

    let revoked = app
        .http
        .post(format!("{}/auth-grant/{}/revoke", app.base, ids[0]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        create_grant(&app, &token).await.status(),
        200,
        "revoked grants free a place"
    );
}

#[tokio::test]
async fn concurrent_creations_cannot_overshoot_the_grant_cap() {
    let app = spawn(&[("PORTCULLIS__GRANTS__MAX_ACTIVE_PER_PROFILE", "3")]).await;
    let token = app
        .owner_token("racing-profile", "authGrants:write all:read")
        .await;
    let requests: Vec<_> = (0..12)
        .map(|_| {
            let (http, base, token) = (reqwest::Client::new(), app.base.clone(), token.clone());
            tokio::spawn(async move {
                http.post(format!("{base}/auth-grant/create"))
                    .bearer_auth(token)
                    .json(&json!({ "name": "race" }))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 403),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn oversized_headers_are_431_and_many_headers_are_refused() {
    let app = TestApp::spawn().await;
    let url = format!("{}/health/live", app.base);
    let one_big = app
        .http
        .get(&url)
        .header("x-padding", "a".repeat(9 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(one_big.status(), 431);
    let mut many = app.http.get(&url);
    for n in 0..6 {
        many = many.header(format!("x-padding-{n}"), "b".repeat(7 * 1024));
    }
    assert_eq!(many.send().await.unwrap().status(), 431);
    let big_bearer = app
        .http
        .post(format!("{}/auth-grant/create", app.base))
        .bearer_auth("c".repeat(7 * 1024))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        big_bearer.status(),
        401,
        "a token longer than any we mint is refused"
    );
    let mut too_many = app.http.get(&url);
    for n in 0..120 {
        too_many = too_many.header(format!("x-h-{n}"), "v");
    }
    // hyper refuses more than 100 headers before any handler runs.
    match too_many.send().await {
        Ok(response) => assert!(response.status().is_client_error(), "{}", response.status()),
        Err(e) => assert!(
            e.is_request() || e.is_connect() || e.to_string().contains("closed"),
            "{e}"
        ),
    }
    let fine = app
        .http
        .get(&url)
        .header("x-small", "ok")
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
}

/// Every way a body can be hostile, derived from a valid one: NUL in each string, each
/// string and array far past its bound, invalid UTF-8, and deep nesting.
fn hostile_variants(valid: &Value) -> Vec<(String, Vec<u8>)> {
    let mut variants = Vec::new();
    let mut paths = Vec::new();
    collect_leaves(valid, &mut Vec::new(), &mut paths);
    for path in &paths {
        let original = pointer(valid, path).clone();
        // `data` is free-form JSON bounded only as a whole (64 KiB), so long strings and
        // arrays inside it are fine; NUL and invalid UTF-8 are not.
        let free_form = path.first().is_some_and(|k| k == "data");
        match &original {
            Value::String(s) => {
                let with_nul = format!("{s}\u{0}x");
                variants.push((
                    format!("NUL in {path:?}"),
                    replaced(valid, path, json!(with_nul)),
                ));
                if !free_form {
                    variants.push((
                        format!("long {path:?}"),
                        replaced(valid, path, json!("x".repeat(20_000))),
                    ));
                }
                let mut raw =
                    serde_json::to_vec(&replaced_value(valid, path, json!("@@INVALID@@"))).unwrap();
                let at = find(&raw, b"@@INVALID@@").unwrap();
                raw.splice(at..at + 11, [0xff, 0xfe, b'x']);
                variants.push((format!("invalid UTF-8 in {path:?}"), raw));
            }
            Value::Array(items) if !items.is_empty() && !free_form => {
                let many: Vec<Value> = (0..2000).map(|n| json!(format!("s{n}:read"))).collect();
                variants.push((
                    format!("huge array {path:?}"),
                    replaced(valid, path, json!(many)),
                ));
            }
            _ => {}
        }
    }
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    variants.push(("deep nesting".into(), deep.into_bytes()));
    variants.push(("invalid UTF-8 body".into(), b"{\"\xff\xfe\": 1}".to_vec()));
    variants
}

fn collect_leaves(value: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                at.push(k.clone());
                collect_leaves(v, at, out);
                at.pop();
            }
        }
        _ => out.push(at.clone()),
    }
}

fn pointer<'a>(value: &'a Value, path: &[String]) -> &'a Value {
    path.iter().fold(value, |v, k| &v[k.as_str()])
}

fn replaced_value(valid: &Value, path: &[String], with: Value) -> Value {
    let mut copy = valid.clone();
    let mut slot = &mut copy;
    for k in path {
        slot = &mut slot[k.as_str()];
    }
    *slot = with;
    copy
}

fn replaced(valid: &Value, path: &[String], with: Value) -> Vec<u8> {
    serde_json::to_vec(&replaced_value(valid, path, with)).unwrap()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn hostile_bodies_get_4xx_on_every_route_that_takes_a_body() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let enrolled = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": "hostile-owner" }),
        )
        .await;
    assert_eq!(enrolled.status(), 201);
    let authorized: Value = app
        .http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .json(
            &json!({ "client_id": client.client_id, "client_secret": client.secret,
                       "owner_id": "hostile-owner" }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let enrollment_token = authorized["token"].as_str().unwrap().to_owned();
    let profile = app
        .owner_token(
            "hostile-profile",
            "authGrants:read authGrants:write all:read",
        )
        .await;
    let grant: String = create_grant(&app, &profile).await.json().await.unwrap();
    let new_owner = app.owner_token("new-owner", "all:read").await;

    let creds = |extra: Value| {
        let mut body = json!({ "client_id": client.client_id, "client_secret": client.secret });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let base = app.base.clone();
    let admin = app.admin.clone();
    type Build<'a> = Box<dyn Fn() -> RequestBuilder + 'a>;
    let routes: Vec<(&str, Build, Value)> = vec![
        (
            "endorsed token",
            Box::new(|| app.http.post(format!("{base}/api/v1/auth/tokens"))),
            creds(json!({ "grant_type": "client_credentials", "scope": ["all:read"] })),
        ),
        (
            "oauth token",
            Box::new(|| app.http.post(format!("{base}/oauth2/token"))),
            creds(json!({ "grant_type": "client_credentials", "scope": "all:read" })),
        ),
        (
            "introspect",
            Box::new(|| app.http.post(format!("{base}/oauth2/introspect"))),
            creds(json!({ "token": enrollment_token, "token_type_hint": "access_token" })),
        ),
        (
            "revoke",
            Box::new(|| app.http.post(format!("{base}/oauth2/revoke"))),
            creds(json!({ "token": "x.y.z", "token_type_hint": "access_token" })),
        ),
        (
            "authorize",
            Box::new(|| {
                app.http
                    .post(format!("{base}/access/v1/enrollment/authorize"))
            }),
            creds(json!({ "owner_id": "hostile-owner" })),
        ),
        (
            "enrollment update",
            Box::new(|| {
                app.http
                    .patch(format!("{base}/access/v1/enrollment"))
                    .bearer_auth(&enrollment_token)
            }),
            json!({ "data": { "plan": "pro", "tags": ["a", "b"] } }),
        ),
        (
            "enrollment create",
            Box::new(|| {
                app.http
                    .put(format!(
                        "{base}/access/v1/enrollment/{}",
                        uuid::Uuid::new_v4()
                    ))
                    .bearer_auth(&new_owner)
            }),
            creds(json!({ "owner_id": "new-owner", "data": { "k": "v" } })),
        ),
        (
            "grant create",
            Box::new(|| {
                app.http
                    .post(format!("{base}/auth-grant/create"))
                    .bearer_auth(&profile)
            }),
            json!({ "name": "n", "description": "d", "scope": "all:read",
                    "expiresAt": "2099-01-01T00:00:00Z" }),
        ),
        (
            "grant update",
            Box::new(|| {
                app.http
                    .post(format!("{base}/auth-grant/update/{grant}"))
                    .bearer_auth(&profile)
            }),
            json!({ "updates": { "name": "n", "description": "d" } }),
        ),
        (
            "grant list",
            Box::new(|| {
                app.http
                    .post(format!("{base}/profile/auth-grants"))
                    .bearer_auth(&profile)
            }),
            json!({ "limit": 10, "cursor": "2099-01-01T00:00:00.000Z",
                    "query": { "name": { "$in": ["a", "b"] }, "status": "active" } }),
        ),
        (
            "admin app create",
            Box::new(|| {
                app.http
                    .request(Method::POST, format!("{admin}/admin/v1/apps"))
                    .bearer_auth(ADMIN_TOKEN)
            }),
            json!({ "name": "n", "allowed_scopes": "all:read", "default_scopes": "all:read" }),
        ),
    ];

    let mut checked = 0;
    for (route, build, valid) in &routes {
        for (what, body) in hostile_variants(valid) {
            let response = build()
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            assert!(status.is_client_error(), "{route}, {what}: {status}");
            checked += 1;
        }
    }
    // The form-encoded routes, with NUL, invalid UTF-8 and overlong values.
    for path in [
        "/oauth2/token",
        "/oauth2/introspect",
        "/oauth2/revoke",
        "/api/v1/auth/tokens",
    ] {
        for form in [
            format!("{}%00", client.form("")),
            format!("{}&scope=%FF%FE", client.form("")),
            client.form("scope=all%3Aread\u{0}"),
            // The parameter each route reads (unknown ones are ignored, RFC 6749 §3.1).
            if path.contains("introspect") || path.contains("revoke") {
                client.form(&format!("token={}", "t".repeat(20_000)))
            } else {
                client.form(&format!("scope={}", "s".repeat(20_000)))
            },
            client.form(&format!("scope={}", "all:read+".repeat(2000))),
        ] {
            let response = app
                .post_raw(
                    path,
                    Some("application/x-www-form-urlencoded"),
                    form.clone(),
                )
                .await;
            let status = response.status();
            assert!(
                status.is_client_error(),
                "{path} …{}: {status}",
                &form[form.len().saturating_sub(60)..]
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked} hostile requests");
}

/// Exchanges spend the allowance of the grant whose token is exchanged, never the app's: a
/// holder of a read-only grant token cannot make the app's own calls answer 429, and grants
/// made under operator-minted tokens (which all name the admin client) do not share one.
#[tokio::test]
async fn exchanges_are_charged_to_the_grant_never_to_the_app() {
    let app = spawn(&[(
        "PORTCULLIS__RATE_LIMIT__REQUESTS_PER_CLIENT_PER_SECOND",
        "5",
    )])
    .await;
    let client = app.default_app().await;
    let enrolled = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": "exchange-owner" }),
        )
        .await;
    assert_eq!(enrolled.status(), 201);
    let authorized = app
        .http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .json(
            &json!({ "client_id": client.client_id, "client_secret": client.secret,
                        "owner_id": "exchange-owner" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(authorized.status(), 200);
    let enrollment_token = authorized.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // A grant of the app's enrollment: its tokens name the app's client_id.
    let grant: String = create_grant(&app, &enrollment_token)
        .await
        .json()
        .await
        .unwrap();
    let grant_token = app.grant_api_token(&enrollment_token, &grant).await;

    let exchanges = async |token: &str| {
        let mut statuses = Vec::new();
        for _ in 0..15 {
            let response = call_route(&app, "exchange", &client, token).await;
            statuses.push(response.status().as_u16());
        }
        statuses
    };
    let spent = exchanges(&grant_token).await;
    assert!(
        spent.contains(&429),
        "the grant's own allowance runs out: {spent:?}"
    );
    // The app spent one of its five on authorize; the other four are still its own.
    for route in ["oauth2/token", "endorsed", "introspect", "revoke"] {
        assert_eq!(
            call_route(&app, route, &client, &grant_token)
                .await
                .status(),
            200,
            "{route}: the app's allowance is untouched by its grant's exchanges"
        );
    }

    // Two users' grants under operator-minted tokens: one exhausting its allowance leaves
    // the other's whole.
    let mut tokens = Vec::new();
    for owner in ["first-user", "second-user"] {
        let owner = app.owner_token(owner, "authGrants:write all:read").await;
        let grant: String = create_grant(&app, &owner).await.json().await.unwrap();
        tokens.push(app.grant_api_token(&owner, &grant).await);
    }
    assert!(exchanges(&tokens[0]).await.contains(&429));
    let other = exchanges(&tokens[1]).await;
    assert_eq!(&other[..5], &[200; 5], "{other:?}");
}

/// A token exchanged from a grant's token is refused as a subject token before it is
/// charged: whoever holds one (a downstream service) cannot spend the grant's allowance.
#[tokio::test]
async fn replaying_an_exchanged_token_costs_the_grant_nothing() {
    let app = spawn(&[(
        "PORTCULLIS__RATE_LIMIT__REQUESTS_PER_CLIENT_PER_SECOND",
        "5",
    )])
    .await;
    let (client, grant_token) = client_with_enrollment(&app).await;
    let response = call_route(&app, "exchange", &client, &grant_token).await;
    assert_eq!(response.status(), 200);
    let exchanged = response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..15 {
        let response = call_route(&app, "exchange", &client, &exchanged).await;
        assert_eq!(
            response.status(),
            400,
            "an exchanged token is not exchanged again"
        );
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = call_route(&app, "exchange", &client, &grant_token).await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200; 4], "the grant's allowance is still its own");
}
