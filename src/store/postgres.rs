//! The production store: many replicas over one PostgreSQL.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    Decode, Encode, PgPool, Postgres, Type,
    encode::IsNull,
    error::BoxDynError,
    migrate::Migrator,
    postgres::{
        PgArgumentBuffer, PgConnectOptions, PgListener, PgPoolOptions, PgTypeInfo, PgValueRef,
    },
};
use tokio::{sync::mpsc, time::MissedTickBehavior};
use uuid::Uuid;

use super::{
    ChangeBus, ConnectOptions, StoreError,
    sql::{SqlStore, Timestamp, map_err},
};
use crate::domain::{Change, ChangeEvent};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// The NOTIFY channel every replica listens on.
const CHANNEL: &str = "portcullis_changes";

/// Heartbeats travel on the change channel itself, so hearing one proves that very
/// subscription works; no JSON change notice starts with this.
const HEARTBEAT_PREFIX: &str = "heartbeat:";

/// The feed is declared lost when the heartbeat sent this many intervals ago has not come
/// back: at most three intervals of silence go unnoticed.
const UNANSWERED_HEARTBEATS: u64 = 2;

/// Ceiling of the wait between attempts to listen again.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// Connects lazily: the pool opens connections on demand, so a database that is down at
/// start or goes away later shows up as `Unavailable` errors rather than a crash.
pub fn connect(options: &ConnectOptions) -> Result<SqlStore<Postgres>, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .connect_lazy(&options.url)
        .map_err(map_err)?;
    let bus = Arc::new(NotifyBus {
        pool: pool.clone(),
        heartbeat: options.feed_heartbeat,
        connect_timeout: options.acquire_timeout,
    });
    Ok(SqlStore::new(pool, &MIGRATOR, Some(bus)))
}

struct NotifyBus {
    pool: PgPool,
    heartbeat: Duration,
    connect_timeout: Duration,
}

#[async_trait]
impl ChangeBus for NotifyBus {
    async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        let payload = serde_json::to_string(change).map_err(|e| StoreError::Internal(e.into()))?;
        notify(&self.pool, payload).await.map_err(map_err)
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<ChangeEvent>, StoreError> {
        let feed = Feed {
            options: self.pool.connect_options(),
            heartbeat: self.heartbeat,
            connect_timeout: self.connect_timeout,
            replica: Uuid::new_v4(),
        };
        let session = tokio::time::timeout(feed.open_limit(), feed.open())
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolTimedOut))?
            .map_err(map_err)?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(feed.run(session, tx));
        Ok(rx)
    }
}

async fn notify(pool: &PgPool, payload: String) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(pool)
        .await
        .map(drop)
}

/// This replica's subscription. It proves itself alive by hearing its own heartbeats; when
/// it cannot, it says so, throws the connection away and listens again on a new one.
struct Feed {
    options: Arc<PgConnectOptions>,
    heartbeat: Duration,
    connect_timeout: Duration,
    /// Tells this replica's heartbeats from the other replicas'.
    replica: Uuid,
}

/// A listening connection and one for heartbeats, in a pool of their own: an abandoned
/// half-open connection (whose clean-up can hang until the OS gives up on it) never holds
/// a slot of the main pool, and a main pool that runs dry does not silence the heartbeat.
struct Session {
    pool: PgPool,
    listener: PgListener,
}

/// Why a session ended, and how long nothing had been heard.
struct Lost {
    cause: String,
    silent: Duration,
}

impl Feed {
    /// An attempt to listen that takes longer (a connection that goes nowhere) has failed.
    fn open_limit(&self) -> Duration {
        self.connect_timeout.max(self.heartbeat * 3)
    }

