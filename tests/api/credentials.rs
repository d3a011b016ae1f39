use serde_json::{Value, json};

use crate::helpers::{
    Spawn, TestApp, TestClient, captured_logs, credential_shapes, forbid_in_logs,
};

async fn endorsed_failure(app: &TestApp, client: &TestClient) -> (u16, Value) {
    let response = app.endorsed_json(client.json(None)).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn oauth_failure(app: &TestApp, client: &TestClient) -> (u16, Value) {
    let response = app
        .oauth_basic(client, "grant_type=client_credentials")
        .await;
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn unknown_client_wrong_secret_and_disabled_app_get_the_same_answer() {
    let app = TestApp::spawn().await;
    let good = app.default_app().await;
    let wrong_secret = TestClient {
        secret: "pcs_definitely-not-the-secret".into(),
        ..good.clone()
    };
    let unknown = TestClient {
        client_id: "pcc_nobody-has-this-id".into(),
        ..good.clone()
    };
    let disabled = app.default_app().await;
    // Warm the cache first: a disable must still take effect at once on this replica.
    assert_eq!(app.endorsed_json(disabled.json(None)).await.status(), 200);
    let response = app
        .admin_post(
            &format!("/admin/v1/apps/{}/disable", disabled.id),
            json!({}),
        )
        .await;
    assert_eq!(response.status(), 200);

    for (name, probe) in [("endorsed", 0), ("oauth", 1)] {
        let mut answers = Vec::new();
        for client in [&wrong_secret, &unknown, &disabled] {
            answers.push(if probe == 0 {
                endorsed_failure(&app, client).await
            } else {
                oauth_failure(&app, client).await
            });
        }
        assert_eq!(answers[0].0, 401, "{name}");
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "{name}: identical status and body for every failure: {answers:?}"
        );
    }
}

#[tokio::test]
async fn repeated_wrong_secrets_hit_429_while_another_client_is_unaffected() {
    let app = TestApp::spawn_with(Spawn {
        overrides: &[(
            "PORTCULLIS__RATE_LIMIT__VERIFICATIONS_PER_CLIENT_PER_MINUTE",
            "3",
        )],
        ..Spawn::default()
    })
    .await;
    let victim = app.default_app().await;
    let bystander = app.default_app().await;
    let attacker = TestClient {
        secret: "pcs_guess-guess-guess-guess".into(),
        ..victim.clone()
    };
    for attempt in 1..=3 {
        let (status, _) = endorsed_failure(&app, &attacker).await;
        assert_eq!(status, 401, "attempt {attempt} is judged");
    }
    let response = app.endorsed_json(attacker.json(None)).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TOO_MANY_REQUESTS");

    let response = app
        .oauth_basic(&attacker, "grant_type=client_credentials")
        .await;
    assert_eq!(response.status(), 429, "the limit holds across dialects");
    assert!(response.headers().contains_key("retry-after"));

    assert_eq!(app.endorsed_json(bystander.json(None)).await.status(), 200);
}

#[tokio::test]
async fn failures_are_limited_per_source_ip_behind_a_trusted_proxy() {
    let app = TestApp::spawn_with(Spawn {
        overrides: &[
            (
                "PORTCULLIS__RATE_LIMIT__VERIFICATIONS_PER_IP_PER_MINUTE",
                "2",
            ),
            ("PORTCULLIS__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
        ..Spawn::default()
    })
    .await;
    let good = app.default_app().await;
    let send = |client: TestClient, ip: &'static str| {
        let app = &app;
        async move {
            app.http
                .post(format!("{}/api/v1/auth/tokens", app.base))
                .header("x-forwarded-for", ip)
                .json(&client.json(None))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for n in 0..2 {
        let spray = TestClient {
            client_id: format!("pcc_spray_{n}"),
            ..good.clone()
        };
        assert_eq!(send(spray, "203.0.113.7").await, 401);
    }
    let spray = TestClient {
        client_id: "pcc_spray_last".into(),
        ..good.clone()
    };
    assert_eq!(
        send(spray, "203.0.113.7").await,
        429,
        "same IP, other client ids"
    );
    assert_eq!(
        send(good, "198.51.100.1").await,
        200,
        "another IP is unaffected"
    );
}

#[tokio::test]
async fn imported_credentials_work() {
    forbid_in_logs("legacy-secret-from-another-provider");
    forbid_in_logs("another-secret-of-some-length");
    let app = TestApp::spawn().await;
    let response = app
        .admin_post(
            "/admin/v1/apps",
            json!({
                "name": "migrated",
                "client_id": "legacy-client-42",
                "client_secret": "legacy-secret-from-another-provider",
            }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["client_id"], "legacy-client-42");
    assert!(
        body.get("client_secret").is_none(),
        "an imported secret is not echoed back"
    );
    let client = TestClient {
        id: body["id"].as_str().unwrap().into(),
        client_id: "legacy-client-42".into(),
        secret: "legacy-secret-from-another-provider".into(),
    };
    assert_eq!(app.endorsed_json(client.json(None)).await.status(), 200);
    assert_eq!(
        app.oauth_basic(&client, "grant_type=client_credentials")
            .await
            .status(),
        200
    );

    let duplicate = app
        .admin_post(
            "/admin/v1/apps",
            json!({ "name": "again", "client_id": "legacy-client-42",
                    "client_secret": "another-secret-of-some-length" }),
        )
        .await;
    assert_eq!(duplicate.status(), 409);
}

#[tokio::test]
async fn secrets_never_appear_in_later_responses_or_in_the_logs() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let token: Value = app
        .endorsed_json(client.json(None))
        .await
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let wrong = TestClient {
        secret: "pcs_a-wrong-secret-to-be-logged-nowhere".into(),
        ..client.clone()
    };
    endorsed_failure(&app, &wrong).await;
    oauth_failure(&app, &wrong).await;

    for path in [
        "/admin/v1/apps".to_owned(),
        format!("/admin/v1/apps/{}", client.id),
    ] {
        let text = app
            .http
            .get(format!("{}{path}", app.admin))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains(&client.client_id), "{path} lists the app");
        assert!(!text.contains(&client.secret), "{path} leaks the secret");
        assert!(!text.contains("argon2"), "{path} leaks the hash");
    }
    let logs = captured_logs();
    assert!(
        logs.contains(&client.client_id),
        "the events are logged at all"
    );
    for secret in [&client.secret, &wrong.secret, &token] {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret or token reached the logs"
        );
    }
    assert!(!logs.contains("$argon2id$"), "a hash reached the logs");

    // The suite-wide check (every TestApp, on drop) recognises exactly these shapes.
    let header = format!("authorization: Bearer {token}");
    assert_eq!(credential_shapes(&client.secret), ["client secret"]);
    assert_eq!(credential_shapes(&wrong.secret), ["client secret"]);
    assert!(credential_shapes(&header).contains(&"JWT"));
    assert!(credential_shapes(&header).contains(&"Authorization value"));
    assert_eq!(
        credential_shapes("Basic cGNjX2FiYzpwY3NfZGVm"),
        ["Authorization value"]
    );
    assert_eq!(
        credential_shapes("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        ["argon2 hash"]
    );
    assert!(
        credential_shapes(&format!(
            "event=\"auth.failed\" client_id={} source_ip=127.0.0.1",
            client.client_id
        ))
        .is_empty(),
        "ids and addresses are fine to log"
    );
}

/// Every failed verification costs the same work: one argon2 run, whether the client is
/// unknown, has one secret, is inside a rotation's grace period with two live secrets, or
/// holds several (an app's secrets share a salt, so one run checks them all). Counted, not timed: the count is what the
/// time follows, and it does not flake.
#[tokio::test]
async fn every_failed_verification_costs_one_argon2_run() {
    use crate::metrics::{sample, scrape};

    let app = TestApp::spawn().await;
    let plain = app.default_app().await;
    let rotated = app.default_app().await;
    let response = app
        .admin_post(
            &format!("/admin/v1/apps/{}/rotate-secret", rotated.id),
            json!({ "grace_period_secs": 3600 }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let newest = TestClient {
        secret: body["client_secret"].as_str().unwrap().to_owned(),
        ..rotated.clone()
    };

    // An app with several live secrets, one limited in uses, one in time.
    let several = app.default_app().await;
    let mut several_secrets = vec![several.clone()];
    for body in [
        json!({ "max_uses": 5 }),
        json!({ "expires_in": 3600, "description": "third" }),
    ] {
        let response = app
            .admin_post(&format!("/admin/v1/apps/{}/secrets", several.id), body)
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        several_secrets.push(TestClient {
            secret: body["client_secret"].as_str().unwrap().to_owned(),
            ..several.clone()
        });
    }

    let runs = async || sample(&scrape(&app).await, "portcullis_argon2_runs_total", &[]);
    let wrong = |client: &TestClient| TestClient {
        secret: "pcs_wrong-wrong-wrong-wrong".into(),
        ..client.clone()
    };
    let unknown = TestClient {
        client_id: "pcc_nobody-has-this-id".into(),
        ..plain.clone()
    };
    for (who, client, status) in [
        ("one secret, wrong", wrong(&plain), 401),
        ("in grace, wrong", wrong(&rotated), 401),
        ("unknown client", unknown, 401),
        ("in grace, the old secret", rotated.clone(), 200),
        ("in grace, the new secret", newest, 200),
        ("three secrets, wrong", wrong(&several), 401),
        ("three secrets, the first", several_secrets[0].clone(), 200),
        (
            "three secrets, the limited one",
            several_secrets[1].clone(),
            200,
        ),
        (
            "three secrets, the expiring one",
            several_secrets[2].clone(),
            200,
        ),
    ] {
        let before = runs().await;
        let response = app.endorsed_json(client.json(None)).await;
        assert_eq!(response.status(), status, "{who}");
        assert_eq!(runs().await - before, 1.0, "{who}");
    }
}

/// On a dual-stack listener (`[::]`), IPv4 peers arrive as `::ffff:a.b.c.d`. Read as IPv6,
/// every IPv4 client would share one /64 and one allowance, so one host's wrong secrets
/// would give all of them 429.
#[tokio::test]
async fn ipv4_clients_of_a_dual_stack_listener_are_limited_one_by_one() {
    let app = TestApp::spawn_with(Spawn {
        overrides: &[
            ("PORTCULLIS__SERVER__PUBLIC_ADDR", "[::]:0"),
            (
                "PORTCULLIS__RATE_LIMIT__VERIFICATIONS_PER_IP_PER_MINUTE",
                "2",
            ),
        ],
        ..Spawn::default()
    })
    .await;
    let good = app.default_app().await;
    let port = app.base.rsplit(':').next().unwrap();
    let url = format!("http://127.0.0.1:{port}/api/v1/auth/tokens");
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let (attacker, bystander) = (from("127.0.0.2"), from("127.0.0.3"));
    let spray = TestClient {
        secret: "pcs_wrong-wrong-wrong-wrong".into(),
        ..good.clone()
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = attacker.post(&url).json(&spray.json(None)).send().await;
        statuses.push(response.unwrap().status().as_u16());
    }
    assert_eq!(
        statuses,
        [401, 401, 429],
        "the attacker's own allowance runs out"
    );
    let response = bystander.post(&url).json(&good.json(None)).send().await;
    assert_eq!(
        response.unwrap().status(),
        200,
        "another IPv4 host is not in the attacker's bucket"
    );
}
