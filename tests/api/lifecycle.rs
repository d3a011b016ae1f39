//! Introspection, revocation, key and secret rotation, usage, and replicas agreeing.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use chrono::TimeDelta;
use portcullis::authority::clock::FixedClock;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Spawn, TestApp, TestClient, postgres_url, verify_token};

async fn app_token(app: &TestApp, client: &TestClient) -> String {
    let body: Value = app
        .oauth_basic(client, "grant_type=client_credentials")
        .await
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn admin(app: &TestApp, method: Method, path: &str) -> Response {
    app.http
        .request(method, format!("{}{path}", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
}

fn inactive() -> Value {
    json!({ "active": false })
}

#[tokio::test]
async fn introspection_describes_active_tokens() {
    let app = TestApp::spawn().await;
    let resource_server = app.default_app().await;
    let client = app.default_app().await;
    let token = app_token(&app, &client).await;
    let body = app.introspection(&resource_server, &token).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], client.client_id);
    assert_eq!(body["sub"], client.client_id);
    assert_eq!(body["sub_kind"], "app");
    assert_eq!(body["scope"], "all:read all:write");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["iss"], crate::helpers::ISSUER);
    assert_eq!(body["aud"], crate::helpers::AUDIENCE);
    for field in ["exp", "iat", "jti"] {
        assert!(!body[field].is_null(), "{field}");
    }
}

#[tokio::test]
async fn introspection_answers_only_active_false_for_everything_else() {
    let clock = FixedClock::new(chrono::Utc::now());
    let app = TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        ..Spawn::default()
    })
    .await;
    let caller = app.default_app().await;
    let other_server = TestApp::spawn().await;
    let foreign_client = other_server.default_app().await;
    let foreign = app_token(&other_server, &foreign_client).await;

    let revoked = app_token(&app, &caller).await;
    assert_eq!(app.revoke(&caller, &revoked).await.status(), 200);

    let disabled_app = app.default_app().await;
    let disabled_app_token = app_token(&app, &disabled_app).await;
    app.admin_post(
        &format!("/admin/v1/apps/{}/disable", disabled_app.id),
        json!({}),
    )
    .await;

    let deleted_app = app.default_app().await;
    let deleted_app_token = app_token(&app, &deleted_app).await;
    admin(
        &app,
        Method::DELETE,
        &format!("/admin/v1/apps/{}", deleted_app.id),
    )
    .await;

    let expiring = app_token(&app, &caller).await;

    for (token, why) in [
        ("garbage", "garbage"),
        (foreign.as_str(), "signed by another server"),
        (revoked.as_str(), "revoked"),
        (disabled_app_token.as_str(), "its app is disabled"),
        (deleted_app_token.as_str(), "its app is deleted"),
    ] {
        assert_eq!(app.introspection(&caller, token).await, inactive(), "{why}");
    }
    clock.advance(TimeDelta::hours(2));
    assert_eq!(
        app.introspection(&caller, &expiring).await,
        inactive(),
        "expired"
    );
}

