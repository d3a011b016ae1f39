//! Credential lineage: no derived credential outlives, escapes or out-scopes its parent.
//! Every token is judged along its whole chain (token → grant → enrollment → app) at each
//! use, and no cache brings back state older than a change this replica has seen.

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::{
    helpers::{Spawn, TestApp, TestClient},
    intercept::When,
};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An owner enrolled with an app, and an enrollment token for it.
struct Enrolled {
    enrollment_id: String,
    token: String,
}

async fn enroll(app: &TestApp, client: &TestClient, owner: &str, scopes: &str) -> Enrolled {
    let created = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": owner, "scopes": scopes }),
        )
        .await;
    assert_eq!(created.status(), 201, "enrolling {owner}");
    let created: Value = created.json().await.unwrap();
    let token = authorize(app, client, json!({ "owner_id": owner })).await;
    Enrolled {
        enrollment_id: created["id"].as_str().unwrap().to_owned(),
        token,
    }
}

async fn authorize(app: &TestApp, client: &TestClient, query: Value) -> String {
    let mut body = json!({ "client_id": client.client_id, "client_secret": client.secret });
    for (k, v) in query.as_object().unwrap() {
        body[k] = v.clone();
    }
    let response = app
        .http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "authorizing {query}");
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

async fn call(app: &TestApp, method: Method, path: &str, token: &str, body: Value) -> Response {
    app.http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn create_grant(app: &TestApp, token: &str, scope: &str) -> String {
    let response = call(
        app,
        Method::POST,
        "/auth-grant/create",
        token,
        json!({ "name": "ci", "scope": scope }),
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

async fn api_token(app: &TestApp, token: &str, grant: &str) -> Response {
    call(
        app,
        Method::POST,
        &format!("/auth-grant/{grant}/api-token"),
        token,
        json!(null),
    )
    .await
}

async fn api_token_string(app: &TestApp, token: &str, grant: &str) -> String {
    let response = api_token(app, token, grant).await;
    assert_eq!(response.status(), 200, "minting a grant's API token");
    response
        .json::<Value>()
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

async fn list_grants(app: &TestApp, token: &str) -> Response {
    call(app, Method::POST, "/profile/auth-grants", token, json!({})).await
}

async fn exchange(app: &TestApp, subject_token: &str, scope: Option<&str>) -> Response {
    let mut form = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", ACCESS_TOKEN),
    ];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    app.http
        .post(format!("{}/oauth2/token", app.base))
        .form(&form)
        .send()
        .await
        .unwrap()
}

async fn client_credentials(app: &TestApp, client: &TestClient) -> Response {
    app.endorsed_json(client.json(None)).await
}

const GRANT_SCOPES: &str = "authGrants:read authGrants:write authGrants:delete";

#[tokio::test]
async fn grant_dies_with_its_enrollment() {
    let app = TestApp::spawn().await;
    let client = app
        .create_app(json!({ "name": "a", "allowed_scopes": format!("{GRANT_SCOPES} orders:read") }))
        .await;
    let owner = enroll(
        &app,
        &client,
        "workspace-1",
        &format!("{GRANT_SCOPES} orders:read"),
    )
    .await;
    let grant = create_grant(&app, &owner.token, &format!("{GRANT_SCOPES} orders:read")).await;
    let grant_token = api_token_string(&app, &owner.token, &grant).await;
    assert_eq!(list_grants(&app, &grant_token).await.status(), 200);
    assert_eq!(exchange(&app, &grant_token, None).await.status(), 200);

    let disable = format!("/admin/v1/enrollments/{}/disable", owner.enrollment_id);
    assert_eq!(app.admin_post(&disable, json!({})).await.status(), 200);
    assert_eq!(
        list_grants(&app, &grant_token).await.status(),
        401,
        "the grant's token dies with its enrollment"
    );
    assert_eq!(exchange(&app, &grant_token, None).await.status(), 400);
    assert_eq!(
        api_token(&app, &grant_token, &grant).await.status(),
        401,
        "nor can it mint itself a new one"
    );
    assert_eq!(
        app.introspection(&client, &grant_token).await["active"],
        false
    );

    let enable = format!("/admin/v1/enrollments/{}/enable", owner.enrollment_id);
    assert_eq!(app.admin_post(&enable, json!({})).await.status(), 200);
    assert_eq!(list_grants(&app, &grant_token).await.status(), 200);

    let deleted = app
        .admin_delete(&format!("/admin/v1/enrollments/{}", owner.enrollment_id))
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(list_grants(&app, &grant_token).await.status(), 401);
    assert_eq!(exchange(&app, &grant_token, None).await.status(), 400);
    assert_eq!(
        app.introspection(&client, &grant_token).await["active"],
        false
    );

    // Enrolled again, the owner starts afresh: the old grant went with the old enrollment.
    let again = enroll(&app, &client, "workspace-1", GRANT_SCOPES).await;
    let listed: Value = list_grants(&app, &again.token).await.json().await.unwrap();
    assert_eq!(listed, json!([]));
    assert_eq!(list_grants(&app, &grant_token).await.status(), 401);
}

#[tokio::test]
async fn apps_enrolled_for_one_owner_never_see_each_others_grants() {
    let app = TestApp::spawn_with(Spawn {
        overrides: &[("PORTCULLIS__GRANTS__MAX_ACTIVE_PER_PROFILE", "2")],
        ..Spawn::default()
    })
    .await;
    let scopes = format!("{GRANT_SCOPES} orders:read");
    let a_client = app
        .create_app(json!({ "name": "a", "allowed_scopes": scopes }))
        .await;
    let b_client = app
        .create_app(json!({ "name": "b", "allowed_scopes": scopes }))
        .await;
    let a = enroll(&app, &a_client, "shared-owner", &scopes).await;
    let b = enroll(&app, &b_client, "shared-owner", &scopes).await;

    let a_grant = create_grant(&app, &a.token, "orders:read authGrants:read").await;
    let listed: Value = list_grants(&app, &b.token).await.json().await.unwrap();
    assert_eq!(listed, json!([]), "B lists none of A's grants");
    let read = format!("/auth-grant/{a_grant}");
    assert_eq!(
        call(&app, Method::GET, &read, &b.token, json!(null))
            .await
            .status(),
        404,
        "B cannot read A's grant"
    );
    assert_eq!(api_token(&app, &b.token, &a_grant).await.status(), 404);
    let revoke = format!("/auth-grant/{a_grant}/revoke");
    assert_eq!(
        call(&app, Method::POST, &revoke, &b.token, json!(null))
            .await
            .status(),
        404,
        "B cannot revoke A's grant"
    );
    let delete = format!("/auth-grant/{a_grant}");
    assert_eq!(
        call(&app, Method::DELETE, &delete, &b.token, json!(null))
            .await
            .status(),
        404
    );

    // B filling its cap leaves A's allowance alone.
    create_grant(&app, &b.token, "orders:read").await;
    create_grant(&app, &b.token, "orders:read").await;
    let over = call(
        &app,
        Method::POST,
        "/auth-grant/create",
        &b.token,
        json!({ "scope": "orders:read" }),
    )
    .await;
    assert_eq!(over.status(), 403, "B is at its own cap");
    create_grant(&app, &a.token, "orders:read").await;

    // A's grant tokens carry A's client_id and stay A's.
    let a_grant_token = api_token_string(&app, &a.token, &a_grant).await;
    let seen = app.introspection(&a_client, &a_grant_token).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["client_id"], a_client.client_id);
    let listed: Value = list_grants(&app, &a.token).await.json().await.unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "A's two grants, none of B's"
    );
}

#[tokio::test]
async fn narrowing_app_scopes_narrows_every_derived_token() {
    let app = TestApp::spawn().await;
    let wide = format!("{GRANT_SCOPES} orders:read payouts:write");
    let client = app
        .create_app(json!({ "name": "a", "allowed_scopes": wide }))
        .await;
    let owner = enroll(&app, &client, "workspace-1", &wide).await;
    let grant = create_grant(
        &app,
        &owner.token,
        "authGrants:read orders:read payouts:write",
    )
    .await;
    let grant_token = api_token_string(&app, &owner.token, &grant).await;
    assert_eq!(
        exchange(&app, &grant_token, Some("payouts:write"))
            .await
            .status(),
        200
    );

    let narrowed = app
        .http
        .patch(format!("{}/admin/v1/apps/{}", app.admin, client.id))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({ "allowed_scopes": format!("{GRANT_SCOPES} orders:read"), "default_scopes": "orders:read" }))
        .send()
        .await
        .unwrap();
    assert_eq!(narrowed.status(), 200);

    let refused = exchange(&app, &grant_token, Some("payouts:write")).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "invalid_scope"
    );
    let exchanged: Value = exchange(&app, &grant_token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(exchanged["scope"], "authGrants:read orders:read");

    let fresh = api_token_string(&app, &owner.token, &grant).await;
    let seen = app.introspection(&client, &fresh).await;
    assert_eq!(seen["active"], true);
    assert_eq!(
        seen["scope"], "authGrants:read orders:read",
        "a new API token carries no more"
    );
    let old = app.introspection(&client, &grant_token).await;
    assert_eq!(
        old["scope"], "authGrants:read orders:read",
        "an old one acts with no more"
    );

    // The app's own and the enrollment's tokens narrow too.
    let enrollment = app.introspection(&client, &owner.token).await;
    assert_eq!(enrollment["active"], true);
    assert!(!enrollment["scope"].as_str().unwrap().contains("payouts"));
}

