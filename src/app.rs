//! Wiring: builds the store, the core and both listeners from [`Settings`]. `main` and
//! every integration test go through [`Server::build`].

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

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
        Authority, AuthorityError, Lifetimes, Options,
        clock::SharedClock,
        credentials::VerificationLimits,
        keys::{KeyRingOptions, MasterKey},
        secrets::{HashParams, SecretHasher},
    },
    config::Settings,
    domain::ChangeEvent,
    http::{
        self, AppState, Lifecycle, Surface,
        connections::{self, ConnectionLimits},
        extract::TrustedProxies,
    },
    store::{self, ConnectOptions, DynStore, StoreError},
};

/// How often housekeeping runs: idle rate-limit entries dropped, expired revocations
/// purged, usage written, keys and revocations reloaded (a backstop for missed notices).
const MAINTENANCE_EVERY: Duration = Duration::from_secs(10);

/// How often keys and revocations are reloaded while the change feed cannot be trusted.
const RELOAD_WHILE_DEGRADED: Duration = Duration::from_secs(1);

/// File descriptors kept for everything but client connections: standard streams, the
/// runtime, listeners, key and log files.
const FDS_RESERVED: u64 = 64;

/// Per database connection: a socket with PostgreSQL; with SQLite the database, its WAL and
/// its shared-memory file.
const FDS_PER_DB_CONNECTION: u64 = 3;

/// Connections beyond `server.max_connections` accepted on the public listener to answer
/// the health routes (see `http::connections`).
const HEALTH_RESERVE: usize = 32;

/// The admin listener serves operators and a metrics scraper, never the public.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Below this many public connections the open-file limit is a misconfiguration.
const MIN_CONNECTIONS: u64 = 16;

pub struct Server {
    blueprint: Blueprint,
    public: TcpListener,
    admin: Option<TcpListener>,
    public_limits: ConnectionLimits,
    admin_limits: ConnectionLimits,
    /// The soft open-file limit after raising it, when known.
    fd_limit: Option<u64>,
    /// `None` while the store has not been reached: the server still starts (liveness
    /// answers, readiness says "starting") and keeps trying in the background, so a
    /// database that comes up after us causes no crash loop.
    core: Option<Core>,
}

/// What the core is built from; kept so it can be built later if the store is down at start.
struct Blueprint {
    settings: Settings,
    clock: SharedClock,
    hasher: Arc<SecretHasher>,
    lifecycle: Arc<Lifecycle>,
}

/// The core and the routers in front of it: everything that needs the store.
struct Core {
    authority: Arc<Authority>,
    public: Router,
    admin: Option<Router>,
    changes: Option<mpsc::Receiver<ChangeEvent>>,
}

