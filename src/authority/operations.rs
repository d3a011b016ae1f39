//! The front door's other rooms: what operators do (admin API and CLI), what a profile does
//! with its auth grants, and the housekeeping a running replica needs.

use std::{sync::Arc, time::Duration};

use chrono::{Days, NaiveDate};

use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    Authority, AuthorityError, Principal,
    app_secrets::{CreateSecret, CreatedSecret, RevokedSecret},
    apps::{CreateApplication, CreatedApplication, UpdateApplication},
    audit::{self, AuditPage, AuditQuery},
    changes::FeedHealth,
    enrollments::{CreateEnrollment, Created},
    grants::{CreateGrant, ListGrants},
    keys::KeyInfo,
    revocations,
    tokens::IssuedToken,
};
use crate::{
    domain::{
        AppId, AppSecret, Application, AuthGrant, Change, ChangeEvent, CredentialRef, Enrollment,
        EnrollmentId, GrantId, SecretId, SecretState,
    },
    store::EnrollmentFilter,
    telemetry::metrics,
};

/// Applications, enrollments and keys, as the operator manages them.
impl Authority {
    pub async fn create_app(
        &self,
        request: CreateApplication,
    ) -> Result<CreatedApplication, AuthorityError> {
        self.apps.create(request).await
    }

    pub async fn apps(&self) -> Result<Vec<Application>, AuthorityError> {
        self.apps.list().await
    }

    pub async fn app(&self, id: AppId) -> Result<Application, AuthorityError> {
        self.apps.get(id).await
    }

    pub async fn update_app(
        &self,
        id: AppId,
        changes: UpdateApplication,
    ) -> Result<Application, AuthorityError> {
        self.apps.update(id, changes).await
    }

    pub async fn set_app_disabled(
        &self,
        id: AppId,
        disabled: bool,
    ) -> Result<Application, AuthorityError> {
        self.apps.set_disabled(id, disabled).await
    }

    pub async fn delete_app(&self, id: AppId) -> Result<(), AuthorityError> {
        self.apps.delete(id).await
    }

    /// A new secret, shown this once; the app's other secrets work for `grace` more.
    pub async fn rotate_app_secret(
        &self,
        id: AppId,
        grace: Duration,
    ) -> Result<CreatedApplication, AuthorityError> {
        self.secrets.rotate(&self.apps, id, grace).await
    }

    /// Another secret for the app, shown this once.
    pub async fn create_app_secret(
        &self,
        id: AppId,
        request: CreateSecret,
    ) -> Result<CreatedSecret, AuthorityError> {
        self.secrets.create(&self.apps, id, request).await
    }

    /// The app's secrets (never the secrets themselves), oldest first.
    pub async fn app_secrets(
        &self,
        id: AppId,
    ) -> Result<Vec<(AppSecret, SecretState)>, AuthorityError> {
        self.secrets.list(&self.apps, id).await
    }

    /// Revokes one of the app's secrets, and with `revoke_tokens` every token it minted.
    pub async fn revoke_app_secret(
        &self,
        id: AppId,
        secret_id: SecretId,
        revoke_tokens: bool,
    ) -> Result<RevokedSecret, AuthorityError> {
        self.secrets
            .revoke(&self.apps, id, secret_id, revoke_tokens)
            .await
    }

    pub async fn create_enrollment(
        &self,
        request: CreateEnrollment,
    ) -> Result<Created, AuthorityError> {
        self.enrollments.create(request).await
    }

    pub async fn enrollments(
        &self,
        filter: &EnrollmentFilter,
    ) -> Result<Vec<Enrollment>, AuthorityError> {
        self.enrollments.list(filter).await
    }

    pub async fn enrollment(&self, id: EnrollmentId) -> Result<Enrollment, AuthorityError> {
        self.enrollments.get(id).await
    }

    pub async fn set_enrollment_disabled(
        &self,
        id: EnrollmentId,
        disabled: bool,
    ) -> Result<Enrollment, AuthorityError> {
        self.enrollments.set_disabled(id, disabled).await
    }

