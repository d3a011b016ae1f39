//! Micro-benchmarks for the pieces of the token hot path (issue 7): signing per algorithm,
//! full minting, bearer verification, scope parsing and coverage, the warm (and one cold)
//! credential check, and the Endorsed / OAuth body parsers.
//!
//! `cargo bench --bench hot_path` runs them all in about two minutes; add a filter to run
//! some, e.g. `cargo bench --bench hot_path -- sign/`. The load benchmark is `bench/run.sh`.

use std::{hint::black_box, net::IpAddr, sync::Arc, time::Duration};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::TimeDelta;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use portcullis::{
    authority::{
        ClientCredentials,
        apps::{Applications, CreateApplication},
        audit::AuditTrail,
        changes::ChangeHub,
        clock::{SharedClock, SystemClock},
        credentials::{ClientAuthenticator, CredentialCache, VerificationLimits},
        fresh::Generations,
        keys::{KeyRing, KeyRingOptions, MasterKey, SigningKey},
        records::Records,
        revocations::RevocationList,
        secrets::{HashParams, SecretHasher},
        tokens::{TokenMinter, TokenSpec},
        usage::UsageTracker,
        verify::TokenVerifier,
    },
    domain::{ScopeSet, SigningAlgorithm, Subject, SubjectKind},
    http::extract::{BasicAuth, BodyFormat, basic_auth, parse_body},
    store::{self, ConnectOptions, DynStore},
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tempfile::TempDir;
use tokio::runtime::Runtime;

const ALGORITHMS: [SigningAlgorithm; 4] = [
    SigningAlgorithm::ES256,
    SigningAlgorithm::EdDSA,
    SigningAlgorithm::RS256,
    SigningAlgorithm::HS256,
];
const HS256_SECRET: &[u8] = b"bench-hs256-secret-0123456789abcdef0123456789";
const ISSUER: &str = "http://127.0.0.1:18080";
const AUDIENCE: &str = "portcullis";
const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A migrated SQLite store in a temp dir that lives as long as the returned guard.
async fn temp_store() -> (DynStore, TempDir) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = store::connect(&ConnectOptions {
        url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(5),
        feed_heartbeat: Duration::from_secs(2),
    })
    .await
    .expect("a SQLite store");
    store.migrate().await.expect("migrations");
    (store, dir)
}

fn signing_key(algorithm: SigningAlgorithm) -> SigningKey {
    match algorithm {
        SigningAlgorithm::HS256 => SigningKey::hs256(HS256_SECRET),
        other => SigningKey::generate(other).expect("a fresh key").0,
    }
}

/// A signing input shaped like a real token's `header.payload`.
fn signing_input(key: &SigningKey) -> Vec<u8> {
    let payload = serde_json::json!({
        "iss": ISSUER, "sub": "pcc_0123456789abcdefghijkl", "aud": AUDIENCE,
        "exp": 1_900_000_000, "iat": 1_899_996_400, "nbf": 1_899_996_400,
        "jti": "6f1c2f55-8a43-4a4e-9d0b-0d6c3b3b8f7e", "client_id": "pcc_0123456789abcdefghijkl",
        "scope": "all:read all:write", "sub_kind": "app",
    });
    format!(
        "{}.{}",
        key.encoded_header(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string())
    )
    .into_bytes()
}

fn bench_sign(c: &mut Criterion) {
    let mut group = c.benchmark_group("sign");
    group.measurement_time(Duration::from_secs(3));
    for algorithm in ALGORITHMS {
        let key = signing_key(algorithm);
        let input = signing_input(&key);
        group.bench_with_input(
            BenchmarkId::from_parameter(algorithm.as_str()),
            &input,
            |b, input| b.iter(|| key.sign(black_box(input)).expect("signs")),
        );
    }
    group.finish();
}