#[tokio::test]
async fn recreated_enrollment_id_revives_nothing() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let first = enroll(&app, &client, "owner-a", "all:read").await;
    assert_eq!(app.enrollment_of(&first.token).await.status(), 200);
    let deleted = app
        .admin_delete(&format!("/admin/v1/enrollments/{}", first.enrollment_id))
        .await;
    assert_eq!(deleted.status(), 204);

    // The same id, created again for another owner.
    let recreated = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": "owner-b", "id": first.enrollment_id }),
        )
        .await;
    assert_eq!(recreated.status(), 201);
    assert_eq!(
        app.enrollment_of(&first.token).await.status(),
        401,
        "the old token names owner-a"
    );
    assert_eq!(
        app.introspection(&client, &first.token).await["active"],
        false
    );
    let renewal = app
        .http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .bearer_auth(&first.token)
        .json(&json!({ "client_id": client.client_id, "client_secret": client.secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        renewal.status(),
        401,
        "nor can it be renewed into owner-b's enrollment"
    );
    let second = authorize(&app, &client, json!({ "owner_id": "owner-b" })).await;
    assert_eq!(app.enrollment_of(&second).await.status(), 200);
}

/// What an operator may do to an app while one of its secrets is being verified.
#[derive(Debug, Clone, Copy)]
enum AppChange {
    Disable,
    Delete,
    RotateWithoutGrace,
    RevokeSecret,
}

async fn apply(app: &TestApp, client: &TestClient, change: AppChange) {
    let status = match change {
        AppChange::Disable => {
            let path = format!("/admin/v1/apps/{}/disable", client.id);
            app.admin_post(&path, json!({})).await.status()
        }
        AppChange::RotateWithoutGrace => {
            let path = format!("/admin/v1/apps/{}/rotate-secret", client.id);
            app.admin_post(&path, json!({ "grace_period_secs": 0 }))
                .await
                .status()
        }
        AppChange::Delete => app
            .admin_delete(&format!("/admin/v1/apps/{}", client.id))
            .await
            .status(),
        AppChange::RevokeSecret => {
            let secrets: Value = app
                .http
                .get(format!("{}/admin/v1/apps/{}/secrets", app.admin, client.id))
                .bearer_auth(crate::helpers::ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let id = secrets[0]["id"].as_str().unwrap();
            app.admin_delete(&format!("/admin/v1/apps/{}/secrets/{id}", client.id))
                .await
                .status()
        }
    };
    assert!(status.is_success(), "{change:?}: {status}");
}

#[tokio::test]
async fn change_during_cold_verification_is_never_cached() {
    for change in [
        AppChange::Disable,
        AppChange::Delete,
        AppChange::RotateWithoutGrace,
        AppChange::RevokeSecret,
    ] {
        let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
        let client = app.default_app().await;
        // The first verification of this secret reads the app and its secrets, then pauses
        // before argon2.
        let mut paused = hooks.pause("app_secrets", When::After);
        let first = tokio::spawn({
            let http = app.http.clone();
            let url = format!("{}/api/v1/auth/tokens", app.base);
            let body = client.json(None);
            async move { http.post(url).json(&body).send().await.unwrap().status() }
        });
        paused.reached().await;
        apply(&app, &client, change).await;
        paused.release();
        // The request that was already in flight may finish either way; nothing after it
        // may get a token from the old state.
        let _ = first.await.unwrap();
        for _ in 0..3 {
            assert_eq!(
                client_credentials(&app, &client).await.status(),
                401,
                "{change:?} landed during the first verification, yet the old secret works"
            );
        }
    }
}

#[tokio::test]
async fn a_standing_read_that_races_a_disable_is_never_cached() {
    let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
    let client = app.default_app().await;
    let owner = enroll(&app, &client, "workspace-1", "all:read").await;
    // The token's first use reads its enrollment cold, and pauses once it has it.
    let mut paused = hooks.pause("enrollment", When::After);
    let first = tokio::spawn({
        let http = app.http.clone();
        let url = format!("{}/access/v1/enrollment", app.base);
        let token = owner.token.clone();
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    paused.reached().await;
    let disable = format!("/admin/v1/enrollments/{}/disable", owner.enrollment_id);
    assert_eq!(app.admin_post(&disable, json!({})).await.status(), 200);
    paused.release();
    let _ = first.await.unwrap();
    let after = app.enrollment_of(&owner.token).await;
    assert_eq!(
        after.status(),
        401,
        "the disabled enrollment's token still works"
    );
}

#[tokio::test]
async fn a_grant_token_reaches_only_its_own_grant() {
    let app = TestApp::spawn().await;
    let scopes = format!("{GRANT_SCOPES} orders:read");
    let client = app
        .create_app(json!({ "name": "a", "allowed_scopes": scopes }))
        .await;
    let owner = enroll(&app, &client, "workspace-1", &scopes).await;
    let short = create_grant(&app, &owner.token, &scopes).await;
    let sibling = create_grant(&app, &owner.token, "orders:read").await;
    let short_token = api_token_string(&app, &owner.token, &short).await;

    assert_eq!(
        api_token(&app, &short_token, &sibling).await.status(),
        404,
        "a grant's token cannot mint one for a sibling that would outlive it"
    );
    for (method, path) in [
        (Method::GET, format!("/auth-grant/{sibling}")),
        (Method::POST, format!("/auth-grant/{sibling}/revoke")),
        (Method::DELETE, format!("/auth-grant/{sibling}")),
    ] {
        let response = call(&app, method.clone(), &path, &short_token, json!(null)).await;
        assert_eq!(response.status(), 404, "{method} {path}");
    }
    let listed: Value = list_grants(&app, &short_token).await.json().await.unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "only its own grant: {listed}"
    );
    let own = format!("/auth-grant/{short}");
    let own = call(&app, Method::GET, &own, &short_token, json!(null)).await;
    assert_eq!(own.status(), 200);
    // The owner still reaches both.
    let listed: Value = list_grants(&app, &owner.token).await.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn an_exchanged_token_dies_with_the_token_it_came_from() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let app_token: Value = app
        .oauth_basic(&client, "grant_type=client_credentials")
        .await
        .json()
        .await
        .unwrap();
    let app_token = app_token["access_token"].as_str().unwrap().to_owned();
    let grant = create_grant(&app, &app_token, "authGrants:read").await;
    let api = api_token_string(&app, &app_token, &grant).await;
    let exchanged: Value = exchange(&app, &api, None).await.json().await.unwrap();
    let exchanged = exchanged["access_token"].as_str().unwrap().to_owned();
    assert_eq!(list_grants(&app, &exchanged).await.status(), 200);
    assert_eq!(
        exchange(&app, &exchanged, None).await.status(),
        400,
        "only a grant's API token is exchanged, never a token exchanged from one"
    );
    let api_exp = app.introspection(&client, &api).await["exp"]
        .as_i64()
        .unwrap();
    let exchanged_exp = app.introspection(&client, &exchanged).await["exp"]
        .as_i64()
        .unwrap();
    assert!(exchanged_exp <= api_exp, "it never outlives its parent");

    assert_eq!(app.revoke(&client, &api).await.status(), 200);
    assert_eq!(list_grants(&app, &exchanged).await.status(), 401);
    assert_eq!(
        app.introspection(&client, &exchanged).await["active"],
        false
    );
}

#[tokio::test]
async fn a_grant_made_as_its_enrollment_is_deleted_is_never_written() {
    let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
    let client = app
        .create_app(json!({ "name": "a", "allowed_scopes": GRANT_SCOPES }))
        .await;
    let owner = enroll(&app, &client, "workspace-1", GRANT_SCOPES).await;
    // The token was judged while its enrollment stood; the write waits at the store's door.
    let mut paused = hooks.pause("insert_grant", When::Before);
    let creating = tokio::spawn({
        let http = app.http.clone();
        let url = format!("{}/auth-grant/create", app.base);
        let token = owner.token.clone();
        async move {
            let response = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "scope": "authGrants:read" }))
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    });
    paused.reached().await;
    let path = format!("/admin/v1/enrollments/{}", owner.enrollment_id);
    assert_eq!(app.admin_delete(&path).await.status(), 204);
    paused.release();
    let (status, body) = creating.await.unwrap();
    assert_eq!(status, 409, "a clear conflict, not a 500: {body}");
    assert_eq!(body["code"], "CONFLICT");
    let again = enroll(&app, &client, "workspace-1", GRANT_SCOPES).await;
    let listed: Value = list_grants(&app, &again.token).await.json().await.unwrap();
    assert_eq!(listed, json!([]), "no grant outlived its enrollment");
}
