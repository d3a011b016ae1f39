use std::collections::HashSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::{Value, json};

use crate::helpers::{AUDIENCE, ISSUER, Spawn, TestApp, verify_token};

#[tokio::test]
async fn tokens_verify_against_jwks_with_rfc9068_header_and_claims() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let body: Value = app
        .endorsed_json(client.json(Some(json!(["all:read"]))))
        .await
        .json()
        .await
        .unwrap();
    let (header, claims) = verify_token(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(header.alg, Algorithm::ES256, "ES256 is the default");
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["sub"], client.client_id);
    assert_eq!(claims["sub_kind"], "app");
    assert_eq!(claims["client_id"], client.client_id);
    assert_eq!(claims["scope"], "all:read");
    assert_eq!(claims["iat"], claims["nbf"]);
    let expires_in: i64 = body["expires_in"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        expires_in
    );
    assert!(claims.get("enrollment_id").is_none() && claims.get("grant_id").is_none());
    let allowed: HashSet<&str> = [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "client_id",
        "scope",
        "sub_kind",
        "secret_id",
    ]
    .into();
    for name in claims.as_object().unwrap().keys() {
        assert!(allowed.contains(name.as_str()), "unexpected claim {name}");
    }
}

#[tokio::test]
async fn every_token_has_a_unique_jti() {
    let app = TestApp::spawn().await;
    let client = app.default_app().await;
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let body: Value = app
            .oauth_basic(&client, "grant_type=client_credentials")
            .await
            .json()
            .await
            .unwrap();
        let (_, claims) = verify_token(&app, body["access_token"].as_str().unwrap()).await;
        assert!(seen.insert(claims["jti"].as_str().unwrap().to_owned()));
    }
}

#[tokio::test]
async fn eddsa_and_rs256_are_selectable() {
    for (alg, expected) in [("EdDSA", Algorithm::EdDSA), ("RS256", Algorithm::RS256)] {
        let app = TestApp::spawn_with(Spawn {
            overrides: &[("PORTCULLIS__TOKENS__ALGORITHM", alg)],
            ..Spawn::default()
        })
        .await;
        let client = app.default_app().await;
        let body: Value = app
            .oauth_basic(&client, "grant_type=client_credentials")
            .await
            .json()
            .await
            .unwrap();
        let (header, _) = verify_token(&app, body["access_token"].as_str().unwrap()).await;
        assert_eq!(header.alg, expected);
    }
}

#[tokio::test]
async fn hs256_signs_with_the_configured_secret_and_publishes_no_key() {
    let secret = "an-hs256-secret-of-at-least-32-bytes!!";
    let app = TestApp::spawn_with(Spawn {
        overrides: &[
            ("PORTCULLIS__TOKENS__ALGORITHM", "HS256"),
            ("PORTCULLIS__KEYS__HS256_SECRET", secret),
        ],
        ..Spawn::default()
    })
    .await;
    let client = app.default_app().await;
    let body: Value = app
        .oauth_basic(&client, "grant_type=client_credentials")
        .await
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(decode_header(token).unwrap().alg, Algorithm::HS256);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    decode::<Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .expect("verifies with the shared secret");
    let jwks: Value = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for key in jwks["keys"].as_array().unwrap() {
        assert_ne!(key["kty"], "oct", "a symmetric key is never published");
    }
}

#[tokio::test]
async fn a_second_replica_on_the_same_database_signs_with_the_same_key() {
    let first = TestApp::spawn().await;
    let client = first.default_app().await;
    let second = TestApp::spawn_on(first.database(), Spawn::default()).await;
    let body: Value = second
        .oauth_basic(&client, "grant_type=client_credentials")
        .await
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap();
    // Verified against the first replica's JWKS.
    verify_token(&first, token).await;
}
