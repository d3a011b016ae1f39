//! Persistence behind one trait. The queries are written once ([`sql::SqlStore`]) and run
//! on PostgreSQL or SQLite; each backend module holds only what truly differs (connection
//! setup, migrations, timestamp encoding). This folder is the only place sqlx appears.

mod postgres;
mod sql;
mod sqlite;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use uuid::Uuid;

use tokio::sync::mpsc;

use crate::domain::{
    AppId, AppSecret, AppSettings, Application, AuditRecord, AuthGrant, Change, ChangeEvent,
    ClientId, CredentialRef, DailyCount, Enrollment, EnrollmentId, GrantId, GrantStatus,
    NewApplication, NewSecret, OwnerId, Profile, QuotaWindow, SecretId, SigningKeyRecord,
};

pub type DynStore = Arc<dyn Store>;

/// What one quota lease got: `granted` tokens, leaving the window's leased total at
/// `leased`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLease {
    pub granted: u64,
    pub leased: u64,
}

/// How a backend carries changes between replicas (PostgreSQL: LISTEN/NOTIFY).
#[async_trait]
trait ChangeBus: Send + Sync {
    async fn publish(&self, change: &Change) -> Result<(), StoreError>;
    async fn subscribe(&self) -> Result<mpsc::Receiver<ChangeEvent>, StoreError>;
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies the embedded migrations of this backend; idempotent.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Cheap round trip used by readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The connection pool right now, for metrics.
    fn pool_stats(&self) -> PoolStats;

