//! Client credentials as clients really send them: HTTP Basic form-encoded per RFC 6749
//! §2.3.1 or raw (`curl -u`, Go's `SetBasicAuth`, requests), next to the same credentials in
//! an Access body, and imported secrets with any VSCHAR (%x20-7E), spaces included.

use base64::{Engine, engine::general_purpose::STANDARD};
use reqwest::Response;
use serde_json::{Value, json};

use crate::helpers::{Spawn, TestApp, TestClient};

/// Every character that RFC 6749's form-encoding changes: `+` (a space once decoded), `%`
/// (an escape once decoded: `%41` is `A`), `:` (splits a raw pair), and spaces.
const AWKWARD_SECRET: &str = "pa+ss%41:word with spaces~";

async fn imported(app: &TestApp, client_id: &str, secret: &str) -> TestClient {
    let created = app
        .create_app(json!({ "name": "imported", "client_id": client_id, "client_secret": secret }))
        .await;
    // An imported secret is the caller's own and is not echoed back.
    TestClient {
        secret: secret.to_owned(),
        ..created
    }
}

fn form_encode(part: &str) -> String {
    serde_urlencoded::to_string([("", part)]).unwrap()[1..].to_owned()
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// RFC 6749 §2.3.1: each part form-encoded, then base64.
fn basic_encoded(id: &str, secret: &str) -> String {
    basic(&form_encode(id), &form_encode(secret))
}

async fn token_with_basic(app: &TestApp, authorization: &str) -> Response {
    app.http
        .post(format!("{}/oauth2/token", app.base))
        .header("authorization", authorization)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
}

async fn authorize_with(app: &TestApp, authorization: &str, body: Value) -> Response {
    app.http
        .post(format!("{}/access/v1/enrollment/authorize", app.base))
        .header("authorization", authorization)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_secret_with_plus_percent_and_colon_works_raw_and_form_encoded() {
    let app = TestApp::spawn().await;
    let client = imported(&app, "legacy-app", AWKWARD_SECRET).await;

    for (how, authorization) in [
        (
            "raw, as curl -u sends it",
            basic(&client.client_id, AWKWARD_SECRET),
        ),
        (
            "form-encoded, as RFC 6749 says",
            basic_encoded(&client.client_id, AWKWARD_SECRET),
        ),
    ] {
        let response = token_with_basic(&app, &authorization).await;
        assert_eq!(response.status(), 200, "{how}");
        // Introspection and revocation authenticate the same way.
        let token: Value = response.json().await.unwrap();
        let token = token["access_token"].as_str().unwrap();
        let introspected = app
            .http
            .post(format!("{}/oauth2/introspect", app.base))
            .header("authorization", &authorization)
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(introspected.status(), 200, "{how}");
        let introspected: Value = introspected.json().await.unwrap();
        assert_eq!(introspected["active"], true, "{how}");
    }

    // client_secret_post carries no such ambiguity: the form is decoded once.
    let response = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "legacy-app"),
            ("client_secret", AWKWARD_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn neither_reading_of_a_near_miss_is_accepted() {
    let app = TestApp::spawn().await;
    let client = imported(&app, "legacy-app", AWKWARD_SECRET).await;
    // Decoded, `pa+ss%41…` is `pa ssA…`; the raw form is the secret itself. Sending the
    // decoded text raw, or the raw text double-encoded, names neither.
    let decoded = "pa ssA:word with spaces~";
    for (how, authorization) in [
        ("decoded text, raw", basic(&client.client_id, decoded)),
        (
            "encoded twice",
            basic(
                &client.client_id,
                &form_encode(&form_encode(AWKWARD_SECRET)),
            ),
        ),
        (
            "one character off",
            basic(&client.client_id, "pa+ss%42:word with spaces~"),
        ),
    ] {
        let response = token_with_basic(&app, &authorization).await;
        assert_eq!(response.status(), 401, "{how}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client", "{how}");
    }
}

#[tokio::test]
async fn access_basic_and_body_agree_whichever_way_basic_was_encoded() {
    let app = TestApp::spawn().await;
    let client = imported(&app, "legacy-app", AWKWARD_SECRET).await;
    let owner = "basic-forms-owner";
    let response = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": owner }),
        )
        .await;
    assert_eq!(response.status(), 201);
    // The body is JSON: it holds the secret itself, whatever Basic's encoding.
    let body =
        json!({ "client_id": "legacy-app", "client_secret": AWKWARD_SECRET, "owner_id": owner });

    for (how, authorization) in [
        ("raw Basic", basic("legacy-app", AWKWARD_SECRET)),
        ("encoded Basic", basic_encoded("legacy-app", AWKWARD_SECRET)),
    ] {
        let response = authorize_with(&app, &authorization, body.clone()).await;
        assert_eq!(response.status(), 200, "{how} + equal body");
    }

    // Different values in the body: any bad credential's 401, whichever Basic is right.
    for (how, authorization, body_secret) in [
        (
            "right raw Basic, wrong body",
            basic("legacy-app", AWKWARD_SECRET),
            "pa+ss%41:word with spaces!",
        ),
        (
            "right encoded Basic, wrong body",
            basic_encoded("legacy-app", AWKWARD_SECRET),
            "pa+ss%41:word with spaces!",
        ),
        (
            "body naming Basic's decoded reading, which is not the secret",
            basic("legacy-app", AWKWARD_SECRET),
            "pa ssA:word with spaces~",
        ),
    ] {
        let response = authorize_with(
            &app,
            &authorization,
            json!({ "client_id": "legacy-app", "client_secret": body_secret, "owner_id": owner }),
        )
        .await;
        assert_eq!(response.status(), 401, "{how}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized", "{how}");
    }
}

#[tokio::test]
async fn imported_secrets_may_hold_spaces() {
    let app = TestApp::spawn().await;
    let secret = "correct horse battery staple";
    let client = imported(&app, "spaced-app", secret).await;

    assert_eq!(
        token_with_basic(&app, &basic("spaced-app", secret))
            .await
            .status(),
        200,
        "raw Basic"
    );
    assert_eq!(
        token_with_basic(&app, &basic_encoded("spaced-app", secret))
            .await
            .status(),
        200,
        "encoded Basic (spaces as +)"
    );
    assert_eq!(
        app.endorsed_json(client.json(None)).await.status(),
        200,
        "Endorsed JSON body"
    );

    // VSCHAR ends at %x20-7E: control characters and non-ASCII are still refused.
    for bad in ["tab\there-is-refused", "caf\u{e9} au lait, refused"] {
        let response = app
            .admin_post(
                "/admin/v1/apps",
                json!({ "name": "x", "client_id": "bad-secret-app", "client_secret": bad }),
            )
            .await;
        assert_eq!(response.status(), 400, "{bad:?}");
    }
}

/// Each reading of a Basic header is a guess at the secret and is charged as one, so a
/// header with two readings buys no extra guesses; a generated secret has one reading.
#[tokio::test]
async fn each_reading_is_charged_as_one_guess() {
    let app = TestApp::spawn_with(Spawn {
        overrides: &[(
            "PORTCULLIS__RATE_LIMIT__VERIFICATIONS_PER_CLIENT_PER_MINUTE",
            "4",
        )],
        ..Spawn::default()
    })
    .await;
    let generated = app.default_app().await;
    let imported = imported(&app, "legacy-app", AWKWARD_SECRET).await;

    let statuses = async |id: &str, secret: &str| {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let response = token_with_basic(&app, &basic(id, secret)).await;
            statuses.push(response.status().as_u16());
        }
        statuses
    };
    // No `+` or `%`: one reading, so four wrong guesses before the limit.
    assert_eq!(
        statuses(&generated.client_id, "pcs_wrong-but-plain-secret").await,
        [401, 401, 401, 401, 429]
    );
    // `+` and `%`: two readings, two guesses a request.
    assert_eq!(
        statuses(&imported.client_id, "wrong+but%41awkward").await,
        [401, 401, 429, 429, 429]
    );
}
