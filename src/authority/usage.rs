//! `last_used_at` bookkeeping without a database write per request: uses are coalesced in
//! memory (one entry per credential, latest time wins) and flushed in one batch.

use std::{collections::HashMap, sync::Mutex};

use chrono::{DateTime, Utc};

use super::AuthorityError;
use crate::store::{DynStore, Usage, UsageOf};

#[derive(Default)]
pub struct UsageTracker {
    pending: Mutex<HashMap<UsageOf, DateTime<Utc>>>,
}

impl UsageTracker {
    pub fn record(&self, of: UsageOf, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let latest = pending.entry(of).or_insert(at);
        if *latest < at {
            *latest = at;
        }
    }

    /// Writes what has accumulated. On failure the batch is put back for the next try.
    pub async fn flush(&self, store: &DynStore) -> Result<usize, AuthorityError> {
        let batch: Vec<Usage> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().map(|(of, at)| Usage { of, at }).collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(e) = store.record_usage(&batch).await {
            for usage in &batch {
                self.record(usage.of, usage.at);
            }
            return Err(e.into());
        }
        Ok(batch.len())
    }
}
