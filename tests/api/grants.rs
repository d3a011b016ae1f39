use chrono::{TimeDelta, Utc};
use portcullis::authority::clock::{Clock, FixedClock};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{Spawn, TestApp, verify_token};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An owner token from the admin API: the profile that owns the grants.
async fn profile_token(app: &TestApp, owner: &str, scope: &str) -> String {
    app.owner_token(owner, scope).await
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Response {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn create_grant(app: &TestApp, token: &str, body: Value) -> String {
    let response = call(app, Method::POST, "/auth-grant/create", token, Some(body)).await;
    assert_eq!(response.status(), 200);
    let id: Value = response.json().await.unwrap();
    id.as_str().expect("the id as a JSON string").to_owned()
}

async fn api_token(app: &TestApp, token: &str, id: &str) -> Response {
    call(
        app,
        Method::POST,
        &format!("/auth-grant/{id}/api-token"),
        token,
        None,
    )
    .await
}

async fn api_token_string(app: &TestApp, token: &str, id: &str) -> String {
    let response = api_token(app, token, id).await;
    assert_eq!(response.status(), 200);
    let token: Value = response.json().await.unwrap();
    token.as_str().expect("a JWT as a JSON string").to_owned()
}

async fn exchange(app: &TestApp, subject_token: &str, scope: Option<&str>) -> Response {
    let mut form = format!(
        "grant_type={}&subject_token={subject_token}&subject_token_type={}",
        urlencode(EXCHANGE),
        urlencode(ACCESS_TOKEN)
    );
    if let Some(scope) = scope {
        form.push_str(&format!("&scope={}", urlencode(scope)));
    }
    app.post_raw(
        "/oauth2/token",
        Some("application/x-www-form-urlencoded"),
        form,
    )
    .await
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A")
        .replace(' ', "%20")
        .replace('*', "%2A")
}

/// A route that needs only a valid, active bearer token.
async fn works_on_a_protected_route(app: &TestApp, token: &str) -> u16 {
    call(
        app,
        Method::POST,
        "/profile/auth-grants",
        token,
        Some(json!({})),
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn full_lifecycle() {
    let app = TestApp::spawn().await;
    let token = profile_token(&app, "profile-1", "all:read all:write").await;
    let id = create_grant(
        &app,
        &token,
        json!({ "name": "ci", "description": "for CI", "scope": "authGrants:read", "expiresAt": null }),
    )
    .await;

    let response = call(
        &app,
        Method::GET,
        &format!("/auth-grant/{id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let grant: Value = response.json().await.unwrap();
    let mut keys: Vec<&str> = grant
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "challenge",
            "createdAt",
            "description",
            "expiresAt",
            "lastUsedAt",
            "name",
            "scope",
            "status"
        ],
        "LearnCard's fields (no id) plus lastUsedAt"
    );
    assert_eq!(grant["name"], "ci");
    assert_eq!(grant["status"], "active");
    assert_eq!(grant["scope"], "authGrants:read");
    assert_eq!(grant["expiresAt"], Value::Null);
    assert!(
        grant["challenge"]
            .as_str()
            .unwrap()
            .starts_with("auth-grant:")
    );

    let updated = call(
        &app,
        Method::POST,
        &format!("/auth-grant/update/{id}"),
        &token,
        Some(json!({ "updates": { "name": "ci-2", "description": "renamed" } })),
    )
    .await;
    assert_eq!(updated.json::<Value>().await.unwrap(), json!(true));
    let only_scope = call(
        &app,
        Method::POST,
        &format!("/auth-grant/update/{id}"),
        &token,
        Some(json!({ "updates": { "scope": "*:*", "status": "active" } })),
    )
    .await;
    assert_eq!(
        only_scope.json::<Value>().await.unwrap(),
        json!(false),
        "only non-updatable fields"
    );
    let grant: Value = call(
        &app,
        Method::GET,
        &format!("/auth-grant/{id}"),
        &token,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(grant["name"], "ci-2");
    assert_eq!(grant["scope"], "authGrants:read");

    let grant_token = api_token_string(&app, &token, &id).await;
    let (_, claims) = verify_token(&app, &grant_token).await;
    assert_eq!(claims["grant_id"], id);
    assert_eq!(claims["sub"], "profile-1");
    assert_eq!(claims["sub_kind"], "owner");
    assert_eq!(claims["scope"], "authGrants:read");
    assert_eq!(works_on_a_protected_route(&app, &grant_token).await, 200);

    let delete_active = call(
        &app,
        Method::DELETE,
        &format!("/auth-grant/{id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(
        delete_active.status(),
        401,
        "an active grant must be revoked first"
    );
    for _ in 0..2 {
        let revoked = call(
            &app,
            Method::POST,
            &format!("/auth-grant/{id}/revoke"),
            &token,
            None,
        )
        .await;
        assert_eq!(revoked.status(), 200);
        assert_eq!(
            revoked.json::<Value>().await.unwrap(),
            json!(true),
            "idempotent"
        );
    }
    assert_eq!(works_on_a_protected_route(&app, &grant_token).await, 401);
    let deleted = call(
        &app,
        Method::DELETE,
        &format!("/auth-grant/{id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(deleted.status(), 200);
    assert_eq!(deleted.json::<Value>().await.unwrap(), json!(true));
    let gone = call(
        &app,
        Method::GET,
        &format!("/auth-grant/{id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn scope_defaults_to_read_everything_and_escalation_is_refused() {
    let app = TestApp::spawn().await;
    let token = profile_token(&app, "profile-2", "all:read all:write").await;
    let id = create_grant(&app, &token, json!({ "name": "default" })).await;
    let grant: Value = call(
        &app,
        Method::GET,
        &format!("/auth-grant/{id}"),
        &token,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(grant["scope"], "*:read");

    for scope in ["*:*", "billing:admin", "authGrants:*"] {
        let response = call(
            &app,
            Method::POST,
            "/auth-grant/create",
            &token,
            Some(json!({ "scope": scope })),
        )
        .await;
        assert_eq!(response.status(), 403, "{scope} exceeds all:read all:write");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "FORBIDDEN");
    }
}

#[tokio::test]
async fn a_missing_scope_is_401_with_the_contract_message() {
    let app = TestApp::spawn().await;
    let reader = profile_token(&app, "profile-3", "all:read").await;
    let response = call(
        &app,
        Method::POST,
        "/auth-grant/create",
        &reader,
        Some(json!({})),
    )
    .await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "UNAUTHORIZED");
    assert_eq!(
        body["message"],
        "This operation requires authGrants:write scope"
    );
    assert!(body["issues"].is_array());

    let writer = profile_token(&app, "profile-3", "authGrants:write authGrants:read").await;
    let id = create_grant(&app, &writer, json!({ "scope": "authGrants:read" })).await;
    call(
        &app,
        Method::POST,
        &format!("/auth-grant/{id}/revoke"),
        &writer,
        None,
    )
    .await;
    let grant_reader = profile_token(&app, "profile-3", "authGrants:read").await;
    let response = call(
        &app,
        Method::DELETE,
        &format!("/auth-grant/{id}"),
        &grant_reader,
        None,
    )
    .await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["message"],
        "This operation requires authGrants:delete scope"
    );

    let response = call(
        &app,
        Method::DELETE,
        &format!("/auth-grant/{id}"),
        &writer,
        None,
    )
    .await;
    assert_eq!(response.status(), 200, "a write action also covers delete");

    let response = app
        .http
        .post(format!("{}/profile/auth-grants", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "no token at all");
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let response = call(&app, Method::POST, "/profile/auth-grants", "garbage", None).await;
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}

#[tokio::test]
async fn expires_at_follows_the_utc_pattern_and_must_be_in_the_future() {
    let app = TestApp::spawn().await;
    let token = profile_token(&app, "profile-4", "all:read all:write").await;
    let accepted = call(
        &app,
        Method::POST,
        "/auth-grant/create",
        &token,
        Some(json!({ "expiresAt": "2028-02-29T00:00:00Z" })),
    )
    .await;
    assert_eq!(accepted.status(), 200, "a real leap day");
    for (value, why) in [
        (json!("2027-02-29T00:00:00Z"), "not a leap year"),
        (json!("2027-01-01T00:00:00+01:00"), "an offset instead of Z"),
        (json!("2020-01-01T00:00:00Z"), "in the past"),
        (json!("next tuesday"), "garbage"),
        (json!(1_900_000_000), "a number"),
    ] {
        let response = call(
            &app,
            Method::POST,
            "/auth-grant/create",
            &token,
            Some(json!({ "expiresAt": value })),
        )
        .await;
        assert_eq!(response.status(), 400, "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "BAD_REQUEST", "{why}");
    }
}

#[tokio::test]
async fn another_profiles_grant_is_indistinguishable_from_a_missing_one() {
    let app = TestApp::spawn().await;
    let alice = profile_token(&app, "alice", "all:read all:write").await;
    let bob = profile_token(&app, "bob", "all:read all:write").await;
    let bobs = create_grant(&app, &bob, json!({ "name": "bob's" })).await;
    let random = uuid::Uuid::new_v4().to_string();
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/auth-grant/{}".into(), None),
        (
            Method::POST,
            "/auth-grant/update/{}".into(),
            Some(json!({"updates": {"name": "x"}})),
        ),
        (Method::POST, "/auth-grant/{}/revoke".into(), None),
        (Method::DELETE, "/auth-grant/{}".into(), None),
        (Method::POST, "/auth-grant/{}/api-token".into(), None),
    ];
    for (method, template, body) in routes {
        let theirs = call(
            &app,
            method.clone(),
            &template.replace("{}", &bobs),
            &alice,
            body.clone(),
        )
        .await;
        let missing = call(
            &app,
            method.clone(),
            &template.replace("{}", &random),
            &alice,
            body,
        )
        .await;
        assert_eq!(theirs.status(), 404, "{method} {template}");
        assert_eq!(theirs.status(), missing.status(), "{method} {template}");
        let theirs: Value = theirs.json().await.unwrap();
        let missing: Value = missing.json().await.unwrap();
        assert_eq!(theirs, missing, "{method} {template}");
    }
    let listed: Value = call(&app, Method::POST, "/profile/auth-grants", &alice, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([]), "alice sees none of bob's grants");
    let bob_view: Value = call(
        &app,
        Method::GET,
        &format!("/auth-grant/{bobs}"),
        &bob,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(bob_view["name"], "bob's", "bob's grant was untouched");
    assert_eq!(bob_view["status"], "active");
}

#[tokio::test]
async fn listing_is_newest_first_paginated_and_filterable() {
    let clock = FixedClock::new(Utc::now());
    let app = TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        ..Spawn::default()
    })
    .await;
    let token = profile_token(&app, "profile-5", "all:read all:write").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        clock.advance(TimeDelta::seconds(1));
        ids.push(create_grant(&app, &token, json!({ "name": format!("g{i}"), "description": if i % 2 == 0 { "even" } else { "odd" } })).await);
    }
    let list = |body: Value| {
        let app = &app;
        let token = token.clone();
        async move {
            let response = call(
                app,
                Method::POST,
                "/profile/auth-grants",
                &token,
                Some(body),
            )
            .await;
            assert_eq!(response.status(), 200);
            response.json::<Vec<Value>>().await.unwrap()
        }
    };
    let names = |page: &[Value]| {
        page.iter()
            .map(|g| g["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };

    let all = list(json!({})).await;
    assert_eq!(names(&all), ["g4", "g3", "g2", "g1", "g0"], "newest first");

    let first = list(json!({ "limit": 2 })).await;
    assert_eq!(names(&first), ["g4", "g3"]);
    let second = list(json!({ "limit": 2, "cursor": first[1]["createdAt"] })).await;
    assert_eq!(names(&second), ["g2", "g1"]);
    let third = list(json!({ "limit": 2, "cursor": second[1]["createdAt"] })).await;
    assert_eq!(names(&third), ["g0"]);

    assert_eq!(
        names(&list(json!({ "query": { "name": "g3" } })).await),
        ["g3"]
    );
    assert_eq!(
        names(&list(json!({ "query": { "name": { "$in": ["g1", "g2", "nope"] } } })).await),
        ["g2", "g1"]
    );
    assert_eq!(
        names(&list(json!({ "query": { "description": "odd" } })).await),
        ["g3", "g1"]
    );
    assert_eq!(
        names(&list(json!({ "query": { "id": { "$in": [ids[0], ids[4], "not-a-uuid"] } } })).await),
        ["g4", "g0"]
    );
    call(
        &app,
        Method::POST,
        &format!("/auth-grant/{}/revoke", ids[2]),
        &token,
        None,
    )
    .await;
    assert_eq!(
        names(&list(json!({ "query": { "status": "revoked" } })).await),
        ["g2"]
    );

    for (body, why) in [
        (json!({ "limit": 101 }), "limit above 100"),
        (json!({ "limit": 0 }), "limit zero"),
        (json!({ "cursor": "yesterday" }), "bad cursor"),
        (json!({ "query": { "status": "maybe" } }), "bad status"),
        (json!({ "query": { "colour": "red" } }), "unknown filter"),
    ] {
        let response = call(
            &app,
            Method::POST,
            "/profile/auth-grants",
            &token,
            Some(body),
        )
        .await;
        assert_eq!(response.status(), 400, "{why}");
    }
}

#[tokio::test]
async fn a_grant_token_stops_working_after_revoke_delete_and_expiry() {
    let clock = FixedClock::new(Utc::now());
    let app = TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        ..Spawn::default()
    })
    .await;
    let token = profile_token(&app, "profile-6", "all:read all:write").await;

    // Revoke.
    let id = create_grant(&app, &token, json!({ "scope": "authGrants:read" })).await;
    let grant_token = api_token_string(&app, &token, &id).await;
    let exchanged: Value = exchange(&app, &grant_token, None)
        .await
        .json()
        .await
        .unwrap();
    let exchanged = exchanged["access_token"].as_str().unwrap().to_owned();
    assert_eq!(works_on_a_protected_route(&app, &grant_token).await, 200);
    assert_eq!(works_on_a_protected_route(&app, &exchanged).await, 200);
    call(
        &app,
        Method::POST,
        &format!("/auth-grant/{id}/revoke"),
        &token,
        None,
    )
    .await;
    assert_eq!(works_on_a_protected_route(&app, &grant_token).await, 401);
    assert_eq!(
        works_on_a_protected_route(&app, &exchanged).await,
        401,
        "derived tokens too"
    );
    assert_eq!(exchange(&app, &grant_token, None).await.status(), 400);
    assert_eq!(
        api_token(&app, &token, &id).await.status(),
        401,
        "no new API token"
    );

    // Delete.
    let id = create_grant(&app, &token, json!({ "scope": "authGrants:read" })).await;
    let grant_token = api_token_string(&app, &token, &id).await;
    assert_eq!(works_on_a_protected_route(&app, &grant_token).await, 200);
    call(
        &app,
        Method::POST,
        &format!("/auth-grant/{id}/revoke"),
        &token,
        None,
    )
    .await;
    call(
        &app,
        Method::DELETE,
        &format!("/auth-grant/{id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(works_on_a_protected_route(&app, &grant_token).await, 401);

    // Expiry, on the injected clock.
    let expires =
        (clock.now() + TimeDelta::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let id = create_grant(
        &app,
        &token,
        json!({ "scope": "authGrants:read", "expiresAt": expires }),
    )
    .await;
    let grant_token = api_token_string(&app, &token, &id).await;
    let (_, claims) = verify_token(&app, &grant_token).await;
    assert!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 3600,
        "an API token never outlives its grant"
    );
    assert_eq!(works_on_a_protected_route(&app, &grant_token).await, 200);
    clock.advance(TimeDelta::minutes(59));
    assert_eq!(works_on_a_protected_route(&app, &grant_token).await, 200);
    clock.advance(TimeDelta::minutes(2));
    assert_eq!(works_on_a_protected_route(&app, &grant_token).await, 401);
    let fresh_profile_token = profile_token(&app, "profile-6", "all:read all:write").await;
    assert_eq!(
        api_token(&app, &fresh_profile_token, &id).await.status(),
        401,
        "an expired grant issues no new API token"
    );
}

/// A grant that expires `days` from `now`, at a whole second (a JWT's `exp` has no more).
fn expiring_in(now: chrono::DateTime<Utc>, days: i64) -> (String, i64) {
    let at = now + TimeDelta::days(days);
    (
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        at.timestamp(),
    )
}

/// The kids the server publishes in JWKS.
async fn published_kids(app: &TestApp) -> Vec<String> {
    let jwks: Value = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_api_token_lives_until_its_grant_expires_or_the_configured_maximum_without_one() {
    let app = TestApp::spawn_with(Spawn {
        overrides: &[("PORTCULLIS__TOKENS__GRANT_TOKEN_MAX_LIFETIME_SECS", "7200")],
        ..Spawn::default()
    })
    .await;
    let token = profile_token(&app, "profile-lifetime", "all:read all:write").await;

    // Far beyond the configured maximum: the grant's expiresAt decides, to the second.
    let (expires_at, exp) = expiring_in(Utc::now(), 60);
    let id = create_grant(
        &app,
        &token,
        json!({ "scope": "authGrants:read", "expiresAt": expires_at }),
    )
    .await;
    let grant_token = api_token_string(&app, &token, &id).await;
    let (_, claims) = verify_token(&app, &grant_token).await;
    assert_eq!(
        claims["exp"].as_i64(),
        Some(exp),
        "the API token lives exactly as long as its grant"
    );
    assert_eq!(works_on_a_protected_route(&app, &grant_token).await, 200);

    // A grant that never expires: the configured maximum.
    let id = create_grant(&app, &token, json!({ "scope": "authGrants:read" })).await;
    let grant_token = api_token_string(&app, &token, &id).await;
    let (_, claims) = verify_token(&app, &grant_token).await;
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        7200,
        "tokens.grant_token_max_lifetime_secs"
    );
}

#[tokio::test]
async fn the_key_that_signed_a_long_lived_api_token_stays_published_until_it_expires() {
    let clock = FixedClock::new(Utc::now());
    let app = TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        ..Spawn::default()
    })
    .await;
    let token = profile_token(&app, "profile-rotation", "all:read all:write").await;
    let (expires_at, exp) = expiring_in(clock.now(), 60);
    let id = create_grant(
        &app,
        &token,
        json!({ "scope": "authGrants:read", "expiresAt": expires_at }),
    )
    .await;
    let grant_token = api_token_string(&app, &token, &id).await;
    let (header, claims) = verify_token(&app, &grant_token).await;
    assert_eq!(claims["exp"].as_i64(), Some(exp));
    let signer = header.kid.unwrap();

    let rotated = app.admin_post("/admin/v1/keys/rotate", json!({})).await;
    assert_eq!(rotated.status(), 200);
    // Past the longest fixed lifetime (30 days by default), when a retired key that signed
    // nothing longer leaves JWKS; keys are reloaded on the moved clock.
    clock.advance(TimeDelta::days(45));
    app.authority.maintain().await;
    assert!(
        published_kids(&app).await.contains(&signer),
        "the retired key stays published while a token it signed lives"
    );
    assert_eq!(
        works_on_a_protected_route(&app, &grant_token).await,
        200,
        "a key rotation does not cut the grant's token short"
    );

    clock.advance(TimeDelta::days(16));
    app.authority.maintain().await;
    assert!(
        !published_kids(&app).await.contains(&signer),
        "and leaves once that token has expired"
    );
    assert_eq!(works_on_a_protected_route(&app, &grant_token).await, 401);
}

#[tokio::test]
async fn an_exchanged_token_carries_the_grant_and_cannot_widen_scope() {
    let app = TestApp::spawn().await;
    let token = profile_token(&app, "profile-7", "all:read all:write").await;
    let id = create_grant(
        &app,
        &token,
        json!({ "scope": "authGrants:read orders:read" }),
    )
    .await;
    let grant_token = api_token_string(&app, &token, &id).await;

    let response = exchange(&app, &grant_token, Some("orders:read")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "orders:read");
    let (_, claims) = verify_token(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["grant_id"], id);
    assert_eq!(claims["sub"], "profile-7");
    assert_eq!(claims["scope"], "orders:read");

    let wider = exchange(&app, &grant_token, Some("orders:write")).await;
    assert_eq!(wider.status(), 400);
    let body: Value = wider.json().await.unwrap();
    assert_eq!(body["error"], "invalid_scope");

    let not_a_grant_token = exchange(&app, &token, None).await;
    assert_eq!(
        not_a_grant_token.status(),
        400,
        "only grant tokens can be exchanged"
    );
    let garbage = exchange(&app, "not-a-token", None).await;
    assert_eq!(garbage.status(), 400);
    let body: Value = garbage.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn concurrent_update_and_revoke_leave_the_grant_revoked() {
    let app = TestApp::spawn().await;
    let token = profile_token(&app, "profile-8", "all:read all:write").await;
    for round in 0..5 {
        let id = create_grant(&app, &token, json!({ "name": format!("race-{round}") })).await;
        let (update_path, revoke_path) = (
            format!("/auth-grant/update/{id}"),
            format!("/auth-grant/{id}/revoke"),
        );
        let update = call(
            &app,
            Method::POST,
            &update_path,
            &token,
            Some(json!({ "updates": { "name": "renamed", "description": "d" } })),
        );
        let revoke = call(&app, Method::POST, &revoke_path, &token, None);
        let (update, revoke) = tokio::join!(update, revoke);
        assert_eq!(update.status(), 200, "round {round}");
        assert_eq!(revoke.status(), 200, "round {round}");
        let grant: Value = call(
            &app,
            Method::GET,
            &format!("/auth-grant/{id}"),
            &token,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(grant["status"], "revoked", "round {round}");
        assert_eq!(grant["name"], "renamed", "round {round}");
    }
}

#[tokio::test]
async fn malformed_grant_requests_get_the_learncard_envelope() {
    let app = TestApp::spawn().await;
    let token = profile_token(&app, "profile-9", "all:read all:write").await;
    let response = app
        .http
        .post(format!("{}/auth-grant/create", app.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "BAD_REQUEST");
    assert!(body["message"].is_string() && body["issues"].is_array());

    let long_name = "n".repeat(300);
    let response = call(
        &app,
        Method::POST,
        "/auth-grant/create",
        &token,
        Some(json!({ "name": long_name })),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["issues"][0]["path"], json!(["name"]));

    let response = call(
        &app,
        Method::POST,
        "/auth-grant/update/x",
        &token,
        Some(json!({})),
    )
    .await;
    assert_eq!(response.status(), 400, "updates is required");
}

#[tokio::test]
async fn a_narrower_token_cannot_mint_a_wider_grant_token() {
    let app = TestApp::spawn().await;
    let full = profile_token(&app, "profile-10", "all:read all:write").await;
    let wide = create_grant(&app, &full, json!({ "scope": "all:read all:write" })).await;
    let narrow = create_grant(&app, &full, json!({ "scope": "authGrants:read" })).await;
    let narrow_token = api_token_string(&app, &full, &narrow).await;

    // A grant's own token does not even reach its siblings (lineage::a_grant_token_reaches_
    // only_its_own_grant); a narrow token of the profile itself reaches it, but reading a
    // grant is not holding it.
    let response = api_token(&app, &narrow_token, &wide).await;
    assert_eq!(response.status(), 404);
    let reader = profile_token(&app, "profile-10", "authGrants:read").await;
    assert_eq!(api_token(&app, &reader, &wide).await.status(), 403);
    assert_eq!(api_token(&app, &full, &wide).await.status(), 200);
}

#[tokio::test]
async fn grant_tokens_cannot_create_grants() {
    let app = TestApp::spawn().await;
    let full = profile_token(&app, "profile-11", "all:read all:write").await;
    let id = create_grant(
        &app,
        &full,
        json!({ "scope": "authGrants:read authGrants:write" }),
    )
    .await;
    let grant_token = api_token_string(&app, &full, &id).await;
    let response = call(
        &app,
        Method::POST,
        "/auth-grant/create",
        &grant_token,
        Some(json!({ "scope": "authGrants:read" })),
    )
    .await;
    assert_eq!(
        response.status(),
        403,
        "a child grant could outlive its parent's revocation"
    );
}

#[tokio::test]
async fn a_revoked_grant_token_cannot_be_exchanged() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let full: Value = app
        .oauth_basic(&client, "grant_type=client_credentials")
        .await
        .json()
        .await
        .unwrap();
    let full = full["access_token"].as_str().unwrap().to_owned();
    let id = create_grant(&app, &full, json!({ "scope": "authGrants:read" })).await;
    let grant_token = api_token_string(&app, &full, &id).await;
    let revoked = app
        .http
        .post(format!("{}/oauth2/revoke", app.base))
        .basic_auth(&client.client_id, Some(&client.secret))
        .form(&[("token", grant_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let response = exchange(&app, &grant_token, None).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn grant_tokens_stop_when_the_app_they_came_through_is_disabled() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let full: Value = app
        .oauth_basic(&client, "grant_type=client_credentials")
        .await
        .json()
        .await
        .unwrap();
    let full = full["access_token"].as_str().unwrap().to_owned();
    let id = create_grant(&app, &full, json!({ "scope": "authGrants:read" })).await;
    let grant_token = api_token_string(&app, &full, &id).await;
    assert_eq!(works_on_a_protected_route(&app, &grant_token).await, 200);
    app.admin_post(&format!("/admin/v1/apps/{}/disable", client.id), json!({}))
        .await;
    assert_eq!(works_on_a_protected_route(&app, &grant_token).await, 401);
}
