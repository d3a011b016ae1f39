//! A store that delegates to the real one, with hooks a test controls: fail or hang every
//! call (an outage seen from inside the process), or pause one named call right before or
//! after it reaches the database, so a race can be forced into one exact interleaving
//! instead of hoped for with sleeps.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use portcullis::{
    domain::{
        AppId, AppSecret, AppSettings, Application, AuditRecord, AuthGrant, Change, ChangeEvent,
        ClientId, CredentialRef, DailyCount, Enrollment, EnrollmentId, GrantId, NewApplication,
        NewSecret, OwnerId, Profile, QuotaWindow, SecretId, SigningKeyRecord,
    },
    store::{
        AuditFilter, DynStore, EnrollmentFilter, GrantFilter, Guarded, KeyRotation, PoolStats,
        QuotaLease, SecretAdded, SecretTokens, Store, StoreError, Usage,
    },
};
use serde_json::Value;
use tokio::sync::{Barrier, mpsc, oneshot};

/// How every call behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    Healthy = 0,
    /// Every call fails as an unreachable database does.
    Down = 1,
    /// Every call hangs for 30 s before going through.
    Hanging = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum When {
    Before,
    After,
}

/// One armed pause: the next call of a method stops there until released.
struct Armed {
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// Callers still to arrive at a gathering, and the barrier they wait at together.
struct Gathering {
    missing: usize,
    barrier: Arc<Barrier>,
}

/// What a test holds to steer an [`InterceptStore`].
#[derive(Default)]
pub struct Hooks {
    health: AtomicU8,
    armed: Mutex<HashMap<(&'static str, When), Armed>>,
    gatherings: Mutex<HashMap<(&'static str, When), Gathering>>,
}

/// A call stopped at a pause point.
pub struct Paused {
    reached: Option<oneshot::Receiver<()>>,
    release: Option<oneshot::Sender<()>>,
}

impl Paused {
    /// Waits until a call has arrived at the pause point (and is now held there).
    pub async fn reached(&mut self) {
        if let Some(reached) = self.reached.take() {
            tokio::time::timeout(Duration::from_secs(30), reached)
                .await
                .expect("the paused call was never made")
                .expect("the store was dropped");
        }
    }

    /// Lets the held call go on.
    pub fn release(mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
    }
}

impl Hooks {
    pub fn set_health(&self, health: Health) {
        self.health.store(health as u8, Ordering::SeqCst);
    }

    /// Arms a pause: the next call of `method` stops `when` it reaches the database, until
    /// the returned handle is released (or dropped).
    pub fn pause(&self, method: &'static str, when: When) -> Paused {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        self.armed.lock().unwrap().insert(
            (method, when),
            Armed {
                reached: reached_tx,
                release: release_rx,
            },
        );
        Paused {
            reached: Some(reached_rx),
            release: Some(release_tx),
        }
    }

    /// Arms a gathering: the next `callers` calls of `method` each stop `when` they reach
    /// the database until all of them have arrived, then go on together, e.g. so that
    /// several writers have all read before any of them writes. Callers wait at most 30 s,
    /// then fail the test.
    pub fn gather(&self, method: &'static str, when: When, callers: usize) {
        self.gatherings.lock().unwrap().insert(
            (method, when),
            Gathering {
                missing: callers,
                barrier: Arc::new(Barrier::new(callers)),
            },
        );
    }

    async fn checkpoint(&self, method: &'static str, when: When) {
        let barrier = {
            let mut gatherings = self.gatherings.lock().unwrap();
            let gathering = gatherings.get_mut(&(method, when));
            let barrier = gathering.map(|g| {
                g.missing -= 1;
                (g.missing, g.barrier.clone())
            });
            if let Some((0, _)) = barrier {
                gatherings.remove(&(method, when));
            }
            barrier.map(|(_, b)| b)
        };
        if let Some(barrier) = barrier {
            tokio::time::timeout(Duration::from_secs(30), barrier.wait())
                .await
                .unwrap_or_else(|_| panic!("not every caller of {method} arrived within 30 s"));
        }
        let armed = self.armed.lock().unwrap().remove(&(method, when));
        if let Some(armed) = armed {
            let _ = armed.reached.send(());
            let _ = armed.release.await;
        }
    }

    async fn gate(&self) -> Result<(), StoreError> {
        match self.health.load(Ordering::SeqCst) {
            x if x == Health::Down as u8 => Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
            x if x == Health::Hanging as u8 => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Delegates every call to `inner`, through the [`Hooks`].
pub struct InterceptStore {
    inner: DynStore,
    hooks: Arc<Hooks>,
}

impl InterceptStore {
    /// Wraps `inner`; the hooks steer it.
    pub fn wrap(inner: DynStore) -> (DynStore, Arc<Hooks>) {
        let hooks = Arc::new(Hooks::default());
        (Self::wrap_with(inner, hooks.clone()), hooks)
    }

    /// Wraps `inner` with hooks shared with other stores, e.g. several replicas' stores.
    pub fn wrap_with(inner: DynStore, hooks: Arc<Hooks>) -> DynStore {
        Arc::new(Self { inner, hooks })
    }

    async fn around<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.hooks.gate().await?;
        self.hooks.checkpoint(method, When::Before).await;
        let out = call.await;
        self.hooks.checkpoint(method, When::After).await;
        out
    }
}

#[async_trait]
impl Store for InterceptStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.around("migrate", self.inner.migrate()).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.around("ping", self.inner.ping()).await
    }
    fn pool_stats(&self) -> PoolStats {
        self.inner.pool_stats()
    }
    async fn insert_application(&self, app: &NewApplication) -> Result<Application, StoreError> {
        self.around("insert_application", self.inner.insert_application(app))
            .await
    }
    async fn application(&self, id: AppId) -> Result<Option<Application>, StoreError> {
        self.around("application", self.inner.application(id)).await
    }
    async fn application_by_client_id(
        &self,
        client_id: &ClientId,
    ) -> Result<Option<Application>, StoreError> {
        self.around(
            "application_by_client_id",
            self.inner.application_by_client_id(client_id),
        )
        .await
    }
    async fn list_applications(&self) -> Result<Vec<Application>, StoreError> {
        self.around("list_applications", self.inner.list_applications())
            .await
    }
    async fn update_application_settings(
        &self,
        id: AppId,
        expected: &AppSettings,
        new: &AppSettings,
        now: DateTime<Utc>,
    ) -> Result<Guarded<Application>, StoreError> {
        self.around(
            "update_application_settings",
            self.inner
                .update_application_settings(id, expected, new, now),
        )
        .await
    }
    async fn app_secrets(&self, app_id: AppId) -> Result<Vec<AppSecret>, StoreError> {
        self.around("app_secrets", self.inner.app_secrets(app_id))
            .await
    }
    async fn add_app_secret(
        &self,
        app_id: AppId,
        secret: &NewSecret,
        max: u32,
    ) -> Result<SecretAdded, StoreError> {
        self.around(
            "add_app_secret",
            self.inner.add_app_secret(app_id, secret, max),
        )
        .await
    }
    async fn rotate_app_secrets(
        &self,
        app_id: AppId,
        expected: &[SecretId],
        secret: &NewSecret,
        others_until: Option<DateTime<Utc>>,
        max: u32,
    ) -> Result<SecretAdded, StoreError> {
        self.around(
            "rotate_app_secrets",
            self.inner
                .rotate_app_secrets(app_id, expected, secret, others_until, max),
        )
        .await
    }
    async fn revoke_app_secret(
        &self,
        app_id: AppId,
        secret_id: SecretId,
        tokens: Option<&SecretTokens>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<GrantId>>, StoreError> {
        self.around(
            "revoke_app_secret",
            self.inner.revoke_app_secret(app_id, secret_id, tokens, now),
        )
        .await
    }
    async fn spend_secret_use(&self, id: SecretId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.around("spend_secret_use", self.inner.spend_secret_use(id, now))
            .await
    }
    async fn lease_quota(
        &self,
        app_id: AppId,
        window: QuotaWindow,
        starts_at: DateTime<Utc>,
        want: u64,
        limit: u64,
    ) -> Result<Option<QuotaLease>, StoreError> {
        self.around(
            "lease_quota",
            self.inner
                .lease_quota(app_id, window, starts_at, want, limit),
        )
        .await
    }
    async fn purge_quota_windows(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.around(
            "purge_quota_windows",
            self.inner.purge_quota_windows(before),
        )
        .await
    }
    async fn set_application_disabled(
        &self,
        id: AppId,
        disabled: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Application>, StoreError> {
        self.around(
            "set_application_disabled",
            self.inner.set_application_disabled(id, disabled, now),
        )
        .await
    }
    async fn delete_application(&self, id: AppId) -> Result<bool, StoreError> {
        self.around("delete_application", self.inner.delete_application(id))
            .await
    }
    async fn insert_enrollment(&self, e: &Enrollment) -> Result<(), StoreError> {
        self.around("insert_enrollment", self.inner.insert_enrollment(e))
            .await
    }
    async fn enrollment(&self, id: EnrollmentId) -> Result<Option<Enrollment>, StoreError> {
        self.around("enrollment", self.inner.enrollment(id)).await
    }
    async fn enrollment_for_owner(
        &self,
        app_id: AppId,
        owner_id: &OwnerId,
    ) -> Result<Option<Enrollment>, StoreError> {
        self.around(
            "enrollment_for_owner",
            self.inner.enrollment_for_owner(app_id, owner_id),
        )
        .await
    }
    async fn list_enrollments(
        &self,
        filter: &EnrollmentFilter,
        limit: u32,
    ) -> Result<Vec<Enrollment>, StoreError> {
        self.around(
            "list_enrollments",
            self.inner.list_enrollments(filter, limit),
        )
        .await
    }
    async fn update_enrollment_data(
        &self,
        of: &Enrollment,
        data: &Value,
        now: DateTime<Utc>,
    ) -> Result<Option<Enrollment>, StoreError> {
        self.around(
            "update_enrollment_data",
            self.inner.update_enrollment_data(of, data, now),
        )
        .await
    }
    async fn set_enrollment_disabled(
        &self,
        id: EnrollmentId,
        disabled: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Enrollment>, StoreError> {
        self.around(
            "set_enrollment_disabled",
            self.inner.set_enrollment_disabled(id, disabled, now),
        )
        .await
    }
    async fn delete_enrollment(&self, id: EnrollmentId) -> Result<bool, StoreError> {
        self.around("delete_enrollment", self.inner.delete_enrollment(id))
            .await
    }
    async fn insert_grant(&self, g: &AuthGrant, max_active: u32) -> Result<bool, StoreError> {
        self.around("insert_grant", self.inner.insert_grant(g, max_active))
            .await
    }
    async fn grant(&self, id: GrantId) -> Result<Option<AuthGrant>, StoreError> {
        self.around("grant", self.inner.grant(id)).await
    }
    async fn list_grants(
        &self,
        profile: &Profile,
        filter: &GrantFilter,
        before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<AuthGrant>, StoreError> {
        self.around(
            "list_grants",
            self.inner.list_grants(profile, filter, before, limit),
        )
        .await
    }
    async fn update_grant_text(
        &self,
        id: GrantId,
        profile: &Profile,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.around(
            "update_grant_text",
            self.inner.update_grant_text(id, profile, name, description),
        )
        .await
    }
    async fn revoke_grant(&self, id: GrantId, profile: &Profile) -> Result<bool, StoreError> {
        self.around("revoke_grant", self.inner.revoke_grant(id, profile))
            .await
    }
    async fn delete_revoked_grant(
        &self,
        id: GrantId,
        profile: &Profile,
    ) -> Result<bool, StoreError> {
        self.around(
            "delete_revoked_grant",
            self.inner.delete_revoked_grant(id, profile),
        )
        .await
    }
    async fn revoke_token(
        &self,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.around(
            "revoke_token",
            self.inner.revoke_token(jti, expires_at, now),
        )
        .await
    }
    async fn active_revocations(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        self.around("active_revocations", self.inner.active_revocations(now))
            .await
    }
    async fn revocations_since(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        self.around(
            "revocations_since",
            self.inner.revocations_since(since, now),
        )
        .await
    }
    async fn purge_expired_revocations(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.around(
            "purge_expired_revocations",
            self.inner.purge_expired_revocations(now),
        )
        .await
    }
    async fn record_usage(&self, usage: &[Usage]) -> Result<(), StoreError> {
        self.around("record_usage", self.inner.record_usage(usage))
            .await
    }
    async fn record_audit(
        &self,
        events: &[AuditRecord],
        counts: &[DailyCount],
    ) -> Result<(), StoreError> {
        self.around("record_audit", self.inner.record_audit(events, counts))
            .await
    }
    async fn audit_events(
        &self,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.around("audit_events", self.inner.audit_events(filter, limit))
            .await
    }
    async fn purge_audit(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.around("purge_audit", self.inner.purge_audit(before))
            .await
    }
    async fn daily_counts(
        &self,
        of: CredentialRef,
        since: NaiveDate,
    ) -> Result<Vec<(NaiveDate, u64)>, StoreError> {
        self.around("daily_counts", self.inner.daily_counts(of, since))
            .await
    }
    async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        self.around("publish", self.inner.publish(change)).await
    }
    async fn subscribe(&self) -> Result<Option<mpsc::Receiver<ChangeEvent>>, StoreError> {
        self.inner.subscribe().await
    }
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.around("signing_keys", self.inner.signing_keys()).await
    }
    async fn keep_signing_key_until(
        &self,
        kid: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.around(
            "keep_signing_key_until",
            self.inner.keep_signing_key_until(kid, until),
        )
        .await
    }
    async fn initialize_signing_keys(
        &self,
        current: &SigningKeyRecord,
        next: &SigningKeyRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.around(
            "initialize_signing_keys",
            self.inner.initialize_signing_keys(current, next, now),
        )
        .await
    }
    async fn rotate_signing_keys(
        &self,
        next: &SigningKeyRecord,
        now: DateTime<Utc>,
        min_next_age: TimeDelta,
    ) -> Result<KeyRotation, StoreError> {
        self.around(
            "rotate_signing_keys",
            self.inner.rotate_signing_keys(next, now, min_next_age),
        )
        .await
    }
}
