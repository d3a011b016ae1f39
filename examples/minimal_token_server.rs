//! The yardstick for `bench/run.sh` (issue 13): the least a `client_credentials` token
//! endpoint can do on Portcullis's stack — axum on tokio with mimalloc, a form body, HTTP
//! Basic, a cached credential check (an HMAC of id and secret looked up in a map), one ES256
//! signature with a key parsed once at start (jsonwebtoken's aws-lc signer), and the same
//! response as `POST /oauth2/token`. No store, no logs, no metrics, no rate limits, no
//! middleware. Portcullis's warm token path is measured against it.
//!
//! A benchmark tool, not part of the server: it is an example, so it never ships in the
//! `portcullis` binary.
//!
//! ```sh
//! cargo build --release --example minimal_token_server
//! MINIMAL_ADDR=127.0.0.1:18095 MINIMAL_CLIENT_ID=… MINIMAL_CLIENT_SECRET=… \
//!   MINIMAL_SCOPE="all:read all:write" target/release/examples/minimal_token_server
//! ```

use std::{cell::OnceCell, collections::HashMap, net::SocketAddr, sync::Arc, time::SystemTime};

use aws_lc_rs::{
    hmac,
    rand::{SecureRandom, SystemRandom},
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair},
};
use axum::{
    Form, Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    crypto::{JwtSigner, aws_lc::DEFAULT_PROVIDER},
};
use serde::{Deserialize, Serialize};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LIFETIME_SECS: u64 = 3600;

struct Client {
    client_id: String,
    scope: String,
}

struct Minimal {
    /// HMAC(id, secret) → client: what a warm credential cache holds.
    clients: HashMap<[u8; 32], Client>,
    mac_key: hmac::Key,
    signing_key: EncodingKey,
    encoded_header: String,
    issuer: String,
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    scope: Option<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    nbf: u64,
    jti: String,
    client_id: &'a str,
    scope: &'a str,
    sub_kind: &'static str,
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    scope: String,
}

fn pair_key(key: &hmac::Key, id: &str, secret: &str) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(key);
    for part in [id, secret] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

thread_local! {
    static SIGNER: OnceCell<Box<dyn JwtSigner>> = const { OnceCell::new() };
}

/// ES256 with the key parsed once per worker thread: jsonwebtoken's `encode` would parse the
/// PKCS#8 key on every call, and its signer is not `Send`, so each thread keeps its own.
fn sign(key: &EncodingKey, message: &[u8]) -> anyhow::Result<Vec<u8>> {
    SIGNER.with(|cell| {
        let signer = match cell.get() {
            Some(signer) => signer,
            None => {
                let signer = (DEFAULT_PROVIDER.signer_factory)(&Algorithm::ES256, key)?;
                cell.get_or_init(|| signer)
            }
        };
        Ok(signer.try_sign(message)?)
    })
}

fn error(status: StatusCode, code: &'static str) -> Response {
    (status, Json(serde_json::json!({ "error": code }))).into_response()
}

async fn token(
    State(state): State<Arc<Minimal>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    if form.grant_type.as_deref() != Some("client_credentials") {
        return error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    let Some((id, secret)) = basic.as_deref().and_then(|b| b.split_once(':')) else {
        return error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let Some(client) = state.clients.get(&pair_key(&state.mac_key, id, secret)) else {
        return error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let scope = form.scope.as_deref().unwrap_or(&client.scope);

    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = Claims {
        iss: &state.issuer,
        sub: &client.client_id,
        aud: &state.issuer,
        exp: now + LIFETIME_SECS,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        client_id: &client.client_id,
        scope,
        sub_kind: "app",
    };
    let Ok(payload) = serde_json::to_vec(&claims) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    let mut access_token = String::with_capacity(512);
    access_token.push_str(&state.encoded_header);
    access_token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut access_token);
    let Ok(signature) = sign(&state.signing_key, access_token.as_bytes()) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    access_token.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut access_token);

    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: LIFETIME_SECS,
            scope: scope.to_owned(),
        }),
    )
        .into_response()
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = env("MINIMAL_ADDR", "127.0.0.1:18095").parse()?;
    let client_id = env("MINIMAL_CLIENT_ID", "bench-client");
    let client_secret = env("MINIMAL_CLIENT_SECRET", "bench-secret");
    let scope = env("MINIMAL_SCOPE", "all:read all:write");

    let rng = SystemRandom::new();
    let mut mac_key = [0u8; 32];
    rng.fill(&mut mac_key)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let mac_key = hmac::Key::new(hmac::HMAC_SHA256, &mac_key);
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
    let signing_key = EncodingKey::from_ec_der(pkcs8.as_ref());
    // Fails here rather than on the first request if the key does not parse.
    sign(&signing_key, b"check")?;
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("at+jwt".to_owned());
    header.kid = Some("minimal-0000000000000000000000000000000000000".to_owned());
    let encoded_header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);

    let clients = HashMap::from([(
        pair_key(&mac_key, &client_id, &client_secret),
        Client { client_id, scope },
    )]);
    let state = Arc::new(Minimal {
        clients,
        mac_key,
        signing_key,
        encoded_header,
        issuer: format!("http://{addr}"),
    });
    let app = Router::new()
        .route("/oauth2/token", post(token))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
