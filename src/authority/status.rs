//! Whether the credential behind a token is still active, remembered briefly so that the
//! bearer-protected hot path does not ask the store on every request. Local changes
//! invalidate entries at once; the TTL bounds how long another process's change can go
//! unseen.

use std::{future::Future, time::Duration};

use moka::sync::Cache;

use super::AuthorityError;
use crate::domain::EnrollmentId;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StatusKey {
    /// An app, by `client_id`: tokens it holds itself.
    App(String),
    /// An enrollment and the app it belongs to.
    Enrollment(EnrollmentId),
}

pub struct StatusCache {
    entries: Option<Cache<StatusKey, bool>>,
}

impl StatusCache {
    /// `ttl` of zero asks the store every time.
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        let entries = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        Self { entries }
    }

    /// The cached answer, or `lookup`'s. A failed lookup is an error, never "active".
    pub async fn is_active<F>(&self, key: StatusKey, lookup: F) -> Result<bool, AuthorityError>
    where
        F: Future<Output = Result<bool, AuthorityError>>,
    {
        if let Some(active) = self.entries.as_ref().and_then(|e| e.get(&key)) {
            return Ok(active);
        }
        let active = lookup.await?;
        if let Some(entries) = &self.entries {
            entries.insert(key, active);
        }
        Ok(active)
    }

    pub fn invalidate(&self, key: &StatusKey) {
        if let Some(entries) = &self.entries {
            entries.invalidate(key);
        }
    }

    pub fn invalidate_all(&self) {
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
    }
}
