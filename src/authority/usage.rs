//! `last_used_at` (and a secret's use count) bookkeeping without a database write per
//! request: uses are coalesced in memory (one entry per credential, latest time wins, uses
//! added up) and flushed in one batch.

use std::{collections::HashMap, sync::Mutex};

use chrono::{DateTime, Utc};

use super::AuthorityError;
use crate::store::{DynStore, Usage, UsageOf};

#[derive(Default)]
pub struct UsageTracker {
    /// The latest use and how many uses.
    pending: Mutex<HashMap<UsageOf, (DateTime<Utc>, u64)>>,
}

impl UsageTracker {
    /// One use at `at`.
    pub fn record(&self, of: UsageOf, at: DateTime<Utc>) {
        self.record_all(&[of], at);
    }

    /// One use of each at `at`, under one lock (the hot path records an app and its secret).
    pub fn record_all(&self, all: &[UsageOf], at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for of in all {
            add(&mut pending, *of, at, 1);
        }
    }

    /// Writes what has accumulated. On failure the batch is put back for the next try.
    pub async fn flush(&self, store: &DynStore) -> Result<usize, AuthorityError> {
        let batch: Vec<Usage> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending
                .drain()
                .map(|(of, (at, uses))| Usage { of, at, uses })
                .collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(e) = store.record_usage(&batch).await {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for usage in &batch {
                add(&mut pending, usage.of, usage.at, usage.uses);
            }
            return Err(e.into());
        }
        Ok(batch.len())
    }
}

/// The latest time wins; uses add up.
fn add(
    pending: &mut HashMap<UsageOf, (DateTime<Utc>, u64)>,
    of: UsageOf,
    at: DateTime<Utc>,
    uses: u64,
) {
    let (latest, count) = pending.entry(of).or_insert((at, 0));
    if *latest < at {
        *latest = at;
    }
    *count = count.saturating_add(uses);
}
