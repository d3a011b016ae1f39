//! One way to start the real server for a test: a fresh database (a SQLite file, or a new
//! PostgreSQL database when TEST_DATABASE_URL is set), port 0, cheap argon2 settings.

use std::{
    io::Write,
    process::Stdio,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use portcullis::{
    app::{Server, open_store},
    authority::{
        clock::{SharedClock, SystemClock},
        keys::MasterKey,
    },
    config::Settings,
    store::DynStore,
};
use reqwest::{Client, Response};

use crate::intercept::{Hooks, InterceptStore};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123";

/// One admin API call with the admin token, and a JSON body when given.
pub async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.admin))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}
pub const ISSUER: &str = "http://portcullis.test";
pub const AUDIENCE: &str = "portcullis-tests";

/// Every log line any test in this binary produced, so tests can prove secrets stay out.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&capture().buffer.lock().unwrap()).into_owned()
}

/// The whole suite runs with every target at TRACE into one buffer. Each line is checked
/// as it is written for the shapes of things that must never be logged (below); every
/// `TestApp` asserts on the way out that nothing was found, so any test whose server (or
/// client) logged a credential fails the run.
struct Capture {
    buffer: Arc<Mutex<Vec<u8>>>,
    leaks: Arc<Mutex<Vec<String>>>,
    /// Secrets without a recognisable shape (imported ones), checked at each app's end.
    literals: Mutex<Vec<String>>,
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let leaks = Arc::new(Mutex::new(Vec::new()));
        let (sink, found) = (buffer.clone(), leaks.clone());
        let echo = std::env::var_os("TEST_LOG").is_some();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || CaptureWriter {
                sink: sink.clone(),
                leaks: found.clone(),
                echo,
            })
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        Capture {
            buffer,
            leaks,
            literals: Mutex::new(Vec::new()),
        }
    })
}

/// Registers a secret that has no recognisable shape, so the log check looks for it too.
pub fn forbid_in_logs(secret: &str) {
    capture().literals.lock().unwrap().push(secret.to_owned());
}

/// Fails if any log line so far held a credential.
pub fn assert_logs_clean() {
    let capture = capture();
    let leaks = capture.leaks.lock().unwrap_or_else(|e| e.into_inner());
    assert!(leaks.is_empty(), "credentials reached the logs: {leaks:#?}");
    drop(leaks);
    let literals = capture
        .literals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if !literals.is_empty() {
        let logs = captured_logs();
        for secret in literals {
            assert!(
                !logs.contains(&secret),
                "an imported secret reached the logs"
            );
        }
    }
}

/// What in `line` looks like a credential: a Portcullis secret, a JWT, an argon2 hash or
/// an `Authorization` value.
pub fn credential_shapes(line: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    let token_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let run_after = |at: usize, skip: usize, ok: &dyn Fn(char) -> bool| {
        line[at + skip..].chars().take_while(|c| ok(*c)).count()
    };
    for (at, _) in line.match_indices("pcs_") {
        if run_after(at, 4, &token_char) >= 12 {
            found.push("client secret");
        }
    }
    for (at, _) in line.match_indices("eyJ") {
        let run = &line[at..];
        let end = run
            .find(|c: char| !(token_char(c) || c == '.'))
            .unwrap_or(run.len());
        if run[..end].matches('.').count() >= 2 && end > 30 {
            found.push("JWT");
        }
    }
    if line.contains("$argon2") {
        found.push("argon2 hash");
    }
    for scheme in ["Basic ", "Bearer ", "basic ", "bearer "] {
        for (at, _) in line.match_indices(scheme) {
            let b64 = |c: char| token_char(c) || matches!(c, '+' | '/' | '=' | '.' | '~');
            if run_after(at, scheme.len(), &b64) >= 8 {
                found.push("Authorization value");
            }
        }
    }
    found
}