/// A key ring with one current key of `algorithm`, in its own store.
async fn key_ring(algorithm: SigningAlgorithm) -> (Arc<KeyRing>, TempDir) {
    let (store, dir) = temp_store().await;
    let master = MasterKey::from_base64(&MasterKey::generate_base64()).expect("a master key");
    let clock: SharedClock = Arc::new(SystemClock);
    let audit = Arc::new(AuditTrail::new(clock.clone(), None, Default::default()));
    let ring = KeyRing::open(
        store,
        master,
        clock,
        KeyRingOptions {
            algorithm,
            hs256_secret: (algorithm == SigningAlgorithm::HS256).then(|| HS256_SECRET.to_vec()),
            retired_key_visibility: TimeDelta::hours(24),
            next_key_lead: TimeDelta::zero(),
        },
        audit,
    )
    .await
    .expect("a key ring");
    (Arc::new(ring), dir)
}

/// Claims building, serialisation, signing and encoding: everything `mint` does; then
/// verification of such a token, as every bearer-protected route does.
fn bench_mint_and_verify(c: &mut Criterion) {
    let rt = runtime();
    let clock: SharedClock = Arc::new(SystemClock);
    let subject = Subject {
        kind: SubjectKind::App,
        id: "pcc_0123456789abcdefghijkl".to_owned(),
    };
    let scope = ScopeSet::parse("all:read all:write").expect("valid scopes");
    let spec = || TokenSpec {
        subject: &subject,
        client_id: "pcc_0123456789abcdefghijkl",
        scope: &scope,
        lifetime: Duration::from_secs(3600),
        enrollment_id: None,
        grant_id: None,
        grant_type: "client_credentials",
        parent_jti: None,
        // What a client_credentials token carries now: the secret that minted it.
        secret_id: Some("01900000-0000-7000-8000-000000000000".to_owned()),
        // An app without token binding: no `cidr` claim.
        cidr: Default::default(),
    };

    let mut mint = c.benchmark_group("mint");
    mint.measurement_time(Duration::from_secs(3));
    let mut rings = Vec::new();
    for algorithm in ALGORITHMS {
        let (ring, dir) = rt.block_on(key_ring(algorithm));
        let minter = TokenMinter::new(
            ISSUER.to_owned(),
            AUDIENCE.to_owned(),
            ring.clone(),
            clock.clone(),
        );
        mint.bench_function(algorithm.as_str(), |b| {
            b.iter(|| minter.mint(black_box(spec())).expect("mints"))
        });
        let token = minter.mint(spec()).expect("mints").access_token;
        rings.push((algorithm, ring, token, dir));
    }
    mint.finish();

    let mut verify = c.benchmark_group("verify");
    verify.measurement_time(Duration::from_secs(3));
    for (algorithm, ring, token, _dir) in &rings {
        let verifier = TokenVerifier::new(
            ISSUER.to_owned(),
            AUDIENCE.to_owned(),
            ring.clone(),
            clock.clone(),
        );
        verify.bench_function(algorithm.as_str(), |b| {
            b.iter(|| verifier.verify(black_box(token)).expect("verifies"))
        });
    }
    verify.finish();
}

fn bench_scopes(c: &mut Criterion) {
    let mut group = c.benchmark_group("scope");
    group.measurement_time(Duration::from_secs(3));
    let typical = "all:read all:write";
    let long = "invoices:read invoices:write customers:read customers:delete payments:* \
                reports:read webhooks:write profiles:read authGrants:read authGrants:write";
    group.bench_function("parse/2", |b| {
        b.iter(|| ScopeSet::parse(black_box(typical)).expect("valid"))
    });
    group.bench_function("parse/10", |b| {
        b.iter(|| ScopeSet::parse(black_box(long)).expect("valid"))
    });

    let allowed = ScopeSet::parse(typical).expect("valid");
    let wildcard = ScopeSet::parse("*:*").expect("valid");
    let wanted_few = ScopeSet::parse("invoices:read").expect("valid");
    let wanted_many = ScopeSet::parse(
        "invoices:read invoices:write customers:read customers:delete reports:read \
         webhooks:write profiles:read authGrants:read authGrants:write authGrants:delete",
    )
    .expect("valid");
    group.bench_function("covers_all/2_of_1", |b| {
        b.iter(|| black_box(&allowed).covers_all(black_box(&wanted_few)))
    });
    group.bench_function("covers_all/2_of_10", |b| {
        b.iter(|| black_box(&allowed).covers_all(black_box(&wanted_many)))
    });
    group.bench_function("covers_all/wildcard_of_10", |b| {
        b.iter(|| black_box(&wildcard).covers_all(black_box(&wanted_many)))
    });
    group.finish();
}

