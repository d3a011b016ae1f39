//! Every query, written once. `$N` placeholders and `ON CONFLICT`/`RETURNING` mean the same
//! on PostgreSQL and SQLite, so one generic implementation serves both backends; the
//! trait bounds below are the list of column types the schema uses.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Type,
    migrate::Migrate, migrate::Migrator,
};
use uuid::Uuid;

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{
    AuditFilter, ChangeBus, EnrollmentFilter, GrantFilter, Guarded, KeyRotation, Match, PoolStats,
    QuotaLease, SecretAdded, SecretTokens, Store, StoreError, Usage, UsageOf,
};
use crate::domain::{
    AppId, AppSecret, AppSettings, Application, AuditRecord, AuthGrant, Change, ChangeEvent,
    CidrList, ClientId, CredentialRef, DailyCount, Enrollment, EnrollmentId, GrantId, GrantStatus,
    KeyState, NewApplication, NewSecret, Origin, OwnerId, Profile, QuotaWindow, ScopeSet, SecretId,
    SigningKeyRecord, Subject, SubjectKind, TokenQuota,
};

/// A point in time as the store keeps it. Each backend encodes it in its own way
/// (TIMESTAMPTZ on PostgreSQL, integer microseconds on SQLite, which sort as numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
    migrator: &'static Migrator,
    bus: Option<Arc<dyn ChangeBus>>,
}

impl<DB: Database> SqlStore<DB> {
    pub(super) fn new(
        pool: Pool<DB>,
        migrator: &'static Migrator,
        bus: Option<Arc<dyn ChangeBus>>,
    ) -> Self {
        Self {
            pool,
            migrator,
            bus,
        }
    }
}

const APP_COLUMNS: &str = "id, client_id, name, allowed_scopes, default_scopes, sandbox, \
     allowed_cidrs, token_bound_cidrs, tokens_per_hour, tokens_per_day, disabled, created_at, \
     updated_at, last_used_at";

#[derive(FromRow)]
struct AppRow {
    id: Uuid,
    client_id: String,
    name: String,
    allowed_scopes: String,
    default_scopes: String,
    sandbox: bool,
    allowed_cidrs: String,
    token_bound_cidrs: String,
    tokens_per_hour: i64,
    tokens_per_day: i64,
    disabled: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
    last_used_at: Option<Timestamp>,
}

impl TryFrom<AppRow> for Application {
    type Error = StoreError;

    fn try_from(row: AppRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: AppId(row.id),
            client_id: ClientId::parse(&row.client_id).map_err(corrupt)?,
            name: row.name,
            allowed_scopes: ScopeSet::parse(&row.allowed_scopes).map_err(corrupt)?,
            default_scopes: ScopeSet::parse(&row.default_scopes).map_err(corrupt)?,
            sandbox: row.sandbox,
            allowed_cidrs: CidrList::parse_stored(&row.allowed_cidrs).map_err(corrupt)?,
            token_bound_cidrs: CidrList::parse_stored(&row.token_bound_cidrs).map_err(corrupt)?,
            quota: TokenQuota {
                per_hour: stored_limit(row.tokens_per_hour)?,
                per_day: stored_limit(row.tokens_per_day)?,
            },
            disabled: row.disabled,
            created_at: row.created_at.0,
            updated_at: row.updated_at.0,
            last_used_at: row.last_used_at.map(|t| t.0),
        })
    }
}

const SECRET_COLUMNS: &str = "id, app_id, secret_hash, prefix, description, created_at, \
     expires_at, last_used_at, use_count, max_uses, allowed_cidrs";

#[derive(FromRow)]
struct SecretRow {
    id: Uuid,
    app_id: Uuid,
    secret_hash: String,
    prefix: Option<String>,
    description: String,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
    last_used_at: Option<Timestamp>,
    use_count: i64,
    max_uses: Option<i64>,
    allowed_cidrs: String,
}

impl TryFrom<SecretRow> for AppSecret {
    type Error = StoreError;

    fn try_from(row: SecretRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: SecretId(row.id),
            app_id: AppId(row.app_id),
            hash: row.secret_hash,
            prefix: row.prefix,
            description: row.description,
            created_at: row.created_at.0,
            expires_at: row.expires_at.map(|t| t.0),
            last_used_at: row.last_used_at.map(|t| t.0),
            use_count: u64::try_from(row.use_count).map_err(corrupt)?,
            max_uses: row
                .max_uses
                .map(u64::try_from)
                .transpose()
                .map_err(corrupt)?,
            allowed_cidrs: CidrList::parse_stored(&row.allowed_cidrs).map_err(corrupt)?,
        })
    }
}

/// A quota limit as the store keeps it: 0 is none.
fn stored_limit(n: i64) -> Result<Option<u64>, StoreError> {
    match n {
        0 => Ok(None),
        n => u64::try_from(n).map(Some).map_err(corrupt),
    }
}

fn limit_column(limit: Option<u64>) -> i64 {
    limit.map_or(0, stored_count)
}

/// A count as the store keeps it (BIGINT / INTEGER).
fn stored_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

const ENROLLMENT_COLUMNS: &str = "id, app_id, owner_id, data, scopes, sandbox, disabled, \
     created_at, updated_at, last_used_at";

#[derive(FromRow)]
struct EnrollmentRow {
    id: Uuid,
    app_id: Uuid,
    owner_id: String,
    data: Json<Value>,
    scopes: String,
    sandbox: bool,
    disabled: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
    last_used_at: Option<Timestamp>,
}

impl TryFrom<EnrollmentRow> for Enrollment {
    type Error = StoreError;

    fn try_from(row: EnrollmentRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: EnrollmentId(row.id),
            app_id: AppId(row.app_id),
            owner_id: OwnerId::parse(&row.owner_id).map_err(corrupt)?,
            data: row.data.0,
            scopes: ScopeSet::parse(&row.scopes).map_err(corrupt)?,
            sandbox: row.sandbox,
            disabled: row.disabled,
            created_at: row.created_at.0,
            updated_at: row.updated_at.0,
            last_used_at: row.last_used_at.map(|t| t.0),
        })
    }
}

const GRANT_COLUMNS: &str = "id, profile_kind, profile_id, app_id, enrollment_id, secret_id, \
     client_id, name, description, challenge, status, scope, created_at, expires_at, last_used_at, \
     token_bound_cidrs, requests_per_minute";

/// Selects one profile's grants: its subject, through its app (`$3`, [`NO_APP`] for the
/// operator's owner tokens). Plain equalities, so both backends walk the profile's index in
/// order instead of sorting the profile's whole history.
const PROFILE_MATCHES: &str = "profile_kind = $1 AND profile_id = $2 AND profile_app = $3";

