//! One place that applies changes to what this replica remembers, and tells the others.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
};

use super::{
    AuthorityError, clock::SharedClock, credentials::CredentialCache, fresh::Generations,
    keys::KeyRing, records::Records, revocations::RevocationList,
};
use chrono::{DateTime, Utc};

use crate::{
    domain::{AppId, Change, ChangeEvent, EnrollmentId, GrantId},
    store::DynStore,
};

/// Whether this replica can trust its change feed. Cheap to hold and to read, so caches can
/// shorten what they remember while it cannot.
#[derive(Debug, Default)]
pub struct FeedHealth {
    /// The feed is down or silent.
    lost: AtomicBool,
    /// When it was last lost (unix milliseconds).
    lost_at_ms: AtomicI64,
    /// How many times the feed has been lost since start.
    interruptions: AtomicU64,
    /// The last loss whose missed changes a resync has since covered: one that began after
    /// the feed was listening again. Behind while below `interruptions`. A counter, not a
    /// flag, so that a resync finishing after a newer loss cannot mark that one covered.
    caught_up: AtomicU64,
}

impl FeedHealth {
    /// True while changes made on other replicas may go unheard here.
    pub fn is_degraded(&self) -> bool {
        self.lost.load(Ordering::Acquire) || self.is_behind()
    }

    fn is_behind(&self) -> bool {
        self.caught_up.load(Ordering::Acquire) < self.interruptions.load(Ordering::Acquire)
    }

    /// Since when changes may have gone unheard, while they may.
    pub fn degraded_since(&self) -> Option<DateTime<Utc>> {
        if self.is_degraded() {
            DateTime::from_timestamp_millis(self.lost_at_ms.load(Ordering::Acquire))
        } else {
            None
        }
    }

    /// How many times the feed has been lost since start.
    pub fn interruptions(&self) -> u64 {
        self.interruptions.load(Ordering::Acquire)
    }

    fn mark_lost(&self, at: DateTime<Utc>) {
        self.lost_at_ms
            .store(at.timestamp_millis(), Ordering::Release);
        self.lost.store(true, Ordering::Release);
        self.interruptions.fetch_add(1, Ordering::AcqRel);
    }

    #[cfg(test)]
    pub(crate) fn lose_at(&self, at: DateTime<Utc>) {
        self.mark_lost(at);
    }
}

pub struct ChangeHub {
    store: DynStore,
    clock: SharedClock,
    generations: Arc<Generations>,
    credentials: Arc<CredentialCache>,
    records: Arc<Records>,
    revocations: Arc<RevocationList>,
    /// Set once the key ring exists; the CLI runs without one.
    keys: OnceLock<Arc<KeyRing>>,
    health: Arc<FeedHealth>,
}

impl ChangeHub {
    pub fn new(
        store: DynStore,
        clock: SharedClock,
        generations: Arc<Generations>,
        credentials: Arc<CredentialCache>,
        records: Arc<Records>,
        revocations: Arc<RevocationList>,
    ) -> Self {
        Self {
            store,
            clock,
            credentials,
            records,
            revocations,
            keys: OnceLock::new(),
            health: generations.feed_health(),
            generations,
        }
    }

    pub fn attach_keys(&self, keys: Arc<KeyRing>) {
        let _ = self.keys.set(keys);
    }

    /// Applies `change` here at once, then tells the other replicas. If telling them fails,
    /// their caches' TTLs and periodic reloads still bound how long they lag.
    pub async fn announce(&self, change: Change) {
        self.apply(&change).await;
        if let Err(e) = self.store.publish(&change).await {
            tracing::warn!(error = %e, ?change, "could not announce a change to other replicas");
        }
    }

    pub async fn handle(&self, event: ChangeEvent) {
        match event {
            ChangeEvent::Changed(change) => self.apply(&change).await,
            ChangeEvent::Lost => {
                self.health.mark_lost(self.clock.now());
                crate::telemetry::metrics::change_feed_lost();
                self.resync().await;
            }
            ChangeEvent::Resumed => {
                crate::telemetry::metrics::change_feed_up();
                self.health.lost.store(false, Ordering::Release);
                // Degraded until what was missed while lost has been reloaded.
                self.catch_up().await;
            }
        }
    }

