//! Writes that cannot race: app secrets and settings, and signing keys. Each test forces
//! the interleaving it is about with the intercepting store's pauses and gatherings.

use std::{future::Future, sync::Arc};

use chrono::{TimeDelta, Utc};
use portcullis::{
    app::{build_authority, open_store, secret_hasher},
    authority::clock::{FixedClock, SharedClock, SystemClock},
    domain::KeyState,
};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_TOKEN, Spawn, TestApp, TestClient, TestDatabase, postgres_url, settings},
    intercept::{Hooks, InterceptStore, When},
};

/// An admin request that does not borrow the app, so it can run in a task of its own.
fn admin_request(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> impl Future<Output = Response> + Send + use<> {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.admin))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    async move { request.send().await.expect("admin request") }
}

fn rotate_secret(app: &TestApp, id: &str) -> impl Future<Output = Response> + Send + use<> {
    admin_request(
        app,
        Method::POST,
        &format!("/admin/v1/apps/{id}/rotate-secret"),
        Some(json!({ "grace_period_secs": 0 })),
    )
}

fn patch_app(
    app: &TestApp,
    id: &str,
    body: Value,
) -> impl Future<Output = Response> + Send + use<> {
    admin_request(
        app,
        Method::PATCH,
        &format!("/admin/v1/apps/{id}"),
        Some(body),
    )
}

fn rotate_keys(app: &TestApp) -> impl Future<Output = Response> + Send + use<> {
    admin_request(app, Method::POST, "/admin/v1/keys/rotate", Some(json!({})))
}