    pub async fn delete_enrollment(&self, id: EnrollmentId) -> Result<(), AuthorityError> {
        self.enrollments.delete(id).await
    }

    /// Every signing key with its state.
    pub fn signing_keys(&self) -> Vec<KeyInfo> {
        self.keys.keys()
    }

    /// The JWK Set document.
    pub fn jwks(&self) -> Arc<Value> {
        self.keys.jwks()
    }

    /// Rotates the signing keys and tells every replica to reload them.
    pub async fn rotate_keys(&self) -> Result<KeyInfo, AuthorityError> {
        let current = self.keys.rotate().await?;
        self.changes.announce(Change::Keys).await;
        Ok(current)
    }
}

/// Auth grants, as the profile a bearer token speaks for manages them.
impl Authority {
    pub async fn create_grant(
        &self,
        principal: &Principal,
        request: CreateGrant,
    ) -> Result<GrantId, AuthorityError> {
        self.grants.create(principal, request).await
    }

    pub async fn grant(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<Arc<AuthGrant>, AuthorityError> {
        self.grants.get(principal, id).await
    }

    pub async fn list_grants(
        &self,
        principal: &Principal,
        request: ListGrants,
    ) -> Result<Vec<AuthGrant>, AuthorityError> {
        self.grants.list(principal, request).await
    }

    /// True if a name or description was set; false when nothing updatable was sent.
    pub async fn update_grant(
        &self,
        principal: &Principal,
        id: &str,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<bool, AuthorityError> {
        self.grants.update(principal, id, name, description).await
    }

    pub async fn revoke_grant(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(), AuthorityError> {
        self.grants.revoke(principal, id).await
    }

    pub async fn delete_grant(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(), AuthorityError> {
        self.grants.delete(principal, id).await
    }

    pub async fn grant_api_token(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<IssuedToken, AuthorityError> {
        self.grants.api_token(principal, id, &self.tokens).await
    }
}

/// The audit trail and usage counts, as the operator reads them.
impl Authority {
    /// One page of audit events, newest first.
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<AuditPage, AuthorityError> {
        let (filter, limit) = query.parse()?;
        // One more than asked tells whether another page follows.
        let mut events = self.store.audit_events(&filter, limit + 1).await?;
        let more = events.len() > limit as usize;
        events.truncate(limit as usize);
        let next_cursor = more
            .then(|| events.last().map(audit::cursor_after))
            .flatten();
        Ok(AuditPage {
            events,
            next_cursor,
        })
    }

    /// Tokens issued with an app, one of its secrets, or a grant on each of the last `days`
    /// UTC days (today included), oldest first; days without any are zero.
    pub async fn usage(
        &self,
        of: CredentialRef,
        days: Option<u32>,
    ) -> Result<Vec<(NaiveDate, u64)>, AuthorityError> {
        let days = days.unwrap_or(audit::USAGE_DEFAULT_DAYS);
        if !(1..=audit::USAGE_MAX_DAYS).contains(&days) {
            return Err(AuthorityError::invalid(
                "days",
                super::Rule::Range {
                    min: 1,
                    max: u64::from(audit::USAGE_MAX_DAYS),
                    unit: "",
                },
            ));
        }
        match of {
            CredentialRef::App(id) => {
                self.apps.get(id).await?;
            }
            // Checked with its app by `secret_usage`.
            CredentialRef::Secret(_) => {}
            CredentialRef::Grant(id) => {
                self.store
                    .grant(id)
                    .await?
                    .ok_or(AuthorityError::NotFound)?;
            }
        }
        let today = self.clock.now().date_naive();
        let first = today
            .checked_sub_days(Days::new(u64::from(days - 1)))
            .ok_or_else(|| AuthorityError::internal("date out of range"))?;
        let counted = self.store.daily_counts(of, first).await?;
        Ok(first
            .iter_days()
            .take(days as usize)
            .map(|day| {
                let n = counted
                    .iter()
                    .find(|(d, _)| *d == day)
                    .map_or(0, |(_, n)| *n);
                (day, n)
            })
            .collect())
    }

    /// [`Self::usage`] of one secret of an app (`NotFound` unless the app holds it).
    pub async fn secret_usage(
        &self,
        app_id: AppId,
        secret_id: SecretId,
        days: Option<u32>,
    ) -> Result<Vec<(NaiveDate, u64)>, AuthorityError> {
        let held = self.store.app_secrets(app_id).await?;
        if !held.iter().any(|s| s.id == secret_id) {
            return Err(AuthorityError::NotFound);
        }
        self.usage(CredentialRef::Secret(secret_id), days).await
    }
}

/// What a running replica does besides answering requests.
impl Authority {
    /// The store's feed of other replicas' changes, or `None` where there are none.
    pub async fn subscribe_changes(
        &self,
    ) -> Result<Option<mpsc::Receiver<ChangeEvent>>, AuthorityError> {
        let feed = self.store.subscribe().await?;
        if feed.is_some() {
            metrics::change_feed_up();
        }
        Ok(feed)
    }

    /// Applies what the change feed delivered.
    pub async fn handle_change(&self, event: ChangeEvent) {
        self.changes.handle(event).await;
    }

    /// Whether this replica trusts its change feed right now.
    pub fn feed_health(&self) -> Arc<FeedHealth> {
        self.changes.feed_health()
    }

    /// Reads what the feed may have missed (revocations, keys); run often while it is lost.
    pub async fn catch_up(&self) {
        self.changes.reload().await;
    }

    /// Periodic housekeeping: idle rate-limit state dropped, expired revocations purged,
    /// batched usage written, and a catch-up as a backstop for missed notices.
    pub async fn maintain(&self) {
        self.credentials.forget_idle();
        let now = self.clock.now();
        match self
            .store
            .purge_expired_revocations(revocations::horizon(now))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired revocations purged"),
            Err(e) => tracing::warn!(error = %e, "could not purge expired revocations"),
        }
        match self.quotas.forget_ended(now).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "ended quota windows purged"),
            Err(e) => tracing::warn!(error = %e, "could not purge ended quota windows"),
        }
        if let Err(e) = self.usage.flush(&self.store).await {
            tracing::warn!(error = %e, "could not record usage");
        }
        if self.audit.purge_due() {
            match self.purge_audit().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(purged = n, "audit events past retention purged"),
                Err(e) => tracing::warn!(error = %e, "could not purge the audit trail"),
            }
        }
        self.catch_up().await;
    }

    /// Writes the `last_used_at` times gathered since the last flush.
    pub async fn flush_usage(&self) -> Result<usize, AuthorityError> {
        self.usage.flush(&self.store).await
    }

    /// Writes the audit events gathered since the last batch (tests, shutdown, the CLI).
    pub async fn flush_audit(&self) -> Result<usize, AuthorityError> {
        self.audit.flush(&self.store).await
    }

    /// Writes audit batches until `stop` (see [`audit::AuditTrail::run_flusher`]).
    pub async fn run_audit_flusher(&self, stop: impl Future<Output = ()>) {
        self.audit.run_flusher(&self.store, stop).await;
    }

    /// Deletes audit events past `audit.retention_days`; returns how many.
    pub async fn purge_audit(&self) -> Result<u64, AuthorityError> {
        self.audit.purge(&self.store).await
    }

    /// State-describing gauges for a metrics scrape.
    pub fn metrics_snapshot(&self) -> metrics::Snapshot {
        let pool = self.store.pool_stats();
        metrics::Snapshot {
            argon2_queue_depth: self.credentials.hash_queue_depth(),
            argon2_runs: self.credentials.hash_runs(),
            pool_size: pool.size,
            pool_idle: pool.idle,
            pool_max: pool.max,
        }
    }

    /// Whether the store answers; readiness follows this.
    pub async fn store_ready(&self) -> bool {
        self.store.ping().await.is_ok()
    }
}
