//! One place that applies changes to what this replica remembers, and tells the others.

use std::sync::{Arc, OnceLock};

use super::{
    clock::SharedClock, credentials::CredentialCache, fresh::Generations, keys::KeyRing,
    records::Records, revocations::RevocationList,
};
use crate::{
    domain::{AppId, Change, ChangeEvent, EnrollmentId, GrantId},
    store::DynStore,
};

pub struct ChangeHub {
    store: DynStore,
    clock: SharedClock,
    generations: Arc<Generations>,
    credentials: Arc<CredentialCache>,
    records: Arc<Records>,
    revocations: Arc<RevocationList>,
    /// Set once the key ring exists; the CLI runs without one.
    keys: OnceLock<Arc<KeyRing>>,
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
            generations,
            credentials,
            records,
            revocations,
            keys: OnceLock::new(),
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
            ChangeEvent::Missed => self.resync().await,
        }
    }

    async fn apply(&self, change: &Change) {
        match change {
            // Verified secrets are stamped with their client's generation, which this bumps.
            Change::App { client_id, id } => {
                self.records.app_changed(client_id, id.map(AppId));
            }
            Change::Enrollment { id } => self.records.enrollment_changed(EnrollmentId(*id)),
            Change::Grant { id } => self.records.grant_changed(GrantId(*id)),
            Change::Revoked { jti, exp } => self.revocations.insert(jti.clone(), *exp),
            Change::Keys => {
                if let Some(keys) = self.keys.get()
                    && let Err(e) = keys.reload().await
                {
                    tracing::error!(error = %e, "could not reload signing keys");
                }
            }
        }
    }

    /// Forgets everything cached and reloads what is held in full; used when change notices
    /// may have been lost, and periodically as a backstop.
    pub async fn resync(&self) {
        self.generations.bump_all();
        self.credentials.invalidate_all();
        self.reload().await;
    }

    /// Reloads the revocation list and the keys from the store.
    pub async fn reload(&self) {
        if let Err(e) = self.revocations.reload(&self.store, self.clock.now()).await {
            tracing::warn!(error = %e, "could not reload revocations");
        }
        if let Some(keys) = self.keys.get()
            && let Err(e) = keys.reload().await
        {
            tracing::warn!(error = %e, "could not reload signing keys");
        }
    }
}
