//! The one rule every cache of the core keeps: nothing read before a change this replica has
//! seen is ever served after it.
//!
//! Each change bumps a generation: the stripe its key hashes to, or an epoch that covers every
//! key (a resync). A read captures the generation of its key *before* it asks the store, and
//! the value is cached with that stamp. A cached value is served only while its stamp is still
//! the key's generation, so a read that raced a change (the change landed while the read was in
//! flight, or before its insert) is never served once the change is known here, whatever the
//! order of the insert and the invalidation. Stripes keep the memory bounded; a bump also
//! refreshes the few unrelated keys that share its stripe, which costs a store read, never
//! correctness.
//!
//! While the change feed is not trusted (down or silent), changes made by other replicas may
//! not be heard at all, so values are also served only while younger than a short lifetime.

use std::{
    hash::{BuildHasher, Hash, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};
use moka::sync::Cache;

use super::{changes::FeedHealth, clock::SharedClock};
use crate::domain::{AppId, EnrollmentId, GrantId};

/// What a change is about, for its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject<'a> {
    App(AppId),
    /// An app by `client_id`: its verified secrets and its record.
    Client(&'a str),
    Enrollment(EnrollmentId),
    Grant(GrantId),
}

/// A generation: comparable, only ever growing for a given key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(u64);

const STRIPES: usize = 4096;

pub struct Generations {
    epoch: AtomicU64,
    stripes: Box<[AtomicU64]>,
    hasher: RandomState,
    feed: Arc<FeedHealth>,
    degraded_ttl: TimeDelta,
    clock: SharedClock,
}

impl Generations {
    /// `degraded_ttl`: how long a cached value may be served while the change feed is not
    /// trusted.
    pub fn new(degraded_ttl: Duration, clock: SharedClock) -> Self {
        Self {
            epoch: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            feed: Arc::default(),
            degraded_ttl: TimeDelta::from_std(degraded_ttl).unwrap_or(TimeDelta::MAX),
            clock,
        }
    }

    fn stripe(&self, subject: Subject<'_>) -> &AtomicU64 {
        let at = self.hasher.hash_one(subject) as usize % STRIPES;
        &self.stripes[at]
    }

    /// The generation of `subject` now; take it before reading the store.
    pub fn stamp(&self, subject: Subject<'_>) -> Stamp {
        // Both only grow, so their sum does, and any bump raises it.
        let epoch = self.epoch.load(Ordering::SeqCst);
        Stamp(epoch + self.stripe(subject).load(Ordering::SeqCst))
    }

    /// `subject` changed: every value read before now is stale.
    pub fn bump(&self, subject: Subject<'_>) {
        self.stripe(subject).fetch_add(1, Ordering::SeqCst);
    }

    /// Anything may have changed (notices were lost): every value read before now is stale.
    pub fn bump_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether this replica trusts its change feed; the change hub keeps it.
    pub fn feed_health(&self) -> Arc<FeedHealth> {
        self.feed.clone()
    }

    /// A stamp for a value about to be read, with the moment it is read.
    pub fn stamp_now(&self, subject: Subject<'_>) -> (Stamp, DateTime<Utc>) {
        (self.stamp(subject), self.clock.now())
    }

    /// Whether a value read at `stamp`, at `born`, may still be served for `subject`.
    /// While the feed is lost, a value is trusted for `degraded_ttl` after it was read or the
    /// feed was lost, whichever is later: no longer can it be stale by more than the time it
    /// took to notice the loss plus that.
    pub fn is_fresh(&self, subject: Subject<'_>, stamp: Stamp, born: DateTime<Utc>) -> bool {
        if stamp < self.stamp(subject) {
            return false;
        }
        match self.feed.degraded_since() {
            None => true,
            Some(since) => self.clock.now() - born.max(since) <= self.degraded_ttl,
        }
    }
}

/// A cached value with the generation it was read at.
#[derive(Debug)]
pub struct Stamped<V> {
    pub value: Arc<V>,
    pub stamp: Stamp,
    pub born: DateTime<Utc>,
}

impl<V> Clone for Stamped<V> {
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
            stamp: self.stamp,
            born: self.born,
        }
    }
}

impl<V> Stamped<V> {
    pub fn new(value: V, (stamp, born): (Stamp, DateTime<Utc>)) -> Self {
        Self {
            value: Arc::new(value),
            stamp,
            born,
        }
    }
}

/// A bounded, time-limited map whose values are served only while fresh (see the module).
/// Misses are not remembered.
pub struct FreshCache<K, V> {
    entries: Option<Cache<K, Stamped<V>>>,
    generations: Arc<Generations>,
}

