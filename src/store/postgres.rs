//! The production store: many replicas over one PostgreSQL.

use chrono::{DateTime, Utc};
use sqlx::{
    Decode, Encode, Postgres, Type,
    encode::IsNull,
    error::BoxDynError,
    migrate::Migrator,
    postgres::{PgArgumentBuffer, PgPoolOptions, PgTypeInfo, PgValueRef},
};

use super::{
    ConnectOptions, StoreError,
    sql::{SqlStore, Timestamp, map_err},
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Connects lazily: the pool opens connections on demand, so a database that is down at
/// start or goes away later shows up as `Unavailable` errors rather than a crash.
pub fn connect(options: &ConnectOptions) -> Result<SqlStore<Postgres>, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .connect_lazy(&options.url)
        .map_err(map_err)?;
    Ok(SqlStore::new(pool, &MIGRATOR))
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