    async fn open(&self) -> Result<Session, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(self.connect_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with((*self.options).clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        // A lost connection ends the session; the next one starts from a new listener
        // (re-listening on the same one would add the channel to its list again).
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await?;
        Ok(Session { pool, listener })
    }

    async fn run(self, mut session: Session, tx: mpsc::Sender<ChangeEvent>) {
        loop {
            let Some(lost) = self.listen(&mut session, &tx).await else {
                return;
            };
            drop(session);
            tracing::warn!(
                cause = %lost.cause,
                silent_ms = lost.silent.as_millis() as u64,
                "change feed silent for {:.1?}; resyncing",
                lost.silent
            );
            let since = Instant::now();
            if tx.send(ChangeEvent::Lost).await.is_err() {
                return;
            }
            let Some(next) = self.reopen(&tx).await else {
                return;
            };
            session = next;
            tracing::info!(
                outage_ms = since.elapsed().as_millis() as u64,
                "change feed listening again; resyncing"
            );
            if tx.send(ChangeEvent::Resumed).await.is_err() {
                return;
            }
        }
    }

    /// Passes notices on until the session fails; `None` once nobody is listening.
    async fn listen(&self, session: &mut Session, tx: &mpsc::Sender<ChangeEvent>) -> Option<Lost> {
        let Session { pool, listener } = session;
        let mine = format!("{HEARTBEAT_PREFIX}{}:", self.replica);
        let mut ticks = tokio::time::interval(self.heartbeat);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let (mut sent, mut heard) = (0u64, 0u64);
        let mut heard_at = Instant::now();
        loop {
            // Polled across ticks rather than restarted, so a receive is never cut midway.
            let next = listener.try_recv();
            tokio::pin!(next);
            let received = loop {
                tokio::select! {
                    received = &mut next => break received,
                    _ = ticks.tick() => {
                        if tx.is_closed() {
                            return None;
                        }
                        if sent >= heard + UNANSWERED_HEARTBEATS {
                            return Some(Lost {
                                cause: "no heartbeat".into(),
                                silent: heard_at.elapsed(),
                            });
                        }
                        sent += 1;
                        let (pool, payload, limit) =
                            (pool.clone(), format!("{mine}{sent}"), self.heartbeat);
                        tokio::spawn(async move {
                            match tokio::time::timeout(limit, notify(&pool, payload)).await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => tracing::debug!(error = %e, "heartbeat not sent"),
                                Err(_) => tracing::debug!("heartbeat not sent in time"),
                            }
                        });
                    }
                }
            };
            let notification = match received {
                Ok(Some(notification)) => notification,
                Ok(None) => {
                    return Some(Lost {
                        cause: "connection closed".into(),
                        silent: heard_at.elapsed(),
                    });
                }
                Err(e) => {
                    return Some(Lost {
                        cause: e.to_string(),
                        silent: heard_at.elapsed(),
                    });
                }
            };
            let payload = notification.payload();
            if let Some(beat) = payload.strip_prefix(&mine) {
                if let Ok(beat) = beat.parse::<u64>()
                    && beat > heard
                {
                    heard = beat;
                    heard_at = Instant::now();
                }
                continue;
            }
            if payload.starts_with(HEARTBEAT_PREFIX) {
                continue; // another replica's
            }
            match serde_json::from_str::<Change>(payload) {
                Ok(change) => {
                    if tx.send(ChangeEvent::Changed(change)).await.is_err() {
                        return None;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "ignoring an unreadable change notice"),
            }
        }
    }

    /// Listens again on a new connection, retrying with backoff until the database answers;
    /// `None` once nobody is listening.
    async fn reopen(&self, tx: &mpsc::Sender<ChangeEvent>) -> Option<Session> {
        let mut wait = Duration::from_millis(100);
        loop {
            match tokio::time::timeout(self.open_limit(), self.open()).await {
                Ok(Ok(session)) => return Some(session),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "change feed: listening failed; retrying")
                }
                Err(_) => tracing::debug!("change feed: listening timed out; retrying"),
            }
            tokio::time::sleep(wait).await;
            if tx.is_closed() {
                return None;
            }
            wait = (wait * 2).min(MAX_RECONNECT_WAIT);
        }
    }
}

impl Type<Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Timestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Timestamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <DateTime<Utc> as Decode<Postgres>>::decode(value).map(Timestamp)
    }
}
