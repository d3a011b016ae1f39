use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use uuid::Uuid;

use super::{InvalidId, ScopeSet, Subject};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrantId(pub Uuid);

impl GrantId {
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| InvalidId("grant id"))
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantStatus {
    Active,
    Revoked,
}

impl GrantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// A scoped, expiring, revocable credential that a profile creates for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthGrant {
    pub id: GrantId,
    /// The subject (with its kind) of the token that created the grant.
    pub profile: Subject,
    /// The client the creating token was issued to; tokens from the grant carry it.
    pub client_id: String,
    pub name: String,
    pub description: String,
    pub challenge: String,
    pub status: GrantStatus,
    pub scope: ScopeSet,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl AuthGrant {
    pub const NAME_MAX_LEN: usize = 256;
    pub const DESCRIPTION_MAX_LEN: usize = 2048;

    /// Usable right now: not revoked and not past its expiry.
    pub fn is_active_at(&self, now: DateTime<Utc>) -> bool {
        self.status == GrantStatus::Active && self.expires_at.is_none_or(|at| at > now)
    }
}

/// Parses an `expiresAt` value: RFC 3339 in UTC written with `Z` (no offsets), a real
/// calendar date, optional fractional seconds.
pub fn parse_utc_timestamp(raw: &str) -> Option<DateTime<Utc>> {
    let body = raw.strip_suffix('Z')?;
    let bytes = body.as_bytes();
    let shape_ok = bytes.len() >= 19
        && bytes.iter().enumerate().take(19).all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            _ => b.is_ascii_digit(),
        })
        && match &bytes[19..] {
            [] => true,
            [b'.', digits @ ..] => {
                (1..=9).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit)
            }
            _ => false,
        };
    if !shape_ok {
        return None;
    }
    NaiveDateTime::parse_from_str(body, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_timestamps_follow_the_utc_pattern_and_the_calendar() {
        for ok in [
            "2028-02-29T00:00:00Z",
            "2030-12-31T23:59:59.999Z",
            "2030-01-01T00:00:00.1Z",
        ] {
            assert!(parse_utc_timestamp(ok).is_some(), "{ok} is valid");
        }
        for (bad, why) in [
            ("2027-02-29T00:00:00Z", "not a leap year"),
            ("2027-01-01T00:00:00+01:00", "an offset, not Z"),
            ("2027-01-01T00:00:00", "no zone"),
            ("2027-01-01 00:00:00Z", "space instead of T"),
            ("2027-13-01T00:00:00Z", "month 13"),
            ("2027-01-01T24:00:00Z", "hour 24"),
            ("2027-1-01T00:00:00Z", "short month"),
            ("2027-01-01T00:00:00.Z", "empty fraction"),
            ("2027-01-01T00:00:00.1234567890Z", "too many digits"),
            ("tomorrow", "garbage"),
            ("", "empty"),
            ("２０２７-01-01T00:00:00Z", "non-ASCII digits"),
        ] {
            assert!(
                parse_utc_timestamp(bad).is_none(),
                "{bad:?} must fail: {why}"
            );
        }
    }
}
