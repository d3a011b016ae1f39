use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use uuid::Uuid;

use super::{AppId, CidrList, EnrollmentId, InvalidId, ScopeSet, SecretId, Subject};

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

/// Where a grant came from: the credential behind the token that created it. The grant
/// stands only while every link of this chain does, and carries no scope they no longer allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// An owner token the operator minted (admin API): no app stands behind it.
    Operator,
    /// An app's own token (client_credentials).
    App(AppId),
    /// An enrollment token: the owner, as enrolled with that app.
    Enrollment {
        app_id: AppId,
        enrollment_id: EnrollmentId,
    },
}

impl Origin {
    pub fn app_id(self) -> Option<AppId> {
        match self {
            Self::Operator => None,
            Self::App(app_id) | Self::Enrollment { app_id, .. } => Some(app_id),
        }
    }

    pub fn enrollment_id(self) -> Option<EnrollmentId> {
        match self {
            Self::Enrollment { enrollment_id, .. } => Some(enrollment_id),
            Self::Operator | Self::App(_) => None,
        }
    }
}

/// Whose grants these are: a subject as seen through one app (none for the operator's own
/// owner tokens). One owner enrolled with two apps is two profiles that never see each
/// other's grants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Profile {
    pub subject: Subject,
    pub app_id: Option<AppId>,
}

/// A scoped, expiring, revocable credential that a profile creates for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthGrant {
    pub id: GrantId,
    /// The subject (with its kind) of the token that created the grant.
    pub profile: Subject,
    pub origin: Origin,
    /// The app secret that minted the creating token, when one did: revoking that secret
    /// together with its tokens revokes the grant too.
    pub secret_id: Option<SecretId>,
    /// The client the creating token was issued to; tokens from the grant carry it.
    pub client_id: String,
    /// The networks the creating token was bound to; tokens from the grant are bound to
    /// them too, so a grant is no way out of its creator's binding.
    pub token_bound_cidrs: CidrList,
    /// Requests allowed per UTC minute with the grant's tokens on Portcullis's bearer routes
    /// (counted per replica); `None`: no limit.
    pub requests_per_minute: Option<u32>,
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

    /// The profile the grant belongs to: its subject, through the app it came from.
    pub fn owner(&self) -> Profile {
        Profile {
            subject: self.profile.clone(),
            app_id: self.origin.app_id(),
        }
    }

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
            // No leap seconds: chrono takes `:60` at any minute, an instant that never was.
            17 => (b'0'..=b'5').contains(b),
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
            ("2027-01-01T12:34:60Z", "a leap second that never was"),
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

#[cfg(test)]
mod properties {
    use chrono::NaiveDate;
    use proptest::prelude::*;

    use super::*;

    /// chrono's RFC 3339 parser, narrowed to what the seed allows: `T`, `Z`, at most nine
    /// fractional digits and no leap second (`:60` names no real instant to expire at).
    fn oracle(raw: &str) -> Option<DateTime<Utc>> {
        let b = raw.as_bytes();
        let fraction_ok = match raw.split_once('.') {
            None => true,
            Some((_, rest)) => rest.len().saturating_sub(1) <= 9,
        };
        (raw.ends_with('Z')
            && b.get(10) == Some(&b'T')
            && b.get(17..19) != Some(b"60")
            && fraction_ok)
            .then(|| DateTime::parse_from_rfc3339(raw).ok())
            .flatten()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Timestamps built from fields, each sometimes out of range, so that near-misses
    /// (Feb 29 of a common year, month 13, hour 24, `:60`) come up often.
    fn candidate() -> impl Strategy<Value = (String, Option<DateTime<Utc>>)> {
        let sep = prop_oneof![8 => Just('T'), 1 => Just('t'), 1 => Just(' ')];
        let zone = prop_oneof![8 => Just("Z"), 1 => Just("z"), 1 => Just("+00:00"),
            1 => Just("-01:30"), 1 => Just("")];
        (
            (0..10000u32, 0..14u32, 0..33u32),
            (0..26u32, 0..62u32, 0..62u32),
            "[0-9]{0,11}",
            sep,
            zone,
        )
            .prop_map(|((y, mo, d), (h, mi, s), frac, sep, zone)| {
                let dot = if frac.is_empty() { "" } else { "." };
                let raw =
                    format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{dot}{frac}{zone}");
                let nanos = format!("{frac:0<9}").parse::<u32>().unwrap_or(u32::MAX);
                let expected = (sep == 'T' && zone == "Z" && frac.len() <= 9)
                    .then(|| {
                        NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, mo, d)?
                            .and_hms_nano_opt(h, mi, s, nanos)
                    })
                    .flatten()
                    .map(|t| t.and_utc());
                (raw, expected)
            })
    }

    proptest! {
        #![proptest_config(crate::proptest_config(1024))]

        #[test]
        fn timestamps_built_from_fields_parse_to_those_fields((raw, expected) in candidate()) {
            prop_assert_eq!(parse_utc_timestamp(&raw), expected, "{}", raw);
        }

        #[test]
        fn timestamps_agree_with_chrono_rfc3339(raw in prop_oneof![
            candidate().prop_map(|(raw, _)| raw),
            any::<String>(),
            "[0-9T:.Z+ -]{15,32}",
        ]) {
            prop_assert_eq!(parse_utc_timestamp(&raw), oracle(&raw), "{:?}", raw);
        }
    }
}