/// `profile_app` for "no app": a key column cannot hold NULL and still be matched with `=`.
const NO_APP: Uuid = Uuid::nil();

fn profile_app(app_id: Option<AppId>) -> Uuid {
    app_id.map_or(NO_APP, |a| a.0)
}

#[derive(FromRow)]
struct GrantRow {
    id: Uuid,
    profile_kind: String,
    profile_id: String,
    app_id: Option<Uuid>,
    enrollment_id: Option<Uuid>,
    secret_id: Option<Uuid>,
    client_id: String,
    name: String,
    description: String,
    challenge: String,
    status: String,
    scope: String,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
    last_used_at: Option<Timestamp>,
    token_bound_cidrs: String,
    requests_per_minute: Option<i64>,
}

impl TryFrom<GrantRow> for AuthGrant {
    type Error = StoreError;

    fn try_from(row: GrantRow) -> Result<Self, StoreError> {
        let kind = match row.profile_kind.as_str() {
            "app" => SubjectKind::App,
            "owner" => SubjectKind::Owner,
            _ => return Err(corrupt("unknown profile kind")),
        };
        let origin = match (row.app_id, row.enrollment_id) {
            (None, None) => Origin::Operator,
            (Some(app_id), None) => Origin::App(AppId(app_id)),
            (Some(app_id), Some(enrollment_id)) => Origin::Enrollment {
                app_id: AppId(app_id),
                enrollment_id: EnrollmentId(enrollment_id),
            },
            (None, Some(_)) => return Err(corrupt("a grant's enrollment without its app")),
        };
        Ok(Self {
            id: GrantId(row.id),
            profile: Subject {
                kind,
                id: row.profile_id,
            },
            origin,
            secret_id: row.secret_id.map(SecretId),
            client_id: row.client_id,
            token_bound_cidrs: CidrList::parse_stored(&row.token_bound_cidrs).map_err(corrupt)?,
            requests_per_minute: row
                .requests_per_minute
                .map(u32::try_from)
                .transpose()
                .map_err(corrupt)?,
            name: row.name,
            description: row.description,
            challenge: row.challenge,
            status: GrantStatus::parse(&row.status)
                .ok_or_else(|| corrupt("unknown grant status"))?,
            scope: ScopeSet::parse(&row.scope).map_err(corrupt)?,
            created_at: row.created_at.0,
            expires_at: row.expires_at.map(|t| t.0),
            last_used_at: row.last_used_at.map(|t| t.0),
        })
    }
}

/// A value for a query whose shape is only known at run time.
enum Param {
    Uuid(Uuid),
    Text(String),
    Time(Timestamp),
}

/// Runs a filtered listing built from `conditions` and `params` (grants, audit events) and
/// converts its rows.
async fn fetch_where<DB, R, T>(
    pool: &Pool<DB>,
    sql: String,
    params: Vec<Param>,
) -> Result<Vec<T>, StoreError>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    R: for<'r> FromRow<'r, DB::Row> + Send + Unpin + TryInto<T, Error = StoreError>,
    Uuid: for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    Timestamp: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut query = sqlx::query_as::<DB, R>(sqlx::AssertSqlSafe(sql));
    for param in params {
        query = match param {
            Param::Uuid(v) => query.bind(v),
            Param::Text(v) => query.bind(v),
            Param::Time(v) => query.bind(v),
        };
    }
    query
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .into_iter()
        .map(TryInto::try_into)
        .collect()
}

/// Appends `column = $n` or `column IN ($n, …)` and the matching parameters.
fn push_match<T>(
    conditions: &mut Vec<String>,
    params: &mut Vec<Param>,
    column: &str,
    matcher: &Match<T>,
    to_param: impl Fn(&T) -> Param,
) {
    let values: Vec<&T> = match matcher {
        Match::Exact(v) => vec![v],
        Match::AnyOf(vs) => vs.iter().collect(),
    };
    if values.is_empty() {
        // `IN ()` is not SQL; an empty set matches nothing.
        conditions.push("1 = 0".to_owned());
        return;
    }
    let placeholders: Vec<String> = values
        .iter()
        .map(|v| {
            params.push(to_param(v));
            format!("${}", params.len())
        })
        .collect();
    conditions.push(format!("{column} IN ({})", placeholders.join(", ")));
}

const AUDIT_COLUMNS: &str = "id, at, event, app_id, secret_id, grant_id, enrollment_id, \
     subject_kind, subject, client_id, jti, source_ip, reason, detail";

/// Rows per multi-row insert: 14 parameters each stays far below SQLite's limit (32766).
const AUDIT_ROWS_PER_INSERT: usize = 500;

/// Rows per purge statement, so a purge never holds one long transaction.
const PURGE_CHUNK: usize = 10_000;

#[derive(FromRow)]
struct AuditRow {
    id: Uuid,
    at: Timestamp,
    event: String,
    app_id: Option<Uuid>,
    secret_id: Option<Uuid>,
    grant_id: Option<Uuid>,
    enrollment_id: Option<Uuid>,
    subject_kind: Option<String>,
    subject: Option<String>,
    client_id: Option<String>,
    jti: Option<String>,
    source_ip: Option<String>,
    reason: Option<String>,
    detail: Json<Value>,
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: row.id,
            at: row.at.0,
            event: row.event,
            app_id: row.app_id.map(AppId),
            secret_id: row.secret_id.map(SecretId),
            grant_id: row.grant_id.map(GrantId),
            enrollment_id: row.enrollment_id.map(EnrollmentId),
            subject_kind: row
                .subject_kind
                .map(|k| SubjectKind::parse(&k).ok_or_else(|| corrupt("unknown subject kind")))
                .transpose()?,
            subject: row.subject,
            client_id: row.client_id,
            jti: row.jti,
            source_ip: row.source_ip,
            reason: row.reason,
            detail: row.detail.0,
        })
    }
}

#[derive(FromRow)]
struct KeyRow {
    kid: String,
    algorithm: String,
    state: String,
    private_key: Vec<u8>,
    public_jwk: String,
    created_at: Timestamp,
    activated_at: Option<Timestamp>,
    retired_at: Option<Timestamp>,
    tokens_live_until: Option<Timestamp>,
}

impl TryFrom<KeyRow> for SigningKeyRecord {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> Result<Self, StoreError> {
        Ok(Self {
            algorithm: row.algorithm.parse().map_err(corrupt)?,
            state: KeyState::parse(&row.state).ok_or_else(|| corrupt("unknown key state"))?,
            kid: row.kid,
            sealed_private_key: row.private_key,
            public_jwk: row.public_jwk,
            created_at: row.created_at.0,
            activated_at: row.activated_at.map(|t| t.0),
            retired_at: row.retired_at.map(|t| t.0),
            tokens_live_until: row.tokens_live_until.map(|t| t.0),
        })
    }
}

