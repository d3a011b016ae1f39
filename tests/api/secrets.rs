//! Several secrets per app: each is created (shown once), listed (never shown again),
//! expires, runs out of uses and is revoked on its own; revoking one can take every token it
//! minted along, and whatever was derived from them.

use std::{str::FromStr, sync::Arc};

use chrono::{DateTime, TimeDelta, Utc};
use portcullis::authority::{
    clock::{Clock, FixedClock},
    secrets::{HashParams, SecretHasher},
};
use reqwest::{Method, Response};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_TOKEN, Spawn, TestApp, TestClient, TestDatabase, admin, postgres_url},
    intercept::When,
};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const GRANT_SCOPES: &str = "authGrants:read authGrants:write orders:read";

/// Adds a secret to `client`'s app; returns the response body and the client holding it.
async fn add_secret(app: &TestApp, client: &TestClient, body: Value) -> (Value, TestClient) {
    let path = format!("/admin/v1/apps/{}/secrets", client.id);
    let response = admin(app, Method::POST, &path, Some(body)).await;
    assert_eq!(response.status(), 201, "adding a secret");
    let body: Value = response.json().await.unwrap();
    let holder = TestClient {
        secret: body["client_secret"].as_str().unwrap().to_owned(),
        ..client.clone()
    };
    (body, holder)
}