struct CredentialFixture {
    authenticator: ClientAuthenticator,
    client_id: String,
    secret: String,
    _dir: TempDir,
}

/// An app created through the core, and an authenticator over the same store and cache.
async fn credential_fixture(hash: HashParams, cache_ttl: Duration) -> CredentialFixture {
    let (store, dir) = temp_store().await;
    let hasher = Arc::new(SecretHasher::new(hash).expect("argon2 parameters"));
    let clock: SharedClock = Arc::new(SystemClock);
    let generations = Arc::new(Generations::new(Duration::from_secs(2), clock.clone()));
    let cache = Arc::new(CredentialCache::new(generations.clone(), cache_ttl, 1000));
    let changes = Arc::new(ChangeHub::new(
        store.clone(),
        clock.clone(),
        generations.clone(),
        cache.clone(),
        Arc::new(Records::new(
            store.clone(),
            generations,
            Duration::from_secs(5),
            1000,
        )),
        Arc::new(RevocationList::default()),
    ));
    let audit = Arc::new(AuditTrail::new(clock.clone(), None, Default::default()));
    let apps = Applications::new(
        store.clone(),
        hasher.clone(),
        changes,
        clock.clone(),
        audit.clone(),
    );
    let created = apps
        .create(CreateApplication {
            name: "bench".to_owned(),
            ..Default::default()
        })
        .await
        .expect("an app");
    let authenticator = ClientAuthenticator::new(
        store,
        hasher,
        cache,
        VerificationLimits {
            per_client_per_minute: 1_000_000,
            per_ip_per_minute: 1_000_000,
            // Counted as in production (the limiter is on the hot path), never binding.
            requests_per_client_per_second: 1_000_000,
            requests_per_ip_per_second: 1_000_000,
        },
        Arc::new(UsageTracker::default()),
        audit,
        clock,
    );
    CredentialFixture {
        authenticator,
        client_id: created.app.client_id.to_string(),
        secret: created
            .client_secret
            .expect("a generated secret")
            .expose_secret()
            .to_owned(),
        _dir: dir,
    }
}

fn bench_credentials(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("credential");
    group.measurement_time(Duration::from_secs(3));

    // Cheap argon2 is enough here: a warm check never runs it.
    let warm = rt.block_on(credential_fixture(
        HashParams {
            memory_kib: 8192,
            iterations: 1,
            parallelism: 1,
            concurrency: 1,
        },
        Duration::from_secs(600),
    ));
    rt.block_on(
        warm.authenticator
            .authenticate(&presented(&warm.client_id, &warm.secret)),
    )
    .expect("the secret verifies");
    group.bench_function("warm_cache", |b| {
        b.to_async(&rt).iter(|| async {
            warm.authenticator
                .authenticate(black_box(&presented(&warm.client_id, &warm.secret)))
                .await
                .expect("cached")
        })
    });

    // The cold path at the server's default (OWASP) parameters: the argon2 ceiling per core.
    let cold = rt.block_on(credential_fixture(
        HashParams {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
            concurrency: 1,
        },
        Duration::ZERO,
    ));
    group.sample_size(10);
    group.bench_function("cold_argon2_owasp", |b| {
        b.to_async(&rt).iter(|| async {
            cold.authenticator
                .authenticate(black_box(&presented(&cold.client_id, &cold.secret)))
                .await
                .expect("verifies")
        })
    });
    group.finish();
}