fn corrupt(e: impl ToString) -> StoreError {
    StoreError::Internal(format!("unreadable row: {}", e.to_string()).into())
}

/// Sorts sqlx failures into the three answers callers act on.
pub(super) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict("a record with that key already exists")
        }
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::Orphan,
        // PostgreSQL refuses NUL characters in text and JSON; that is the input's fault.
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("22P05" | "22021")) => {
            StoreError::Unrepresentable
        }
        // Connection exceptions, shutdowns and "starting up": the database, not the query.
        sqlx::Error::Database(db)
            if db
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300") =>
        {
            StoreError::Unavailable(e)
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
        _ => StoreError::Internal(Box::new(e)),
    }
}

#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Database,
    DB::Connection: Migrate,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    AppRow: for<'r> FromRow<'r, DB::Row>,
    KeyRow: for<'r> FromRow<'r, DB::Row>,
    LiveKey: for<'r> FromRow<'r, DB::Row>,
    (String, Timestamp): for<'r> FromRow<'r, DB::Row>,
    String: for<'r> Decode<'r, DB>,
    EnrollmentRow: for<'r> FromRow<'r, DB::Row>,
    GrantRow: for<'r> FromRow<'r, DB::Row>,
    SecretRow: for<'r> FromRow<'r, DB::Row>,
    AuditRow: for<'r> FromRow<'r, DB::Row>,
    (NaiveDate, i64): for<'r> FromRow<'r, DB::Row>,
    (i64, i64): for<'r> FromRow<'r, DB::Row>,
    NaiveDate: for<'q> Encode<'q, DB> + Type<DB>,
    Option<i64>: for<'q> Encode<'q, DB> + Type<DB>,
    Json<Value>: for<'q> Encode<'q, DB> + Type<DB>,
    Uuid: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    Option<String>: for<'q> Encode<'q, DB> + Type<DB>,
    Option<Uuid>: for<'q> Encode<'q, DB> + Type<DB>,
    Vec<u8>: for<'q> Encode<'q, DB> + Type<DB>,
    bool: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    i32: for<'r> Decode<'r, DB> + Type<DB>,
    Timestamp: for<'q> Encode<'q, DB> + Type<DB>,
    Option<Timestamp>: for<'q> Encode<'q, DB> + Type<DB>,
{
    async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => map_err(e),
            other => StoreError::Internal(Box::new(other)),
        })
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar::<DB, i32>("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map(drop)
            .map_err(map_err)
    }

    async fn insert_application(&self, app: &NewApplication) -> Result<Application, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let row = sqlx::query_as::<DB, AppRow>(sqlx::AssertSqlSafe(format!(
            "INSERT INTO applications (id, client_id, name, allowed_scopes, default_scopes, \
             sandbox, disabled, created_at, updated_at, allowed_cidrs, token_bound_cidrs, \
             tokens_per_hour, tokens_per_day) \
             VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $7, $8, $9, $10, $11) \
             RETURNING {APP_COLUMNS}"
        )))
        .bind(app.id.0)
        .bind(app.client_id.as_str().to_owned())
        .bind(app.name.clone())
        .bind(app.allowed_scopes.to_string())
        .bind(app.default_scopes.to_string())
        .bind(app.sandbox)
        .bind(Timestamp(app.created_at))
        .bind(app.allowed_cidrs.to_string())
        .bind(app.token_bound_cidrs.to_string())
        .bind(limit_column(app.quota.per_hour))
        .bind(limit_column(app.quota.per_day))
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_secret::<DB>(app.id, &app.secret)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        row.try_into()
    }

    async fn application(&self, id: AppId) -> Result<Option<Application>, StoreError> {
        sqlx::query_as::<DB, AppRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM applications WHERE id = $1"
        )))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?
        .map(TryInto::try_into)
        .transpose()
    }

    async fn application_by_client_id(
        &self,
        client_id: &ClientId,
    ) -> Result<Option<Application>, StoreError> {
        sqlx::query_as::<DB, AppRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM applications WHERE client_id = $1"
        )))
        .bind(client_id.as_str().to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?
        .map(TryInto::try_into)
        .transpose()
    }

    async fn list_applications(&self) -> Result<Vec<Application>, StoreError> {
        sqlx::query_as::<DB, AppRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM applications ORDER BY created_at, id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?
        .into_iter()
        .map(TryInto::try_into)
        .collect()
    }

    async fn update_application_settings(
        &self,
        id: AppId,
        expected: &AppSettings,
        new: &AppSettings,
        now: DateTime<Utc>,
    ) -> Result<Guarded<Application>, StoreError> {
        // Scope sets and CIDR lists are stored in their canonical rendering, so equal ones
        // compare equal.
        let row = sqlx::query_as::<DB, AppRow>(sqlx::AssertSqlSafe(format!(
            "UPDATE applications SET name = $2, allowed_scopes = $3, default_scopes = $4, \
             sandbox = $5, updated_at = $6, allowed_cidrs = $11, token_bound_cidrs = $12, \
             tokens_per_hour = $15, tokens_per_day = $16 \
             WHERE id = $1 AND name = $7 AND allowed_scopes = $8 AND default_scopes = $9 \
             AND sandbox = $10 AND allowed_cidrs = $13 AND token_bound_cidrs = $14 \
             AND tokens_per_hour = $17 AND tokens_per_day = $18 \
             RETURNING {APP_COLUMNS}"
        )))
        .bind(id.0)
        .bind(new.name.clone())
        .bind(new.allowed_scopes.to_string())
        .bind(new.default_scopes.to_string())
        .bind(new.sandbox)
        .bind(Timestamp(now))
        .bind(expected.name.clone())
        .bind(expected.allowed_scopes.to_string())
        .bind(expected.default_scopes.to_string())
        .bind(expected.sandbox)
        .bind(new.allowed_cidrs.to_string())
        .bind(new.token_bound_cidrs.to_string())
        .bind(expected.allowed_cidrs.to_string())
        .bind(expected.token_bound_cidrs.to_string())
        .bind(limit_column(new.quota.per_hour))
        .bind(limit_column(new.quota.per_day))
        .bind(limit_column(expected.quota.per_hour))
        .bind(limit_column(expected.quota.per_day))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        self.guarded_application(id, row).await
    }

    async fn app_secrets(&self, app_id: AppId) -> Result<Vec<AppSecret>, StoreError> {
        sqlx::query_as::<DB, SecretRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {SECRET_COLUMNS} FROM app_secrets WHERE app_id = $1 ORDER BY created_at, id"
        )))
        .bind(app_id.0)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?
        .into_iter()
        .map(TryInto::try_into)
        .collect()
    }

    async fn add_app_secret(
        &self,
        app_id: AppId,
        secret: &NewSecret,
        max: u32,
    ) -> Result<SecretAdded, StoreError> {
        let now = secret.created_at;
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        if take_app_lock::<DB>(app_id, now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
            .is_none()
        {
            return Ok(SecretAdded::Missing);
        }
        let live = count_unexpired::<DB>(app_id, now)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        if live >= i64::from(max) {
            return Ok(SecretAdded::Full);
        }
        let row = insert_secret::<DB>(app_id, secret)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(SecretAdded::Added(row.try_into()?))
    }

    async fn rotate_app_secrets(
        &self,
        app_id: AppId,
        expected: &[SecretId],
        secret: &NewSecret,
        others_until: Option<DateTime<Utc>>,
        max: u32,
    ) -> Result<SecretAdded, StoreError> {
        let now = secret.created_at;
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        if take_app_lock::<DB>(app_id, now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
            .is_none()
        {
            return Ok(SecretAdded::Missing);
        }
        let mut held =
            sqlx::query_scalar::<DB, Uuid>("SELECT id FROM app_secrets WHERE app_id = $1")
                .bind(app_id.0)
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
        let mut expected: Vec<Uuid> = expected.iter().map(|s| s.0).collect();
        held.sort_unstable();
        expected.sort_unstable();
        if held != expected {
            return Ok(SecretAdded::Stale);
        }
        match others_until {
            None => {
                sqlx::query::<DB>("DELETE FROM app_secrets WHERE app_id = $1")
                    .bind(app_id.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
            }
            Some(until) => {
                let live = count_unexpired::<DB>(app_id, now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                if live >= i64::from(max) {
                    return Ok(SecretAdded::Full);
                }
                sqlx::query::<DB>(
                    "UPDATE app_secrets SET expires_at = $2 \
                     WHERE app_id = $1 AND (expires_at IS NULL OR expires_at > $3)",
                )
                .bind(app_id.0)
                .bind(Timestamp(until))
                .bind(Timestamp(until))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            }
        }
        let row = insert_secret::<DB>(app_id, secret)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(SecretAdded::Added(row.try_into()?))
    }

    async fn revoke_app_secret(
        &self,
        app_id: AppId,
        secret_id: SecretId,
        tokens: Option<&SecretTokens>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<GrantId>>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        if take_app_lock::<DB>(app_id, now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
            .is_none()
        {
            return Ok(None);
        }
        let deleted = sqlx::query_scalar::<DB, Uuid>(
            "DELETE FROM app_secrets WHERE id = $1 AND app_id = $2 RETURNING id",
        )
        .bind(secret_id.0)
        .bind(app_id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        if deleted.is_none() {
            return Ok(None);
        }
        let mut grants = Vec::new();
        if let Some(tokens) = tokens {
            sqlx::query::<DB>(
                "INSERT INTO revoked_tokens (jti, expires_at, revoked_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (jti) DO NOTHING",
            )
            .bind(tokens.marker.clone())
            .bind(Timestamp(tokens.until))
            .bind(Timestamp(now))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            grants = sqlx::query_scalar::<DB, Uuid>(
                "UPDATE auth_grants SET status = 'revoked' \
                 WHERE secret_id = $1 AND status = 'active' RETURNING id",
            )
            .bind(secret_id.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?
            .into_iter()
            .map(GrantId)
            .collect();
        }
        tx.commit().await.map_err(map_err)?;
        Ok(Some(grants))
    }

    async fn spend_secret_use(&self, id: SecretId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        // One statement, so the check and the count cannot be split by another replica's.
        let spent = sqlx::query_scalar::<DB, Uuid>(
            "UPDATE app_secrets SET use_count = use_count + 1, \
             last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $2 \
             THEN $2 ELSE last_used_at END \
             WHERE id = $1 AND (max_uses IS NULL OR use_count < max_uses) RETURNING id",
        )
        .bind(id.0)
        .bind(Timestamp(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(spent.is_some())
    }

    async fn lease_quota(
        &self,
        app_id: AppId,
        window: QuotaWindow,
        starts_at: DateTime<Utc>,
        want: u64,
        limit: u64,
    ) -> Result<Option<QuotaLease>, StoreError> {
        // One statement: the check and the grant cannot be split by another replica's, and
        // the sum of what every replica leased never passes `limit` (the SET expressions
        // read the row as it was before this update, and grant at most what it has left).
        // The WHERE spares a full window's row a write.
        let row = sqlx::query_as::<DB, (i64, i64)>(
            "INSERT INTO quota_windows (app_id, span, starts_at, leased, last_grant) \
             VALUES ($1, $2, $3, $6, $6) \
             ON CONFLICT (app_id, span, starts_at) DO UPDATE SET \
             last_grant = CASE WHEN $4 < $5 - quota_windows.leased THEN $4 \
             ELSE $5 - quota_windows.leased END, \
             leased = quota_windows.leased + CASE WHEN $4 < $5 - quota_windows.leased THEN $4 \
             ELSE $5 - quota_windows.leased END \
             WHERE quota_windows.leased < $5 \
             RETURNING last_grant, leased",
        )
        .bind(app_id.0)
        .bind(window.as_str().to_owned())
        .bind(Timestamp(starts_at))
        .bind(stored_count(want))
        .bind(stored_count(limit))
        .bind(stored_count(want.min(limit)))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        match row {
            Some((granted, leased)) if granted > 0 => Ok(Some(QuotaLease {
                granted: u64::try_from(granted).map_err(corrupt)?,
                leased: u64::try_from(leased).map_err(corrupt)?,
            })),
            _ => Ok(None),
        }
    }

    async fn purge_quota_windows(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query_scalar::<DB, Uuid>(
            "DELETE FROM quota_windows WHERE starts_at < $1 RETURNING app_id",
        )
        .bind(Timestamp(before))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(purged.len() as u64)
    }

    async fn set_application_disabled(
        &self,
        id: AppId,
        disabled: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Application>, StoreError> {
        sqlx::query_as::<DB, AppRow>(sqlx::AssertSqlSafe(format!(
            "UPDATE applications SET disabled = $2, updated_at = $3 WHERE id = $1 \
             RETURNING {APP_COLUMNS}"
        )))
        .bind(id.0)
        .bind(disabled)
        .bind(Timestamp(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?
        .map(TryInto::try_into)
        .transpose()
    }

    async fn delete_application(&self, id: AppId) -> Result<bool, StoreError> {
        let deleted =
            sqlx::query_scalar::<DB, Uuid>("DELETE FROM applications WHERE id = $1 RETURNING id")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
        Ok(deleted.is_some())
    }

    async fn insert_enrollment(&self, e: &Enrollment) -> Result<(), StoreError> {
        sqlx::query::<DB>(
            "INSERT INTO enrollments (id, app_id, owner_id, data, scopes, sandbox, disabled, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(e.id.0)
        .bind(e.app_id.0)
        .bind(e.owner_id.as_str().to_owned())
        .bind(Json(e.data.clone()))
        .bind(e.scopes.to_string())
        .bind(e.sandbox)
        .bind(e.disabled)
        .bind(Timestamp(e.created_at))
        .bind(Timestamp(e.updated_at))
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(map_err)
    }

    async fn enrollment(&self, id: EnrollmentId) -> Result<Option<Enrollment>, StoreError> {
        sqlx::query_as::<DB, EnrollmentRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE id = $1"
        )))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?
        .map(TryInto::try_into)
        .transpose()
    }

    async fn enrollment_for_owner(
        &self,
        app_id: AppId,
        owner_id: &OwnerId,
    ) -> Result<Option<Enrollment>, StoreError> {
        sqlx::query_as::<DB, EnrollmentRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE app_id = $1 AND owner_id = $2"
        )))
        .bind(app_id.0)
        .bind(owner_id.as_str().to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?
        .map(TryInto::try_into)
        .transpose()
    }

    async fn list_enrollments(
        &self,
        filter: &EnrollmentFilter,
        limit: u32,
    ) -> Result<Vec<Enrollment>, StoreError> {
        let mut conditions = Vec::new();
        if filter.app_id.is_some() {
            conditions.push(format!("app_id = ${}", conditions.len() + 1));
        }
        if filter.owner_id.is_some() {
            conditions.push(format!("owner_id = ${}", conditions.len() + 1));
        }
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let mut query = sqlx::query_as::<DB, EnrollmentRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments {filter_sql} \
             ORDER BY created_at DESC, id DESC LIMIT {limit}"
        )));
        if let Some(app_id) = filter.app_id {
            query = query.bind(app_id.0);
        }
        if let Some(owner_id) = &filter.owner_id {
            query = query.bind(owner_id.as_str().to_owned());
        }
        query
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .into_iter()
            .map(TryInto::try_into)
            .collect()
    }

    async fn update_enrollment_data(
        &self,
        of: &Enrollment,
        data: &Value,
        now: DateTime<Utc>,
    ) -> Result<Option<Enrollment>, StoreError> {
        sqlx::query_as::<DB, EnrollmentRow>(sqlx::AssertSqlSafe(format!(
            "UPDATE enrollments SET data = $2, updated_at = $3 WHERE id = $1 \
             AND app_id = $4 AND owner_id = $5 AND created_at = $6 \
             RETURNING {ENROLLMENT_COLUMNS}"
        )))
        .bind(of.id.0)
        .bind(Json(data.clone()))
        .bind(Timestamp(now))
        .bind(of.app_id.0)
        .bind(of.owner_id.as_str().to_owned())
        .bind(Timestamp(of.created_at))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?
        .map(TryInto::try_into)
        .transpose()
    }

    async fn set_enrollment_disabled(
        &self,
        id: EnrollmentId,
        disabled: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Enrollment>, StoreError> {
        sqlx::query_as::<DB, EnrollmentRow>(sqlx::AssertSqlSafe(format!(
            "UPDATE enrollments SET disabled = $2, updated_at = $3 WHERE id = $1 \
             RETURNING {ENROLLMENT_COLUMNS}"
        )))
        .bind(id.0)
        .bind(disabled)
        .bind(Timestamp(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?
        .map(TryInto::try_into)
        .transpose()
    }

    async fn delete_enrollment(&self, id: EnrollmentId) -> Result<bool, StoreError> {
        let deleted =
            sqlx::query_scalar::<DB, Uuid>("DELETE FROM enrollments WHERE id = $1 RETURNING id")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
        Ok(deleted.is_some())
    }

    async fn insert_grant(&self, g: &AuthGrant, max_active: u32) -> Result<bool, StoreError> {
        let kind = g.profile.kind.as_str().to_owned();
        let app_id = g.origin.app_id().map(|a| a.0);
        let cap = i64::from(max_active);
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        if let Some(secret) = g.secret_id {
            // A grant made by a token of a secret that is being revoked with its tokens must
            // not outlive the revocation, whose marker expires: touching the secret's row
            // waits for a revocation holding it (PostgreSQL's row lock; SQLite has one
            // writer), and once one has committed its marker is there to see. A secret
            // revoked without its tokens leaves no marker, and its tokens keep working.
            sqlx::query::<DB>("UPDATE app_secrets SET use_count = use_count WHERE id = $1")
                .bind(secret.0)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            let revoked =
                sqlx::query_scalar::<DB, i64>("SELECT COUNT(*) FROM revoked_tokens WHERE jti = $1")
                    .bind(crate::authority::revocations::secret_marker(
                        &secret.to_string(),
                    ))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
            if revoked > 0 {
                return Err(StoreError::OriginRevoked);
            }
        }
        // The profile's counter is an upper bound of its active grants (revocation and
        // expiry do not lower it), so checking the cap costs one row, not a count of the
        // profile's grants. Writing the row also makes concurrent creations for one profile
        // take turns: PostgreSQL locks it until commit, SQLite has one writer at a time.
        let bound = sqlx::query_scalar::<DB, i64>(
            "INSERT INTO grant_counters (profile_kind, profile_id, profile_app, active) \
             VALUES ($1, $2, $3, 1) \
             ON CONFLICT (profile_kind, profile_id, profile_app) \
             DO UPDATE SET active = grant_counters.active + 1 RETURNING active",
        )
        .bind(kind.clone())
        .bind(g.profile.id.clone())
        .bind(app_id.unwrap_or(NO_APP))
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
        if bound > cap {
            // The bound may be stale: count exactly, now that no one else can add one.
            let active = sqlx::query_scalar::<DB, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM auth_grants WHERE {PROFILE_MATCHES} \
                 AND status = 'active' AND (expires_at IS NULL OR expires_at > $4)"
            )))
            .bind(kind.clone())
            .bind(g.profile.id.clone())
            .bind(app_id.unwrap_or(NO_APP))
            .bind(Timestamp(g.created_at))
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
            if active >= cap {
                // Dropping the transaction rolls the counter back too.
                return Ok(false);
            }
            sqlx::query::<DB>(
                "UPDATE grant_counters SET active = $4 \
                 WHERE profile_kind = $1 AND profile_id = $2 AND profile_app = $3",
            )
            .bind(kind.clone())
            .bind(g.profile.id.clone())
            .bind(app_id.unwrap_or(NO_APP))
            .bind(active + 1)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        sqlx::query::<DB>(
            "INSERT INTO auth_grants (id, profile_kind, profile_id, profile_app, app_id, \
             enrollment_id, client_id, name, description, challenge, status, scope, created_at, \
             expires_at, secret_id, token_bound_cidrs, requests_per_minute) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(g.id.0)
        .bind(kind)
        .bind(g.profile.id.clone())
        .bind(app_id.unwrap_or(NO_APP))
        .bind(app_id)
        .bind(g.origin.enrollment_id().map(|e| e.0))
        .bind(g.client_id.clone())
        .bind(g.name.clone())
        .bind(g.description.clone())
        .bind(g.challenge.clone())
        .bind(g.status.as_str().to_owned())
        .bind(g.scope.to_string())
        .bind(Timestamp(g.created_at))
        .bind(g.expires_at.map(Timestamp))
        .bind(g.secret_id.map(|s| s.0))
        .bind(g.token_bound_cidrs.to_string())
        .bind(g.requests_per_minute.map(i64::from))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn grant(&self, id: GrantId) -> Result<Option<AuthGrant>, StoreError> {
        sqlx::query_as::<DB, GrantRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {GRANT_COLUMNS} FROM auth_grants WHERE id = $1"
        )))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?
        .map(TryInto::try_into)
        .transpose()
    }

    async fn list_grants(
        &self,
        profile: &Profile,
        filter: &GrantFilter,
        before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<AuthGrant>, StoreError> {
        let mut params = vec![
            Param::Text(profile.subject.kind.as_str().to_owned()),
            Param::Text(profile.subject.id.clone()),
            Param::Uuid(profile_app(profile.app_id)),
        ];
        let mut conditions = vec![PROFILE_MATCHES.to_owned()];
        if let Some(before) = before {
            params.push(Param::Time(Timestamp(before)));
            conditions.push(format!("created_at < ${}", params.len()));
        }
        if let Some(m) = &filter.id {
            push_match(&mut conditions, &mut params, "id", m, |id| {
                Param::Uuid(id.0)
            });
        }
        if let Some(m) = &filter.name {
            push_match(&mut conditions, &mut params, "name", m, |s| {
                Param::Text(s.clone())
            });
        }
        if let Some(m) = &filter.description {
            push_match(&mut conditions, &mut params, "description", m, |s| {
                Param::Text(s.clone())
            });
        }
        if let Some(status) = filter.status {
            params.push(Param::Text(status.as_str().to_owned()));
            conditions.push(format!("status = ${}", params.len()));
        }
        let sql = format!(
            "SELECT {GRANT_COLUMNS} FROM auth_grants WHERE {} \
             ORDER BY created_at DESC, id DESC LIMIT {limit}",
            conditions.join(" AND ")
        );
        fetch_where::<DB, GrantRow, _>(&self.pool, sql, params).await
    }

    async fn update_grant_text(
        &self,
        id: GrantId,
        profile: &Profile,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query_scalar::<DB, Uuid>(sqlx::AssertSqlSafe(format!(
            "UPDATE auth_grants SET name = COALESCE($5, name), \
             description = COALESCE($6, description) \
             WHERE {PROFILE_MATCHES} AND id = $4 RETURNING id"
        )))
        .bind(profile.subject.kind.as_str().to_owned())
        .bind(profile.subject.id.clone())
        .bind(profile_app(profile.app_id))
        .bind(id.0)
        .bind(name.map(str::to_owned))
        .bind(description.map(str::to_owned))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(updated.is_some())
    }

    async fn revoke_grant(&self, id: GrantId, profile: &Profile) -> Result<bool, StoreError> {
        let revoked = sqlx::query_scalar::<DB, Uuid>(sqlx::AssertSqlSafe(format!(
            "UPDATE auth_grants SET status = 'revoked' \
             WHERE {PROFILE_MATCHES} AND id = $4 RETURNING id"
        )))
        .bind(profile.subject.kind.as_str().to_owned())
        .bind(profile.subject.id.clone())
        .bind(profile_app(profile.app_id))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(revoked.is_some())
    }

    async fn delete_revoked_grant(
        &self,
        id: GrantId,
        profile: &Profile,
    ) -> Result<bool, StoreError> {
        let deleted = sqlx::query_scalar::<DB, Uuid>(sqlx::AssertSqlSafe(format!(
            "DELETE FROM auth_grants WHERE {PROFILE_MATCHES} AND id = $4 \
             AND status = 'revoked' RETURNING id"
        )))
        .bind(profile.subject.kind.as_str().to_owned())
        .bind(profile.subject.id.clone())
        .bind(profile_app(profile.app_id))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(deleted.is_some())
    }

    async fn revoke_token(
        &self,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query::<DB>(
            "INSERT INTO revoked_tokens (jti, expires_at, revoked_at) VALUES ($1, $2, $3) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti.to_owned())
        .bind(Timestamp(expires_at))
        .bind(Timestamp(now))
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(map_err)
    }

    async fn active_revocations(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let rows = sqlx::query_as::<DB, (String, Timestamp)>(
            "SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1",
        )
        .bind(Timestamp(now))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(rows.into_iter().map(|(jti, at)| (jti, at.0)).collect())
    }

    async fn revocations_since(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let rows = sqlx::query_as::<DB, (String, Timestamp)>(
            "SELECT jti, expires_at FROM revoked_tokens WHERE revoked_at >= $1 AND expires_at > $2",
        )
        .bind(Timestamp(since))
        .bind(Timestamp(now))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(rows.into_iter().map(|(jti, at)| (jti, at.0)).collect())
    }

    async fn purge_expired_revocations(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query_scalar::<DB, String>(
            "DELETE FROM revoked_tokens WHERE expires_at <= $1 RETURNING jti",
        )
        .bind(Timestamp(now))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(purged.len() as u64)
    }

    async fn record_usage(&self, usage: &[Usage]) -> Result<(), StoreError> {
        if usage.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        for entry in usage {
            let (table, id) = match entry.of {
                UsageOf::App(id) => ("applications", id.0),
                UsageOf::Enrollment(id) => ("enrollments", id.0),
                UsageOf::Grant(id) => ("auth_grants", id.0),
                UsageOf::Secret(id) => {
                    sqlx::query::<DB>(
                        "UPDATE app_secrets SET use_count = use_count + $3, \
                         last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $2 \
                         THEN $2 ELSE last_used_at END WHERE id = $1",
                    )
                    .bind(id.0)
                    .bind(Timestamp(entry.at))
                    .bind(stored_count(entry.uses))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    continue;
                }
            };
            sqlx::query::<DB>(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET last_used_at = $2 \
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)"
            )))
            .bind(id)
            .bind(Timestamp(entry.at))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn record_audit(
        &self,
        events: &[AuditRecord],
        counts: &[DailyCount],
    ) -> Result<(), StoreError> {
        if events.is_empty() && counts.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        for chunk in events.chunks(AUDIT_ROWS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|row| {
                    let params: Vec<String> =
                        (1..=14).map(|col| format!("${}", row * 14 + col)).collect();
                    format!("({})", params.join(", "))
                })
                .collect();
            let mut query = sqlx::query::<DB>(sqlx::AssertSqlSafe(format!(
                "INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES {}",
                rows.join(", ")
            )));
            for e in chunk {
                query = query
                    .bind(e.id)
                    .bind(Timestamp(e.at))
                    .bind(e.event.clone())
                    .bind(e.app_id.map(|id| id.0))
                    .bind(e.secret_id.map(|id| id.0))
                    .bind(e.grant_id.map(|id| id.0))
                    .bind(e.enrollment_id.map(|id| id.0))
                    .bind(e.subject_kind.map(|k| k.as_str().to_owned()))
                    .bind(e.subject.clone())
                    .bind(e.client_id.clone())
                    .bind(e.jti.clone())
                    .bind(e.source_ip.clone())
                    .bind(e.reason.clone())
                    .bind(Json(e.detail.clone()));
            }
            query.execute(&mut *tx).await.map_err(map_err)?;
        }
        // Each (credential, day) appears once per batch (the caller adds them up), as one
        // statement may not update a row twice.
        for chunk in counts.chunks(AUDIT_ROWS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|row| {
                    let n = row * 4;
                    format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4)
                })
                .collect();
            let mut query = sqlx::query::<DB>(sqlx::AssertSqlSafe(format!(
                "INSERT INTO credential_usage (kind, credential_id, day, issued) VALUES {} \
                 ON CONFLICT (kind, credential_id, day) \
                 DO UPDATE SET issued = credential_usage.issued + excluded.issued",
                rows.join(", ")
            )));
            for c in chunk {
                query = query
                    .bind(c.of.kind().to_owned())
                    .bind(c.of.id())
                    .bind(c.day)
                    .bind(stored_count(c.issued));
            }
            query.execute(&mut *tx).await.map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn audit_events(
        &self,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut params = Vec::new();
        let mut conditions = vec!["1 = 1".to_owned()];
        let mut equal = |column: &str, param: Param, params: &mut Vec<Param>| {
            params.push(param);
            conditions.push(format!("{column} = ${}", params.len()));
        };
        if let Some(id) = filter.app_id {
            equal("app_id", Param::Uuid(id.0), &mut params);
        }
        if let Some(id) = filter.secret_id {
            equal("secret_id", Param::Uuid(id.0), &mut params);
        }
        if let Some(id) = filter.grant_id {
            equal("grant_id", Param::Uuid(id.0), &mut params);
        }
        if let Some(subject) = &filter.subject {
            equal("subject", Param::Text(subject.clone()), &mut params);
        }
        if let Some(event) = &filter.event {
            equal("event", Param::Text(event.clone()), &mut params);
        }
        if let Some(since) = filter.since {
            params.push(Param::Time(Timestamp(since)));
            conditions.push(format!("at >= ${}", params.len()));
        }
        if let Some(until) = filter.until {
            params.push(Param::Time(Timestamp(until)));
            conditions.push(format!("at < ${}", params.len()));
        }
        if let Some((at, id)) = filter.after {
            params.push(Param::Time(Timestamp(at)));
            let at = params.len();
            params.push(Param::Uuid(id));
            conditions.push(format!(
                "(at < ${at} OR (at = ${at} AND id < ${}))",
                params.len()
            ));
        }
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE {} \
             ORDER BY at DESC, id DESC LIMIT {limit}",
            conditions.join(" AND ")
        );
        fetch_where::<DB, AuditRow, _>(&self.pool, sql, params).await
    }

    async fn purge_audit(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut purged = 0u64;
        loop {
            let gone = sqlx::query_scalar::<DB, Uuid>(sqlx::AssertSqlSafe(format!(
                "DELETE FROM audit_events WHERE id IN \
                 (SELECT id FROM audit_events WHERE at < $1 LIMIT {PURGE_CHUNK}) RETURNING id"
            )))
            .bind(Timestamp(before))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .len();
            purged += gone as u64;
            if gone < PURGE_CHUNK {
                break;
            }
        }
        sqlx::query::<DB>("DELETE FROM credential_usage WHERE day < $1")
            .bind(before.date_naive())
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(purged)
    }

    async fn daily_counts(
        &self,
        of: CredentialRef,
        since: NaiveDate,
    ) -> Result<Vec<(NaiveDate, u64)>, StoreError> {
        let rows = sqlx::query_as::<DB, (NaiveDate, i64)>(
            "SELECT day, issued FROM credential_usage \
             WHERE kind = $1 AND credential_id = $2 AND day >= $3 ORDER BY day",
        )
        .bind(of.kind().to_owned())
        .bind(of.id())
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.into_iter()
            .map(|(day, n)| Ok((day, u64::try_from(n).map_err(corrupt)?)))
            .collect()
    }

    async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        match &self.bus {
            Some(bus) => bus.publish(change).await,
            None => Ok(()),
        }
    }

    async fn subscribe(&self) -> Result<Option<mpsc::Receiver<ChangeEvent>>, StoreError> {
        match &self.bus {
            Some(bus) => bus.subscribe().await.map(Some),
            None => Ok(None),
        }
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        sqlx::query_as::<DB, KeyRow>(
            "SELECT kid, algorithm, state, private_key, public_jwk, created_at, activated_at, \
             retired_at, tokens_live_until FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?
        .into_iter()
        .map(TryInto::try_into)
        .collect()
    }

    async fn keep_signing_key_until(
        &self,
        kid: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Only ever later: concurrent writers each leave at least their own token covered.
        sqlx::query::<DB>(
            "UPDATE signing_keys SET tokens_live_until = $1 \
             WHERE kid = $2 AND (tokens_live_until IS NULL OR tokens_live_until < $3)",
        )
        .bind(Timestamp(until))
        .bind(kid.to_owned())
        .bind(Timestamp(until))
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn initialize_signing_keys(
        &self,
        current: &SigningKeyRecord,
        next: &SigningKeyRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        take_key_lock::<DB>(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let live = live_keys::<DB>()
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        if !live.iter().any(|k| k.state == "current") {
            insert_key::<DB>(current, KeyState::Current, Some(now))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        match live.iter().find(|k| k.state == "next") {
            Some(waiting) if waiting.algorithm == next.algorithm.as_str() => {}
            waiting => {
                if waiting.is_some() {
                    sqlx::query::<DB>("DELETE FROM signing_keys WHERE state = 'next'")
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                insert_key::<DB>(next, KeyState::Next, None)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
            }
        }
        tx.commit().await.map_err(map_err)
    }

    async fn rotate_signing_keys(
        &self,
        next: &SigningKeyRecord,
        now: DateTime<Utc>,
        min_next_age: TimeDelta,
    ) -> Result<KeyRotation, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        take_key_lock::<DB>(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let live = live_keys::<DB>()
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        let old_enough = |published: DateTime<Utc>| {
            published
                .checked_add_signed(min_next_age)
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        };
        let Some(waiting) = live.into_iter().find(|k| k.state == "next") else {
            insert_key::<DB>(next, KeyState::Next, None)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            return Ok(KeyRotation::TooEarly {
                retry_at: old_enough(next.created_at),
            });
        };
        let retry_at = old_enough(waiting.created_at.0);
        if retry_at > now {
            return Ok(KeyRotation::TooEarly { retry_at });
        }
        sqlx::query::<DB>(
            "UPDATE signing_keys SET state = 'retired', retired_at = $1 WHERE state = 'current'",
        )
        .bind(Timestamp(now))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query::<DB>(
            "UPDATE signing_keys SET state = 'current', activated_at = $1 WHERE kid = $2",
        )
        .bind(Timestamp(now))
        .bind(waiting.kid.clone())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_key::<DB>(next, KeyState::Next, None)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(KeyRotation::Rotated {
            current: waiting.kid,
        })
    }
}

impl<DB> SqlStore<DB>
where
    DB: Database,
    SqlStore<DB>: Store,
{
    /// Tells a guarded update that matched nothing apart: changed since read, or gone.
    async fn guarded_application<R>(
        &self,
        id: AppId,
        row: Option<R>,
    ) -> Result<Guarded<Application>, StoreError>
    where
        R: TryInto<Application, Error = StoreError>,
    {
        match row {
            Some(row) => Ok(Guarded::Written(row.try_into()?)),
            None if self.application(id).await?.is_some() => Ok(Guarded::Stale),
            None => Ok(Guarded::Missing),
        }
    }
}

/// A key that is current or next, as a key decision reads it.
#[derive(FromRow)]
struct LiveKey {
    kid: String,
    algorithm: String,
    state: String,
    created_at: Timestamp,
}

fn live_keys<'q, DB>() -> sqlx::query::QueryAs<'q, DB, LiveKey, DB::Arguments>
where
    DB: Database,
    LiveKey: for<'r> FromRow<'r, DB::Row>,
{
    sqlx::query_as::<DB, LiveKey>(
        "SELECT kid, algorithm, state, created_at FROM signing_keys \
         WHERE state IN ('current', 'next')",
    )
}

/// The first statement of every key decision: a write, so the transaction holds the lock
/// (PostgreSQL: this row until commit; SQLite: the one writer slot) before it reads.
fn take_key_lock<'q, DB>(now: DateTime<Utc>) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: Database,
    Timestamp: for<'e> Encode<'e, DB> + Type<DB>,
{
    sqlx::query::<DB>(
        "INSERT INTO signing_key_lock (id, taken_at) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET taken_at = excluded.taken_at",
    )
    .bind(Timestamp(now))
}

fn insert_key<'q, DB>(
    key: &SigningKeyRecord,
    state: KeyState,
    activated_at: Option<DateTime<Utc>>,
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: Database,
    String: for<'e> Encode<'e, DB> + Type<DB>,
    Vec<u8>: for<'e> Encode<'e, DB> + Type<DB>,
    Timestamp: for<'e> Encode<'e, DB> + Type<DB>,
    Option<Timestamp>: for<'e> Encode<'e, DB> + Type<DB>,
{
    sqlx::query::<DB>(
        "INSERT INTO signing_keys (kid, algorithm, state, private_key, public_jwk, \
         created_at, activated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(key.kid.clone())
    .bind(key.algorithm.as_str().to_owned())
    .bind(state.as_str().to_owned())
    .bind(key.sealed_private_key.clone())
    .bind(key.public_jwk.clone())
    .bind(Timestamp(key.created_at))
    .bind(activated_at.map(Timestamp))
}

/// The first statement of every write to an app's secrets: a write to the app's row, so
/// the transaction holds it (PostgreSQL: the row lock until commit; SQLite: the one writer
/// slot) before it reads, and secret writes to one app take turns. No row: no such app.
fn take_app_lock<'q, DB>(
    app_id: AppId,
    now: DateTime<Utc>,
) -> sqlx::query::QueryScalar<'q, DB, Uuid, DB::Arguments>
where
    DB: Database,
    Uuid: for<'e> Encode<'e, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    Timestamp: for<'e> Encode<'e, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    (Uuid,): for<'r> FromRow<'r, DB::Row>,
{
    sqlx::query_scalar::<DB, Uuid>(
        "UPDATE applications SET updated_at = $2 WHERE id = $1 RETURNING id",
    )
    .bind(app_id.0)
    .bind(Timestamp(now))
}

/// How many of the app's secrets have not expired by `now`.
fn count_unexpired<'q, DB>(
    app_id: AppId,
    now: DateTime<Utc>,
) -> sqlx::query::QueryScalar<'q, DB, i64, DB::Arguments>
where
    DB: Database,
    Uuid: for<'e> Encode<'e, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    Timestamp: for<'e> Encode<'e, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
{
    sqlx::query_scalar::<DB, i64>(
        "SELECT COUNT(*) FROM app_secrets \
         WHERE app_id = $1 AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(app_id.0)
    .bind(Timestamp(now))
}

fn insert_secret<'q, DB>(
    app_id: AppId,
    secret: &NewSecret,
) -> sqlx::query::QueryAs<'q, DB, SecretRow, DB::Arguments>
where
    DB: Database,
    SecretRow: for<'r> FromRow<'r, DB::Row>,
    Uuid: for<'e> Encode<'e, DB> + Type<DB>,
    String: for<'e> Encode<'e, DB> + Type<DB>,
    Option<String>: for<'e> Encode<'e, DB> + Type<DB>,
    Option<i64>: for<'e> Encode<'e, DB> + Type<DB>,
    Timestamp: for<'e> Encode<'e, DB> + Type<DB>,
    Option<Timestamp>: for<'e> Encode<'e, DB> + Type<DB>,
{
    sqlx::query_as::<DB, SecretRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO app_secrets (id, app_id, secret_hash, prefix, description, created_at, \
         expires_at, max_uses, allowed_cidrs) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         RETURNING {SECRET_COLUMNS}"
    )))
    .bind(secret.id.0)
    .bind(app_id.0)
    .bind(secret.hash.clone())
    .bind(secret.prefix.clone())
    .bind(secret.description.clone())
    .bind(Timestamp(secret.created_at))
    .bind(secret.expires_at.map(Timestamp))
    .bind(secret.max_uses.map(stored_count))
    .bind(secret.allowed_cidrs.to_string())
}
