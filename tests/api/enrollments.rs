use serde_json::{Value, json};

use portcullis::authority::clock::FixedClock;

use crate::helpers::{ADMIN_TOKEN, Spawn, TestApp, TestClient, verify_token};

/// Creates an app and enrolls `owner` with it through the admin API.
async fn enrolled(app: &TestApp, owner: &str) -> (TestClient, Value) {
    let client = app.default_app().await;
    let response = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": owner, "data": {"plan": "pro"} }),
        )
        .await;
    assert_eq!(response.status(), 201);
    (client, response.json().await.unwrap())
}

async fn authorize(app: &TestApp, body: Value, bearer: Option<&str>) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn creds(client: &TestClient) -> Value {
    json!({ "client_id": client.client_id, "client_secret": client.secret })
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

async fn mint_owner_token(app: &TestApp, owner: &str) -> String {
    app.owner_token(owner, "all:read").await
}

#[tokio::test]
async fn authorize_by_owner_id_returns_the_documented_object_and_a_token() {
    let app = TestApp::spawn().await;
    let (client, enrollment) = enrolled(&app, "workspace-1").await;
    let response = authorize(
        &app,
        with(creds(&client), json!({"owner_id": "workspace-1"})),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "app_id",
            "created_at",
            "data",
            "disabled",
            "id",
            "owner_id",
            "sandbox",
            "token",
            "token_expires",
            "updated_at"
        ]
    );
    assert_eq!(body["id"], enrollment["id"]);
    assert_eq!(body["app_id"], client.id);
    assert_eq!(body["owner_id"], "workspace-1");
    assert_eq!(body["data"], json!({"plan": "pro"}));
    assert_eq!(body["disabled"], false);
    assert_eq!(body["sandbox"], false);
    for field in ["created_at", "updated_at"] {
        let t = body[field].as_str().unwrap();
        assert!(
            t.ends_with('Z') && t.len() == "2024-01-01T00:00:00.000Z".len(),
            "{field}: RFC 3339 with milliseconds and Z: {t}"
        );
    }
    let (header, claims) = verify_token(&app, body["token"].as_str().unwrap()).await;
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(claims["sub"], "workspace-1");
    assert_eq!(claims["sub_kind"], "owner");
    assert_eq!(claims["client_id"], client.client_id);
    assert_eq!(claims["enrollment_id"], enrollment["id"]);
    assert_eq!(claims["scope"], "all:read all:write");
    assert_eq!(body["token_expires"], claims["exp"]);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
}