impl Server {
    /// Binds the listeners and builds the core. A store that cannot be reached yet is not
    /// an error (the core is built once it answers); a bad configuration is.
    pub async fn build(settings: &Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let mut server = Self::bind(settings, clock).await?;
        match server.blueprint.try_assemble().await {
            Ok(core) => server.core = Some(core),
            Err(e) if is_unavailable(&e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "store unreachable; serving 503 until it answers"
                );
            }
            Err(e) => return Err(e),
        }
        Ok(server)
    }

    /// Builds around an already-migrated store; tests use it to inject faults.
    pub async fn build_with_store(
        settings: &Settings,
        store: DynStore,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let mut server = Self::bind(settings, clock).await?;
        server.core = Some(server.blueprint.assemble(store).await?);
        Ok(server)
    }

    async fn bind(settings: &Settings, clock: SharedClock) -> anyhow::Result<Self> {
        // Checked before any listener is up, so a bad key or argon2 setting stops the start.
        master_key(settings)?;
        // Installed before the first request so nothing goes uncounted.
        crate::telemetry::metrics::handle();
        let hasher = Arc::new(secret_hasher(settings)?);
        let fd_limit = raise_fd_limit();
        let (public_limits, admin_limits) = connection_limits(settings, fd_limit)?;
        let public = TcpListener::bind(settings.server.public_addr)
            .await
            .with_context(|| {
                format!("binding server.public_addr {}", settings.server.public_addr)
            })?;
        let admin = match &settings.admin.token {
            Some(_) => Some(
                TcpListener::bind(settings.admin.addr)
                    .await
                    .with_context(|| format!("binding admin.addr {}", settings.admin.addr))?,
            ),
            None => {
                tracing::warn!("admin.token is not set: the admin listener is off");
                None
            }
        };
        Ok(Self {
            blueprint: Blueprint {
                settings: settings.clone(),
                clock,
                hasher,
                lifecycle: Arc::new(Lifecycle::default()),
            },
            public,
            admin,
            public_limits,
            admin_limits,
            fd_limit,
            core: None,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The core behind the listeners, once built (tests use it to run housekeeping).
    pub fn authority(&self) -> Option<Arc<Authority>> {
        self.core.as_ref().map(|core| core.authority.clone())
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    /// Shared with whoever decides when to stop (readiness turns false when draining).
    pub fn lifecycle(&self) -> Arc<Lifecycle> {
        self.blueprint.lifecycle.clone()
    }

    /// Serves until `shutdown` resolves, then drains: readiness turns false, the listeners
    /// stop accepting, and in-flight requests finish.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let limits = self.public_limits;
        tracing::info!(
            addr = %self.public_addr(),
            max_connections = limits.max_connections,
            header_timeout_ms = limits.header_timeout.as_millis() as u64,
            idle_timeout_ms = limits.idle_timeout.as_millis() as u64,
            open_file_limit = self.fd_limit,
            "public listener up"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        tokio::spawn({
            let lifecycle = self.blueprint.lifecycle.clone();
            let stop_tx = stop_tx.clone();
            async move {
                shutdown.await;
                lifecycle.start_draining();
                tracing::info!("shutting down: draining in-flight requests");
                let _ = stop_tx.send(true);
            }
        });

        // Until the core exists, each listener serves a gate that answers 503 (health
        // excepted) and hands requests to the core's router once it is in the slot.
        let public_slot = Arc::new(OnceLock::new());
        let admin_slot = Arc::new(OnceLock::new());
        let (public_router, admin_router) = match &self.core {
            Some(core) => (core.public.clone(), core.admin.clone()),
            None => (
                http::starting::gate(public_slot.clone(), Surface::Public),
                Some(http::starting::gate(admin_slot.clone(), Surface::Admin)),
            ),
        };
        let public = self.public;
        let mut servers = vec![tokio::spawn(serve(
            public,
            public_router,
            self.public_limits,
            "public",
            stop_rx.clone(),
        ))];
        if let (Some(listener), Some(router)) = (self.admin.take(), admin_router) {
            tracing::info!(addr = %listener.local_addr()?, "admin listener up");
            servers.push(tokio::spawn(serve(
                listener,
                router,
                self.admin_limits,
                "admin",
                stop_rx.clone(),
            )));
        }

        let core = match self.core.take() {
            Some(core) => Some(core),
            None => {
                let mut stop = stop_rx.clone();
                tokio::select! {
                    core = self.blueprint.assemble_when_reachable() => {
                        let core = match core {
                            Ok(core) => core,
                            Err(e) => {
                                let _ = stop_tx.send(true);
                                return Err(e);
                            }
                        };
                        let _ = public_slot.set(core.public.clone());
                        if let Some(admin) = &core.admin {
                            let _ = admin_slot.set(admin.clone());
                        }
                        Some(core)
                    }
                    _ = stop.wait_for(|stop| *stop) => None,
                }
            }
        };

        let background = core.map(|core| {
            let authority = core.authority;
            let maintenance = tokio::spawn({
                let authority = authority.clone();
                let feed = authority.feed_health();
                async move {
                    let mut tick = tokio::time::interval(RELOAD_WHILE_DEGRADED);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut maintained = tokio::time::Instant::now();
                    loop {
                        tick.tick().await;
                        if maintained.elapsed() >= MAINTENANCE_EVERY {
                            maintained = tokio::time::Instant::now();
                            authority.maintain().await;
                        } else if feed.is_degraded() {
                            authority.catch_up().await;
                        }
                    }
                }
            });
            let feed = core.changes.map(|mut feed| {
                let authority = authority.clone();
                tokio::spawn(async move {
                    while let Some(event) = feed.recv().await {
                        authority.handle_change(event).await;
                    }
                })
            });
            let audit = tokio::spawn({
                let authority = authority.clone();
                let mut stop = stop_rx.clone();
                async move {
                    let stopped = async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    };
                    authority.run_audit_flusher(stopped).await;
                }
            });
            (authority, maintenance, feed, audit)
        });

        for server in servers {
            server.await?;
        }
        if let Some((authority, maintenance, feed, audit)) = background {
            maintenance.abort();
            // It stops between writes once the listeners stop; its last batch is written.
            let _ = audit.await;
            if let Some(feed) = feed {
                feed.abort();
            }
            // Everything recorded up to the last request is written before we exit.
            if let Err(e) = authority.flush_audit().await {
                tracing::warn!(error = %e, "could not write the audit trail at shutdown");
            }
            // Usage gathered since the last flush is worth one more write.
            if let Err(e) = authority.flush_usage().await {
                tracing::warn!(error = %e, "could not record usage at shutdown");
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}

impl Blueprint {
    async fn try_assemble(&self) -> anyhow::Result<Core> {
        let store = open_store(&self.settings).await?;
        self.assemble(store).await
    }

    async fn assemble(&self, store: DynStore) -> anyhow::Result<Core> {
        let settings = &self.settings;
        let authority = Arc::new(
            build_authority(settings, store, self.clock.clone(), self.hasher.clone()).await?,
        );
        let changes = authority
            .subscribe_changes()
            .await
            .context("subscribing to changes from other replicas")?;
        let issuer = settings.issuer();

        let state = AppState::new(http::Shared {
            authority: authority.clone(),
            trusted_proxies: Arc::new(TrustedProxies(
                settings.server.trusted_proxies.clone().into(),
            )),
            lifecycle: self.lifecycle.clone(),
            metadata: Arc::new(http::wellknown_metadata(&issuer)),
            secret_grace: Duration::from_secs(settings.credentials.secret_grace_secs),
        });
        let timeout = settings.request_timeout();
        let admin = settings
            .admin
            .token
            .clone()
            .map(|token| http::admin_router(state.clone(), token, timeout));
        Ok(Core {
            authority,
            public: http::public_router(state, timeout),
            admin,
            changes,
        })
    }

    /// Retries until the store answers. Only unreachability is retried; anything else
    /// (a migration that fails, a master key that opens nothing) ends the process.
    async fn assemble_when_reachable(&self) -> anyhow::Result<Core> {
        let mut wait = Duration::from_millis(200);
        loop {
            match self.try_assemble().await {
                Ok(core) => {
                    tracing::info!("store reachable: serving");
                    return Ok(core);
                }
                Err(e) if is_unavailable(&e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        retry_in_ms = wait.as_millis() as u64,
                        "store unreachable"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_STARTUP_RETRY_WAIT);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Backoff ceiling while waiting for the store at startup.
const MAX_STARTUP_RETRY_WAIT: Duration = Duration::from_secs(5);

/// True when the error only says the store could not be reached (worth retrying).
fn is_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(cause.downcast_ref(), Some(StoreError::Unavailable(_)))
            || matches!(cause.downcast_ref(), Some(AuthorityError::Unavailable))
    })
}

async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    name: &'static str,
    mut stop: watch::Receiver<bool>,
) {
    connections::serve(listener, router, limits, name, async move {
        let _ = stop.wait_for(|stop| *stop).await;
    })
    .await;
}

/// Raises the soft open-file limit to the hard one (the soft default, often 1024, is far
/// below what a busy listener needs) and returns the limit in force.
fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            let current = rlimit::getrlimit(rlimit::Resource::NOFILE).ok();
            tracing::warn!(error = %e, ?current, "could not raise the open-file limit");
            current.map(|(soft, _)| soft)
        }
    }
}

/// Each listener's bounds. The public cap is lowered to what the open-file limit leaves once
/// the database, the admin listener and the health reserve have theirs, so the process never
/// runs out of descriptors because of client connections.
fn connection_limits(
    settings: &Settings,
    fd_limit: Option<u64>,
) -> anyhow::Result<(ConnectionLimits, ConnectionLimits)> {
    let mut max_connections = settings.server.max_connections;
    if let Some(limit) = fd_limit {
        // The PostgreSQL change feed holds two connections outside the pool.
        let database = FDS_PER_DB_CONNECTION * (u64::from(settings.database.max_connections) + 2);
        let admin = match settings.admin.token {
            Some(_) => ADMIN_MAX_CONNECTIONS as u64,
            None => 0,
        };
        let room = limit.saturating_sub(FDS_RESERVED + database + admin + HEALTH_RESERVE as u64);
        if room < MIN_CONNECTIONS {
            bail!(
                "the open-file limit ({limit}) leaves room for {room} connections; raise it \
                 (ulimit -n, systemd LimitNOFILE=, docker --ulimit nofile=)"
            );
        }
        if max_connections as u64 > room {
            tracing::warn!(
                configured = max_connections,
                lowered_to = room,
                open_file_limit = limit,
                "server.max_connections lowered to fit the open-file limit"
            );
            max_connections = usize::try_from(room).unwrap_or(usize::MAX);
        }
    }
    let public = ConnectionLimits {
        header_timeout: settings.header_timeout(),
        idle_timeout: settings.idle_timeout(),
        max_connections,
        reserve: HEALTH_RESERVE,
    };
    let admin = ConnectionLimits {
        max_connections: ADMIN_MAX_CONNECTIONS,
        reserve: 0,
        ..public
    };
    Ok((public, admin))
}

/// Connects to the configured store and applies its migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<DynStore> {
    let store = store::connect(&ConnectOptions {
        url: settings.database.url.clone(),
        max_connections: settings.database.max_connections,
        acquire_timeout: Duration::from_millis(settings.database.acquire_timeout_ms),
        feed_heartbeat: Duration::from_millis(settings.database.feed_heartbeat_ms),
    })
    .await
    .context("opening database.url")?;
    store.migrate().await.context("running migrations")?;
    Ok(store)
}

/// The core, built from the settings over an already-migrated store: the same for the
/// server and for every CLI command.
pub async fn build_authority(
    settings: &Settings,
    store: DynStore,
    clock: SharedClock,
    hasher: Arc<SecretHasher>,
) -> anyhow::Result<Authority> {
    let tokens = &settings.tokens;
    let longest = [
        tokens.oauth_lifetime_secs,
        tokens.endorsed_lifetime_secs,
        tokens.enrollment_lifetime_secs,
        tokens.grant_token_max_lifetime_secs,
    ]
    .into_iter()
    .max()
    .unwrap_or_default();
    let limits = &settings.rate_limit;
    let options = Options {
        issuer: settings.issuer(),
        audience: tokens.audience.clone(),
        lifetimes: Lifetimes {
            oauth: Duration::from_secs(tokens.oauth_lifetime_secs),
            endorsed: Duration::from_secs(tokens.endorsed_lifetime_secs),
            enrollment: Duration::from_secs(tokens.enrollment_lifetime_secs),
            grant_token_max: Duration::from_secs(tokens.grant_token_max_lifetime_secs),
        },
        master_key: master_key(settings)?,
        keys: KeyRingOptions {
            algorithm: tokens.algorithm,
            hs256_secret: settings
                .keys
                .hs256_secret
                .as_ref()
                .map(|s| s.expose_secret().as_bytes().to_vec()),
            retired_key_visibility: TimeDelta::seconds(i64::try_from(longest)?),
            next_key_lead: TimeDelta::seconds(i64::try_from(settings.keys.next_key_lead_secs)?),
        },
        hasher,
        limits: VerificationLimits {
            per_client_per_minute: limits.verifications_per_client_per_minute,
            per_ip_per_minute: limits.verifications_per_ip_per_minute,
            requests_per_client_per_second: limits.requests_per_client_per_second,
            requests_per_ip_per_second: limits.requests_per_ip_per_second,
        },
        credential_cache_ttl: Duration::from_secs(settings.credentials.cache_ttl_secs),
        record_cache_ttl: Duration::from_secs(tokens.status_cache_ttl_secs),
        cache_capacity: settings.credentials.cache_capacity,
        feed_lost_cache_ttl: Duration::from_millis(settings.database.feed_lost_cache_ttl_ms),
        max_active_grants_per_profile: settings.grants.max_active_per_profile,
        audit_retention: settings.audit.retention(),
        audit_issued_tokens: settings.audit.issued_tokens,
    };
    Authority::build(store, clock, options)
        .await
        .context("building the core (signing keys, revocations)")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)]) -> Settings {
        Settings::load_from(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap()
    }

    #[test]
    fn the_connection_cap_fits_the_open_file_limit() {
        let defaults = settings(&[]);
        let (public, _) = connection_limits(&defaults, None).unwrap();
        assert_eq!(
            public.max_connections, 10_000,
            "no known limit: as configured"
        );
        let (public, _) = connection_limits(&defaults, Some(1 << 20)).unwrap();
        assert_eq!(public.max_connections, 10_000, "room enough: as configured");

        // 64 for the process, 3 × (16 pooled + 2 feed) database connections, 32 for health.
        let (public, admin) = connection_limits(&defaults, Some(1024)).unwrap();
        assert_eq!(public.max_connections, 1024 - 64 - 54 - 32);
        assert_eq!(public.reserve, HEALTH_RESERVE);
        assert_eq!(admin.reserve, 0, "the admin listener has no health routes");

        let with_admin = settings(&[(
            "PORTCULLIS__ADMIN__TOKEN",
            "an-admin-token-of-at-least-32-characters",
        )]);
        let (public, _) = connection_limits(&with_admin, Some(1024)).unwrap();
        assert_eq!(public.max_connections, 1024 - 64 - 54 - 32 - 64);

        let err = connection_limits(&defaults, Some(160))
            .unwrap_err()
            .to_string();
        assert!(err.contains("open-file limit (160)"), "{err}");
    }
}
