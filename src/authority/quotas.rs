//! Issuance quotas, exact across replicas without a store round trip per token.
//!
//! Each replica leases tokens of an app's quota from the store in batches: one conditional
//! upsert on the (app, window) counter row, which never lets the sum of every replica's
//! leases pass the limit (see [`crate::store::Store::lease_quota`]). It spends a lease in
//! memory (a short lock and a decrement) and takes another when it runs out, so no replica
//! can issue a token that was not leased: the total issued in a window never passes the
//! limit, whatever the number of replicas.
//!
//! The trade-off: a lease is not returned. A replica that dies, or goes quiet, holding part
//! of a lease leaves those tokens unissued for the rest of the window, so callers may be
//! refused a little before the limit is reached; never after it. Leases are kept small
//! (at most a tenth of the limit, and at most [`LEASE_CAP`]) and shrink as the window's
//! quota runs out, so one replica holds few of the last tokens.
//!
//! A window the store says is used up is remembered until it ends (or the limit changes),
//! so refusals cost no round trip either. Windows are fixed UTC hours and days.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};

use super::AuthorityError;
use crate::{
    domain::{AppId, GrantId, QuotaState, QuotaStatus, QuotaWindow, TokenQuota},
    store::{DynStore, QuotaLease},
};

/// The most tokens one lease takes.
pub const LEASE_CAP: u64 = 100;
/// How often each replica purges the store's counters of ended windows.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// A window the quota did not allow, with every window's state for the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub window: QuotaWindow,
    pub status: QuotaStatus,
}

/// What one replica holds of one window of one app's quota.
#[derive(Debug, Clone, Copy)]
struct Lease {
    starts_at: DateTime<Utc>,
    limit: u64,
    /// Leased here and not yet spent.
    left: u64,
    /// What the store had not leased to anyone at this replica's last lease.
    store_left: u64,
}

impl Lease {
    fn current(&self, starts_at: DateTime<Utc>, limit: u64) -> bool {
        self.starts_at == starts_at && self.limit == limit
    }

    /// Used up here and in the store: nothing more until the window ends.
    fn exhausted(&self) -> bool {
        self.left == 0 && self.store_left == 0
    }
}

/// How many tokens to ask for: a tenth of the limit at most (and at most [`LEASE_CAP`]), an
/// eighth of what the store had left at the last lease, at least one.
fn lease_size(limit: u64, store_left: Option<u64>) -> u64 {
    let cap = (limit / 10).clamp(1, LEASE_CAP);
    match store_left {
        None => cap,
        Some(left) => (left / 8).clamp(1, cap),
    }
}

#[derive(Default)]
struct Leases {
    hour: Option<Lease>,
    day: Option<Lease>,
}

enum Step {
    Spent(QuotaStatus),
    Exceeded(QuotaExceeded),
    /// These windows need a lease (with the store's last known remainder) before spending.
    Lease(Vec<(QuotaWindow, u64, Option<u64>)>),
}

impl Leases {
    fn slot(&mut self, window: QuotaWindow) -> &mut Option<Lease> {
        match window {
            // Apps' quotas have no minute window (grants' are counted apart).
            QuotaWindow::Hour | QuotaWindow::Minute => &mut self.hour,
            QuotaWindow::Day => &mut self.day,
        }
    }

    fn status(&mut self, quota: TokenQuota, now: DateTime<Utc>) -> QuotaStatus {
        quota
            .limits()
            .map(|(window, limit)| {
                let remaining = self
                    .slot(window)
                    .filter(|l| l.current(window.start(now), limit))
                    .map_or(limit, |l| l.left + l.store_left);
                QuotaState::new(window, limit, remaining, now)
            })
            .collect()
    }

    /// Spends one token of every limited window if each holds one; otherwise says which
    /// window refuses (the one that ends last) or which need a lease.
    fn try_spend(&mut self, quota: TokenQuota, now: DateTime<Utc>) -> Step {
        let mut refused: Option<QuotaWindow> = None;
        let mut wanted = Vec::new();
        for (window, limit) in quota.limits() {
            let starts_at = window.start(now);
            match self.slot(window).filter(|l| l.current(starts_at, limit)) {
                Some(lease) if lease.left > 0 => {}
                Some(lease) if lease.exhausted() => refused = Some(window),
                Some(lease) => wanted.push((window, limit, Some(lease.store_left))),
                None => wanted.push((window, limit, None)),
            }
        }
        if let Some(window) = refused {
            return Step::Exceeded(QuotaExceeded {
                window,
                status: self.status(quota, now),
            });
        }
        if !wanted.is_empty() {
            return Step::Lease(wanted);
        }
        for (window, _) in quota.limits() {
            if let Some(lease) = self.slot(window) {
                lease.left -= 1;
            }
        }
        Step::Spent(self.status(quota, now))
    }

    fn record(
        &mut self,
        window: QuotaWindow,
        starts_at: DateTime<Utc>,
        limit: u64,
        lease: Option<QuotaLease>,
    ) {
        let (granted, leased) = lease.map_or((0, limit), |l| (l.granted, l.leased));
        let slot = self.slot(window);
        // Whatever is left of a lease of the same window and limit is kept.
        let kept = slot
            .filter(|l| l.current(starts_at, limit))
            .map_or(0, |l| l.left);
        *slot = Some(Lease {
            starts_at,
            limit,
            left: kept + granted,
            store_left: limit.saturating_sub(leased),
        });
    }
}

/// One app's leases on this replica.
#[derive(Default)]
struct AppLeases {
    state: Mutex<Leases>,
    /// One lease at a time per app: concurrent requests that find the lease spent wait for
    /// the one that asks the store, rather than all asking.
    refill: tokio::sync::Mutex<()>,
}

