//! Revoked token ids, held in memory so the bearer hot path never asks the store. Every
//! replica loads them all at start, adds each revocation it hears of, and reads the recent
//! ones periodically. Loading only ever adds: an entry goes once its token could no longer
//! pass verification anyway, so a read that began before a revocation cannot undo it.

use std::{
    collections::HashMap,
    sync::{Mutex, RwLock},
};

use chrono::{DateTime, TimeDelta, Utc};

use super::{AuthorityError, verify::LEEWAY_SECS};
use crate::store::DynStore;

/// How far an incremental read reaches back before the previous read began. `revoked_at` is
/// the revoking replica's clock, taken before its transaction commits: a minute covers a
/// commit that lands after our read began and clocks that disagree between replicas.
const OVERLAP: TimeDelta = TimeDelta::seconds(60);

#[derive(Default)]
pub struct RevocationList {
    /// jti → the token's `exp` (unix seconds).
    revoked: RwLock<HashMap<String, i64>>,
    /// When the newest successful read began.
    read_at: Mutex<Option<DateTime<Utc>>>,
}

/// The oldest `exp` a token can have at `now` and still pass verification (which allows
/// for clock leeway); a revocation is kept at least that long.
pub fn horizon(now: DateTime<Utc>) -> DateTime<Utc> {
    now - TimeDelta::seconds(LEEWAY_SECS)
}

impl RevocationList {
    pub fn contains(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(jti)
    }

    pub fn insert(&self, jti: String, exp: i64) {
        self.revoked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(jti, exp);
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

    /// Adds `rows` read from a point `now`, forgets tokens past the horizon, and moves the
    /// start of the next incremental read forward (never back: reads can overlap).
    fn merge(&self, rows: Vec<(String, DateTime<Utc>)>, now: DateTime<Utc>) {
        let oldest = horizon(now).timestamp();
        {
            let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
            revoked.extend(rows.into_iter().map(|(jti, exp)| (jti, exp.timestamp())));
            revoked.retain(|_, exp| *exp > oldest);
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
        list.insert("late".into(), at(3600).timestamp());
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
        list.insert("short".into(), at(60).timestamp());
        list.load_recent(&store, at(60 + LEEWAY_SECS - 1))
            .await
            .unwrap();
        assert!(list.contains("short"), "still inside the verifier's leeway");
        list.load_recent(&store, at(60 + LEEWAY_SECS))
            .await
            .unwrap();
        assert!(!list.contains("short"), "the token can no longer verify");
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
