//! Revoked token ids, held in memory so the bearer hot path never asks the store. Every
//! replica loads them all at start, adds each revocation it hears of, and reads the recent
//! ones periodically. Loading only ever adds: an entry goes once its token could no longer
//! pass verification anyway, so a read that began before a revocation cannot undo it.
//!
//! Any app can revoke its own tokens in bulk, and every replica holds every revocation until
//! its token expires, so an entry is kept small: the 16 bytes of the token's UUID `jti` and
//! its `exp` as 4 bytes — about 44 bytes a revocation with the map's own overhead, so a
//! million cost ~42 MiB per replica. Idle replicas do no work proportional to the list: the
//! periodic read asks only for what is new, and expired entries are swept once a minute.

use std::{
    collections::HashMap,
    sync::{Mutex, RwLock},
};

use aws_lc_rs::digest;
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{AuthorityError, tokens::Claims, verify::LEEWAY_SECS};
use crate::{domain::SecretId, store::DynStore};

/// How far an incremental read reaches back before the previous read began. `revoked_at` is
/// the revoking replica's clock, taken before its transaction commits: a minute covers a
/// commit that lands after our read began and clocks that disagree between replicas.
const OVERLAP: TimeDelta = TimeDelta::seconds(60);

/// How often entries whose tokens can no longer verify are swept out. Sweeping is a pass
/// over every entry; until then an expired entry only costs its bytes.
const SWEEP_EVERY: TimeDelta = TimeDelta::seconds(60);

/// A `jti` as held in memory. Tokens minted here carry a UUID, kept as its 16 bytes; any
/// other string (none is minted today) as the first 16 bytes of its SHA-256, where a
/// collision would need ~2^64 revocations.
type JtiKey = [u8; 16];

fn key(jti: &str) -> JtiKey {
    match Uuid::try_parse(jti) {
        Ok(uuid) => *uuid.as_bytes(),
        Err(_) => {
            let mut key = [0u8; 16];
            key.copy_from_slice(&digest::digest(&digest::SHA256, jti.as_bytes()).as_ref()[..16]);
            key
        }
    }
}

/// A token's `exp` in 4 bytes: unix seconds fit a `u32` until 2106, and later ones are
/// kept as the latest (so never swept early).
fn compact_exp(exp: i64) -> u32 {
    u32::try_from(exp.max(0)).unwrap_or(u32::MAX)
}

#[derive(Default)]
pub struct RevocationList {
    /// jti → the token's `exp` (unix seconds).
    revoked: RwLock<HashMap<JtiKey, u32>>,
    /// When the newest successful read began.
    read_at: Mutex<Option<DateTime<Utc>>>,
    /// When expired entries are next swept out.
    sweep_at: Mutex<Option<DateTime<Utc>>>,
}

/// The oldest `exp` a token can have at `now` and still pass verification (which allows
/// for clock leeway); a revocation is kept at least that long.
pub fn horizon(now: DateTime<Utc>) -> DateTime<Utc> {
    now - TimeDelta::seconds(LEEWAY_SECS)
}

/// The entry that revokes every token an app secret minted (those whose `secret_id` claim
/// names it). Not a UUID, so never any token's `jti`.
pub fn secret_marker(secret_id: &str) -> String {
    format!("secret:{secret_id}")
}

impl RevocationList {
    /// Whether the token was revoked: itself, the token it was exchanged from, or every
    /// token of the secret that minted it.
    pub fn revokes(&self, claims: &Claims) -> bool {
        self.contains(&claims.jti)
            || claims
                .parent_jti
                .as_deref()
                .is_some_and(|j| self.contains(j))
            || claims
                .secret_id
                .as_deref()
                .is_some_and(|s| self.contains(&secret_marker(s)))
    }

    /// Whether the tokens of this secret were revoked with it.
    pub fn revokes_secret(&self, secret_id: SecretId) -> bool {
        self.contains(&secret_marker(&secret_id.to_string()))
    }