#[tokio::test]
async fn authorize_by_id_with_basic_credentials() {
    let app = TestApp::spawn().await;
    let (client, enrollment) = enrolled(&app, "workspace-2").await;
    let response = app
        .http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .basic_auth(&client.client_id, Some(&client.secret))
        .json(&json!({ "id": enrollment["id"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], enrollment["id"]);
}

#[tokio::test]
async fn renewal_with_the_enrollment_token_returns_a_later_token() {
    let clock = FixedClock::new(chrono::Utc::now());
    let app = TestApp::spawn_with(Spawn {
        clock: Some(clock.clone()),
        ..Spawn::default()
    })
    .await;
    let (client, _) = enrolled(&app, "workspace-3").await;
    let first: Value = authorize(
        &app,
        with(creds(&client), json!({"owner_id": "workspace-3"})),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    clock.advance(chrono::TimeDelta::seconds(90));
    let token = first["token"].as_str().unwrap();
    let response = authorize(&app, creds(&client), Some(token)).await;
    assert_eq!(response.status(), 200);
    let renewed: Value = response.json().await.unwrap();
    assert_eq!(renewed["id"], first["id"]);
    assert_ne!(renewed["token"], first["token"]);
    assert!(renewed["token_expires"].as_i64() > first["token_expires"].as_i64());

    let mismatch = authorize(
        &app,
        with(creds(&client), json!({"owner_id": "someone-else"})),
        Some(token),
    )
    .await;
    assert_eq!(
        mismatch.status(),
        403,
        "header wins, and a mismatching owner_id is refused"
    );
    let body: Value = mismatch.json().await.unwrap();
    assert_eq!(body["code"], "forbidden");
}

#[tokio::test]
async fn an_owner_token_names_the_owner_for_authorize() {
    let app = TestApp::spawn().await;
    let (client, enrollment) = enrolled(&app, "workspace-4").await;
    let owner_token = mint_owner_token(&app, "workspace-4").await;
    let response = authorize(&app, creds(&client), Some(&owner_token)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], enrollment["id"]);
}

#[tokio::test]
async fn not_enrolled_and_enrolled_elsewhere_are_the_same_404() {
    let app = TestApp::spawn().await;
    let (_, theirs) = enrolled(&app, "workspace-5").await;
    let mine = app.default_app().await;
    let by_owner = authorize(
        &app,
        with(creds(&mine), json!({"owner_id": "workspace-5"})),
        None,
    )
    .await;
    let nobody = authorize(
        &app,
        with(creds(&mine), json!({"owner_id": "nobody-at-all"})),
        None,
    )
    .await;
    let by_id = authorize(&app, with(creds(&mine), json!({"id": theirs["id"]})), None).await;
    let statuses = [by_owner.status(), nobody.status(), by_id.status()];
    assert_eq!(statuses, [404, 404, 404]);
    let bodies: Vec<Value> = vec![
        by_owner.json().await.unwrap(),
        nobody.json().await.unwrap(),
        by_id.json().await.unwrap(),
    ];
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
    assert!(!bodies[0].to_string().contains("workspace-5"));
}

#[tokio::test]
async fn bad_credentials_are_401_and_validation_errors_carry_fields() {
    let app = TestApp::spawn().await;
    let (client, _) = enrolled(&app, "workspace-6").await;
    let wrong = json!({ "client_id": client.client_id, "client_secret": "pcs_wrong-wrong-wrong-wrong", "owner_id": "workspace-6" });
    let response = authorize(&app, wrong, None).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
    assert!(body["message"].is_string());

    let response = authorize(&app, creds(&client), None).await;
    assert_eq!(response.status(), 400, "no id, owner_id or token");
    let body: Value = response.json().await.unwrap();
    assert!(body["fields"].is_object(), "{body}");

    let response = authorize(
        &app,
        with(creds(&client), json!({"id": "not-a-uuid"})),
        None,
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["fields"]["id"].is_string(), "{body}");

    let response = authorize(&app, json!({"owner_id": "workspace-6"}), None).await;
    assert_eq!(response.status(), 400, "missing credentials");
}

#[tokio::test]
async fn a_disabled_enrollment_is_refused_and_its_tokens_stop_at_once() {
    let app = TestApp::spawn().await;
    let (client, enrollment) = enrolled(&app, "workspace-7").await;
    let authorized: Value = authorize(
        &app,
        with(creds(&client), json!({"owner_id": "workspace-7"})),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let token = authorized["token"].as_str().unwrap().to_owned();
    let get = |token: String| {
        let app = &app;
        async move {
            app.http
                .get(format!("{}/access/v1/enrollment", app.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(get(token.clone()).await.status(), 200);

    let id = enrollment["id"].as_str().unwrap();
    let response = app
        .admin_post(&format!("/admin/v1/enrollments/{id}/disable"), json!({}))
        .await;
    assert_eq!(response.status(), 200);

    let response = get(token.clone()).await;
    assert_eq!(response.status(), 401, "the token stopped working at once");
    assert!(response.headers().contains_key("www-authenticate"));
    let response = authorize(
        &app,
        with(creds(&client), json!({"owner_id": "workspace-7"})),
        None,
    )
    .await;
    assert_eq!(response.status(), 403, "a new authorize is refused");
    let response = authorize(&app, creds(&client), Some(&token)).await;
    assert_eq!(response.status(), 403, "renewal is refused too");

    app.admin_post(&format!("/admin/v1/enrollments/{id}/enable"), json!({}))
        .await;
    assert_eq!(get(token).await.status(), 200);
}

#[tokio::test]
async fn get_and_update_with_the_enrollment_token() {
    let app = TestApp::spawn().await;
    let (client, enrollment) = enrolled(&app, "workspace-8").await;
    let authorized: Value = authorize(
        &app,
        with(creds(&client), json!({"owner_id": "workspace-8"})),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let token = authorized["token"].as_str().unwrap();
    let shown: Value = app
        .http
        .get(format!("{}/access/v1/enrollment", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["id"], enrollment["id"]);
    assert!(shown.get("token").is_none(), "no new token on GET");

    let arbitrary = json!({"nested": {"list": [1, 2.5, null, true, "ü"]}, "n": -3});
    for method in [reqwest::Method::PATCH, reqwest::Method::POST] {
        let response = app
            .http
            .request(method.clone(), format!("{}/access/v1/enrollment", app.base))
            .bearer_auth(token)
            .json(&json!({ "data": arbitrary }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
        let updated: Value = response.json().await.unwrap();
        assert_eq!(updated["data"], arbitrary, "{method}: data round-trips");
    }
    let shown: Value = app
        .http
        .get(format!("{}/access/v1/enrollment", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["data"], arbitrary);
    let reauthorized: Value = authorize(
        &app,
        with(creds(&client), json!({"owner_id": "workspace-8"})),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        reauthorized["data"], arbitrary,
        "authorize sees the update at once"
    );

    let oversized = json!({ "data": { "blob": "x".repeat(64 * 1024) } });
    let response = app
        .http
        .patch(format!("{}/access/v1/enrollment", app.base))
        .bearer_auth(token)
        .json(&oversized)
        .send()
        .await
        .unwrap();
    assert!(
        [400, 413].contains(&response.status().as_u16()),
        "{}",
        response.status()
    );
}

#[tokio::test]
async fn tokens_are_not_interchangeable_between_apps_and_enrollments() {
    let app = TestApp::spawn().await;
    let (client, _) = enrolled(&app, "workspace-9").await;
    let app_token: Value = app
        .oauth_basic(&client, "grant_type=client_credentials")
        .await
        .json()
        .await
        .unwrap();
    let app_token = app_token["access_token"].as_str().unwrap();
    let response = app
        .http
        .get(format!("{}/access/v1/enrollment", app.base))
        .bearer_auth(app_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "an app token is not an enrollment token"
    );
    let response = authorize(&app, creds(&client), Some(app_token)).await;
    assert_eq!(response.status(), 401, "nor can it renew one");

    let enrollment_token: Value = authorize(
        &app,
        with(creds(&client), json!({"owner_id": "workspace-9"})),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let enrollment_token = enrollment_token["token"].as_str().unwrap();
    let response = app
        .http
        .put(format!(
            "{}/access/v1/enrollment/{}",
            app.base,
            uuid::Uuid::now_v7()
        ))
        .bearer_auth(enrollment_token)
        .json(&with(creds(&client), json!({"owner_id": "workspace-9"})))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "an enrollment token is not an owner's token"
    );
}

#[tokio::test]
async fn an_app_cannot_read_or_renew_another_apps_enrollment() {
    let app = TestApp::spawn().await;
    let (owner_app, _) = enrolled(&app, "workspace-10").await;
    let other = app.default_app().await;
    let token: Value = authorize(
        &app,
        with(creds(&owner_app), json!({"owner_id": "workspace-10"})),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let token = token["token"].as_str().unwrap();
    let response = authorize(&app, creds(&other), Some(token)).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn put_creates_idempotently_for_the_owner_of_the_bearer_token() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let owner_token = mint_owner_token(&app, "workspace-11").await;
    let id = uuid::Uuid::now_v7().to_string();
    let put = |id: String, owner: &'static str, token: String| {
        let app = &app;
        let client = client.clone();
        async move {
            app.http
                .put(format!("{}/access/v1/enrollment/{id}", app.base))
                .bearer_auth(token)
                .json(&json!({
                    "client_id": client.client_id, "client_secret": client.secret,
                    "owner_id": owner, "data": {"k": "v"}
                }))
                .send()
                .await
                .unwrap()
        }
    };
    let first = put(id.clone(), "workspace-11", owner_token.clone()).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["id"], id);
    assert_eq!(first["owner_id"], "workspace-11");
    let again: Value = put(id.clone(), "workspace-11", owner_token.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, first, "the same request gets the same response");

    let conflicting = put(
        uuid::Uuid::now_v7().to_string(),
        "workspace-11",
        owner_token.clone(),
    )
    .await;
    assert_eq!(conflicting.status(), 409);

    let foreign = put(
        uuid::Uuid::now_v7().to_string(),
        "workspace-12",
        owner_token,
    )
    .await;
    assert_eq!(
        foreign.status(),
        403,
        "the bearer must speak for that owner"
    );

    let listed: Value = app
        .http
        .get(format!(
            "{}/admin/v1/enrollments?owner_id=workspace-11",
            app.admin
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn admin_enrollment_lifecycle() {
    let app = TestApp::spawn().await;
    let (client, enrollment) = enrolled(&app, "workspace-13").await;
    let id = enrollment["id"].as_str().unwrap();
    assert_eq!(enrollment["scopes"], "all:read all:write");
    let again = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": "workspace-13" }),
        )
        .await;
    assert_eq!(
        again.status(),
        200,
        "same app and owner: the existing enrollment"
    );
    let too_wide = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": "w-14", "scopes": "billing:admin" }),
        )
        .await;
    assert_eq!(too_wide.status(), 400);
    let url = format!("{}/admin/v1/enrollments/{id}", app.admin);
    let shown = app
        .http
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    let by_app: Value = app
        .http
        .get(format!(
            "{}/admin/v1/enrollments?app_id={}",
            app.admin, client.id
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_app.as_array().unwrap().len(), 1);
    let deleted = app
        .http
        .delete(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app
        .http
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let response = authorize(
        &app,
        with(creds(&client), json!({"owner_id": "workspace-13"})),
        None,
    )
    .await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn nul_characters_in_data_are_a_client_error() {
    let app = TestApp::spawn().await;
    let (client, _) = enrolled(&app, "workspace-nul").await;
    let authorized: Value = authorize(
        &app,
        with(creds(&client), json!({"owner_id": "workspace-nul"})),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let token = authorized["token"].as_str().unwrap();
    let response = app
        .http
        .patch(format!("{}/access/v1/enrollment", app.base))
        .bearer_auth(token)
        .json(&json!({ "data": { "a": "nul\u{0}here" } }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_client_error() || response.status().is_success(),
        "never a 5xx: {}",
        response.status()
    );
}
