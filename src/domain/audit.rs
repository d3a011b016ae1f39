//! The audit trail as the store keeps it: one row per credential event, and per-day counts
//! of the tokens each credential was used to issue.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{AppId, EnrollmentId, GrantId, SecretId, SubjectKind};

/// One credential event as stored and listed. Never holds a secret or a token: only ids,
/// the token's `jti`, and a small JSON object of event-specific facts.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// The event name, as in the log line's `event` field (`token.issued`, `auth.failed`…).
    pub event: String,
    pub app_id: Option<AppId>,
    pub secret_id: Option<SecretId>,
    pub grant_id: Option<GrantId>,
    pub enrollment_id: Option<EnrollmentId>,
    pub subject_kind: Option<SubjectKind>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub jti: Option<String>,
    pub source_ip: Option<String>,
    /// Why an attempt failed or was refused.
    pub reason: Option<String>,
    pub detail: Value,
}

/// A credential whose uses are counted per day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialRef {
    App(AppId),
    Secret(SecretId),
    Grant(GrantId),
}

impl CredentialRef {
    pub fn kind(self) -> &'static str {
        match self {
            Self::App(_) => "app",
            Self::Secret(_) => "secret",
            Self::Grant(_) => "grant",
        }
    }

    pub fn id(self) -> Uuid {
        match self {
            Self::App(id) => id.0,
            Self::Secret(id) => id.0,
            Self::Grant(id) => id.0,
        }
    }
}

/// Tokens issued with one credential on one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyCount {
    pub of: CredentialRef,
    pub day: NaiveDate,
    pub issued: u64,
}