    pub fn contains(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key(jti))
    }

    pub fn insert(&self, jti: &str, exp: i64) {
        self.revoked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key(jti), compact_exp(exp));
    }

    /// Revocations held in memory, expired ones not yet swept included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.revoked.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Adds every revocation the store holds; `now` must be taken before the call.
    pub async fn load_all(
        &self,
        store: &DynStore,
        now: DateTime<Utc>,
    ) -> Result<(), AuthorityError> {
        let rows = store.active_revocations(horizon(now)).await?;
        self.merge(rows, now);
        Ok(())
    }

    /// Adds the revocations recorded since the previous read began (less [`OVERLAP`]), or
    /// all of them if there was none; `now` must be taken before the call.
    pub async fn load_recent(
        &self,
        store: &DynStore,
        now: DateTime<Utc>,
    ) -> Result<(), AuthorityError> {
        let read_at = *self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        let Some(read_at) = read_at else {
            return self.load_all(store, now).await;
        };
        let rows = store
            .revocations_since(read_at - OVERLAP, horizon(now))
            .await?;
        self.merge(rows, now);
        Ok(())
    }

    /// Adds `rows` read from a point `now`, forgets tokens past the horizon (at most once a
    /// [`SWEEP_EVERY`]), and moves the start of the next incremental read forward (never
    /// back: reads can overlap).
    fn merge(&self, rows: Vec<(String, DateTime<Utc>)>, now: DateTime<Utc>) {
        let sweep = {
            let mut sweep_at = self.sweep_at.lock().unwrap_or_else(|e| e.into_inner());
            let due = sweep_at.is_none_or(|at| at <= now);
            if due {
                *sweep_at = Some(now + SWEEP_EVERY);
            }
            due
        };
        if !rows.is_empty() || sweep {
            let oldest = compact_exp(horizon(now).timestamp());
            let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
            revoked.extend(
                rows.iter()
                    .map(|(jti, exp)| (key(jti), compact_exp(exp.timestamp()))),
            );
            if sweep {
                revoked.retain(|_, exp| *exp > oldest);
                // A burst of revocations that has expired gives its memory back.
                revoked.shrink_to_fit();
            }
        }
        let mut read_at = self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        if read_at.is_none_or(|at| at < now) {
            *read_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::store::{self, ConnectOptions};

    async fn store() -> DynStore {
        // One connection: every connection to `sqlite::memory:` is a database of its own.
        let store = store::connect(&ConnectOptions {
            url: "sqlite::memory:".into(),
            max_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            feed_heartbeat: Duration::from_secs(2),
        })
        .await
        .unwrap();
        store.migrate().await.unwrap();
        store
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000 + secs, 0).unwrap()
    }

    #[tokio::test]
    async fn a_load_that_read_before_a_revocation_keeps_it() {
        let store = store().await;
        let list = Arc::new(RevocationList::default());
        list.load_all(&store, at(0)).await.unwrap();
        list.insert("late", at(3600).timestamp());
        list.load_recent(&store, at(10)).await.unwrap();
        list.load_all(&store, at(20)).await.unwrap();
        assert!(
            list.contains("late"),
            "neither load may drop what it did not read"
        );
    }

    #[tokio::test]
    async fn recent_loads_see_revocations_recorded_up_to_the_overlap_before_the_last_read() {
        let store = store().await;
        let list = RevocationList::default();
        list.load_all(&store, at(100)).await.unwrap();
        // Recorded with a clock running 50 s behind ours, committed after our read.
        store
            .revoke_token("skewed", at(3600), at(50))
            .await
            .unwrap();
        list.load_recent(&store, at(110)).await.unwrap();
        assert!(list.contains("skewed"));
    }

    #[tokio::test]
    async fn entries_go_only_once_their_token_could_no_longer_verify() {
        let store = store().await;
        let list = RevocationList::default();
        list.insert("short", at(60).timestamp());
        list.load_recent(&store, at(60 + LEEWAY_SECS - 1))
            .await
            .unwrap();
        assert!(list.contains("short"), "still inside the verifier's leeway");
        list.load_recent(&store, at(60 + LEEWAY_SECS))
            .await
            .unwrap();
        assert!(list.contains("short"), "swept at most once a minute");
        let next_sweep = 60 + LEEWAY_SECS - 1 + SWEEP_EVERY.num_seconds();
        list.load_recent(&store, at(next_sweep)).await.unwrap();
        assert!(!list.contains("short"), "the token can no longer verify");
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn jtis_are_held_as_16_bytes_and_never_confused() {
        let list = RevocationList::default();
        let ours = Uuid::new_v4().to_string();
        list.insert(&ours, 2_000_000_000);
        assert!(list.contains(&ours));
        assert!(!list.contains(&Uuid::new_v4().to_string()));
        // Not a UUID: held by digest, and still told apart.
        list.insert("legacy-jti-1", 2_000_000_000);
        assert!(list.contains("legacy-jti-1"));
        assert!(!list.contains("legacy-jti-2"));
        assert_eq!(key(&ours), *Uuid::parse_str(&ours).unwrap().as_bytes());
        assert_eq!(
            compact_exp(i64::MAX),
            u32::MAX,
            "far futures are never swept early"
        );
        assert_eq!(compact_exp(-5), 0);
    }

    /// The memory bound of issue #13: a million revocations in at most 64 MiB. Counted from
    /// the map's own layout (what the allocator is asked for), not from process RSS.
    #[test]
    fn a_million_revocations_fit_in_64_mib() {
        let list = RevocationList::default();
        for n in 0..1_000_000u128 {
            list.insert(&Uuid::from_u128(n | (4 << 76)).to_string(), 2_000_000_000);
        }
        assert_eq!(list.len(), 1_000_000);
        let map = list.revoked.read().unwrap();
        // hashbrown: one (key, value) slot plus one control byte per bucket.
        let per_bucket = size_of::<(JtiKey, u32)>() + 1;
        let buckets = (map.capacity() * 8).div_ceil(7).next_power_of_two();
        let bytes = buckets * per_bucket;
        assert!(bytes <= 64 << 20, "{} MiB", bytes >> 20);
    }

    #[tokio::test]
    async fn a_revocation_inside_the_leeway_is_loaded() {
        let store = store().await;
        store
            .revoke_token("just-expired", at(0), at(-10))
            .await
            .unwrap();
        let list = RevocationList::default();
        list.load_all(&store, at(LEEWAY_SECS - 1)).await.unwrap();
        assert!(list.contains("just-expired"));
    }
}