async fn list(app: &TestApp, client: &TestClient) -> Vec<Value> {
    let path = format!("/admin/v1/apps/{}/secrets", client.id);
    let response = admin(app, Method::GET, &path, None).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn revoke(app: &TestApp, client: &TestClient, secret_id: &str, tokens: bool) -> Response {
    let path = format!(
        "/admin/v1/apps/{}/secrets/{secret_id}?revoke_tokens={tokens}",
        client.id
    );
    admin(app, Method::DELETE, &path, None).await
}

/// The id of the secret `holder` holds, as the list shows it.
async fn id_of(app: &TestApp, holder: &TestClient) -> String {
    let secrets = list(app, holder).await;
    let shown = &holder.secret[..12];
    let found: Vec<&Value> = secrets.iter().filter(|s| s["prefix"] == shown).collect();
    assert_eq!(
        found.len(),
        1,
        "one secret starts with {shown}: {secrets:?}"
    );
    found[0]["id"].as_str().unwrap().to_owned()
}

async fn status(app: &TestApp, client: &TestClient) -> u16 {
    app.endorsed_json(client.json(None)).await.status().as_u16()
}

async fn token(app: &TestApp, client: &TestClient) -> String {
    let response = app
        .oauth_basic(client, "grant_type=client_credentials")
        .await;
    assert_eq!(response.status(), 200, "a token for the client");
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn bearer(app: &TestApp, method: Method, path: &str, token: &str, body: Value) -> Response {
    app.http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn create_grant(app: &TestApp, token: &str) -> String {
    let response = bearer(
        app,
        Method::POST,
        "/auth-grant/create",
        token,
        json!({ "name": "ci", "scope": "orders:read" }),
    )
    .await;
    assert_eq!(response.status(), 200, "creating a grant");
    response
        .json::<Value>()
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

async fn exchanged(app: &TestApp, api_token: &str) -> String {
    let response = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .form(&[
            ("grant_type", EXCHANGE),
            ("subject_token", api_token),
            ("subject_token_type", ACCESS_TOKEN),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "exchanging a grant's token");
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn enrollment_token(app: &TestApp, client: &TestClient, owner: &str) -> String {
    let created = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": owner }),
        )
        .await;
    assert!(created.status().is_success(), "enrolling {owner}");
    let response = app
        .http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .json(&json!({
            "client_id": client.client_id, "client_secret": client.secret, "owner_id": owner,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "authorizing {owner}");
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

async fn active(app: &TestApp, caller: &TestClient, token: &str) -> bool {
    app.introspection(caller, token).await["active"] == true
}

#[tokio::test]
async fn a_second_secret_works_beside_the_first_and_is_listed_without_itself() {
    let app = TestApp::spawn().await;
    let first = app.default_app().await;
    let (created, second) = add_secret(
        &app,
        &first,
        json!({ "description": "CI runner, eu-west", "max_uses": 100 }),
    )
    .await;
    assert_ne!(second.secret, first.secret);
    assert!(second.secret.starts_with("pcs_"));
    assert_eq!(created["prefix"], second.secret[..12], "{created}");
    assert_eq!(created["description"], "CI runner, eu-west");
    assert_eq!(created["status"], "active");
    assert_eq!(created["use_count"], 0);
    assert_eq!(created["max_uses"], 100);
    assert_eq!(created["app_id"], first.id.as_str());

    for client in [&first, &second] {
        assert_eq!(status(&app, client).await, 200, "endorsed");
        token(&app, client).await;
    }
    app.authority.flush_usage().await.unwrap();

    let path = format!("/admin/v1/apps/{}/secrets", first.id);
    let text = admin(&app, Method::GET, &path, None)
        .await
        .text()
        .await
        .unwrap();
    for secret in [&first.secret, &second.secret] {
        assert!(!text.contains(secret.as_str()), "the list shows no secret");
    }
    assert!(!text.contains("argon2"), "nor a hash");
    let secrets: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(secrets.len(), 2, "{secrets:?}");
    assert_eq!(secrets[0]["prefix"], first.secret[..12], "oldest first");
    assert_eq!(secrets[0]["description"], "");
    assert_eq!(secrets[0]["max_uses"], Value::Null);
    assert_eq!(secrets[1]["id"], created["id"]);
    for secret in &secrets {
        assert_eq!(secret["use_count"], 2, "two uses each: {secret}");
        assert!(secret["last_used_at"].is_string(), "{secret}");
        assert!(secret.get("client_secret").is_none(), "shown once only");
    }
}

#[tokio::test]
async fn revoking_one_secret_leaves_the_other_working() {
    let app = TestApp::spawn().await;
    let first = app.default_app().await;
    let (created, second) = add_secret(&app, &first, json!({})).await;
    // Both warm: the revocation must beat the cache.
    assert_eq!(status(&app, &first).await, 200);
    assert_eq!(status(&app, &second).await, 200);
    let minted = token(&app, &second).await;

    let response = revoke(&app, &first, created["id"].as_str().unwrap(), false).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "id": created["id"], "tokens_revoked": false, "grants_revoked": 0 })
    );
    assert_eq!(status(&app, &second).await, 401, "the revoked secret");
    assert_eq!(status(&app, &first).await, 200, "the other one");
    assert!(
        active(&app, &first, &minted).await,
        "without revoke_tokens, what the secret minted stands"
    );
    assert_eq!(list(&app, &first).await.len(), 1);
    let again = revoke(&app, &first, created["id"].as_str().unwrap(), false).await;
    assert_eq!(again.status(), 404, "already gone");
}

#[tokio::test]
async fn revoking_a_secret_with_its_tokens_refuses_everything_it_minted() {
    let app = TestApp::spawn().await;
    let kept = app
        .create_app(json!({ "name": "lineage", "allowed_scopes": GRANT_SCOPES }))
        .await;
    let (_, doomed) = add_secret(&app, &kept, json!({ "description": "leaked" })).await;
    let doomed_id = id_of(&app, &doomed).await;

    // What the doomed secret minted, and what was derived from it.
    let app_token = token(&app, &doomed).await;
    let enrollment = enrollment_token(&app, &doomed, "owner-1").await;
    let grant = create_grant(&app, &app_token).await;
    let grant_token = app.grant_api_token(&app_token, &grant).await;
    let exchanged = exchanged(&app, &grant_token).await;
    create_grant(&app, &enrollment).await;
    // What the other secret minted.
    let kept_token = token(&app, &kept).await;
    let kept_grant = create_grant(&app, &kept_token).await;
    let kept_grant_token = app.grant_api_token(&kept_token, &kept_grant).await;
    let doomed_tokens = [&app_token, &enrollment, &grant_token, &exchanged];
    for token in doomed_tokens
        .iter()
        .chain([&&kept_token, &&kept_grant_token])
    {
        assert!(active(&app, &kept, token).await, "active before");
    }

    let response = revoke(&app, &kept, &doomed_id, true).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tokens_revoked"], true);
    assert_eq!(body["grants_revoked"], 2, "{body}");

    for (what, token) in ["app token", "enrollment token", "grant token", "exchanged"]
        .iter()
        .zip(doomed_tokens)
    {
        assert!(!active(&app, &kept, token).await, "{what}: introspection");
    }
    let on_bearer_route = |token: &str| {
        let app = &app;
        let token = token.to_owned();
        async move {
            bearer(app, Method::POST, "/profile/auth-grants", &token, json!({}))
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(on_bearer_route(&app_token).await, 401, "app token");
    assert_eq!(app.enrollment_of(&enrollment).await.status(), 401);
    let grant_path = format!("/auth-grant/{grant}");
    let read = bearer(&app, Method::GET, &grant_path, &exchanged, json!(null)).await;
    assert_eq!(read.status(), 401, "exchanged token on a bearer route");
    let renewal = app
        .http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .bearer_auth(&enrollment)
        .json(&json!({ "client_id": kept.client_id, "client_secret": kept.secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(renewal.status(), 401, "nor is its enrollment token renewed");

    // The app's profile sees the grant revoked; the other secret's grant stands.
    let status_of = |grant: &str| {
        let (app, token, path) = (&app, kept_token.clone(), format!("/auth-grant/{grant}"));
        async move {
            let response = bearer(app, Method::GET, &path, &token, json!(null)).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["status"].clone()
        }
    };
    assert_eq!(status_of(&grant).await, "revoked");
    assert_eq!(status_of(&kept_grant).await, "active");

    assert!(
        active(&app, &kept, &kept_token).await,
        "the other secret's token"
    );
    assert!(
        active(&app, &kept, &kept_grant_token).await,
        "and its grant's"
    );
    assert_eq!(status(&app, &doomed).await, 401, "the secret itself");
    assert_eq!(status(&app, &kept).await, 200);
}

#[tokio::test]
async fn a_grant_made_while_its_secret_is_revoked_with_its_tokens_is_never_written() {
    let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
    let kept = app
        .create_app(json!({ "name": "race", "allowed_scopes": GRANT_SCOPES }))
        .await;
    let (_, doomed) = add_secret(&app, &kept, json!({ "description": "leaked" })).await;
    let doomed_id = id_of(&app, &doomed).await;
    let app_token = token(&app, &doomed).await;
    // The token was judged while its secret stood; the write waits at the store's door
    // while the secret is revoked with everything it made.
    let mut paused = hooks.pause("insert_grant", When::Before);
    let creating = tokio::spawn({
        let http = app.http.clone();
        let url = format!("{}/auth-grant/create", app.base);
        let token = app_token.clone();
        async move {
            let response = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "name": "late", "scope": "orders:read" }))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    });
    paused.reached().await;
    assert_eq!(revoke(&app, &kept, &doomed_id, true).await.status(), 200);
    paused.release();
    // Written, the grant would stand again once the revocation's marker expires.
    assert_eq!(
        creating.await.unwrap(),
        401,
        "the token's secret was revoked"
    );
    let kept_token = token(&app, &kept).await;
    let listed: Value = bearer(
        &app,
        Method::POST,
        "/profile/auth-grants",
        &kept_token,
        json!({}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(listed, json!([]), "no grant outlived its secret: {listed}");
}

#[tokio::test]
async fn an_expired_secret_stops_at_its_expiry_even_when_cached() {
    let clock = FixedClock::new(Utc::now());
    let app = TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        ..Spawn::default()
    })
    .await;
    let first = app.default_app().await;
    let (created, brief) = add_secret(&app, &first, json!({ "expires_in": 60 })).await;
    let expires_at = DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert!(
        (expires_at - (clock.now() + TimeDelta::seconds(60)))
            .num_milliseconds()
            .abs()
            < 2
    );
    let at = (clock.now() + TimeDelta::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (created, _) = add_secret(&app, &first, json!({ "expires_at": at })).await;
    assert_eq!(created["expires_at"], at.replace('Z', ".000Z"));

    assert_eq!(status(&app, &brief).await, 200);
    assert_eq!(status(&app, &brief).await, 200, "warm");
    clock.advance(TimeDelta::seconds(59));
    assert_eq!(status(&app, &brief).await, 200, "a second to go");
    clock.advance(TimeDelta::seconds(1));
    assert_eq!(status(&app, &brief).await, 401, "expired, cache or not");
    assert_eq!(
        app.oauth_basic(&brief, "grant_type=client_credentials")
            .await
            .status(),
        401
    );
    assert_eq!(status(&app, &first).await, 200, "the others are unaffected");
    let states: Vec<Value> = list(&app, &first)
        .await
        .iter()
        .map(|s| s["status"].clone())
        .collect();
    assert_eq!(states, [json!("active"), json!("expired"), json!("active")]);
}

#[tokio::test]
async fn a_secret_with_max_uses_verifies_exactly_that_many_times() {
    let app = TestApp::spawn().await;
    let first = app.default_app().await;
    let (_, limited) = add_secret(&app, &first, json!({ "max_uses": 3 })).await;
    // Every dialect spends the same uses; the second and third come from the warm cache.
    assert_eq!(status(&app, &limited).await, 200);
    token(&app, &limited).await;
    assert!(active(&app, &limited, &token(&app, &first).await).await);
    for dialect in ["endorsed", "oauth"] {
        let status = match dialect {
            "endorsed" => status(&app, &limited).await,
            _ => app
                .oauth_basic(&limited, "grant_type=client_credentials")
                .await
                .status()
                .as_u16(),
        };
        assert_eq!(status, 401, "{dialect}: used up");
    }
    let shown = list(&app, &first).await;
    assert_eq!(shown[1]["use_count"], 3, "{shown:?}");
    assert_eq!(shown[1]["status"], "used_up");
    assert_eq!(status(&app, &first).await, 200, "the unlimited one goes on");
}

#[tokio::test]
async fn rotation_adds_a_secret_and_expires_every_other_one() {
    let clock = FixedClock::new(Utc::now());
    let app = TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        ..Spawn::default()
    })
    .await;
    let first = app.default_app().await;
    let (_, second) = add_secret(&app, &first, json!({ "description": "second" })).await;
    let (_, soon) = add_secret(&app, &first, json!({ "expires_in": 600 })).await;
    let rotated = app
        .admin_post(
            &format!("/admin/v1/apps/{}/rotate-secret", first.id),
            json!({ "grace_period_secs": 3600 }),
        )
        .await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    assert_eq!(rotated["id"], first.id.as_str(), "the app, as before");
    let newest = TestClient {
        secret: rotated["client_secret"].as_str().unwrap().to_owned(),
        ..first.clone()
    };
    let secrets = list(&app, &first).await;
    let grace_ends = secrets[0]["expires_at"].clone();
    assert!(grace_ends.is_string());
    assert_eq!(secrets[1]["expires_at"], grace_ends, "every other secret");
    assert_ne!(
        secrets[2]["expires_at"], grace_ends,
        "an earlier expiry stays"
    );
    assert_eq!(secrets[3]["expires_at"], Value::Null, "the new one");
    for client in [&first, &second, &soon, &newest] {
        assert_eq!(status(&app, client).await, 200, "in grace");
    }
    clock.advance(TimeDelta::minutes(61));
    for client in [&first, &second, &soon] {
        assert_eq!(status(&app, client).await, 401, "grace over");
    }
    assert_eq!(status(&app, &newest).await, 200);
}

#[tokio::test]
async fn another_apps_secret_and_unknown_ids_are_not_found() {
    let app = TestApp::spawn().await;
    let mine = app.default_app().await;
    let theirs = app.default_app().await;
    let their_secret = id_of(&app, &theirs).await;
    let response = revoke(&app, &mine, &their_secret, true).await;
    assert_eq!(response.status(), 404, "through another app");
    assert_eq!(status(&app, &theirs).await, 200, "and left alone");
    for path in [
        format!("/admin/v1/apps/{}/secrets/not-a-uuid", mine.id),
        format!(
            "/admin/v1/apps/{}/secrets/{}",
            mine.id,
            uuid::Uuid::now_v7()
        ),
        format!(
            "/admin/v1/apps/{}/secrets/{their_secret}",
            uuid::Uuid::now_v7()
        ),
    ] {
        let response = admin(&app, Method::DELETE, &path, None).await;
        assert_eq!(response.status(), 404, "{path}");
    }
    let nobody = format!("/admin/v1/apps/{}/secrets", uuid::Uuid::now_v7());
    assert_eq!(admin(&app, Method::GET, &nobody, None).await.status(), 404);
    let create = admin(&app, Method::POST, &nobody, Some(json!({}))).await;
    assert_eq!(create.status(), 404);
}

#[tokio::test]
async fn bad_secret_requests_get_a_clear_400_and_a_full_app_a_409() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let path = format!("/admin/v1/apps/{}/secrets", client.id);
    let past = (Utc::now() - TimeDelta::minutes(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    for (body, why, says) in [
        (
            json!({ "description": "x".repeat(201) }),
            "description too long",
            "description",
        ),
        (
            json!({ "description": "a\u{7}b" }),
            "control character",
            "description",
        ),
        (
            json!({ "expires_at": past }),
            "expiry in the past",
            "expires_at",
        ),
        (
            json!({ "expires_at": "tomorrow" }),
            "not a timestamp",
            "expires_at",
        ),
        (
            json!({ "expires_in": 60, "expires_at": "2040-01-01T00:00:00Z" }),
            "two expiries",
            "expires_in",
        ),
        (json!({ "expires_in": 0 }), "zero lifetime", "expires_in"),
        (json!({ "max_uses": 0 }), "no uses", "max_uses"),
        (json!({ "max_uses": -1 }), "negative uses", "expected u64"),
        (
            json!({ "client_secret": "pcs_chosen-by-the-caller-0123" }),
            "unknown field",
            "client_secret",
        ),
    ] {
        let response = admin(&app, Method::POST, &path, Some(body)).await;
        assert_eq!(response.status(), 400, "{why}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{why}: {problem}"
        );
    }
    let secret_id = id_of(&app, &client).await;
    let bad_flag = format!("{path}/{secret_id}?revoke_tokens=maybe");
    assert_eq!(
        admin(&app, Method::DELETE, &bad_flag, None).await.status(),
        400
    );
    assert_eq!(list(&app, &client).await.len(), 1, "nothing was written");

    // An empty body is a secret with no expiry and no limit.
    let response = app
        .http
        .post(format!("{}{path}", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    for _ in 2..10 {
        add_secret(&app, &client, json!({})).await;
    }
    let full = admin(&app, Method::POST, &path, Some(json!({}))).await;
    assert_eq!(full.status(), 409, "ten unexpired secrets at most");
    let rotate = format!("/admin/v1/apps/{}/rotate-secret", client.id);
    let rotated = app
        .admin_post(&rotate, json!({ "grace_period_secs": 60 }))
        .await;
    assert_eq!(rotated.status(), 409, "a rotation with grace adds one too");
    let rotated = app
        .admin_post(&rotate, json!({ "grace_period_secs": 0 }))
        .await;
    assert_eq!(rotated.status(), 200, "one without grace replaces them all");
    assert_eq!(list(&app, &client).await.len(), 1);
}

/// Two replicas on one PostgreSQL database share a secret's use count exactly, cached or
/// not, and one replica's revocation of a secret's tokens reaches the other.
#[tokio::test]
#[ignore = "needs PostgreSQL: TEST_DATABASE_URL=… cargo test -- --include-ignored"]
async fn replicas_share_a_secrets_uses_and_its_revocation() {
    postgres_url();
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.database(), Spawn::default()).await;
    let first = a.default_app().await;
    let (_, limited) = add_secret(&a, &first, json!({ "max_uses": 10 })).await;
    // Warm on both, then a burst at both at once: exactly the remaining eight get through.
    assert_eq!(status(&a, &limited).await, 200);
    assert_eq!(status(&b, &limited).await, 200);
    let mut burst = tokio::task::JoinSet::new();
    for replica in [&a, &b] {
        for _ in 0..8 {
            let (http, url, body) = (
                replica.http.clone(),
                format!("{}/api/v1/auth/tokens", replica.base),
                limited.json(None),
            );
            burst.spawn(async move { http.post(url).json(&body).send().await.unwrap().status() });
        }
    }
    let mut granted = 0;
    while let Some(status) = burst.join_next().await {
        let status = status.unwrap().as_u16();
        assert!(matches!(status, 200 | 401), "{status}");
        granted += usize::from(status == 200);
    }
    assert_eq!(granted, 8, "ten uses in all");
    assert_eq!(status(&a, &limited).await, 401);
    assert_eq!(status(&b, &limited).await, 401);

    // A token minted on B by a secret revoked (with its tokens) on A.
    let (_, doomed) = add_secret(&a, &first, json!({})).await;
    let doomed_id = id_of(&a, &doomed).await;
    let minted = token(&b, &doomed).await;
    assert!(active(&b, &first, &minted).await);
    assert_eq!(revoke(&a, &first, &doomed_id, true).await.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while active(&b, &first, &minted).await || status(&b, &doomed).await != 401 {
        assert!(std::time::Instant::now() < deadline, "B never heard of it");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An app created before secrets had their own table (its secret, and a rotated-out one in
/// grace, on the application row) keeps authenticating with both after the upgrade.
#[tokio::test]
async fn an_app_from_before_the_upgrade_keeps_its_secrets() {
    let db = Arc::new(TestDatabase::new().await);
    let hasher = SecretHasher::new(HashParams {
        memory_kib: 8192,
        iterations: 1,
        parallelism: 1,
        concurrency: 1,
    })
    .unwrap();
    let current = "pcs_the-current-secret-of-an-old-app-0123456789";
    let previous = "pcs_the-previous-secret-of-an-old-app-012345678";
    let current_hash = hasher.hash(&SecretString::from(current)).await.unwrap();
    let previous_hash = hasher.hash(&SecretString::from(previous)).await.unwrap();
    let id = uuid::Uuid::now_v7();
    let now = Utc::now();
    let grace_ends = now + TimeDelta::hours(1);
    old_app(&db, id, &current_hash, &previous_hash, now, grace_ends).await;

    let app = TestApp::spawn_on(db, Spawn::default()).await;
    for secret in [current, previous] {
        let client = TestClient {
            id: id.to_string(),
            client_id: "pcc_from-before".into(),
            secret: secret.into(),
        };
        assert_eq!(status(&app, &client).await, 200);
    }
    let client = TestClient {
        id: id.to_string(),
        client_id: "pcc_from-before".into(),
        secret: current.into(),
    };
    let secrets = list(&app, &client).await;
    assert_eq!(secrets.len(), 2, "{secrets:?}");
    assert!(secrets.iter().all(|s| s["prefix"].is_null()), "unknown");
    let expiries: Vec<&Value> = secrets.iter().map(|s| &s["expires_at"]).collect();
    assert!(
        expiries.contains(&&Value::Null),
        "the current one: {expiries:?}"
    );
    assert!(
        expiries.iter().any(|e| e.is_string()),
        "the previous one ends with its grace: {expiries:?}"
    );
}

/// Writes an application as migrations 0001–0008 left it.
async fn old_app(
    db: &TestDatabase,
    id: uuid::Uuid,
    current_hash: &str,
    previous_hash: &str,
    now: DateTime<Utc>,
    grace_ends: DateTime<Utc>,
) {
    const INSERT: &str = "INSERT INTO applications (id, client_id, name, secret_hash, \
        allowed_scopes, default_scopes, sandbox, disabled, created_at, updated_at, \
        previous_secret_hash, previous_secret_expires_at) \
        VALUES ($1, 'pcc_from-before', 'old', $2, 'all:read all:write', 'all:read all:write', \
        FALSE, FALSE, $3, $3, $4, $5)";
    if db.url.starts_with("sqlite:") {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url)
            .unwrap()
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate!("migrations/sqlite")
            .run_to(8, &pool)
            .await
            .unwrap();
        sqlx::query(INSERT)
            .bind(id)
            .bind(current_hash)
            .bind(now.timestamp_micros())
            .bind(previous_hash)
            .bind(grace_ends.timestamp_micros())
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::migrate!("migrations/postgres")
            .run_to(8, &pool)
            .await
            .unwrap();
        sqlx::query(INSERT)
            .bind(id)
            .bind(current_hash)
            .bind(now)
            .bind(previous_hash)
            .bind(grace_ends)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}