#[tokio::test]
async fn introspection_follows_grants_and_enrollments() {
    let app = TestApp::spawn().await;
    let caller = app.default_app().await;
    let client = app.default_app().await;
    let enrollment: Value = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": "ws-intro" }),
        )
        .await
        .json()
        .await
        .unwrap();
    let authorized: Value = app
        .http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .json(&json!({ "client_id": client.client_id, "client_secret": client.secret, "owner_id": "ws-intro" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let enrollment_token = authorized["token"].as_str().unwrap();
    let body = app.introspection(&caller, enrollment_token).await;
    assert_eq!(body["enrollment_id"], enrollment["id"]);
    assert_eq!(body["sub_kind"], "owner");
    app.admin_post(
        &format!(
            "/admin/v1/enrollments/{}/disable",
            enrollment["id"].as_str().unwrap()
        ),
        json!({}),
    )
    .await;
    assert_eq!(
        app.introspection(&caller, enrollment_token).await,
        inactive()
    );

    let owner_token = app_token(&app, &client).await;
    let grant_id: Value = app
        .http
        .post(format!("{}/auth-grant/create", app.base))
        .bearer_auth(&owner_token)
        .json(&json!({ "scope": "authGrants:read" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let grant_id = grant_id.as_str().unwrap();
    let grant_token: Value = app
        .http
        .post(format!("{}/auth-grant/{grant_id}/api-token", app.base))
        .bearer_auth(&owner_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let grant_token = grant_token.as_str().unwrap();
    let body = app.introspection(&caller, grant_token).await;
    assert_eq!(body["grant_id"], grant_id);
    app.http
        .post(format!("{}/auth-grant/{grant_id}/revoke", app.base))
        .bearer_auth(&owner_token)
        .send()
        .await
        .unwrap();
    assert_eq!(app.introspection(&caller, grant_token).await, inactive());
}

#[tokio::test]
async fn introspection_and_revocation_require_client_authentication() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let token = app_token(&app, &client).await;
    let impostor = TestClient {
        secret: "pcs_not-the-secret-at-all".into(),
        ..client.clone()
    };
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        let response = app
            .http
            .post(format!("{}{path}", app.base))
            .basic_auth(&impostor.client_id, Some(&impostor.secret))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{path}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client", "{path}");
        let anonymous = app
            .post_raw(
                path,
                Some("application/x-www-form-urlencoded"),
                format!("token={token}"),
            )
            .await;
        assert_eq!(anonymous.status(), 401, "{path} without credentials");
    }
    assert_eq!(app.introspection(&client, &token).await["active"], true);
}

#[tokio::test]
async fn an_app_revokes_its_own_tokens_but_not_another_apps() {
    let app = TestApp::spawn().await;
    let mine = app.default_app().await;
    let theirs = app.default_app().await;
    let my_token = app_token(&app, &mine).await;
    let their_token = app_token(&app, &theirs).await;

    assert_eq!(app.revoke(&mine, &their_token).await.status(), 200);
    assert_eq!(
        app.introspection(&theirs, &their_token).await["active"],
        true,
        "another app's token is left alone"
    );
    assert_eq!(app.revoke(&mine, &my_token).await.status(), 200);
    assert_eq!(app.introspection(&mine, &my_token).await, inactive());
    assert_eq!(
        app.revoke(&mine, &my_token).await.status(),
        200,
        "already revoked"
    );
    assert_eq!(
        app.revoke(&mine, "no-such-token").await.status(),
        200,
        "unknown tokens are fine too"
    );
    let protected = app
        .http
        .post(format!("{}/profile/auth-grants", app.base))
        .bearer_auth(&my_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        protected.status(),
        401,
        "a revoked token stops working on our routes"
    );
}

#[tokio::test]
async fn key_rotation_publishes_ahead_and_keeps_old_tokens_valid_until_they_expire() {
    let clock = FixedClock::new(chrono::Utc::now());
    let app = TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        ..Spawn::default()
    })
    .await;
    let client = app.default_app().await;
    let jwks_kids = || async {
        let jwks: Value = app
            .http
            .get(format!("{}/.well-known/jwks.json", app.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut kids: Vec<String> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        kids.sort();
        kids
    };
    let keys: Vec<Value> = admin(&app, Method::GET, "/admin/v1/keys")
        .await
        .json()
        .await
        .unwrap();
    let state_of = |keys: &[Value], state: &str| -> Vec<String> {
        keys.iter()
            .filter(|k| k["state"] == state)
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = state_of(&keys, "current");
    let next = state_of(&keys, "next");
    assert_eq!((first.len(), next.len()), (1, 1), "{keys:?}");
    let mut both = vec![first[0].clone(), next[0].clone()];
    both.sort();
    assert_eq!(
        jwks_kids().await,
        both,
        "the next key is published before it signs"
    );

    let old_token = app_token(&app, &client).await;
    let (header, _) = verify_token(&app, &old_token).await;
    assert_eq!(header.kid.as_deref(), Some(first[0].as_str()));

    let rotated = app.admin_post("/admin/v1/keys/rotate", json!({})).await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    assert_eq!(
        rotated["kid"], next[0],
        "the published next key became current"
    );

    let new_token = app_token(&app, &client).await;
    let (header, _) = verify_token(&app, &new_token).await;
    assert_eq!(header.kid.as_deref(), Some(next[0].as_str()));
    verify_token(&app, &old_token).await;
    let caller = app.default_app().await;
    assert_eq!(app.introspection(&caller, &old_token).await["active"], true);
    let kids = jwks_kids().await;
    assert_eq!(kids.len(), 3, "retired, current and a new next: {kids:?}");
    assert!(kids.contains(&first[0]));

    // Once every token the first key signed has expired, it leaves JWKS.
    clock.advance(TimeDelta::days(31));
    app.admin_post("/admin/v1/keys/rotate", json!({})).await;
    let kids = jwks_kids().await;
    assert!(!kids.contains(&first[0]), "{kids:?}");
}

#[tokio::test]
async fn a_rotated_secret_keeps_working_for_the_grace_period_only() {
    let clock = FixedClock::new(chrono::Utc::now());
    let app = TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        ..Spawn::default()
    })
    .await;
    let old = app.default_app().await;
    assert_eq!(app.endorsed_json(old.json(None)).await.status(), 200);

    let response = app
        .admin_post(
            &format!("/admin/v1/apps/{}/rotate-secret", old.id),
            json!({ "grace_period_secs": 3600 }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let new = TestClient {
        secret: body["client_secret"].as_str().unwrap().to_owned(),
        ..old.clone()
    };
    assert_ne!(new.secret, old.secret);
    assert_eq!(app.endorsed_json(new.json(None)).await.status(), 200);
    assert_eq!(
        app.endorsed_json(old.json(None)).await.status(),
        200,
        "in grace"
    );

    clock.advance(TimeDelta::minutes(61));
    assert_eq!(
        app.endorsed_json(old.json(None)).await.status(),
        401,
        "grace over"
    );
    assert_eq!(app.endorsed_json(new.json(None)).await.status(), 200);

    let response = app
        .admin_post(
            &format!("/admin/v1/apps/{}/rotate-secret", old.id),
            json!({ "grace_period_secs": 0 }),
        )
        .await;
    let newest: Value = response.json().await.unwrap();
    assert_eq!(
        app.endorsed_json(new.json(None)).await.status(),
        401,
        "no grace: the previous secret stops at once"
    );
    let newest = TestClient {
        secret: newest["client_secret"].as_str().unwrap().to_owned(),
        ..old
    };
    assert_eq!(app.endorsed_json(newest.json(None)).await.status(), 200);
}

#[tokio::test]
async fn last_used_at_is_recorded_in_batches() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let shown: Value = admin(&app, Method::GET, &format!("/admin/v1/apps/{}", client.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["last_used_at"], Value::Null);
    for _ in 0..3 {
        assert_eq!(app.endorsed_json(client.json(None)).await.status(), 200);
    }
    let written = app.authority.flush_usage().await.unwrap();
    assert_eq!(
        written, 2,
        "three uses coalesce into one write for the app and one for its secret"
    );
    let shown: Value = admin(&app, Method::GET, &format!("/admin/v1/apps/{}", client.id))
        .await
        .json()
        .await
        .unwrap();
    assert!(shown["last_used_at"].is_string(), "{shown}");
    let secrets: Value = admin(
        &app,
        Method::GET,
        &format!("/admin/v1/apps/{}/secrets", client.id),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(secrets[0]["use_count"], 3, "{secrets}");
    assert!(secrets[0]["last_used_at"].is_string(), "{secrets}");
}

/// Polls until `check` holds, for at most two seconds: notices between replicas travel
/// through PostgreSQL asynchronously, in milliseconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not happen within 2 s");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: TEST_DATABASE_URL=… cargo test -- --include-ignored"]
async fn a_change_on_one_replica_is_seen_by_another_at_once() {
    // Replicas share PostgreSQL; the embedded SQLite store has exactly one process.
    postgres_url();
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.database(), Spawn::default()).await;
    let client = a.default_app().await;
    let token = app_token(&a, &client).await;
    let protected = |app: &TestApp, token: String| {
        let http = app.http.clone();
        let url = format!("{}/profile/auth-grants", app.base);
        async move {
            http.post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(protected(&b, token.clone()).await, 200);
    assert_eq!(b.endorsed_json(client.json(None)).await.status(), 200);

    assert_eq!(a.revoke(&client, &token).await.status(), 200);
    eventually("B refusing the token A revoked", || {
        let token = token.clone();
        let b = &b;
        async move { protected(b, token).await == 401 }
    })
    .await;

    a.admin_post(&format!("/admin/v1/apps/{}/disable", client.id), json!({}))
        .await;
    eventually("B refusing the app A disabled", || async {
        b.endorsed_json(client.json(None)).await.status() == 401
    })
    .await;

    a.admin_post("/admin/v1/keys/rotate", json!({})).await;
    let a_keys: Vec<Value> = admin(&a, Method::GET, "/admin/v1/keys")
        .await
        .json()
        .await
        .unwrap();
    eventually("B agreeing on the current key", || {
        let a_keys = a_keys.clone();
        let b = &b;
        async move {
            let b_keys: Vec<Value> = admin(b, Method::GET, "/admin/v1/keys")
                .await
                .json()
                .await
                .unwrap();
            b_keys == a_keys
        }
    })
    .await;
}