struct CaptureWriter {
    sink: Arc<Mutex<Vec<u8>>>,
    leaks: Arc<Mutex<Vec<String>>>,
    echo: bool,
}

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let shapes = credential_shapes(&text);
        if !shapes.is_empty() {
            self.leaks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{shapes:?} in: {text}"));
        }
        self.sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        if self.echo {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A fresh, empty database for one test. PostgreSQL databases are dropped afterwards.
pub struct TestDatabase {
    pub url: String,
    /// Replicas sharing a database share its master key.
    pub master_key: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn new() -> Self {
        match std::env::var("TEST_DATABASE_URL") {
            Ok(admin_url) if !admin_url.is_empty() => Self::postgres(&admin_url).await,
            _ => Self::sqlite(),
        }
    }

    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let url = format!("sqlite://{}", dir.path().join("portcullis.db").display());
        Self {
            url,
            master_key: MasterKey::generate_base64(),
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// Fails loudly when PostgreSQL is unreachable: a green run must mean it was exercised.
    pub async fn postgres(admin_url: &str) -> Self {
        use sqlx::Connection;
        let name = format!("portcullis_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("TEST_DATABASE_URL is set but unreachable: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let mut url = url_with_database(admin_url, &name);
        if !url.contains("connect_timeout") {
            url.push_str(if url.contains('?') { "&" } else { "?" });
            url.push_str("connect_timeout=5");
        }
        Self {
            url,
            master_key: MasterKey::generate_base64(),
            _dir: None,
            postgres: Some((admin_url.to_owned(), name)),
        }
    }
}

fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop cannot be async; a short-lived thread with its own runtime does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// Settings for a test server: loopback port 0, the test database, a fresh master key.
pub fn settings(db: &TestDatabase, overrides: &[(&str, &str)]) -> Settings {
    capture();
    Settings::load_from(None, settings_env(db, overrides)).expect("test settings are valid")
}

/// The same settings as environment variables, for a server started as a process.
pub fn settings_env(db: &TestDatabase, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PORTCULLIS__SERVER__PUBLIC_ADDR", "127.0.0.1:0"),
        ("PORTCULLIS__ADMIN__ADDR", "127.0.0.1:0"),
        ("PORTCULLIS__ADMIN__TOKEN", ADMIN_TOKEN),
        ("PORTCULLIS__DATABASE__URL", db.url.as_str()),
        ("PORTCULLIS__DATABASE__MAX_CONNECTIONS", "4"),
        ("PORTCULLIS__KEYS__MASTER_KEY", db.master_key.as_str()),
        ("PORTCULLIS__TOKENS__ISSUER", ISSUER),
        ("PORTCULLIS__TOKENS__AUDIENCE", AUDIENCE),
        // The cheapest argon2 the config accepts keeps the suite fast.
        ("PORTCULLIS__CREDENTIALS__ARGON2_MEMORY_KIB", "8192"),
        ("PORTCULLIS__CREDENTIALS__ARGON2_ITERATIONS", "1"),
        (
            "PORTCULLIS__RATE_LIMIT__VERIFICATIONS_PER_CLIENT_PER_MINUTE",
            "1000",
        ),
        (
            "PORTCULLIS__RATE_LIMIT__VERIFICATIONS_PER_IP_PER_MINUTE",
            "1000",
        ),
        // Every test calls from 127.0.0.1; the tests of these limits set their own.
        (
            "PORTCULLIS__RATE_LIMIT__REQUESTS_PER_CLIENT_PER_SECOND",
            "0",
        ),
        ("PORTCULLIS__RATE_LIMIT__REQUESTS_PER_IP_PER_SECOND", "0"),
        // Tests rotate keys right after start; the tests of the lead time set their own.
        ("PORTCULLIS__KEYS__NEXT_KEY_LEAD_SECS", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// Starts the real binary on free ports and waits until it is ready. A port picked here can
/// be taken by a parallel test before the child binds it: the child then exits, or another
/// server answers, which the unique issuer exposes; either way it is tried again.
pub async fn start_binary(
    db: &TestDatabase,
    overrides: &[(&str, &str)],
) -> (tokio::process::Child, String, String) {
    start_binary_with_ulimit(db, overrides, None).await
}

/// [`start_binary`], with the shell's `ulimit` run first with these arguments (e.g. `-S -n
/// 256`), so the server starts under those resource limits.
pub async fn start_binary_with_ulimit(
    db: &TestDatabase,
    overrides: &[(&str, &str)],
    ulimit: Option<&str>,
) -> (tokio::process::Child, String, String) {
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let binary = env!("CARGO_BIN_EXE_portcullis");
    for _ in 0..5 {
        let (public, admin) = (free_port(), free_port());
        let issuer = format!("http://binary-{}.test", uuid::Uuid::new_v4().simple());
        let mut all = vec![
            ("PORTCULLIS__SERVER__PUBLIC_ADDR", public.as_str()),
            ("PORTCULLIS__ADMIN__ADDR", admin.as_str()),
            ("PORTCULLIS__TOKENS__ISSUER", issuer.as_str()),
        ];
        all.extend_from_slice(overrides);
        let mut command = match ulimit {
            // `exec` keeps one process, so the child's pid is the server's.
            Some(limits) => {
                let mut command = tokio::process::Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!("ulimit {limits} && exec \"$0\" serve"))
                    .arg(binary);
                command
            }
            None => {
                let mut command = tokio::process::Command::new(binary);
                command.arg("serve");
                command
            }
        };
        let mut child = command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(settings_env(db, &all))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the server binary starts");
        let base = format!("http://{public}");
        // No connection is kept once the server is ready: a test that counts the server's
        // connections (its cap) must start from none.
        let http = Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("a client");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait().unwrap().is_some() {
                break; // it could not bind; try other ports
            }
            let metadata = http
                .get(format!("{base}/.well-known/oauth-authorization-server"))
                .send()
                .await;
            if let Ok(response) = metadata {
                let ours = response
                    .json::<Value>()
                    .await
                    .is_ok_and(|m| m["issuer"] == issuer.as_str());
                if !ours {
                    let _ = child.kill().await;
                    break;
                }
                let ready = http.get(format!("{base}/health/ready")).send().await;
                if ready.is_ok_and(|r| r.status() == 200) {
                    return (child, base, format!("http://{admin}"));
                }
            }
            assert!(Instant::now() < deadline, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("no free ports after five tries");
}

/// The PostgreSQL server of a test that needs one. Such tests are marked
/// `#[ignore = "needs PostgreSQL …"]`, so a SQLite-only run lists them as ignored rather than
/// passed; the PostgreSQL pass runs them with `--include-ignored`, and without
/// TEST_DATABASE_URL they fail instead of passing vacuously.
pub fn postgres_url() -> String {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("this test needs PostgreSQL: set TEST_DATABASE_URL"),
    }
}

pub struct TestApp {
    pub base: String,
    pub authority: Arc<portcullis::authority::Authority>,
    pub admin: String,
    pub http: Client,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    db: Arc<TestDatabase>,
}

#[derive(Default)]
pub struct Spawn<'a> {
    pub overrides: &'a [(&'a str, &'a str)],
    pub clock: Option<SharedClock>,
    /// Wraps the real store, e.g. to inject faults.
    pub wrap_store: Option<Box<dyn FnOnce(DynStore) -> DynStore + Send + 'a>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Spawn::default()).await
    }

    pub async fn spawn_with(options: Spawn<'_>) -> Self {
        let db = Arc::new(TestDatabase::new().await);
        Self::spawn_on(db, options).await
    }

    /// Starts a server on an existing database, e.g. a second replica.
    pub async fn spawn_on(db: Arc<TestDatabase>, options: Spawn<'_>) -> Self {
        let settings = settings(&db, options.overrides);
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let mut store = open_store(&settings).await.expect("test store opens");
        if let Some(wrap) = options.wrap_store {
            store = wrap(store);
        }
        let server = Server::build_with_store(&settings, store, clock)
            .await
            .expect("server builds");
        let base = format!("http://{}", server.public_addr());
        let authority = server.authority().expect("the core is built");
        let admin = format!("http://{}", server.admin_addr().expect("admin listener"));
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            base,
            authority,
            admin,
            http: Client::new(),
            stop: Some(stop),
            done: Some(done),
            db,
        }
    }

    /// Starts a server whose store goes through an [`InterceptStore`] the test steers.
    pub async fn spawn_intercepted(options: Spawn<'_>) -> (Self, Arc<Hooks>) {
        let hooks = Arc::new(OnceLock::new());
        let slot = hooks.clone();
        let app = Self::spawn_with(Spawn {
            wrap_store: Some(Box::new(move |inner| {
                let (store, hooks) = InterceptStore::wrap(inner);
                let _ = slot.set(hooks);
                store
            })),
            ..options
        })
        .await;
        let hooks = hooks.get().expect("the store was wrapped").clone();
        (app, hooks)
    }

    pub fn database(&self) -> Arc<TestDatabase> {
        self.db.clone()
    }

    /// Stops the server gracefully and waits for it to exit.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.take().expect("running").await?
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Response {
        self.http
            .post(format!("{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("admin request")
    }

    pub async fn admin_delete(&self, path: &str) -> Response {
        self.http
            .delete(format!("{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin request")
    }

    /// `GET /access/v1/enrollment` with an enrollment token: the enrollment it speaks for.
    pub async fn enrollment_of(&self, token: &str) -> Response {
        self.http
            .get(format!("{}/access/v1/enrollment", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Creates an application through the admin API; returns (app json, client_id, secret).
    pub async fn create_app(&self, body: Value) -> TestClient {
        let response = self.admin_post("/admin/v1/apps", body).await;
        assert_eq!(response.status(), 201, "creating an app");
        let app: Value = response.json().await.unwrap();
        TestClient {
            id: app["id"].as_str().unwrap().to_owned(),
            client_id: app["client_id"].as_str().unwrap().to_owned(),
            secret: app["client_secret"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// A token for an owner from the admin mint route, e.g. the profile that owns grants.
    pub async fn owner_token(&self, owner: &str, scope: &str) -> String {
        let response = self
            .admin_post(
                "/admin/v1/tokens",
                json!({ "sub": owner, "sub_kind": "owner", "scope": scope }),
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A grant's API token, fetched with the token of the profile that owns the grant.
    pub async fn grant_api_token(&self, owner_token: &str, grant_id: &str) -> String {
        let response = self
            .http
            .post(format!("{}/auth-grant/{grant_id}/api-token", self.base))
            .bearer_auth(owner_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// RFC 7662 introspection of `token`, authenticated as `caller`.
    pub async fn introspect(&self, caller: &TestClient, token: &str) -> Response {
        self.http
            .post(format!("{}/oauth2/introspect", self.base))
            .basic_auth(&caller.client_id, Some(&caller.secret))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
    }

    /// The introspection response's body, which must be a 200.
    pub async fn introspection(&self, caller: &TestClient, token: &str) -> Value {
        let response = self.introspect(caller, token).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// RFC 7009 revocation of `token`, authenticated as `caller`.
    pub async fn revoke(&self, caller: &TestClient, token: &str) -> Response {
        self.http
            .post(format!("{}/oauth2/revoke", self.base))
            .basic_auth(&caller.client_id, Some(&caller.secret))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .unwrap()
    }

    pub async fn default_app(&self) -> TestClient {
        self.create_app(json!({ "name": "test app" })).await
    }

    pub async fn endorsed_json(&self, body: Value) -> Response {
        self.http
            .post(format!("{}/api/v1/auth/tokens", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send().await.unwrap()
    }

    pub async fn oauth_basic(&self, client: &TestClient, form: &str) -> Response {
        self.http
            .post(format!("{}/oauth2/token", self.base))
            .basic_auth(&client.client_id, Some(&client.secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned())
            .send()
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if !std::thread::panicking() {
            assert_logs_clean();
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestClient {
    pub id: String,
    pub client_id: String,
    pub secret: String,
}

impl TestClient {
    pub fn form(&self, extra: &str) -> String {
        let mut form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            self.client_id, self.secret
        );
        if !extra.is_empty() {
            form.push('&');
            form.push_str(extra);
        }
        form
    }

    pub fn json(&self, scope: Option<Value>) -> Value {
        let mut body = json!({
            "client_id": self.client_id,
            "client_secret": self.secret,
            "grant_type": "client_credentials",
        });
        if let Some(scope) = scope {
            body["scope"] = scope;
        }
        body
    }
}

/// Decodes and verifies a token against the server's own JWKS, pinning algorithm, issuer
/// and audience; returns the header and claims.
pub async fn verify_token(app: &TestApp, token: &str) -> (jsonwebtoken::Header, Value) {
    use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
    let jwks: JwkSet = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = decode_header(token).expect("a JWS header");
    let kid = header.kid.clone().expect("tokens name their key");
    let jwk = jwks
        .find(&kid)
        .expect("the signing key is published in JWKS");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
    let claims = decode::<Value>(token, &key, &validation)
        .expect("the token verifies against the JWKS")
        .claims;
    (header, claims)
}
