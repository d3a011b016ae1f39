//! One place that applies changes to what this replica remembers, and tells the others.

use std::sync::{Arc, OnceLock};

use super::{
    clock::SharedClock,
    credentials::CredentialCache,
    keys::KeyRing,
    revocations::RevocationList,
    status::{StatusCache, StatusKey},
};
use crate::{
    domain::{Change, ChangeEvent, EnrollmentId, GrantId},
    store::DynStore,
};

pub struct ChangeHub {
    store: DynStore,
    clock: SharedClock,
    credentials: Arc<CredentialCache>,
    status: Arc<StatusCache>,
    revocations: Arc<RevocationList>,
    /// Set once the key ring exists; the CLI runs without one.
    keys: OnceLock<Arc<KeyRing>>,
}

impl ChangeHub {
    pub fn new(
        store: DynStore,
        clock: SharedClock,
        credentials: Arc<CredentialCache>,
        status: Arc<StatusCache>,
        revocations: Arc<RevocationList>,
    ) -> Self {
        Self {
            store,
            clock,
            credentials,
            status,
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
            Change::App { client_id } => {
                self.credentials.invalidate_client(client_id);
                // Enrollment standings depend on their app's; app changes are rare.
                self.status.invalidate_all();
            }
            Change::Enrollment { id } => {
                self.status
                    .invalidate(&StatusKey::Enrollment(EnrollmentId(*id)));
            }
            Change::Grant { id } => self.status.invalidate(&StatusKey::Grant(GrantId(*id))),
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
    /// may have been lost.
    pub async fn resync(&self) {
        let now = self.clock.now();
        self.credentials.invalidate_all();
        self.status.invalidate_all();
        if let Err(e) = self.revocations.load_all(&self.store, now).await {
            tracing::warn!(error = %e, "could not reload revocations");
        }
        self.reload_keys().await;
    }

    /// The periodic backstop for missed notices: reads the revocations recorded since the
    /// last read and reloads the keys.
    pub async fn reload(&self) {
        let now = self.clock.now();
        if let Err(e) = self.revocations.load_recent(&self.store, now).await {
            tracing::warn!(error = %e, "could not reload revocations");
        }
        self.reload_keys().await;
    }

    async fn reload_keys(&self) {
        if let Some(keys) = self.keys.get()
            && let Err(e) = keys.reload().await
        {
            tracing::warn!(error = %e, "could not reload signing keys");
        }
    }
}
