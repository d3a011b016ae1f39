//! The Invopop Access dialect as the official Go client (`github.com/invopop/client.go`) speaks
//! it: app credentials both as HTTP Basic (raw `id:secret`) and in the JSON body, and field
//! names as Go spells them (`{"Data":…}`), read the way Go's `encoding/json` reads them.

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::{
    helpers::{Spawn, TestApp, TestClient},
    intercept::Health,
};

async fn enrolled(app: &TestApp, owner: &str) -> (TestClient, Value) {
    let client = app.default_app().await;
    let response = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": owner }),
        )
        .await;
    assert_eq!(response.status(), 201);
    (client, response.json().await.unwrap())
}

/// `POST /access/v1/enrollment/authorize` with `Authorization: Basic` for `basic` and `body`.
async fn authorize_basic(app: &TestApp, basic: (&str, &str), body: Value) -> Response {
    app.http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .basic_auth(basic.0, Some(basic.1))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The body the Go client sends next to its Basic header.
fn go_body(client: &TestClient, extra: Value) -> Value {
    let mut body = json!({ "client_id": client.client_id, "client_secret": client.secret });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn enrollment_token(app: &TestApp, client: &TestClient, owner: &str) -> String {
    let response = authorize_basic(
        app,
        (&client.client_id, &client.secret),
        go_body(client, json!({ "owner_id": owner })),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

async fn send_json(app: &TestApp, method: Method, path: &str, token: &str, body: &str) -> Response {
    app.http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn shown_data(app: &TestApp, token: &str) -> Value {
    let shown: Value = app.enrollment_of(token).await.json().await.unwrap();
    shown["data"].clone()
}

#[tokio::test]
async fn basic_and_body_naming_the_same_credentials_authorize() {
    let app = TestApp::spawn().await;
    let (client, enrollment) = enrolled(&app, "go-1").await;
    let basic = (client.client_id.as_str(), client.secret.as_str());

    let by_owner =
        authorize_basic(&app, basic, go_body(&client, json!({"owner_id": "go-1"}))).await;
    assert_eq!(by_owner.status(), 200, "by owner_id");
    let by_owner: Value = by_owner.json().await.unwrap();
    assert_eq!(by_owner["id"], enrollment["id"]);

    let by_id = authorize_basic(
        &app,
        basic,
        go_body(&client, json!({"id": enrollment["id"]})),
    )
    .await;
    assert_eq!(by_id.status(), 200, "by id");
    let by_id: Value = by_id.json().await.unwrap();
    assert_eq!(by_id["owner_id"], "go-1");

    // Renewal: the token takes the Authorization header, so the Go client's credentials
    // travel in the body alone.
    let renewed = app
        .http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .bearer_auth(by_owner["token"].as_str().unwrap())
        .json(&go_body(&client, json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(renewed.status(), 200, "renewal with the token as bearer");
    let renewed: Value = renewed.json().await.unwrap();
    assert_eq!(renewed["id"], enrollment["id"]);
}

#[tokio::test]
async fn basic_and_body_naming_different_credentials_is_any_bad_credentials_401() {
    let app = TestApp::spawn().await;
    let (client, _) = enrolled(&app, "go-2").await;
    let (other, _) = enrolled(&app, "go-2-other").await;
    let plain_bad = authorize_basic(
        &app,
        (&client.client_id, "pcs_not-the-secret-not-the-secret"),
        json!({"owner_id": "go-2"}),
    )
    .await;
    assert_eq!(plain_bad.status(), 401);
    let plain_bad: Value = plain_bad.json().await.unwrap();
    assert_eq!(plain_bad["code"], "unauthorized");
    assert!(plain_bad.get("fields").is_none());

    let wrong = "pcs_wrong-wrong-wrong-wrong-wrong";
    let cases = [
        (
            "another secret in the body",
            (client.client_id.as_str(), client.secret.as_str()),
            json!({"client_id": client.client_id, "client_secret": wrong}),
        ),
        (
            "another secret in Basic",
            (client.client_id.as_str(), wrong),
            json!({"client_id": client.client_id, "client_secret": client.secret}),
        ),
        (
            "another app's valid credentials in the body",
            (client.client_id.as_str(), client.secret.as_str()),
            json!({"client_id": other.client_id, "client_secret": other.secret}),
        ),
        (
            "another client_id alone in the body",
            (client.client_id.as_str(), client.secret.as_str()),
            json!({"client_id": other.client_id}),
        ),
    ];
    for (why, basic, credentials) in cases {
        let mut body = credentials;
        body["owner_id"] = json!("go-2");
        let response = authorize_basic(&app, basic, body).await;
        assert_eq!(response.status(), 401, "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body, plain_bad,
            "{why}: the same answer as any bad credential"
        );
    }
}

#[tokio::test]
async fn differing_basic_and_body_credentials_are_refused_before_any_lookup_or_hashing() {
    let (app, hooks) = TestApp::spawn_intercepted(Spawn::default()).await;
    let (client, _) = enrolled(&app, "go-3").await;
    hooks.set_health(Health::Down);
    let basic = (client.client_id.as_str(), client.secret.as_str());
    let body = json!({
        "client_id": client.client_id, "client_secret": "pcs_differs-differs-differs", "owner_id": "go-3"
    });
    assert_eq!(
        authorize_basic(&app, basic, body).await.status(),
        401,
        "decided from the request alone"
    );
    let control = authorize_basic(
        &app,
        (&client.client_id, "pcs_never-seen-never-seen-never"),
        json!({"owner_id": "go-3"}),
    )
    .await;
    assert_eq!(
        control.status(),
        503,
        "a credential that must be verified needs the store"
    );
}

#[tokio::test]
async fn the_token_endpoint_keeps_one_authentication_method() {
    let app = TestApp::spawn().await;
    let (client, _) = enrolled(&app, "go-4").await;
    let basic = (client.client_id.as_str(), client.secret.as_str());
    let access = authorize_basic(&app, basic, go_body(&client, json!({"owner_id": "go-4"}))).await;
    assert_eq!(access.status(), 200, "both at once on the Access dialect");
    let oauth = app.oauth_basic(&client, &client.form("")).await;
    assert_eq!(oauth.status(), 400, "both at once on /oauth2/token");
    let oauth: Value = oauth.json().await.unwrap();
    assert_eq!(oauth["error"], "invalid_request");
}

#[tokio::test]
async fn field_names_match_case_insensitively_on_every_access_body() {
    let app = TestApp::spawn().await;
    let (client, enrollment) = enrolled(&app, "go-5").await;

    let authorized = app
        .http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .json(&json!({
            "Client_ID": client.client_id, "CLIENT_SECRET": client.secret, "OwnerID": "ignored",
            "Owner_Id": "go-5"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(authorized.status(), 200, "authorize");
    let authorized: Value = authorized.json().await.unwrap();
    assert_eq!(authorized["id"], enrollment["id"]);
    let token = authorized["token"].as_str().unwrap();

    for (method, data) in [
        (Method::POST, json!({"country": "ES", "Plan": "pro"})),
        (Method::PATCH, json!({"Data": {"data": 1}, "data": 2})),
    ] {
        let body = json!({ "Data": data }).to_string();
        let response = send_json(&app, method.clone(), "/access/v1/enrollment", token, &body).await;
        assert_eq!(response.status(), 200, "{method} update");
        assert_eq!(
            shown_data(&app, token).await,
            data,
            "{method}: `Data` is `data`, and what it holds keeps its own keys"
        );
    }

    let owner_token = app.owner_token("go-6", "all:read").await;
    let id = uuid::Uuid::now_v7();
    let created = send_json(
        &app,
        Method::PUT,
        &format!("/access/v1/enrollment/{id}"),
        &owner_token,
        &json!({
            "CLIENT_ID": client.client_id, "Client_Secret": client.secret,
            "OWNER_ID": "go-6", "Data": {"k": "v"}
        })
        .to_string(),
    )
    .await;
    assert_eq!(created.status(), 200, "create");
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["owner_id"], "go-6");
    assert_eq!(created["data"], json!({"k": "v"}));
}

#[tokio::test]
async fn two_keys_for_one_field_are_a_400_in_the_access_envelope() {
    let app = TestApp::spawn().await;
    let (client, _) = enrolled(&app, "go-7").await;
    let token = enrollment_token(&app, &client, "go-7").await;
    let before = shown_data(&app, &token).await;

    for body in [
        r#"{"data":{"a":1},"Data":{"b":2}}"#,
        r#"{"DATA":{"a":1},"data":{"b":2}}"#,
        r#"{"Data":{"a":1},"dAtA":{"b":2}}"#,
    ] {
        let response = send_json(&app, Method::PATCH, "/access/v1/enrollment", &token, body).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], "bad_request", "{body}");
        assert!(error["message"].is_string(), "{body}");
    }
    assert_eq!(
        shown_data(&app, &token).await,
        before,
        "nothing was written"
    );

    let twice = app
        .http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .json(&go_body(
            &client,
            json!({"owner_id": "go-7", "Owner_ID": "someone-else"}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400, "authorize");
    let error: Value = twice.json().await.unwrap();
    assert_eq!(error["code"], "bad_request");
}
