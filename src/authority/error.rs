use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::quotas::QuotaExceeded;
use crate::{
    domain::{InvalidCidr, InvalidScope},
    store::StoreError,
};

/// A field of a request that cannot be accepted, and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct Invalid {
    pub field: &'static str,
    pub rule: Rule,
}

/// The rules input is held to; each renders as the message the caller reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rule {
    #[error("is required")]
    Required,
    #[error("must not be empty")]
    Empty,
    #[error("must be a string")]
    NotAString,
    #[error("must be a UUID")]
    NotAUuid,
    #[error("must be {0}")]
    OneOf(&'static str),
    #[error("must be an object with tokens_per_hour and/or tokens_per_day, or null")]
    NotAQuota,
    #[error("must be {min} to {max} characters")]
    Length { min: usize, max: usize },
    #[error("may be at most {max} characters")]
    MaxChars { max: usize },
    #[error("may be at most {max} bytes")]
    MaxBytes { max: usize },
    #[error("must be {min} to {max} printable ASCII characters")]
    PrintableAscii { min: usize, max: usize },
    #[error("must be {min} to {max} printable ASCII characters or spaces")]
    VisibleAscii { min: usize, max: usize },
    #[error("must not contain control characters")]
    ControlCharacters,
    #[error("must not contain NUL characters")]
    Nul,
    #[error("must be between {min} and {max}{unit}")]
    Range {
        min: u64,
        max: u64,
        unit: &'static str,
    },
    #[error("is too long")]
    TooLong,
    #[error("$in takes at most {max} values")]
    TooManyValues { max: usize },
    #[error(transparent)]
    Scope(#[from] InvalidScope),
    #[error(transparent)]
    Cidr(#[from] InvalidCidr),
    #[error("'{0}' is not covered by the allowed scopes")]
    BeyondAllowedScopes(String),
    #[error("'{0}' is not allowed for this application")]
    NotAllowedForApp(String),
    #[error("is reserved for tokens the admin API mints")]
    Reserved,
    #[error("no such application")]
    NoSuchApp,
    #[error("no such enabled application")]
    NoSuchEnabledApp,
    #[error("not a client_id")]
    NotAClientId,
    #[error("must be an RFC 3339 UTC timestamp such as 2030-01-31T00:00:00Z")]
    NotUtcTimestamp,
    #[error("must be in the future")]
    NotInTheFuture,
    #[error("may be at most {0} years ahead")]
    AtMostYearsAhead(u32),
    #[error("cannot be given together with {0}")]
    NotWith(&'static str),
    #[error("must be a createdAt value")]
    NotACursor,
    #[error("must be the next_cursor of a previous page")]
    NotAnAuditCursor,
    #[error("must be an RFC 3339 timestamp such as 2030-01-31T00:00:00Z")]
    NotRfc3339,
    #[error("must be later than {0}")]
    NotLaterThan(&'static str),
    #[error("is not an audit event name (such as token.issued or auth.failed)")]
    NotAnAuditEvent,
    #[error("one of id, owner_id or a bearer token is required")]
    NoEnrollmentNamed,
    #[error("HS256 uses the configured secret; change keys.hs256_secret to rotate it")]
    Hs256NotRotatable,
}

/// Why a caller the core knows may not do what it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the enrollment is disabled")]
    EnrollmentDisabled,
    #[error("the id or owner_id does not match the bearer token's enrollment")]
    NotTheTokensEnrollment,
    #[error("the owner_id does not match the enrollment")]
    NotTheEnrollmentsOwner,
    #[error("the bearer token does not speak for this owner")]
    NotTheTokensOwner,
    /// A child grant could outlive its parent's revocation or expiry.
    #[error("tokens derived from an auth grant cannot create auth grants")]
    GrantFromGrant,
    #[error("this profile holds the maximum number of active auth grants; revoke one first")]
    GrantCapReached,
}

/// What stands in the way of a write: another record, or another writer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("an application with this client_id already exists")]
    ClientIdTaken,
    #[error("this owner is already enrolled with this application under another id")]
    OwnerEnrolledUnderAnotherId,
    #[error("this enrollment id is already taken")]
    EnrollmentIdTaken,
    #[error("the secret was rotated by another request meanwhile; retry to rotate it again")]
    SecretRotatedMeanwhile,
    #[error("the application kept changing during the update; retry")]
    AppKeptChanging,
    #[error("the application holds {max} unexpired secrets, the most allowed; revoke one first")]
    TooManySecrets { max: u32 },
    /// Some replicas may not publish the next key yet, so it may not sign.
    #[error(
        "the next signing key was published too recently for every replica to know it \
         (keys.next_key_lead_secs); retry after {}",
        .retry_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    )]
    NextKeyTooNew { retry_at: DateTime<Utc> },
    #[error("a record with that key already exists")]
    Duplicate,
    /// A grant made through an enrollment or app that was deleted at the same moment.
    #[error("what this would belong to was deleted meanwhile")]
    ParentGone,
}

