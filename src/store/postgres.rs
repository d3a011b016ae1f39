//! The production store: many replicas over one PostgreSQL.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    Decode, Encode, PgPool, Postgres, Type,
    encode::IsNull,
    error::BoxDynError,
    migrate::Migrator,
    postgres::{PgArgumentBuffer, PgListener, PgPoolOptions, PgTypeInfo, PgValueRef},
};
use tokio::sync::mpsc;

use super::{
    ChangeBus, ConnectOptions, StoreError,
    sql::{SqlStore, Timestamp, map_err},
};
use crate::domain::{Change, ChangeEvent};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// The NOTIFY channel every replica listens on.
const CHANNEL: &str = "portcullis_changes";

/// Connects lazily: the pool opens connections on demand, so a database that is down at
/// start or goes away later shows up as `Unavailable` errors rather than a crash.
pub fn connect(options: &ConnectOptions) -> Result<SqlStore<Postgres>, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .connect_lazy(&options.url)
        .map_err(map_err)?;
    let bus = Arc::new(NotifyBus { pool: pool.clone() });
    Ok(SqlStore::new(pool, &MIGRATOR, Some(bus)))
}

struct NotifyBus {
    pool: PgPool,
}

#[async_trait]
impl ChangeBus for NotifyBus {
    async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        let payload = serde_json::to_string(change).map_err(|e| StoreError::Internal(e.into()))?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(map_err)
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<ChangeEvent>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(map_err)?;
        listener.listen(CHANNEL).await.map_err(map_err)?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let event = match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        match serde_json::from_str::<Change>(notification.payload()) {
                            Ok(change) => ChangeEvent::Changed(change),
                            Err(e) => {
                                tracing::warn!(error = %e, "ignoring an unreadable change notice");
                                continue;
                            }
                        }
                    }
                    // The connection dropped and notices sent meanwhile are lost. Listen
                    // again first, then tell the subscriber to reload: reloading before
                    // listening would leave a gap.
                    Ok(None) | Err(_) => {
                        relisten(&mut listener).await;
                        ChangeEvent::Missed
                    }
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

/// Reconnects and re-subscribes, retrying until the database answers.
async fn relisten(listener: &mut PgListener) {
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        match listener.listen(CHANNEL).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "change feed interrupted; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
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