    /// Inserts the application and its first secret, together.
    async fn insert_application(&self, app: &NewApplication) -> Result<Application, StoreError>;
    async fn application(&self, id: AppId) -> Result<Option<Application>, StoreError>;
    async fn application_by_client_id(
        &self,
        client_id: &ClientId,
    ) -> Result<Option<Application>, StoreError>;
    async fn list_applications(&self) -> Result<Vec<Application>, StoreError>;
    /// Writes `new` (and updated_at) only while the app's settings still equal `expected`, the
    /// values `new` was derived from, so an edit never undoes one made since it read them.
    /// Never touches the secrets or `disabled`.
    async fn update_application_settings(
        &self,
        id: AppId,
        expected: &AppSettings,
        new: &AppSettings,
        now: DateTime<Utc>,
    ) -> Result<Guarded<Application>, StoreError>;
    /// Every secret the app holds (expired and used-up ones included), oldest first.
    async fn app_secrets(&self, app_id: AppId) -> Result<Vec<AppSecret>, StoreError>;
    /// Adds a secret, unless the app already holds `max` that have not expired by the new
    /// one's `created_at`. Secret writes to one app take turns.
    async fn add_app_secret(
        &self,
        app_id: AppId,
        secret: &NewSecret,
        max: u32,
    ) -> Result<SecretAdded, StoreError>;
    /// Rotation: adds `secret` and ends every other secret of the app at `others_until`
    /// (an earlier expiry stays), or at once (deleting them) when `None`. Only while the
    /// app's secrets are still exactly `expected`, the ones read before: of two rotations
    /// from one read exactly one wins, so no answered secret is unusable.
    async fn rotate_app_secrets(
        &self,
        app_id: AppId,
        expected: &[SecretId],
        secret: &NewSecret,
        others_until: Option<DateTime<Utc>>,
        max: u32,
    ) -> Result<SecretAdded, StoreError>;
    /// Deletes the secret if the app holds it (else `None`). With `tokens`, in the same
    /// transaction, records the marker that revokes every token the secret minted and
    /// revokes the active grants created with them, whose ids it returns.
    async fn revoke_app_secret(
        &self,
        app_id: AppId,
        secret_id: SecretId,
        tokens: Option<&SecretTokens>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<GrantId>>, StoreError>;
    /// Counts one use of a secret, unless it has `max_uses` and has been used that many
    /// times (then false, nothing written). One atomic statement, so replicas sharing the
    /// store share the count exactly.
    async fn spend_secret_use(&self, id: SecretId, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Leases up to `want` tokens of the app's quota in the window starting at `starts_at`,
    /// in one conditional statement that never lets the sum of every replica's leases in
    /// that window pass `limit`. `None` when nothing is left.
    async fn lease_quota(
        &self,
        app_id: AppId,
        window: QuotaWindow,
        starts_at: DateTime<Utc>,
        want: u64,
        limit: u64,
    ) -> Result<Option<QuotaLease>, StoreError>;
    /// Forgets the lease counters of windows that started before `before`.
    async fn purge_quota_windows(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    async fn set_application_disabled(
        &self,
        id: AppId,
        disabled: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Application>, StoreError>;
    async fn delete_application(&self, id: AppId) -> Result<bool, StoreError>;

    /// Fails with `Conflict` if the id, or the (app, owner) pair, is taken.
    async fn insert_enrollment(&self, enrollment: &Enrollment) -> Result<(), StoreError>;
    async fn enrollment(&self, id: EnrollmentId) -> Result<Option<Enrollment>, StoreError>;
    async fn enrollment_for_owner(
        &self,
        app_id: AppId,
        owner_id: &OwnerId,
    ) -> Result<Option<Enrollment>, StoreError>;
    /// Newest first, at most `limit`.
    async fn list_enrollments(
        &self,
        filter: &EnrollmentFilter,
        limit: u32,
    ) -> Result<Vec<Enrollment>, StoreError>;
    /// Each writes one column (and updated_at), so concurrent edits cannot undo each other.
    /// The data is written only while the enrollment is still the one `of` describes (same
    /// id, app, owner and creation), never into a record that reused its id.
    async fn update_enrollment_data(
        &self,
        of: &Enrollment,
        data: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<Option<Enrollment>, StoreError>;
    async fn set_enrollment_disabled(
        &self,
        id: EnrollmentId,
        disabled: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Enrollment>, StoreError>;
    async fn delete_enrollment(&self, id: EnrollmentId) -> Result<bool, StoreError>;

    /// Inserts the grant unless its profile (subject and app, see [`AuthGrant::owner`])
    /// already holds `max_active` active ones (then false, nothing written). Concurrent
    /// creations for one profile cannot both pass. The grant goes when the app or the
    /// enrollment it came from is deleted.
    async fn insert_grant(&self, grant: &AuthGrant, max_active: u32) -> Result<bool, StoreError>;
    async fn grant(&self, id: GrantId) -> Result<Option<AuthGrant>, StoreError>;
    /// The profile's grants, newest first, created strictly before `before` when given.
    async fn list_grants(
        &self,
        profile: &Profile,
        filter: &GrantFilter,
        before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<AuthGrant>, StoreError>;
    /// Sets whichever of name and description are given; false if the profile has no such
    /// grant. Never touches the status, so it cannot undo a concurrent revoke.
    async fn update_grant_text(
        &self,
        id: GrantId,
        profile: &Profile,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// False if the profile has no such grant.
    async fn revoke_grant(&self, id: GrantId, profile: &Profile) -> Result<bool, StoreError>;
    /// Deletes the grant only if it is revoked; false otherwise (missing or still active).
    async fn delete_revoked_grant(
        &self,
        id: GrantId,
        profile: &Profile,
    ) -> Result<bool, StoreError>;

    /// Records `jti` as revoked until `expires_at`; revoking twice is harmless.
    async fn revoke_token(
        &self,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Every revocation whose token has not expired by `now`: (jti, expires_at).
    async fn active_revocations(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError>;
    /// Revocations recorded (`revoked_at`) at or after `since` whose token has not expired
    /// by `now`: (jti, expires_at).
    async fn revocations_since(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError>;
    /// Forgets revocations of tokens that have expired; returns how many.
    async fn purge_expired_revocations(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Moves `last_used_at` forward (never back) for each entry, and adds a secret's uses to
    /// its count, in one transaction.
    async fn record_usage(&self, usage: &[Usage]) -> Result<(), StoreError>;

    /// Writes a batch of audit events (one multi-row insert per few hundred) and adds the
    /// daily counts to what is kept, in one transaction.
    async fn record_audit(
        &self,
        events: &[AuditRecord],
        counts: &[DailyCount],
    ) -> Result<(), StoreError>;
    /// The events every given filter matches, newest first, at most `limit`.
    async fn audit_events(
        &self,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// Forgets events from before `before` and daily counts of days before its date;
    /// returns how many events went.
    async fn purge_audit(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// The credential's days with issued tokens, from `since` on, oldest first.
    async fn daily_counts(
        &self,
        of: CredentialRef,
        since: NaiveDate,
    ) -> Result<Vec<(NaiveDate, u64)>, StoreError>;

    /// Tells every replica (including this one) about a change; a no-op for a store that
    /// only one process uses.
    async fn publish(&self, change: &Change) -> Result<(), StoreError>;
    /// A feed of published changes, or `None` where there are no other replicas.
    async fn subscribe(&self) -> Result<Option<mpsc::Receiver<ChangeEvent>>, StoreError>;

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;
    /// Records that key `kid` signed a token living until `until`, so that once retired it
    /// stays published at least that long. Never moves the recorded time back; an unknown
    /// kid (the configured HS256 secret) changes nothing.
    async fn keep_signing_key_until(
        &self,
        kid: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Run by every replica at start. Makes `current` the current key only if there is none,
    /// and publishes `next` unless a next key of its algorithm already waits (one of another
    /// algorithm never signed anything and is replaced). Candidates not needed are discarded.
    /// Serialized with every other key decision, so replicas starting together agree.
    async fn initialize_signing_keys(
        &self,
        current: &SigningKeyRecord,
        next: &SigningKeyRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Promotes the waiting next key, if it was published at least `min_next_age` before
    /// `now`, retires the current one and publishes `next` in its place; otherwise changes
    /// nothing (but publishes `next` if no key waits). Serialized with every other key
    /// decision, so concurrent rotations never promote a key published a moment ago.
    async fn rotate_signing_keys(
        &self,
        next: &SigningKeyRecord,
        now: DateTime<Utc>,
        min_next_age: TimeDelta,
    ) -> Result<KeyRotation, StoreError>;
}

/// The outcome of a write guarded by values read before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded<T> {
    Written(T),
    /// The values changed since they were read; nothing was written.
    Stale,
    /// No such record.
    Missing,
}

/// The outcome of adding a secret to an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretAdded {
    Added(AppSecret),
    /// The app holds the most unexpired secrets allowed; nothing was written.
    Full,
    /// Rotation only: the app's secrets changed since they were read; nothing was written.
    Stale,
    /// No such app.
    Missing,
}

/// How revoking a secret revokes the tokens it minted: a revocation entry under `marker`
/// (what the tokens' `secret_id` claim maps to) kept until every such token has expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretTokens {
    pub marker: String,
    pub until: DateTime<Utc>,
}

/// What a key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRotation {
    /// This key is current now.
    Rotated { current: String },
    /// Nothing was promoted: no next key has been published long enough. Rotating can
    /// succeed from `retry_at`.
    TooEarly { retry_at: DateTime<Utc> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Default)]
pub struct EnrollmentFilter {
    pub app_id: Option<AppId>,
    pub owner_id: Option<OwnerId>,
}

/// Which audit events to list: each given field must match.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub app_id: Option<AppId>,
    pub secret_id: Option<SecretId>,
    pub grant_id: Option<GrantId>,
    pub subject: Option<String>,
    pub event: Option<String>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Strictly before.
    pub until: Option<DateTime<Utc>>,
    /// Keyset pagination: only events strictly older than this (time, id) position.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// A moment something was used, for `last_used_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageOf {
    App(AppId),
    Enrollment(EnrollmentId),
    Grant(GrantId),
    /// A secret without `max_uses` (the uses of one with it are counted as they happen).
    Secret(SecretId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub of: UsageOf,
    pub at: DateTime<Utc>,
    /// Uses to add to a secret's `use_count`; ignored for anything else.
    pub uses: u64,
}

/// One value, or any of several (`{"$in": [...]}` on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match<T> {
    Exact(T),
    AnyOf(Vec<T>),
}

#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub id: Option<Match<GrantId>>,
    pub name: Option<Match<String>>,
    pub description: Option<Match<String>>,
    pub status: Option<GrantStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The record refers to one that no longer exists (deleted meanwhile).
    #[error("the record it belongs to is gone")]
    Orphan,
    #[error("the input holds characters the store cannot keep")]
    Unrepresentable,
    /// The credential the record would come from was revoked with everything it made.
    #[error("the credential it comes from was revoked")]
    OriginRevoked,
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Connection settings the backends share.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// How often a change feed proves it is alive (PostgreSQL).
    pub feed_heartbeat: Duration,
}

/// Opens the store named by the URL scheme (`sqlite:` or `postgres:`), without migrating.
pub async fn connect(options: &ConnectOptions) -> Result<DynStore, StoreError> {
    if options.url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::connect(options).await?))
    } else if options.url.starts_with("postgres:") || options.url.starts_with("postgresql:") {
        Ok(Arc::new(postgres::connect(options)?))
    } else {
        Err(StoreError::Internal(
            "database.url must start with sqlite: or postgres:".into(),
        ))
    }
}