    /// Whether changes made on other replicas may go unheard here right now.
    pub fn feed_degraded(&self) -> bool {
        self.health.is_degraded()
    }

    pub fn feed_health(&self) -> Arc<FeedHealth> {
        self.health.clone()
    }

    async fn apply(&self, change: &Change) {
        match change {
            // Verified secrets are stamped with their client's generation, which this bumps.
            Change::App { client_id, id } => {
                self.records.app_changed(client_id, id.map(AppId));
            }
            Change::Enrollment { id } => self.records.enrollment_changed(EnrollmentId(*id)),
            Change::Grant { id } => self.records.grant_changed(GrantId(*id)),
            Change::Revoked { jti, exp } => self.revocations.insert(jti, *exp),
            Change::Keys => {
                if let Some(keys) = self.keys.get()
                    && let Err(e) = keys.reload().await
                {
                    tracing::error!(error = %e, "could not reload signing keys");
                }
            }
        }
    }

    /// Reloads what is held in full (all revocations, the keys), then forgets everything
    /// cached; used when change notices may have been lost. If the store cannot be read,
    /// the caches are kept: serving warm requests through a database outage is worth more
    /// than forgetting, and their lifetimes still bound them. True if the reload succeeded.
    pub async fn resync(&self) -> bool {
        let now = self.clock.now();
        let revocations = self.revocations.load_all(&self.store, now).await;
        let keys = self.reload_keys().await;
        if let Err(e) = &revocations {
            self.report("could not reload revocations", e);
        }
        let reloaded = revocations.is_ok() && keys;
        if reloaded {
            self.generations.bump_all();
            self.credentials.invalidate_all();
        }
        reloaded
    }

    /// The periodic backstop for missed notices: reads the revocations recorded since the
    /// last read and reloads the keys. If the resync owed since the feed came back has not
    /// succeeded yet, it is tried again instead.
    pub async fn reload(&self) {
        let health = &self.health;
        if health.is_behind() && !health.lost.load(Ordering::Acquire) {
            self.catch_up().await;
            return;
        }
        let now = self.clock.now();
        if let Err(e) = self.revocations.load_recent(&self.store, now).await {
            self.report("could not reload revocations", &e);
        }
        self.reload_keys().await;
    }

    /// Resyncs, and if that worked, marks covered every loss counted before it began.
    async fn catch_up(&self) {
        let covers = self.health.interruptions();
        if self.resync().await {
            self.health.caught_up.fetch_max(covers, Ordering::AcqRel);
        }
    }

    async fn reload_keys(&self) -> bool {
        let Some(keys) = self.keys.get() else {
            return true;
        };
        match keys.reload().await {
            Ok(_) => true,
            Err(e) => {
                self.report("could not reload signing keys", &e);
                false
            }
        }
    }

    /// A failed reload is worth a warning, except while the feed is lost: that outage has
    /// been reported once already, and degraded reloads retry every second.
    fn report(&self, what: &str, e: &AuthorityError) {
        if self.health.lost.load(Ordering::Acquire) {
            tracing::debug!(error = %e, "{what}");
        } else {
            tracing::warn!(error = %e, "{what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resync_that_began_before_a_new_loss_does_not_cover_it() {
        let health = FeedHealth::default();
        let t = Utc::now();
        health.mark_lost(t);
        health.lost.store(false, Ordering::Release);
        assert!(
            health.is_degraded(),
            "behind until a resync covers the loss"
        );
        // A resync starts, covering the losses counted so far …
        let covers = health.interruptions();
        // … the feed is lost again and back before it finishes …
        health.mark_lost(t);
        health.lost.store(false, Ordering::Release);
        // … and it succeeds: the newer loss is still owed its own resync.
        health.caught_up.fetch_max(covers, Ordering::AcqRel);
        assert!(health.is_degraded());
        health
            .caught_up
            .fetch_max(health.interruptions(), Ordering::AcqRel);
        assert!(!health.is_degraded());
        assert_eq!(health.degraded_since(), None);
    }
}
