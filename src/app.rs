//! Wiring: builds the store, the core and both listeners from [`Settings`]. `main` and
//! every integration test go through [`Server::build`].

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use axum::Router;
use chrono::TimeDelta;
use secrecy::ExposeSecret;
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
};

use crate::{
    authority::{
        Authority, Lifetimes, Parts,
        apps::Applications,
        changes::ChangeHub,
        clock::SharedClock,
        credentials::{ClientAuthenticator, CredentialCache, VerificationLimits},
        enrollments::Enrollments,
        grants::Grants,
        keys::{KeyRing, KeyRingOptions, MasterKey},
        revocations::RevocationList,
        secrets::{HashParams, SecretHasher},
        status::StatusCache,
        tokens::TokenMinter,
        usage::UsageTracker,
        verify::TokenVerifier,
    },
    config::Settings,
    domain::ChangeEvent,
    http::{self, AppState, Lifecycle, extract::TrustedProxies},
    store::{self, ConnectOptions, DynStore},
};

/// How often housekeeping runs: idle rate-limit entries dropped, expired revocations
/// purged, usage written, keys and revocations reloaded (a backstop for missed notices).
const MAINTENANCE_EVERY: Duration = Duration::from_secs(10);

pub struct Server {
    public: (TcpListener, Router),
    admin: Option<(TcpListener, Router)>,
    lifecycle: Arc<Lifecycle>,
    authority: Arc<Authority>,
    changes: Option<mpsc::Receiver<ChangeEvent>>,
}

/// What every replica remembers, and the hub that keeps it current. The CLI builds the
/// same, so its changes reach running servers (through the store's change feed).
pub struct Caches {
    pub credentials: Arc<CredentialCache>,
    pub status: Arc<StatusCache>,
    pub revocations: Arc<RevocationList>,
    pub changes: Arc<ChangeHub>,
}

impl Caches {
    pub fn new(settings: &Settings, store: DynStore, clock: SharedClock) -> Self {
        let credentials = Arc::new(CredentialCache::new(
            Duration::from_secs(settings.credentials.cache_ttl_secs),
            settings.credentials.cache_capacity,
        ));
        let status = Arc::new(StatusCache::new(
            Duration::from_secs(settings.tokens.status_cache_ttl_secs),
            settings.credentials.cache_capacity,
        ));
        let revocations = Arc::new(RevocationList::default());
        let changes = Arc::new(ChangeHub::new(
            store,
            clock,
            credentials.clone(),
            status.clone(),
            revocations.clone(),
        ));
        Self {
            credentials,
            status,
            revocations,
            changes,
        }
    }
}

impl Server {
    pub async fn build(settings: &Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let store = open_store(settings).await?;
        Self::build_with_store(settings, store, clock).await
    }

