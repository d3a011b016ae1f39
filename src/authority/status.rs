//! Whether the credential behind a token is still active, remembered briefly so that the
//! bearer-protected hot path does not ask the store on every request. Local changes
//! invalidate entries at once; the TTL bounds how long another process's change can go
//! unseen.

use std::{future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use moka::sync::Cache;

use super::AuthorityError;
use crate::domain::{AppId, AuthGrant, Enrollment, EnrollmentId, GrantId, OwnerId};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StatusKey {
    /// An app, by `client_id`: tokens it holds itself.
    App(String),
    /// An enrollment and the app it belongs to.
    Enrollment(EnrollmentId),
    Grant(GrantId),
}

/// What the store said about a credential: usable (perhaps only until a moment), or not.
/// Keeping the expiry, not a yes/no, lets a cached answer expire on time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Active { until: Option<DateTime<Utc>> },
    Inactive,
}

impl Standing {
    pub fn active_at(self, now: DateTime<Utc>) -> bool {
        match self {
            Self::Active { until } => until.is_none_or(|at| at > now),
            Self::Inactive => false,
        }
    }

    pub fn from_flag(active: bool) -> Self {
        if active {
            Self::Active { until: None }
        } else {
            Self::Inactive
        }
    }
}

/// How authorize finds an enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EnrollmentLookup {
    ById(EnrollmentId),
    ByOwner(AppId, OwnerId),
}

pub struct StatusCache {
    entries: Option<Cache<StatusKey, Standing>>,
    /// Enrollments as authorize reads them, so a warm authorize asks the store nothing.
    /// Invalidated with their standing.
    enrollments: Option<Cache<EnrollmentLookup, Arc<Enrollment>>>,
    /// Grants as their routes read them; invalidated with their standing.
    grants: Option<Cache<GrantId, Arc<AuthGrant>>>,
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
        let enrollments = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build()
        });
        let grants = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        Self {
            entries,
            enrollments,
            grants,
        }
    }

    /// The cached grant, or `lookup`'s. Misses are not remembered.
    pub async fn grant<F>(
        &self,
        id: GrantId,
        lookup: F,
    ) -> Result<Option<Arc<AuthGrant>>, AuthorityError>
    where
        F: Future<Output = Result<Option<AuthGrant>, AuthorityError>>,
    {
        if let Some(found) = self.grants.as_ref().and_then(|g| g.get(&id)) {
            return Ok(Some(found));
        }
        let found = lookup.await?.map(Arc::new);
        if let (Some(cache), Some(grant)) = (&self.grants, &found) {
            cache.insert(id, grant.clone());
        }
        Ok(found)
    }

    /// The cached enrollment, or `lookup`'s. Misses (not found) are not remembered.
    pub async fn enrollment<F>(
        &self,
        key: EnrollmentLookup,
        lookup: F,
    ) -> Result<Option<Arc<Enrollment>>, AuthorityError>
    where
        F: Future<Output = Result<Option<Enrollment>, AuthorityError>>,
    {
        if let Some(found) = self.enrollments.as_ref().and_then(|e| e.get(&key)) {
            return Ok(Some(found));
        }
        let found = lookup.await?.map(Arc::new);
        if let (Some(cache), Some(enrollment)) = (&self.enrollments, &found) {
            cache.insert(key, enrollment.clone());
        }
        Ok(found)
    }

    /// The cached standing, or `lookup`'s. A failed lookup is an error, never "active".
    pub async fn standing<F>(&self, key: StatusKey, lookup: F) -> Result<Standing, AuthorityError>
    where
        F: Future<Output = Result<Standing, AuthorityError>>,
    {
        if let Some(standing) = self.entries.as_ref().and_then(|e| e.get(&key)) {
            return Ok(standing);
        }
        let standing = lookup.await?;
        if let Some(entries) = &self.entries {
            entries.insert(key, standing);
        }
        Ok(standing)
    }

    pub fn invalidate(&self, key: &StatusKey) {
        if let Some(entries) = &self.entries {
            entries.invalidate(key);
        }
        if let (StatusKey::Grant(id), Some(cache)) = (key, &self.grants) {
            cache.invalidate(id);
        }
        if let (StatusKey::Enrollment(id), Some(cache)) = (key, &self.enrollments) {
            let id = *id;
            // Only fails if closures were not enabled at build time, which they are.
            let _ = cache.invalidate_entries_if(move |_, e| e.id == id);
        }
    }

    pub fn invalidate_all(&self) {
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
        if let Some(cache) = &self.enrollments {
            cache.invalidate_all();
        }
        if let Some(cache) = &self.grants {
            cache.invalidate_all();
        }
    }
}