/// Everything the core can answer, in domain words. Each HTTP dialect maps these to its
/// own status codes and envelopes; the core knows no status codes.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// Unknown client, wrong secret and disabled app are deliberately one answer.
    #[error("invalid client credentials")]
    InvalidClient,
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    /// A quota window is used up (an app's token quota, a grant's request quota).
    #[error("the {} quota is used up; retry when it resets", .0.window.policy())]
    QuotaExceeded(Box<QuotaExceeded>),
    /// A bearer token that is missing, malformed, forged, expired or no longer active.
    #[error("invalid or expired token")]
    InvalidToken,
    /// The caller is known but may not do this.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("This operation requires {0} scope")]
    InsufficientScope(String),
    #[error("the auth grant must be revoked before it can be deleted")]
    GrantActive,
    #[error("the auth grant is revoked or expired")]
    GrantInactive,
    #[error("unsupported grant type")]
    UnsupportedGrantType,
    #[error(transparent)]
    MalformedScope(#[from] InvalidScope),
    #[error("scope '{0}' is not granted to this client")]
    ScopeNotGranted(String),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error("the store is unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AuthorityError {
    pub fn invalid(field: &'static str, rule: Rule) -> Self {
        Self::Invalid(Invalid { field, rule })
    }

    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(e.into())
    }
}

impl AuthorityError {
    /// A copy of an error that several waiters share (see the credential cache). The
    /// source of an internal error is kept as text: it has been logged once already.
    pub fn duplicate(&self) -> Self {
        match self {
            Self::InvalidClient => Self::InvalidClient,
            Self::RateLimited { retry_after } => Self::RateLimited {
                retry_after: *retry_after,
            },
            Self::QuotaExceeded(exceeded) => Self::QuotaExceeded(exceeded.clone()),
            Self::InvalidToken => Self::InvalidToken,
            Self::Refused(why) => Self::Refused(*why),
            Self::InsufficientScope(s) => Self::InsufficientScope(s.clone()),
            Self::GrantActive => Self::GrantActive,
            Self::GrantInactive => Self::GrantInactive,
            Self::UnsupportedGrantType => Self::UnsupportedGrantType,
            Self::MalformedScope(e) => Self::MalformedScope(e.clone()),
            Self::ScopeNotGranted(s) => Self::ScopeNotGranted(s.clone()),
            Self::Invalid(invalid) => Self::Invalid(invalid.clone()),
            Self::NotFound => Self::NotFound,
            Self::Conflict(what) => Self::Conflict(what.clone()),
            Self::Unavailable => Self::Unavailable,
            Self::Internal(source) => Self::Internal(source.to_string().into()),
        }
    }
}

impl From<StoreError> for AuthorityError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => Self::Conflict(Conflict::Duplicate),
            StoreError::Orphan => Self::Conflict(Conflict::ParentGone),
            StoreError::Unrepresentable => Self::invalid("input", Rule::Nul),
            // The caller's token came from it, so the token is what is refused.
            StoreError::OriginRevoked => Self::InvalidToken,
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "store unavailable");
                Self::Unavailable
            }
            StoreError::Internal(source) => Self::Internal(source),
        }
    }
}