async fn show_app(app: &TestApp, id: &str) -> Value {
    let response = admin_request(app, Method::GET, &format!("/admin/v1/apps/{id}"), None).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// (kid, state) of every key the server lists.
async fn key_states(app: &TestApp) -> Vec<(String, String)> {
    let keys: Vec<Value> = admin_request(app, Method::GET, "/admin/v1/keys", None)
        .await
        .json()
        .await
        .unwrap();
    let mut states: Vec<(String, String)> = keys
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    states.sort();
    states
}

fn kids_in(states: &[(String, String)], state: &str) -> Vec<String> {
    states
        .iter()
        .filter(|(_, s)| s == state)
        .map(|(kid, _)| kid.clone())
        .collect()
}

/// Client credentials: the status, and the token's body when issued.
async fn client_token(app: &TestApp, client: &TestClient) -> (u16, Value) {
    let response = app
        .oauth_basic(client, "grant_type=client_credentials")
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .unwrap()
        .kid
        .expect("tokens name their key")
}

async fn sorted_statuses(responses: [Response; 2]) -> (Vec<u16>, Vec<Value>) {
    let mut out = Vec::new();
    for response in responses {
        let status = response.status().as_u16();
        out.push((status, response.json::<Value>().await.unwrap()));
    }
    out.sort_by_key(|(status, _)| *status);
    out.into_iter().unzip()
}

#[tokio::test]
async fn rotation_never_undoes_a_concurrent_update() {
    let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
    let client = app.default_app().await;

    let mut held = hooks.pause("rotate_app_secrets", When::Before);
    let rotation = tokio::spawn(rotate_secret(&app, &client.id));
    // The rotation has read the app and hashed its new secret; it has not written yet.
    held.reached().await;
    let patched = patch_app(
        &app,
        &client.id,
        json!({ "allowed_scopes": "orders:read", "default_scopes": "orders:read" }),
    )
    .await;
    assert_eq!(patched.status(), 200);
    held.release();

    let rotated = rotation.await.unwrap();
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let shown = show_app(&app, &client.id).await;
    assert_eq!(
        (&shown["allowed_scopes"], &shown["default_scopes"]),
        (&json!("orders:read"), &json!("orders:read")),
        "the rotation kept the scopes patched meanwhile: {shown}"
    );
    assert_eq!(rotated["allowed_scopes"], "orders:read", "{rotated}");

    let new = TestClient {
        secret: rotated["client_secret"].as_str().unwrap().to_owned(),
        ..client.clone()
    };
    let (status, token) = client_token(&app, &new).await;
    assert_eq!(status, 200, "the new secret works");
    assert_eq!(token["scope"], "orders:read");
    assert_eq!(client_token(&app, &client).await.0, 401, "no grace asked");
}

#[tokio::test]
async fn concurrent_secret_rotations_have_exactly_one_winner() {
    let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
    let client = app.default_app().await;

    // Both rotations have read the app (and hashed a secret) before either writes.
    hooks.gather("rotate_app_secrets", When::Before, 2);
    let (a, b) = tokio::join!(
        rotate_secret(&app, &client.id),
        rotate_secret(&app, &client.id)
    );
    let (statuses, bodies) = sorted_statuses([a, b]).await;
    assert_eq!(statuses, vec![200, 409], "{bodies:?}");
    assert!(
        bodies[1].get("client_secret").is_none(),
        "the loser hands out no secret: {}",
        bodies[1]
    );

    let winner = TestClient {
        secret: bodies[0]["client_secret"].as_str().unwrap().to_owned(),
        ..client.clone()
    };
    assert_eq!(
        client_token(&app, &winner).await.0,
        200,
        "the winner's works"
    );
    assert_eq!(client_token(&app, &client).await.0, 401, "no grace asked");

    // A retry after the conflict rotates from the winner's secret.
    let retried = rotate_secret(&app, &client.id).await;
    assert_eq!(retried.status(), 200);
}

#[tokio::test]
async fn concurrent_app_updates_never_undo_each_other() {
    let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
    let client = app.default_app().await;

    // Both updates have read the app before either writes.
    hooks.gather("update_application_settings", When::Before, 2);
    let (renamed, rescoped) = tokio::join!(
        patch_app(&app, &client.id, json!({ "name": "renamed" })),
        patch_app(
            &app,
            &client.id,
            json!({ "allowed_scopes": "orders:read orders:write", "default_scopes": "orders:read" }),
        )
    );
    assert_eq!(
        (renamed.status().as_u16(), rescoped.status().as_u16()),
        (200, 200)
    );
    let shown = show_app(&app, &client.id).await;
    assert_eq!(shown["name"], "renamed", "{shown}");
    assert_eq!(
        shown["allowed_scopes"], "orders:read orders:write",
        "{shown}"
    );
    assert_eq!(shown["default_scopes"], "orders:read", "{shown}");
    assert_eq!(
        client_token(&app, &client).await.0,
        200,
        "updates never touch the secret"
    );
}

#[tokio::test]
async fn concurrent_app_updates_keep_default_scopes_within_allowed_scopes() {
    let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
    let client = app
        .create_app(json!({
            "name": "scoped",
            "allowed_scopes": "orders:read orders:write",
            "default_scopes": "orders:read",
        }))
        .await;

    // Each change is valid against what both read; together they are not.
    hooks.gather("update_application_settings", When::Before, 2);
    let (narrowed, widened) = tokio::join!(
        patch_app(&app, &client.id, json!({ "allowed_scopes": "orders:read" })),
        patch_app(
            &app,
            &client.id,
            json!({ "default_scopes": "orders:read orders:write" }),
        )
    );
    let (statuses, bodies) = sorted_statuses([narrowed, widened]).await;
    assert_eq!(
        statuses,
        vec![200, 400],
        "the later one is judged against the earlier: {bodies:?}"
    );
    let shown = show_app(&app, &client.id).await;
    let settings = (
        shown["allowed_scopes"].as_str().unwrap(),
        shown["default_scopes"].as_str().unwrap(),
    );
    assert!(
        settings == ("orders:read", "orders:read")
            || settings == ("orders:read orders:write", "orders:read orders:write"),
        "the defaults stay within the allowed scopes: {settings:?}"
    );
}

#[tokio::test]
async fn replicas_starting_together_agree_on_one_key() {
    const REPLICAS: usize = 3;
    let db = TestDatabase::new().await;
    let settings = settings(&db, &[]);
    let hooks = Arc::new(Hooks::default());
    let clock: SharedClock = Arc::new(SystemClock);
    let mut stores = Vec::new();
    for _ in 0..REPLICAS {
        let store = open_store(&settings).await.expect("store opens");
        stores.push(InterceptStore::wrap_with(store, hooks.clone()));
    }

    // Every replica has found no key (and made its candidates) before any decides.
    hooks.gather("initialize_signing_keys", When::Before, REPLICAS);
    let mut opening = tokio::task::JoinSet::new();
    for store in &stores {
        let (settings, store, clock) = (settings.clone(), store.clone(), clock.clone());
        opening.spawn(async move {
            let hasher = Arc::new(secret_hasher(&settings)?);
            build_authority(&settings, store, clock, hasher).await
        });
    }
    let rings: Vec<_> = opening
        .join_all()
        .await
        .into_iter()
        .map(|core| core.expect("the core opens"))
        .collect();

    let stored = stores[0].signing_keys().await.unwrap();
    let count = |state: KeyState| stored.iter().filter(|k| k.state == state).count();
    assert_eq!(
        (
            count(KeyState::Current),
            count(KeyState::Next),
            stored.len()
        ),
        (1, 1, 2),
        "one current and one next key: {:?}",
        stored.iter().map(|k| (&k.kid, k.state)).collect::<Vec<_>>()
    );
    let current = stored
        .iter()
        .find(|k| k.state == KeyState::Current)
        .unwrap();
    for core in &rings {
        let keys = core.signing_keys();
        let signing = keys.iter().find(|k| k.state == KeyState::Current).unwrap();
        assert_eq!(signing.kid, current.kid, "every replica signs alike");
        assert_eq!(keys.len(), 2, "and knows both keys");
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: TEST_DATABASE_URL=… cargo test -- --include-ignored"]
async fn replicas_starting_together_agree_on_one_key_across_servers() {
    postgres_url();
    let db = Arc::new(TestDatabase::new().await);
    // Migrated first, so the servers starting together only race on the keys.
    open_store(&settings(&db, &[]))
        .await
        .expect("migrations run");
    let hooks = Arc::new(Hooks::default());
    hooks.gather("initialize_signing_keys", When::Before, 2);
    let replica = |hooks: Arc<Hooks>| {
        TestApp::spawn_on(
            db.clone(),
            Spawn {
                wrap_store: Some(Box::new(move |inner| {
                    InterceptStore::wrap_with(inner, hooks)
                })),
                ..Spawn::default()
            },
        )
    };
    let (a, b) = tokio::join!(replica(hooks.clone()), replica(hooks.clone()));

    let client = a.default_app().await;
    let mut tokens = Vec::new();
    for server in [&a, &b] {
        let (status, body) = client_token(server, &client).await;
        assert_eq!(status, 200);
        tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(kid_of(&tokens[0]), kid_of(&tokens[1]), "one current key");
    for server in [&a, &b] {
        for token in &tokens {
            let status = server
                .http
                .post(format!("{}/profile/auth-grants", server.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200, "each replica accepts the other's tokens");
        }
    }
}

#[tokio::test]
async fn concurrent_key_rotations_never_sign_an_unpublished_key() {
    let clock = FixedClock::new(Utc::now());
    let (app, hooks) = TestApp::spawn_intercepted(Spawn {
        overrides: &[("PORTCULLIS__KEYS__NEXT_KEY_LEAD_SECS", "20")],
        clock: Some(clock.clone()),
        ..Spawn::default()
    })
    .await;
    let client = app.default_app().await;
    let started = key_states(&app).await;
    let (first, published) = (kids_in(&started, "current"), kids_in(&started, "next"));
    assert_eq!((first.len(), published.len()), (1, 1), "{started:?}");

    // Right after start the next key may not be loaded by every replica yet.
    let early = rotate_keys(&app).await;
    assert_eq!(early.status(), 409);
    let problem: Value = early.json().await.unwrap();
    assert!(
        problem.to_string().contains("keys.next_key_lead_secs"),
        "the refusal says when to retry: {problem}"
    );
    clock.advance(TimeDelta::seconds(19));
    assert_eq!(
        rotate_keys(&app).await.status(),
        409,
        "still inside the lead"
    );
    assert_eq!(key_states(&app).await, started, "refusals change nothing");
    clock.advance(TimeDelta::seconds(1));

    // Both rotations start before either decides: only the first may promote.
    hooks.gather("rotate_signing_keys", When::Before, 2);
    let (a, b) = tokio::join!(rotate_keys(&app), rotate_keys(&app));
    let (statuses, bodies) = sorted_statuses([a, b]).await;
    assert_eq!(statuses, vec![200, 409], "{bodies:?}");
    assert_eq!(bodies[0]["kid"], published[0], "the published key signs");

    let after = key_states(&app).await;
    assert_eq!(kids_in(&after, "current"), published, "{after:?}");
    assert_eq!(kids_in(&after, "retired"), first, "{after:?}");
    let fresh = kids_in(&after, "next");
    assert_eq!(fresh.len(), 1, "{after:?}");
    assert!(!first.contains(&fresh[0]) && !published.contains(&fresh[0]));
    let (_, token) = client_token(&app, &client).await;
    assert_eq!(
        kid_of(token["access_token"].as_str().unwrap()),
        published[0]
    );
}

#[tokio::test]
async fn a_change_of_algorithm_signs_from_the_next_rotation() {
    let before = TestApp::spawn().await;
    let db = before.database();
    let client = before.default_app().await;
    let (_, body) = client_token(&before, &client).await;
    let es256_token = body["access_token"].as_str().unwrap().to_owned();
    before.shutdown().await.unwrap();

    let after = TestApp::spawn_on(
        db,
        Spawn {
            overrides: &[("PORTCULLIS__TOKENS__ALGORITHM", "EdDSA")],
            ..Spawn::default()
        },
    )
    .await;
    let (_, body) = client_token(&after, &client).await;
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        kid_of(token),
        kid_of(&es256_token),
        "the current key signs until a rotation"
    );
    let keys: Vec<Value> = admin_request(&after, Method::GET, "/admin/v1/keys", None)
        .await
        .json()
        .await
        .unwrap();
    let next = keys.iter().find(|k| k["state"] == "next").unwrap();
    assert_eq!(next["algorithm"], "EdDSA", "{keys:?}");

    let rotated = rotate_keys(&after).await;
    assert_eq!(rotated.status(), 200);
    let (_, body) = client_token(&after, &client).await;
    let token = body["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(
        header.kid.as_ref(),
        next["kid"].as_str().map(str::to_owned).as_ref()
    );
    for token in [token, es256_token.as_str()] {
        let status = after
            .http
            .post(format!("{}/profile/auth-grants", after.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "tokens of both algorithms are accepted");
    }
}
