//! The embedded default: one file, created on first use, so `cargo run` needs nothing else.

use std::{str::FromStr, time::Duration};

use chrono::DateTime;
use sqlx::{
    Decode, Encode, Sqlite, Type,
    encode::IsNull,
    error::BoxDynError,
    migrate::Migrator,
    sqlite::{
        SqliteArgumentsBuffer, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
        SqliteSynchronous, SqliteTypeInfo, SqliteValueRef,
    },
};

use super::{
    ConnectOptions, StoreError,
    sql::{SqlStore, Timestamp, map_err},
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

pub async fn connect(options: &ConnectOptions) -> Result<SqlStore<Sqlite>, StoreError> {
    let connect = SqliteConnectOptions::from_str(&options.url)
        .map_err(|e| StoreError::Internal(Box::new(e)))?
        .create_if_missing(true)
        // WAL lets readers proceed while one writer commits.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    if let Some(dir) = connect
        .get_filename()
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| StoreError::Internal(Box::new(e)))?;
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(map_err)?;
    // One process owns an embedded database, so there is nobody to tell about changes.
    Ok(SqlStore::new(pool, &MIGRATOR, None))
}

impl Type<Sqlite> for Timestamp {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Timestamp {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.0.timestamp_micros(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Timestamp {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let micros = <i64 as Decode<Sqlite>>::decode(value)?;
        DateTime::from_timestamp_micros(micros)
            .map(Timestamp)
            .ok_or_else(|| "timestamp out of range".into())
    }
}
