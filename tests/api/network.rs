//! Network binding: where an app's credentials may be presented from (per app and per
//! secret), and where its tokens, and every token derived from them, may be used from.
//! Other source addresses are simulated with loopback aliases (127.0.0.2, 127.0.0.3), which
//! reach the test server's 127.0.0.1 listener from a socket bound to them.

use std::net::IpAddr;

use reqwest::{Client, Method, Response};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Spawn, TestApp, TestClient, postgres_url, verify_token};

const INSIDE: &str = "127.0.0.2";
const OUTSIDE: &str = "127.0.0.3";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const SCOPES: &str = "authGrants:read authGrants:write orders:read";

/// An HTTP client whose requests come from `ip`.
fn from(ip: &str) -> Client {
    Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// An answer as the caller sees it: status, the challenge header and the body.
async fn answer(response: Response) -> (u16, Option<String>, String) {
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, challenge, response.text().await.unwrap())
}

async fn admin(app: &TestApp, method: Method, path: &str, body: Value) -> Response {
    app.http
        .request(method, format!("{}{path}", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn set_app(app: &TestApp, client: &TestClient, changes: Value) -> Value {
    let path = format!("/admin/v1/apps/{}", client.id);
    let response = admin(app, Method::PATCH, &path, changes).await;
    assert_eq!(response.status(), 200, "updating the app");
    response.json().await.unwrap()
}

fn wrong(client: &TestClient) -> TestClient {
    TestClient {
        secret: "pcs_wrong-wrong-wrong-wrong-wrong-wrong-wrong".into(),
        ..client.clone()
    }
}

/// Every route that authenticates an app by its secret, called from `http`.
#[derive(Debug, Clone, Copy)]
enum Route {
    OAuthToken,
    Endorsed,
    Introspect,
    Revoke,
    Authorize,
}

const ROUTES: [Route; 5] = [
    Route::OAuthToken,
    Route::Endorsed,
    Route::Introspect,
    Route::Revoke,
    Route::Authorize,
];

async fn call(app: &TestApp, http: &Client, route: Route, client: &TestClient) -> Response {
    let url = |path: &str| format!("{}{path}", app.base);
    let basic = |path: &str| {
        http.post(url(path))
            .basic_auth(&client.client_id, Some(&client.secret))
    };
    let request = match route {
        Route::OAuthToken => basic("/oauth2/token").form(&[("grant_type", "client_credentials")]),
        Route::Endorsed => http
            .post(url("/api/v1/auth/tokens"))
            .json(&client.json(None)),
        Route::Introspect => basic("/oauth2/introspect").form(&[("token", "not-a-token")]),
        Route::Revoke => basic("/oauth2/revoke").form(&[("token", "not-a-token")]),
        Route::Authorize => http
            .post(url("/access/v1/enrollment/authorize"))
            .json(&json!({
                "client_id": client.client_id,
                "client_secret": client.secret,
                "owner_id": "owner-1",
            })),
    };
    request.send().await.unwrap()
}

/// An app with an enrollment for `owner-1`, so that authorize can succeed.
async fn enrolled_app(app: &TestApp, body: Value) -> TestClient {
    let client = app.create_app(body).await;
    let enrolled = app
        .admin_post(
            "/admin/v1/enrollments",
            json!({ "app_id": client.id, "owner_id": "owner-1" }),
        )
        .await;
    assert_eq!(enrolled.status(), 201);
    client
}

#[tokio::test]
async fn an_app_allowlist_refuses_other_addresses_as_it_refuses_a_wrong_secret() {
    let app = TestApp::spawn().await;
    let (inside, outside) = (from(INSIDE), from(OUTSIDE));
    for route in ROUTES {
        let client = enrolled_app(
            &app,
            json!({ "name": "bound", "allowed_cidrs": [format!("{INSIDE}/32")] }),
        )
        .await;
        let wrong_secret = answer(call(&app, &outside, route, &wrong(&client)).await).await;
        assert_eq!(wrong_secret.0, 401, "{route:?}: {wrong_secret:?}");
        // Cold: the first request of the pair comes from outside.
        let cold = answer(call(&app, &outside, route, &client).await).await;
        assert_eq!(cold, wrong_secret, "{route:?}: cold refusal");
        let allowed = call(&app, &inside, route, &client).await;
        assert_eq!(allowed.status(), 200, "{route:?}: from inside the list");
        // Warm: the pair is cached now, and the address is still judged.
        let runs = app.authority.metrics_snapshot().argon2_runs;
        let warm = answer(call(&app, &outside, route, &client).await).await;
        assert_eq!(warm, wrong_secret, "{route:?}: warm refusal");
        assert_eq!(
            app.authority.metrics_snapshot().argon2_runs,
            runs + 1,
            "{route:?}: a warm refusal costs what a wrong secret does"
        );
        let runs = app.authority.metrics_snapshot().argon2_runs;
        let again = call(&app, &inside, route, &client).await;
        assert_eq!(again.status(), 200, "{route:?}: the pair is still good");
        assert_eq!(
            app.authority.metrics_snapshot().argon2_runs,
            runs,
            "{route:?}: the warm path pays no argon2"
        );
    }
}

#[tokio::test]
async fn a_secret_allowlist_binds_that_secret_alone() {
    let app = TestApp::spawn().await;
    let anywhere = app.default_app().await;
    let path = format!("/admin/v1/apps/{}/secrets", anywhere.id);
    let response = admin(
        &app,
        Method::POST,
        &path,
        json!({ "description": "ci", "allowed_cidrs": [INSIDE] }),
    )
    .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["allowed_cidrs"], json!([format!("{INSIDE}/32")]));
    let bound = TestClient {
        secret: created["client_secret"].as_str().unwrap().to_owned(),
        ..anywhere.clone()
    };
    let (inside, outside) = (from(INSIDE), from(OUTSIDE));
    for (http, client, expected, why) in [
        (&outside, &bound, 401, "the bound secret from outside"),
        (&inside, &bound, 200, "the bound secret from inside"),
        (&outside, &bound, 401, "the bound secret from outside, warm"),
        (
            &outside,
            &anywhere,
            200,
            "the app's other secret from anywhere",
        ),
    ] {
        let response = call(&app, http, Route::Endorsed, client).await;
        assert_eq!(response.status(), expected, "{why}");
    }
    let listed: Vec<Value> = app
        .http
        .get(format!("{}{path}", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lists: Vec<&Value> = listed.iter().map(|s| &s["allowed_cidrs"]).collect();
    assert_eq!(
        lists,
        [&Value::Null, &json!([format!("{INSIDE}/32")])],
        "the list shows each secret's binding, and none for an unbound one"
    );
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let app = TestApp::spawn_with(Spawn {
        overrides: &[("PORTCULLIS__SERVER__TRUSTED_PROXIES", "127.0.0.2/32")],
        ..Spawn::default()
    })
    .await;
    let client = app
        .create_app(json!({ "name": "behind a proxy", "allowed_cidrs": ["198.51.100.0/24"] }))
        .await;
    let url = format!("{}/api/v1/auth/tokens", app.base);
    let (proxy, stranger) = (from(INSIDE), from(OUTSIDE));
    for (http, forwarded, expected, why) in [
        (
            &proxy,
            "198.51.100.7",
            200,
            "a trusted proxy forwards a listed client",
        ),
        (
            &proxy,
            "203.0.113.9",
            401,
            "a trusted proxy forwards an unlisted client",
        ),
        (
            &stranger,
            "198.51.100.7",
            401,
            "an untrusted peer's header is ignored",
        ),
        (
            &proxy,
            "::ffff:198.51.100.8",
            200,
            "an IPv4-mapped client is its IPv4 self",
        ),
    ] {
        let response = http
            .post(&url)
            .header("x-forwarded-for", forwarded)
            .json(&client.json(None))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{why}");
    }
}

#[tokio::test]
async fn changing_an_apps_list_takes_effect_at_once() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let outside = from(OUTSIDE);
    assert_eq!(
        call(&app, &outside, Route::OAuthToken, &client)
            .await
            .status(),
        200
    );
    let shown = set_app(&app, &client, json!({ "allowed_cidrs": [INSIDE] })).await;
    assert_eq!(shown["allowed_cidrs"], json!([format!("{INSIDE}/32")]));
    assert_eq!(
        call(&app, &outside, Route::OAuthToken, &client)
            .await
            .status(),
        401,
        "the cached verification does not outlive the change"
    );
    assert_eq!(
        call(&app, &from(INSIDE), Route::OAuthToken, &client)
            .await
            .status(),
        200
    );
    let shown = set_app(&app, &client, json!({ "allowed_cidrs": [] })).await;
    assert!(shown.get("allowed_cidrs").is_none(), "lifted: {shown}");
    assert_eq!(
        call(&app, &outside, Route::OAuthToken, &client)
            .await
            .status(),
        200
    );
}

/// One replica's change to an app's list reaches the other, whose cache was warm.
#[tokio::test]
#[ignore = "needs PostgreSQL: TEST_DATABASE_URL=… cargo test -- --include-ignored"]
async fn changing_an_apps_list_reaches_other_replicas() {
    postgres_url();
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.database(), Spawn::default()).await;
    let client = a.default_app().await;
    let outside = from(OUTSIDE);
    assert_eq!(
        call(&b, &outside, Route::Endorsed, &client).await.status(),
        200
    );
    set_app(&a, &client, json!({ "allowed_cidrs": [INSIDE] })).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while call(&b, &outside, Route::Endorsed, &client).await.status() != 401 {
        assert!(std::time::Instant::now() < deadline, "B never heard of it");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        call(&b, &from(INSIDE), Route::Endorsed, &client)
            .await
            .status(),
        200
    );
}

async fn token_of(app: &TestApp, client: &TestClient) -> String {
    let response = call(app, &app.http, Route::OAuthToken, client).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn bearer(http: &Client, method: Method, url: String, token: &str) -> Response {
    http.request(method, url)
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
}

async fn list_grants(app: &TestApp, http: &Client, token: &str) -> (u16, Option<String>, String) {
    let url = format!("{}/profile/auth-grants", app.base);
    answer(bearer(http, Method::POST, url, token).await).await
}

#[tokio::test]
async fn a_bound_token_is_invalid_outside_its_networks_and_reported_by_introspection() {
    let app = TestApp::spawn().await;
    let client = app
        .create_app(json!({
            "name": "bound tokens",
            "allowed_scopes": SCOPES,
            "token_bound_cidrs": [INSIDE, "2001:db8::/32"],
        }))
        .await;
    // Where the credentials are presented from is not bound: only the tokens are.
    let token = token_of(&app, &client).await;
    let binding = json!([format!("{INSIDE}/32"), "2001:db8::/32"]);
    let (_, claims) = verify_token(&app, &token).await;
    assert_eq!(claims["cidr"], binding, "{claims}");

    let (inside, outside) = (from(INSIDE), from(OUTSIDE));
    assert_eq!(list_grants(&app, &inside, &token).await.0, 200);
    let refused = list_grants(&app, &outside, &token).await;
    let garbage = list_grants(&app, &outside, "not-a-token").await;
    assert_eq!(refused.0, 401);
    assert_eq!(refused, garbage, "as any invalid token");

    // The resource server introspects from its own address, which is not judged.
    let introspected = app.introspection(&client, &token).await;
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["cidr"], binding, "{introspected}");

    let unbound = app
        .create_app(json!({ "name": "unbound", "allowed_scopes": SCOPES }))
        .await;
    let token = token_of(&app, &unbound).await;
    let (_, claims) = verify_token(&app, &token).await;
    assert!(
        claims.get("cidr").is_none(),
        "no binding, no claim: {claims}"
    );
    assert_eq!(list_grants(&app, &outside, &token).await.0, 200);
    let introspected = app.introspection(&unbound, &token).await;
    assert!(introspected.get("cidr").is_none(), "{introspected}");
}

#[tokio::test]
async fn tokens_derived_from_a_bound_token_inherit_its_binding() {
    let app = TestApp::spawn().await;
    let client = app
        .create_app(json!({
            "name": "bound tokens",
            "allowed_scopes": SCOPES,
            "token_bound_cidrs": [INSIDE],
        }))
        .await;
    let binding = json!([format!("{INSIDE}/32")]);
    let token = token_of(&app, &client).await;
    let (inside, outside) = (from(INSIDE), from(OUTSIDE));

    let created = inside
        .post(format!("{}/auth-grant/create", app.base))
        .bearer_auth(&token)
        .json(&json!({ "name": "ci", "scope": "orders:read authGrants:read" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let grant_id: String = created.json().await.unwrap();
    let url = format!("{}/auth-grant/{grant_id}/api-token", app.base);
    let api_token = bearer(&inside, Method::POST, url, &token).await;
    assert_eq!(api_token.status(), 200);
    let api_token: String = api_token.json().await.unwrap();
    let (_, claims) = verify_token(&app, &api_token).await;
    assert_eq!(claims["cidr"], binding, "the grant's token: {claims}");
    let grant_url = format!("{}/auth-grant/{grant_id}", app.base);
    for (http, expected) in [(&inside, 200), (&outside, 401)] {
        let response = bearer(http, Method::GET, grant_url.clone(), &api_token).await;
        assert_eq!(response.status(), expected, "the grant's token");
    }

    let exchange = |http: &Client| {
        http.post(format!("{}/oauth2/token", app.base))
            .form(&[
                ("grant_type", EXCHANGE),
                ("subject_token", api_token.as_str()),
                ("subject_token_type", ACCESS_TOKEN),
            ])
            .send()
    };
    let refused = exchange(&outside).await.unwrap();
    assert_eq!(refused.status(), 400, "exchanged from outside its networks");
    let exchanged = exchange(&inside).await.unwrap();
    assert_eq!(exchanged.status(), 200);
    let exchanged: Value = exchanged.json().await.unwrap();
    let exchanged = exchanged["access_token"].as_str().unwrap();
    let (_, claims) = verify_token(&app, exchanged).await;
    assert_eq!(claims["cidr"], binding, "the exchanged token: {claims}");
    for (http, expected) in [(&inside, 200), (&outside, 401)] {
        let response = bearer(http, Method::GET, grant_url.clone(), exchanged).await;
        assert_eq!(response.status(), expected, "the exchanged token");
    }
}

#[tokio::test]
async fn enrollment_tokens_of_a_bound_app_are_bound() {
    let app = TestApp::spawn().await;
    let client = enrolled_app(
        &app,
        json!({ "name": "bound tokens", "token_bound_cidrs": [INSIDE] }),
    )
    .await;
    let response = call(&app, &app.http, Route::Authorize, &client).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    let (_, claims) = verify_token(&app, token).await;
    assert_eq!(claims["cidr"], json!([format!("{INSIDE}/32")]), "{claims}");
    let url = format!("{}/access/v1/enrollment", app.base);
    for (http, expected) in [(from(INSIDE), 200), (from(OUTSIDE), 401)] {
        let response = http.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), expected);
    }
    // Renewing with the token is a use of it, too.
    let renew = |http: Client| {
        http.post(format!("{}/access/v1/enrollment/authorize", app.base))
            .bearer_auth(token)
            .json(&json!({ "client_id": client.client_id, "client_secret": client.secret }))
            .send()
    };
    assert_eq!(renew(from(OUTSIDE)).await.unwrap().status(), 401);
    assert_eq!(renew(from(INSIDE)).await.unwrap().status(), 200);
}

#[tokio::test]
async fn bad_network_lists_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let too_many: Vec<String> = (0..65).map(|i| format!("10.0.{i}.0/24")).collect();
    let app_path = format!("/admin/v1/apps/{}", client.id);
    let secret_path = format!("{app_path}/secrets");
    for (method, path, body, field, why) in [
        (
            Method::POST,
            "/admin/v1/apps",
            json!({ "name": "x", "allowed_cidrs": ["10.0.0.0/33"] }),
            "allowed_cidrs",
            "a prefix longer than the address",
        ),
        (
            Method::POST,
            "/admin/v1/apps",
            json!({ "name": "x", "token_bound_cidrs": ["example.com"] }),
            "token_bound_cidrs",
            "a name, not an address",
        ),
        (
            Method::POST,
            "/admin/v1/apps",
            json!({ "name": "x", "allowed_cidrs": "10.0.0.0/8" }),
            "allowed_cidrs",
            "a string, not an array (422, as every mistyped admin field)",
        ),
        (
            Method::PATCH,
            &app_path,
            json!({ "token_bound_cidrs": too_many }),
            "token_bound_cidrs",
            "more than 64 entries",
        ),
        (
            Method::PATCH,
            &app_path,
            json!({ "allowed_cidrs": ["10.0.0.0/8", ""] }),
            "allowed_cidrs",
            "an empty entry",
        ),
        (
            Method::POST,
            &secret_path,
            json!({ "allowed_cidrs": ["10.0.0.0/8/8"] }),
            "allowed_cidrs",
            "two prefixes",
        ),
        (
            Method::POST,
            &secret_path,
            json!({ "allowed_cidrs": [10] }),
            "allowed_cidrs",
            "a number, not a string",
        ),
    ] {
        let response = admin(&app, method, path, body).await;
        let expected = if why.contains("422") { 422 } else { 400 };
        assert_eq!(response.status(), expected, "{why}");
        let problem: Value = response.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(field), "{why}: {detail}");
    }
    let apps: Vec<Value> = app
        .http
        .get(format!("{}/admin/v1/apps", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(apps.len(), 1, "nothing was created");
}

#[tokio::test]
async fn an_app_without_a_binding_reads_as_before() {
    let app = TestApp::spawn().await;
    let response = app
        .admin_post("/admin/v1/apps", json!({ "name": "plain" }))
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(
        keys(&created),
        [
            "allowed_scopes",
            "client_id",
            "client_secret",
            "created_at",
            "default_scopes",
            "disabled",
            "id",
            "last_used_at",
            "name",
            "sandbox",
            "updated_at",
        ],
        "the fields of an app, and no others"
    );
    let id = created["id"].as_str().unwrap();
    let secrets: Vec<Value> = app
        .http
        .get(format!("{}/admin/v1/apps/{id}/secrets", app.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        keys(&secrets[0]),
        [
            "app_id",
            "created_at",
            "description",
            "expires_at",
            "id",
            "last_used_at",
            "max_uses",
            "prefix",
            "status",
            "use_count",
        ],
        "the fields of a secret, and no others"
    );
}

/// An object's keys, sorted.
fn keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}