impl<K, V> FreshCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// `ttl` of zero caches nothing.
    pub fn new(generations: Arc<Generations>, ttl: Duration, capacity: u64) -> Self {
        let entries = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        Self {
            entries,
            generations,
        }
    }

    /// The cached value, or `load`'s, which is cached only if nothing about `subject` changed
    /// while it was read.
    pub async fn get_or_load<E, F>(
        &self,
        key: K,
        subject: Subject<'_>,
        load: F,
    ) -> Result<Option<Arc<V>>, E>
    where
        F: Future<Output = Result<Option<V>, E>>,
    {
        let Some(entries) = &self.entries else {
            return Ok(load.await?.map(Arc::new));
        };
        let stamp = self.generations.stamp_now(subject);
        if let Some(hit) = entries.get(&key)
            && self.generations.is_fresh(subject, hit.stamp, hit.born)
        {
            return Ok(Some(hit.value));
        }
        let Some(found) = load.await? else {
            return Ok(None);
        };
        let found = Stamped::new(found, stamp);
        let value = found.value.clone();
        // A change during the read makes the value stale at once; skip the useless insert.
        // (Inserting it anyway would be safe: it would never be served.)
        if self.generations.stamp(subject) == stamp.0 {
            entries.insert(key, found);
        }
        Ok(Some(value))
    }

    /// Drops one entry; stamps already keep stale entries from being served, this only frees
    /// the memory early.
    pub fn forget(&self, key: &K) {
        if let Some(entries) = &self.entries {
            entries.invalidate(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::authority::clock::{Clock, FixedClock};

    fn cache(
        ttl_secs: u64,
    ) -> (
        Arc<FixedClock>,
        Arc<Generations>,
        FreshCache<u32, &'static str>,
    ) {
        let clock = FixedClock::new(Utc::now());
        let generations = Arc::new(Generations::new(Duration::from_secs(2), clock.clone()));
        let cache = FreshCache::new(generations.clone(), Duration::from_secs(ttl_secs), 100);
        (clock, generations, cache)
    }

    fn grant() -> Subject<'static> {
        Subject::Grant(GrantId(uuid::Uuid::nil()))
    }

    async fn load(
        cache: &FreshCache<u32, &'static str>,
        value: &'static str,
    ) -> Option<Arc<&'static str>> {
        cache
            .get_or_load(1, grant(), async { Ok::<_, ()>(Some(value)) })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_cached_value_is_served_until_its_subject_changes() {
        let (_clock, generations, cache) = cache(60);
        assert_eq!(*load(&cache, "old").await.unwrap(), "old");
        assert_eq!(
            *load(&cache, "new").await.unwrap(),
            "old",
            "served from the cache"
        );
        generations.bump(grant());
        assert_eq!(*load(&cache, "new").await.unwrap(), "new");
    }

    #[tokio::test]
    async fn a_read_that_raced_a_change_is_never_served_after_it() {
        let (_clock, generations, cache) = cache(60);
        // The change lands while the read is in flight: the read began before it.
        let raced = cache
            .get_or_load(1, grant(), async {
                generations.bump(grant());
                Ok::<_, ()>(Some("read before the change"))
            })
            .await
            .unwrap();
        assert_eq!(
            *raced.unwrap(),
            "read before the change",
            "its own caller may use it"
        );
        assert_eq!(*load(&cache, "after").await.unwrap(), "after");
    }

    #[tokio::test]
    async fn an_insert_after_the_invalidation_is_still_stale() {
        let (_clock, generations, cache) = cache(60);
        let stamp = generations.stamp_now(grant());
        generations.bump(grant());
        // The slow reader inserts only now, after the change was applied.
        cache
            .entries
            .as_ref()
            .unwrap()
            .insert(1, Stamped::new("stale", stamp));
        assert_eq!(*load(&cache, "fresh").await.unwrap(), "fresh");
    }

    #[tokio::test]
    async fn a_resync_makes_every_value_stale() {
        let (_clock, generations, cache) = cache(60);
        load(&cache, "old").await;
        generations.bump_all();
        assert_eq!(*load(&cache, "new").await.unwrap(), "new");
    }

    #[tokio::test]
    async fn while_the_feed_is_degraded_values_live_briefly() {
        let (clock, generations, cache) = cache(60);
        load(&cache, "old").await;
        clock.advance(TimeDelta::seconds(3));
        assert_eq!(
            *load(&cache, "new").await.unwrap(),
            "old",
            "the feed is trusted"
        );
        generations.feed.lose_at(clock.now());
        assert_eq!(
            *load(&cache, "new").await.unwrap(),
            "old",
            "trusted a little longer once the feed is lost"
        );
        clock.advance(TimeDelta::seconds(3));
        assert_eq!(
            *load(&cache, "newer").await.unwrap(),
            "newer",
            "too old to trust"
        );
        assert_eq!(
            *load(&cache, "newest").await.unwrap(),
            "newer",
            "young enough"
        );
    }
}
