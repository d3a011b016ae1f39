//! Issuance quotas: how many tokens an app may be issued per fixed UTC window.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// The windows a quota counts in: fixed UTC hours and UTC days, so every replica agrees on
/// where one ends without talking to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaWindow {
    Hour,
    Day,
    /// Only for grants' request quotas (kept per replica).
    Minute,
}

impl QuotaWindow {
    /// How the store names the window.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Minute => "minute",
        }
    }

    /// The policy name the RateLimit headers and the audit trail use.
    pub const fn policy(self) -> &'static str {
        match self {
            Self::Hour => "hourly",
            Self::Day => "daily",
            Self::Minute => "minutely",
        }
    }

    pub const fn seconds(self) -> i64 {
        match self {
            Self::Hour => 3600,
            Self::Day => 86_400,
            Self::Minute => 60,
        }
    }

    /// The start of the window `at` falls in.
    pub fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        // Only fails for times near the ends of chrono's range.
        at.duration_trunc(TimeDelta::seconds(self.seconds()))
            .unwrap_or(at)
    }

    pub fn end(self, at: DateTime<Utc>) -> DateTime<Utc> {
        self.start(at) + TimeDelta::seconds(self.seconds())
    }
}

/// An app's issuance quota; `None` in a window is no limit there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenQuota {
    pub per_hour: Option<u64>,
    pub per_day: Option<u64>,
}

impl TokenQuota {
    /// The largest limit accepted in any window.
    pub const MAX: u64 = 1_000_000_000;

    pub fn is_unlimited(&self) -> bool {
        self.per_hour.is_none() && self.per_day.is_none()
    }

    /// Each limited window with its limit, shortest first.
    pub fn limits(&self) -> impl Iterator<Item = (QuotaWindow, u64)> + use<> {
        [
            self.per_hour.map(|n| (QuotaWindow::Hour, n)),
            self.per_day.map(|n| (QuotaWindow::Day, n)),
        ]
        .into_iter()
        .flatten()
    }
}

/// One window of a quota as a caller may read it: the RateLimit headers' material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaState {
    pub window: QuotaWindow,
    pub limit: u64,
    /// Approximate: what this replica holds plus what the store had left at its last lease.
    pub remaining: u64,
    /// Whole seconds until the window ends (at least 1).
    pub reset_secs: u64,
}

impl QuotaState {
    pub fn new(window: QuotaWindow, limit: u64, remaining: u64, now: DateTime<Utc>) -> Self {
        let left = window.end(now) - now;
        let secs = left.num_seconds() + i64::from(left.subsec_nanos() > 0);
        Self {
            window,
            limit,
            remaining,
            reset_secs: u64::try_from(secs).unwrap_or(0).max(1),
        }
    }
}

/// Every limited window of a quota at one moment (at most two for apps).
pub type QuotaStatus = Vec<QuotaState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_fixed_utc_hours_and_days() {
        let at: DateTime<Utc> = "2030-05-06T07:08:09.5Z".parse().unwrap();
        assert_eq!(
            QuotaWindow::Hour.start(at),
            "2030-05-06T07:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            QuotaWindow::Day.end(at),
            "2030-05-07T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let state = QuotaState::new(QuotaWindow::Hour, 10, 3, at);
        assert_eq!(state.reset_secs, 3600 - 8 * 60 - 9, "rounded up");
    }
}
