//! Revoked token ids, held in memory so the bearer hot path never asks the store. Every
//! replica loads them at start, adds each revocation it hears of, and reloads periodically.

use std::{collections::HashMap, sync::RwLock};

use chrono::{DateTime, Utc};

use super::AuthorityError;
use crate::store::DynStore;

#[derive(Default)]
pub struct RevocationList {
    /// jti → the token's `exp` (unix seconds); dropped once the token has expired anyway.
    revoked: RwLock<HashMap<String, i64>>,
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

    /// Replaces the list with the store's unexpired revocations.
    pub async fn reload(&self, store: &DynStore, now: DateTime<Utc>) -> Result<(), AuthorityError> {
        let fresh: HashMap<String, i64> = store
            .active_revocations(now)
            .await?
            .into_iter()
            .map(|(jti, at)| (jti, at.timestamp()))
            .collect();
        *self.revoked.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}