pub struct Quotas {
    store: DynStore,
    apps: RwLock<HashMap<AppId, Arc<AppLeases>>>,
    grants: Mutex<HashMap<GrantId, (DateTime<Utc>, u32)>>,
    last_purge: Mutex<Option<Instant>>,
}

impl Quotas {
    pub fn new(store: DynStore) -> Self {
        Self {
            store,
            apps: RwLock::default(),
            grants: Mutex::default(),
            last_purge: Mutex::default(),
        }
    }

    fn leases_of(&self, app_id: AppId) -> Arc<AppLeases> {
        if let Some(found) = self
            .apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&app_id)
        {
            return found.clone();
        }
        self.apps
            .write()
            .expect("not poisoned")
            .entry(app_id)
            .or_default()
            .clone()
    }

    /// Spends one token of the app's quota. `Ok(None)` for an app without one (no work at
    /// all); `Ok(Some(status))` with what is left; `Err` when a window is used up.
    pub async fn spend(
        &self,
        app_id: AppId,
        quota: TokenQuota,
        now: DateTime<Utc>,
    ) -> Result<Result<Option<QuotaStatus>, QuotaExceeded>, AuthorityError> {
        if quota.is_unlimited() {
            return Ok(Ok(None));
        }
        let leases = self.leases_of(app_id);
        let step = leases
            .state
            .lock()
            .expect("not poisoned")
            .try_spend(quota, now);
        match step {
            Step::Spent(status) => return Ok(Ok(Some(status))),
            Step::Exceeded(exceeded) => return Ok(Err(exceeded)),
            Step::Lease(_) => {}
        }
        let _turn = leases.refill.lock().await;
        loop {
            // Another request may have taken a lease while this one waited its turn; each
            // round either answers or asks the store, which ends up granting or refusing.
            let step = leases
                .state
                .lock()
                .expect("not poisoned")
                .try_spend(quota, now);
            let wanted = match step {
                Step::Spent(status) => return Ok(Ok(Some(status))),
                Step::Exceeded(exceeded) => return Ok(Err(exceeded)),
                Step::Lease(wanted) => wanted,
            };
            for (window, limit, store_left) in wanted {
                let starts_at = window.start(now);
                let lease = self
                    .store
                    .lease_quota(
                        app_id,
                        window,
                        starts_at,
                        lease_size(limit, store_left),
                        limit,
                    )
                    .await?;
                let refused = lease.is_none();
                leases
                    .state
                    .lock()
                    .expect("not poisoned")
                    .record(window, starts_at, limit, lease);
                // The request is refused now: leasing the other window would only park
                // tokens here that other replicas may need.
                if refused {
                    break;
                }
            }
        }
    }

    /// Counts one request made with a grant's tokens in the current UTC minute; kept in this
    /// replica's memory only, so each replica allows `per_minute`.
    pub fn spend_grant_request(
        &self,
        grant: GrantId,
        per_minute: u32,
        now: DateTime<Utc>,
    ) -> Result<QuotaStatus, QuotaExceeded> {
        let window = QuotaWindow::Minute;
        let starts_at = window.start(now);
        let mut grants = self.grants.lock().unwrap_or_else(PoisonError::into_inner);
        let used = match grants.get_mut(&grant) {
            Some((start, used)) if *start == starts_at => used,
            _ => {
                &mut grants
                    .entry(grant)
                    .insert_entry((starts_at, 0))
                    .into_mut()
                    .1
            }
        };
        let limit = u64::from(per_minute);
        if *used >= per_minute {
            return Err(QuotaExceeded {
                window,
                status: vec![QuotaState::new(window, limit, 0, now)],
            });
        }
        *used += 1;
        Ok(vec![QuotaState::new(
            window,
            limit,
            u64::from(per_minute - *used),
            now,
        )])
    }

    /// Forgets local state of ended windows, and the store's counters of windows that ended
    /// a day ago or more.
    pub async fn forget_ended(&self, now: DateTime<Utc>) -> Result<u64, AuthorityError> {
        let minute = QuotaWindow::Minute.start(now);
        self.grants
            .lock()
            .expect("not poisoned")
            .retain(|_, (start, _)| *start == minute);
        let day = QuotaWindow::Day.start(now);
        self.apps
            .write()
            .expect("not poisoned")
            .retain(|_, leases| {
                // A request holding it may be taking a lease: dropping the entry would
                // orphan that lease and let a second refill run beside it.
                if Arc::strong_count(leases) > 1 {
                    return true;
                }
                let state = leases.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.day.is_some_and(|l| l.starts_at == day)
                    || state
                        .hour
                        .is_some_and(|l| l.starts_at == QuotaWindow::Hour.start(now))
            });
        // The store's counters are purged once an hour per replica, not at every tick: it
        // is a write (SQLite's one writer) and counters of windows ended a day ago wait.
        let due = {
            let mut last = self
                .last_purge
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let due = last.is_none_or(|at| at.elapsed() >= PURGE_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if !due {
            return Ok(0);
        }
        Ok(self
            .store
            .purge_quota_windows(day - TimeDelta::days(1))
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_shrink_as_the_quota_runs_out() {
        assert_eq!(lease_size(5, None), 1, "small limits lease one at a time");
        assert_eq!(lease_size(1000, None), 100, "a tenth of the limit");
        assert_eq!(lease_size(1_000_000, None), LEASE_CAP);
        assert_eq!(lease_size(1000, Some(400)), 50, "an eighth of what is left");
        assert_eq!(lease_size(1000, Some(3)), 1);
    }
}