    /// Builds around an already-migrated store; tests use it to inject faults.
    pub async fn build_with_store(
        settings: &Settings,
        store: DynStore,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let hasher = Arc::new(secret_hasher(settings)?);
        let caches = Caches::new(settings, store.clone(), clock.clone());
        let lifetimes = Lifetimes {
            oauth: Duration::from_secs(settings.tokens.oauth_lifetime_secs),
            endorsed: Duration::from_secs(settings.tokens.endorsed_lifetime_secs),
            enrollment: Duration::from_secs(settings.tokens.enrollment_lifetime_secs),
            grant_token_max: Duration::from_secs(settings.tokens.grant_token_max_lifetime_secs),
        };
        let keys = Arc::new(open_key_ring(settings, store.clone(), clock.clone()).await?);
        caches.changes.attach_keys(keys.clone());
        caches
            .revocations
            .reload(&store, clock.now())
            .await
            .context("loading revocations")?;
        let usage = Arc::new(UsageTracker::default());

        let issuer = settings.issuer();
        let authority = Arc::new(Authority::new(Parts {
            apps: Applications::new(
                store.clone(),
                hasher.clone(),
                caches.changes.clone(),
                clock.clone(),
            ),
            enrollments: Enrollments::new(
                store.clone(),
                caches.status.clone(),
                caches.changes.clone(),
                clock.clone(),
            ),
            grants: Grants::new(
                store.clone(),
                caches.status.clone(),
                caches.changes.clone(),
                clock.clone(),
                lifetimes.grant_token_max,
                lifetimes.oauth,
            ),
            credentials: ClientAuthenticator::new(
                store.clone(),
                hasher,
                caches.credentials.clone(),
                VerificationLimits {
                    per_client_per_minute: settings.rate_limit.verifications_per_client_per_minute,
                    per_ip_per_minute: settings.rate_limit.verifications_per_ip_per_minute,
                },
                usage.clone(),
                clock.clone(),
            ),
            tokens: TokenMinter::new(
                issuer.clone(),
                settings.tokens.audience.clone(),
                keys.clone(),
                clock.clone(),
            ),
            verifier: TokenVerifier::new(
                issuer.clone(),
                settings.tokens.audience.clone(),
                keys.clone(),
                clock.clone(),
            ),
            changes: caches.changes.clone(),
            revocations: caches.revocations,
            usage,
            keys,
            clock,
            status: caches.status,
            lifetimes,
            store: store.clone(),
        }));
        let changes = store
            .subscribe()
            .await
            .context("subscribing to changes from other replicas")?;

        let lifecycle = Arc::new(Lifecycle::default());
        let state = AppState {
            authority: authority.clone(),
            trusted_proxies: Arc::new(TrustedProxies(
                settings.server.trusted_proxies.clone().into(),
            )),
            lifecycle: lifecycle.clone(),
            metadata: Arc::new(http::wellknown_metadata(&issuer)),
            secret_grace: Duration::from_secs(settings.credentials.secret_grace_secs),
        };
        let timeout = settings.request_timeout();

        let public_listener = TcpListener::bind(settings.server.public_addr)
            .await
            .with_context(|| {
                format!("binding server.public_addr {}", settings.server.public_addr)
            })?;
        let public = (public_listener, http::public_router(state.clone(), timeout));

        let admin = match &settings.admin.token {
            Some(token) => {
                let listener = TcpListener::bind(settings.admin.addr)
                    .await
                    .with_context(|| format!("binding admin.addr {}", settings.admin.addr))?;
                Some((listener, http::admin_router(state, token.clone(), timeout)))
            }
            None => {
                tracing::warn!("admin.token is not set: the admin listener is off");
                None
            }
        };

        Ok(Self {
            public,
            admin,
            lifecycle,
            authority,
            changes,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .0
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The core behind the listeners (tests use it to run housekeeping on demand).
    pub fn authority(&self) -> Arc<Authority> {
        self.authority.clone()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .map(|(l, _)| l.local_addr().expect("a bound listener has an address"))
    }

    /// Serves until `shutdown` resolves, then drains: readiness turns false, the listeners
    /// stop accepting, and in-flight requests finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.public_addr(), "public listener up");
        let Self {
            public,
            admin,
            lifecycle,
            authority,
            changes,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            lifecycle.start_draining();
            tracing::info!("shutting down: draining in-flight requests");
            let _ = stop_tx.send(true);
        });

        let maintenance = tokio::spawn({
            let authority = authority.clone();
            async move {
                let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    authority.credentials.forget_idle();
                    authority.maintain().await;
                }
            }
        });
        let feed = changes.map(|mut feed| {
            let authority = authority.clone();
            tokio::spawn(async move {
                while let Some(event) = feed.recv().await {
                    authority.changes.handle(event).await;
                }
            })
        });

        let mut servers = vec![tokio::spawn(serve(public, stop_rx.clone()))];
        if let Some(admin) = admin {
            tracing::info!(addr = %admin.0.local_addr()?, "admin listener up");
            servers.push(tokio::spawn(serve(admin, stop_rx)));
        }
        for server in servers {
            server.await??;
        }
        maintenance.abort();
        if let Some(feed) = feed {
            feed.abort();
        }
        // Usage gathered since the last flush is worth one more write.
        if let Err(e) = authority.flush_usage().await {
            tracing::warn!(error = %e, "could not record usage at shutdown");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

async fn serve(
    (listener, router): (TcpListener, Router),
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.wait_for(|stop| *stop).await;
    })
    .await?;
    Ok(())
}

/// Connects to the configured store and applies its migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<DynStore> {
    let store = store::connect(&ConnectOptions {
        url: settings.database.url.clone(),
        max_connections: settings.database.max_connections,
        acquire_timeout: Duration::from_millis(settings.database.acquire_timeout_ms),
    })
    .await
    .context("opening database.url")?;
    store.migrate().await.context("running migrations")?;
    Ok(store)
}

/// The signing keys, created on first use.
pub async fn open_key_ring(
    settings: &Settings,
    store: DynStore,
    clock: SharedClock,
) -> anyhow::Result<KeyRing> {
    let longest = [
        settings.tokens.oauth_lifetime_secs,
        settings.tokens.endorsed_lifetime_secs,
        settings.tokens.enrollment_lifetime_secs,
        settings.tokens.grant_token_max_lifetime_secs,
    ]
    .into_iter()
    .max()
    .unwrap_or_default();
    let options = KeyRingOptions {
        algorithm: settings.tokens.algorithm,
        hs256_secret: settings
            .keys
            .hs256_secret
            .as_ref()
            .map(|s| s.expose_secret().as_bytes().to_vec()),
        retired_key_visibility: TimeDelta::seconds(i64::try_from(longest)?),
    };
    KeyRing::open(store, master_key(settings)?, clock, options)
        .await
        .context("loading signing keys")
}

pub fn secret_hasher(settings: &Settings) -> anyhow::Result<SecretHasher> {
    let c = &settings.credentials;
    let concurrency = match c.hash_concurrency {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    Ok(SecretHasher::new(HashParams {
        memory_kib: c.argon2_memory_kib,
        iterations: c.argon2_iterations,
        parallelism: c.argon2_parallelism,
        concurrency,
    })?)
}

pub fn master_key(settings: &Settings) -> anyhow::Result<MasterKey> {
    if let Some(key) = &settings.keys.master_key {
        return MasterKey::from_base64(key.expose_secret())
            .map_err(|e| anyhow::anyhow!("keys.master_key: {e}"));
    }
    let path = &settings.keys.master_key_file;
    if !path.exists() && !settings.uses_sqlite() {
        // A generated file would differ per replica; a shared database needs a shared key.
        bail!(
            "keys.master_key: required with PostgreSQL (set PORTCULLIS__KEYS__MASTER_KEY or \
             provide keys.master_key_file)"
        );
    }
    MasterKey::load_or_create(path).map_err(|e| anyhow::anyhow!("keys.master_key_file: {e}"))
}
