//! Wiring: builds the store, the core and both listeners from [`Settings`]. `main` and
//! every integration test go through [`Server::build`].

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use axum::Router;
use chrono::TimeDelta;
use secrecy::ExposeSecret;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    authority::{
        Authority, Lifetimes, Parts,
        apps::Applications,
        clock::SharedClock,
        credentials::{ClientAuthenticator, CredentialCache, VerificationLimits},
        enrollments::Enrollments,
        grants::Grants,
        keys::{KeyRing, KeyRingOptions, MasterKey},
        secrets::{HashParams, SecretHasher},
        status::StatusCache,
        tokens::TokenMinter,
        verify::TokenVerifier,
    },
    config::Settings,
    http::{self, AppState, Lifecycle, extract::TrustedProxies},
    store::{self, ConnectOptions, DynStore},
};

/// How often idle rate-limit entries are dropped.
const LIMITER_SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct Server {
    public: (TcpListener, Router),
    admin: Option<(TcpListener, Router)>,
    lifecycle: Arc<Lifecycle>,
    authority: Arc<Authority>,
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
        let master = master_key(settings)?;
        let hasher = Arc::new(secret_hasher(settings)?);
        let cache = Arc::new(CredentialCache::new(
            Duration::from_secs(settings.credentials.cache_ttl_secs),
            settings.credentials.cache_capacity,
        ));
        let status = Arc::new(StatusCache::new(
            Duration::from_secs(settings.tokens.status_cache_ttl_secs),
            settings.credentials.cache_capacity,
        ));
        let lifetimes = Lifetimes {
            oauth: Duration::from_secs(settings.tokens.oauth_lifetime_secs),
            endorsed: Duration::from_secs(settings.tokens.endorsed_lifetime_secs),
            enrollment: Duration::from_secs(settings.tokens.enrollment_lifetime_secs),
            grant_token_max: Duration::from_secs(settings.tokens.grant_token_max_lifetime_secs),
        };
        let longest_lifetime = lifetimes.longest();
        let keys = KeyRing::load(
            &store,
            &master,
            &clock,
            KeyRingOptions {
                algorithm: settings.tokens.algorithm,
                hs256_secret: settings
                    .keys
                    .hs256_secret
                    .as_ref()
                    .map(|s| s.expose_secret().as_bytes()),
                retired_key_visibility: TimeDelta::from_std(longest_lifetime)?,
            },
        )
        .await
        .context("loading signing keys")?;

        let issuer = settings.issuer();
        let keys = Arc::new(keys);
        let authority = Arc::new(Authority::new(Parts {
            apps: Applications::new(
                store.clone(),
                hasher.clone(),
                cache.clone(),
                status.clone(),
                clock.clone(),
            ),
            enrollments: Enrollments::new(store.clone(), status.clone(), clock.clone()),
            grants: Grants::new(
                store.clone(),
                status.clone(),
                clock.clone(),
                lifetimes.grant_token_max,
                lifetimes.oauth,
            ),
            clock: clock.clone(),
            credentials: ClientAuthenticator::new(
                store.clone(),
                hasher,
                cache,
                VerificationLimits {
                    per_client_per_minute: settings.rate_limit.verifications_per_client_per_minute,
                    per_ip_per_minute: settings.rate_limit.verifications_per_ip_per_minute,
                },
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
                keys,
                clock,
            ),
            status,
            lifetimes,
            store,
        }));

        let lifecycle = Arc::new(Lifecycle::default());
        let state = AppState {
            authority: authority.clone(),
            trusted_proxies: Arc::new(TrustedProxies(
                settings.server.trusted_proxies.clone().into(),
            )),
            lifecycle: lifecycle.clone(),
            metadata: Arc::new(http::wellknown_metadata(&issuer)),
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
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .0
            .local_addr()
            .expect("a bound listener has an address")
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
        let (stop_tx, stop_rx) = watch::channel(false);
        let lifecycle = self.lifecycle.clone();
        tokio::spawn(async move {
            shutdown.await;
            lifecycle.start_draining();
            tracing::info!("shutting down: draining in-flight requests");
            let _ = stop_tx.send(true);
        });

        let authority = self.authority.clone();
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(LIMITER_SWEEP_EVERY);
            loop {
                tick.tick().await;
                authority.credentials.forget_idle();
            }
        });

        tracing::info!(addr = %self.public_addr(), "public listener up");
        let mut servers = vec![tokio::spawn(serve(self.public, stop_rx.clone()))];
        if let Some(admin) = self.admin {
            tracing::info!(addr = %admin.0.local_addr()?, "admin listener up");
            servers.push(tokio::spawn(serve(admin, stop_rx)));
        }
        for server in servers {
            server.await??;
        }
        sweeper.abort();
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

fn master_key(settings: &Settings) -> anyhow::Result<MasterKey> {
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