/// Credentials as a route hands them to the core: one reading, from loopback.
fn presented<'a>(client_id: &'a str, client_secret: &'a str) -> ClientCredentials<'a> {
    ClientCredentials {
        client_id,
        client_secret,
        as_sent: None,
        source_ip: LOCALHOST,
    }
}

/// Mirrors the Endorsed route's private request type (`src/http/endorsed.rs`).
#[derive(Debug, Deserialize)]
struct CreateTokenRequest {
    client_id: Option<String>,
    client_secret: Option<String>,
    grant_type: Option<String>,
    scope: Option<ScopeParam>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ScopeParam {
    List(Vec<String>),
    Text(String),
}

/// Mirrors the OAuth route's private request type (`src/http/oauth.rs`).
#[derive(Debug, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// What the Endorsed handler does before the core: parse, check, read the scopes.
fn endorsed_request(headers: &HeaderMap, body: &[u8]) -> (String, String, Option<ScopeSet>) {
    let request: CreateTokenRequest =
        parse_body(headers, body, BodyFormat::Form).unwrap_or_else(|_| panic!("a valid body"));
    assert_eq!(request.grant_type.as_deref(), Some("client_credentials"));
    let scope = match request.scope {
        None => None,
        Some(ScopeParam::Text(raw)) => Some(ScopeSet::parse(&raw)),
        Some(ScopeParam::List(items)) => Some(ScopeSet::from_items(
            items
                .iter()
                .flat_map(|item| item.split(' '))
                .filter(|s| !s.is_empty()),
        )),
    }
    .transpose()
    .expect("valid scopes");
    (
        request.client_id.expect("client_id"),
        request.client_secret.expect("client_secret"),
        scope,
    )
}

/// What the OAuth handler does before the core: form body, Basic header, scopes.
fn oauth_request(headers: &HeaderMap, body: &[u8]) -> (String, String, Option<ScopeSet>) {
    let request: TokenRequest = serde_urlencoded::from_bytes(body).expect("a valid form");
    assert_eq!(request.grant_type.as_deref(), Some("client_credentials"));
    let (client_id, client_secret) = match basic_auth(headers) {
        BasicAuth::Present(basic) => (basic.client_id, basic.client_secret),
        _ => (
            request.client_id.expect("client_id"),
            request.client_secret.expect("client_secret"),
        ),
    };
    let scope = request
        .scope
        .as_deref()
        .map(ScopeSet::parse)
        .transpose()
        .expect("valid scopes");
    (client_id, client_secret, scope)
}

fn content_type(value: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
    headers
}

fn bench_bodies(c: &mut Criterion) {
    let mut group = c.benchmark_group("body");
    group.measurement_time(Duration::from_secs(3));
    let client_id = "pcc_0123456789abcdefghijkl";
    let secret = "pcs_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

    let json = content_type("application/json");
    let json_body = format!(
        r#"{{"client_id":"{client_id}","client_secret":"{secret}","grant_type":"client_credentials","scope":["all:read","all:write"]}}"#
    );
    group.bench_function("endorsed_json", |b| {
        b.iter(|| endorsed_request(black_box(&json), black_box(json_body.as_bytes())))
    });

    let form = content_type("application/x-www-form-urlencoded");
    let form_body = format!(
        "client_id={client_id}&client_secret={secret}&grant_type=client_credentials&scope=all%3Aread+all%3Awrite"
    );
    group.bench_function("endorsed_form", |b| {
        b.iter(|| endorsed_request(black_box(&form), black_box(form_body.as_bytes())))
    });

    let mut basic = content_type("application/x-www-form-urlencoded");
    let encoded = STANDARD.encode(format!("{client_id}:{secret}"));
    basic.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("a header value"),
    );
    group.bench_function("oauth_basic_form", |b| {
        b.iter(|| {
            oauth_request(
                black_box(&basic),
                black_box(b"grant_type=client_credentials"),
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = hot_path;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = bench_sign, bench_mint_and_verify, bench_scopes, bench_credentials, bench_bodies
}
criterion_main!(hot_path);
