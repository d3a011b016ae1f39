//! The audit trail. Every credential event goes through [`AuditTrail::record`], which writes
//! its log line (with the field names operators' log pipelines already know) and keeps the
//! event for the store. Requests never write to the database for it: events wait in a
//! bounded buffer that a flusher task writes in batches (one multi-row insert per batch),
//! every second or as soon as [`FLUSH_AT`] events wait.
//!
//! The bound, and why it is applied this way: the buffer keeps at most `capacity` events
//! (a store outage's worth of retries included). Past it, new events are not kept for the
//! store: recording never blocks a request and never grows memory without limit. They are
//! not lost silently either: their log line is still written, each one is counted in
//! `portcullis_audit_dropped_total`, the first of a run is logged as a warning, and the next
//! batch carries an `audit.dropped` event saying how many the trail is missing. The per-day
//! counts of issued tokens are kept apart from the events and are never dropped: they are
//! one number per credential and day, so they stay exact whatever the event rate.
//!
//! Issuance at request rate ([`Event::is_issuance`]: client credentials, enrollment
//! authorizations, exchanges) is kept as summaries by default ([`IssuedTokens::Summary`]):
//! one row per credential, address, scope and minute for each batch, with how many tokens it
//! stands for, instead of one row per token. A row per token made every token pay an
//! insert's CPU (the warm token path's cost almost doubled, about 80 µs to 150 µs of
//! server CPU per token) and filled the buffer under load; the log line is still
//! written per token, with its `jti`. Operators who need the trail itself to name every
//! token choose [`IssuedTokens::Each`].

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Serialize;
use tokio::sync::Notify;
use tracing::Level;
use uuid::Uuid;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{AuthorityError, Rule, clock::SharedClock};
use crate::{
    domain::{
        AppId, AuditRecord, CredentialRef, DailyCount, EnrollmentId, GrantId, SecretId, SubjectKind,
    },
    store::{AuditFilter, DynStore},
    telemetry::metrics,
};

/// Events kept waiting for the store at most (a few MiB).
pub const CAPACITY: usize = 10_000;
/// This many waiting events wake the flusher before its next tick.
pub const FLUSH_AT: usize = 1_000;
/// The flusher's tick.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often each replica purges events past the retention (an idempotent delete).
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Free text (a presented client id, a subject) is kept up to this many bytes.
const TEXT_MAX: usize = 256;

pub const LIST_DEFAULT_LIMIT: u32 = 100;
pub const LIST_MAX_LIMIT: u32 = 1000;
pub const USAGE_DEFAULT_DAYS: u32 = 30;
pub const USAGE_MAX_DAYS: u32 = 366;

/// How the trail keeps tokens issued at request rate (`audit.issued_tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuedTokens {
    /// One row per credential, source address, scope and minute in each batch, with
    /// `detail.count` tokens, the first one's time as `at`, the last one's as
    /// `detail.last_at`, and no `jti`.
    #[default]
    Summary,
    /// One row per token, with its `jti`.
    Each,
}

/// The credential events the trail knows, named as their log lines' `event` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    TokenIssued,
    TokenMinted,
    TokenRevoked,
    TokenRevokeRefused,
    /// A verified client asked for what its policy does not allow.
    TokenRefused,
    AuthFailed,
    /// A good credential or token refused by policy (`reason`: `network`).
    AuthRefused,
    AuthRateLimited,
    /// A token or request refused because a quota window is used up.
    QuotaExceeded,
    AppCreated,
    AppUpdated,
    AppDisabled,
    AppEnabled,
    AppDeleted,
    SecretCreated,
    SecretRotated,
    SecretRevoked,
    EnrollmentCreated,
    EnrollmentAuthorized,
    EnrollmentUpdated,
    EnrollmentDisabled,
    EnrollmentEnabled,
    EnrollmentDeleted,
    GrantCreated,
    GrantRevoked,
    GrantDeleted,
    GrantApiToken,
    GrantExchanged,
    KeyCreated,
    KeyRotated,
    KeyRotationRefused,
    /// Written by the trail itself: events it could not keep (see the module notes).
    AuditDropped,
}

impl Event {
    pub const ALL: [Self; 32] = [
        Self::TokenIssued,
        Self::TokenMinted,
        Self::TokenRevoked,
        Self::TokenRevokeRefused,
        Self::TokenRefused,
        Self::AuthFailed,
        Self::AuthRefused,
        Self::AuthRateLimited,
        Self::QuotaExceeded,
        Self::AppCreated,
        Self::AppUpdated,
        Self::AppDisabled,
        Self::AppEnabled,
        Self::AppDeleted,
        Self::SecretCreated,
        Self::SecretRotated,
        Self::SecretRevoked,
        Self::EnrollmentCreated,
        Self::EnrollmentAuthorized,
        Self::EnrollmentUpdated,
        Self::EnrollmentDisabled,
        Self::EnrollmentEnabled,
        Self::EnrollmentDeleted,
        Self::GrantCreated,
        Self::GrantRevoked,
        Self::GrantDeleted,
        Self::GrantApiToken,
        Self::GrantExchanged,
        Self::KeyCreated,
        Self::KeyRotated,
        Self::KeyRotationRefused,
        Self::AuditDropped,
    ];
}

/// A listing as asked for, each filter as given (the admin API's query string, the CLI's
/// flags), so both are validated alike.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub app_id: Option<String>,
    pub secret_id: Option<String>,
    pub grant_id: Option<String>,
    pub subject: Option<String>,
    pub event: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// One page of events, newest first; `next_cursor` asks for the next one.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub events: Vec<AuditRecord>,
    pub next_cursor: Option<String>,
}

impl AuditQuery {
    pub fn parse(&self) -> Result<(AuditFilter, u32), AuthorityError> {
        fn uuid(field: &'static str, raw: Option<&String>) -> Result<Option<Uuid>, AuthorityError> {
            raw.map(|raw| {
                Uuid::parse_str(raw).map_err(|_| AuthorityError::invalid(field, Rule::NotAUuid))
            })
            .transpose()
        }
        fn time(
            field: &'static str,
            raw: Option<&String>,
        ) -> Result<Option<DateTime<Utc>>, AuthorityError> {
            raw.map(|raw| {
                DateTime::parse_from_rfc3339(raw)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| AuthorityError::invalid(field, Rule::NotRfc3339))
            })
            .transpose()
        }
        let subject = match &self.subject {
            Some(s) if s.is_empty() => return Err(AuthorityError::invalid("subject", Rule::Empty)),
            Some(s) if s.len() > TEXT_MAX => {
                return Err(AuthorityError::invalid(
                    "subject",
                    Rule::MaxBytes { max: TEXT_MAX },
                ));
            }
            other => other.clone(),
        };
        let event = match &self.event {
            Some(name) if !Event::ALL.iter().any(|e| e.name() == name) => {
                return Err(AuthorityError::invalid("event", Rule::NotAnAuditEvent));
            }
            other => other.clone(),
        };
        let since = time("since", self.since.as_ref())?;
        let until = time("until", self.until.as_ref())?;
        if let (Some(since), Some(until)) = (since, until)
            && until <= since
        {
            return Err(AuthorityError::invalid(
                "until",
                Rule::NotLaterThan("since"),
            ));
        }
        let limit = match &self.limit {
            None => LIST_DEFAULT_LIMIT,
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=LIST_MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    AuthorityError::invalid(
                        "limit",
                        Rule::Range {
                            min: 1,
                            max: u64::from(LIST_MAX_LIMIT),
                            unit: "",
                        },
                    )
                })?,
        };
        let after = self
            .cursor
            .as_deref()
            .map(|raw| {
                parse_cursor(raw)
                    .ok_or_else(|| AuthorityError::invalid("cursor", Rule::NotAnAuditCursor))
            })
            .transpose()?;
        let filter = AuditFilter {
            app_id: uuid("app_id", self.app_id.as_ref())?.map(AppId),
            secret_id: uuid("secret_id", self.secret_id.as_ref())?.map(SecretId),
            grant_id: uuid("grant_id", self.grant_id.as_ref())?.map(GrantId),
            subject,
            event,
            since,
            until,
            after,
        };
        Ok((filter, limit))
    }
}

/// Where a page ended: the last event's time and id, opaque to callers.
pub fn cursor_after(record: &AuditRecord) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}.{}",
        record.at.timestamp_micros(),
        record.id.simple()
    ))
}

fn parse_cursor(raw: &str) -> Option<(DateTime<Utc>, Uuid)> {
    if raw.len() > 128 {
        return None;
    }
    let decoded = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
    let (micros, id) = decoded.split_once('.')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, Uuid::parse_str(id).ok()?))
}

/// How an event's log line names its subject (each kept its own words).
enum SubjectWords {
    /// `sub_kind`, `sub`
    Sub,
    /// `sub`
    SubOnly,
    /// `profile_kind`, `profile`
    Profile,
    /// `owner_id`
    Owner,
}

impl Event {
    pub const fn name(self) -> &'static str {
        match self {
            Self::TokenIssued => "token.issued",
            Self::TokenMinted => "token.minted",
            Self::TokenRevoked => "token.revoked",
            Self::TokenRevokeRefused => "token.revoke_refused",
            Self::TokenRefused => "token.refused",
            Self::AuthFailed => "auth.failed",
            Self::AuthRefused => "auth.refused",
            Self::AuthRateLimited => "auth.rate_limited",
            Self::QuotaExceeded => "quota.exceeded",
            Self::AppCreated => "app.created",
            Self::AppUpdated => "app.updated",
            Self::AppDisabled => "app.disabled",
            Self::AppEnabled => "app.enabled",
            Self::AppDeleted => "app.deleted",
            Self::SecretCreated => "app.secret_created",
            Self::SecretRotated => "app.secret_rotated",
            Self::SecretRevoked => "app.secret_revoked",
            Self::EnrollmentCreated => "enrollment.created",
            Self::EnrollmentAuthorized => "enrollment.authorized",
            Self::EnrollmentUpdated => "enrollment.updated",
            Self::EnrollmentDisabled => "enrollment.disabled",
            Self::EnrollmentEnabled => "enrollment.enabled",
            Self::EnrollmentDeleted => "enrollment.deleted",
            Self::GrantCreated => "grant.created",
            Self::GrantRevoked => "grant.revoked",
            Self::GrantDeleted => "grant.deleted",
            Self::GrantApiToken => "grant.api_token",
            Self::GrantExchanged => "grant.exchanged",
            Self::KeyCreated => "key.created",
            Self::KeyRotated => "key.rotated",
            Self::KeyRotationRefused => "key.rotation_refused",
            Self::AuditDropped => "audit.dropped",
        }
    }

    /// Whether the event minted a token, counted per day for each credential it names.
    const fn issues_token(self) -> bool {
        matches!(
            self,
            Self::TokenIssued
                | Self::TokenMinted
                | Self::EnrollmentAuthorized
                | Self::GrantApiToken
                | Self::GrantExchanged
        )
    }

    /// Whether the event mints a token at request rate, on a credential the caller holds
    /// (summarised under [`IssuedTokens::Summary`]).
    const fn is_issuance(self) -> bool {
        matches!(
            self,
            Self::TokenIssued | Self::EnrollmentAuthorized | Self::GrantExchanged
        )
    }

    const fn is_warning(self) -> bool {
        matches!(
            self,
            Self::AuthRateLimited | Self::QuotaExceeded | Self::AuditDropped
        )
    }

    const fn subject_words(self) -> SubjectWords {
        match self {
            Self::GrantCreated => SubjectWords::Profile,
            Self::EnrollmentCreated => SubjectWords::Owner,
            Self::TokenRevoked => SubjectWords::SubOnly,
            _ => SubjectWords::Sub,
        }
    }

    /// Which of the event's ids its log line carries: the fields the line had before the
    /// trail existed, so log pipelines keep seeing the same lines (the trail keeps all).
    /// Event-specific facts ([`Detail`]) are logged whenever they are set.
    const fn logged(self) -> u16 {
        use logged::*;
        match self {
            Self::TokenIssued | Self::TokenRevokeRefused => CLIENT | JTI | SOURCE,
            Self::TokenMinted => SUBJECT | JTI,
            Self::TokenRevoked => CLIENT | JTI | SUBJECT | SOURCE,
            Self::AuthFailed => CLIENT | SECRET | REASON | SOURCE,
            // Both sites log reason, client_id and source_ip; the credential's also its
            // secret_id, the token's its jti.
            Self::AuthRefused => REASON | CLIENT | SECRET | JTI | SOURCE,
            Self::AuthRateLimited => CLIENT | SOURCE,
            Self::AppCreated
            | Self::AppUpdated
            | Self::AppDisabled
            | Self::AppEnabled
            | Self::AppDeleted => APP | CLIENT,
            Self::SecretCreated | Self::SecretRotated | Self::SecretRevoked => {
                APP | CLIENT | SECRET
            }
            Self::EnrollmentCreated => ENROLLMENT | APP | SUBJECT,
            Self::EnrollmentAuthorized => ENROLLMENT | CLIENT | SOURCE,
            Self::EnrollmentUpdated
            | Self::EnrollmentDisabled
            | Self::EnrollmentEnabled
            | Self::EnrollmentDeleted => ENROLLMENT,
            Self::GrantCreated => GRANT | SUBJECT,
            Self::GrantRevoked | Self::GrantDeleted => GRANT,
            Self::GrantApiToken | Self::GrantExchanged => GRANT | JTI,
            Self::KeyCreated | Self::KeyRotated | Self::KeyRotationRefused => 0,
            Self::TokenRefused | Self::QuotaExceeded | Self::AuditDropped => ALL,
        }
    }
}

/// Bits of [`Event::logged`].
mod logged {
    pub const APP: u16 = 1;
    pub const SECRET: u16 = 1 << 1;
    pub const GRANT: u16 = 1 << 2;
    pub const ENROLLMENT: u16 = 1 << 3;
    pub const SUBJECT: u16 = 1 << 4;
    pub const CLIENT: u16 = 1 << 5;
    pub const JTI: u16 = 1 << 6;
    pub const SOURCE: u16 = 1 << 7;
    pub const REASON: u16 = 1 << 8;
    pub const ALL: u16 = u16::MAX;
}

/// Facts only some events have. Kept as a small JSON object; never a secret or a token.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Detail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_revoked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grants_revoked: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// A summary's number of tokens ([`IssuedTokens::Summary`]) or quota refusals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// A summary's last token's time (its first one's is the row's `at`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_at: Option<String>,
    /// The quota window that was used up (`hourly`, `daily`, `minutely`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<&'static str>,
}

/// One credential event, built at its site with the setters below.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    event: Event,
    at: DateTime<Utc>,
    /// Given on the first attempt to store it, kept across retries.
    id: Option<Uuid>,
    app_id: Option<AppId>,
    secret_id: Option<SecretId>,
    grant_id: Option<GrantId>,
    enrollment_id: Option<EnrollmentId>,
    subject: Option<(SubjectKind, String)>,
    client_id: Option<String>,
    jti: Option<String>,
    source_ip: Option<IpAddr>,
    reason: Option<&'static str>,
    /// The log line's message, for the few lines that have one.
    note: Option<&'static str>,
    detail: Detail,
}

impl AuditEvent {
    pub fn new(event: Event) -> Self {
        Self {
            event,
            at: DateTime::<Utc>::UNIX_EPOCH,
            id: None,
            app_id: None,
            secret_id: None,
            grant_id: None,
            enrollment_id: None,
            subject: None,
            client_id: None,
            jti: None,
            source_ip: None,
            reason: None,
            note: None,
            detail: Detail::default(),
        }
    }

    pub fn app(mut self, id: impl Into<Option<AppId>>) -> Self {
        self.app_id = id.into();
        self
    }

    pub fn secret(mut self, id: impl Into<Option<SecretId>>) -> Self {
        self.secret_id = id.into();
        self
    }

    pub fn grant(mut self, id: impl Into<Option<GrantId>>) -> Self {
        self.grant_id = id.into();
        self
    }

    pub fn enrollment(mut self, id: impl Into<Option<EnrollmentId>>) -> Self {
        self.enrollment_id = id.into();
        self
    }

    pub fn subject(mut self, kind: SubjectKind, id: &str) -> Self {
        self.subject = Some((kind, clip(id)));
        self
    }

    pub fn client(mut self, client_id: &str) -> Self {
        self.client_id = Some(clip(client_id));
        self
    }

    pub fn jti(mut self, jti: &str) -> Self {
        self.jti = Some(clip(jti));
        self
    }

    pub fn source(mut self, ip: IpAddr) -> Self {
        self.source_ip = Some(ip);
        self
    }

    pub fn reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn note(mut self, note: &'static str) -> Self {
        self.note = Some(note);
        self
    }

    pub fn detail(mut self, detail: Detail) -> Self {
        self.detail = detail;
        self
    }

    /// The credentials whose daily count a token issued in this event adds to.
    fn credentials(&self) -> [Option<CredentialRef>; 3] {
        [
            self.app_id.map(CredentialRef::App),
            self.secret_id.map(CredentialRef::Secret),
            self.grant_id.map(CredentialRef::Grant),
        ]
    }

    fn to_record(&self) -> AuditRecord {
        AuditRecord {
            id: self.id.unwrap_or_else(Uuid::now_v7),
            at: self.at,
            event: self.event.name().to_owned(),
            app_id: self.app_id,
            secret_id: self.secret_id,
            grant_id: self.grant_id,
            enrollment_id: self.enrollment_id,
            subject_kind: self.subject.as_ref().map(|(kind, _)| *kind),
            subject: self.subject.as_ref().map(|(_, id)| id.clone()),
            client_id: self.client_id.clone(),
            jti: self.jti.clone(),
            source_ip: self.source_ip.map(|ip| ip.to_string()),
            reason: self.reason.map(str::to_owned),
            detail: serde_json::to_value(&self.detail).unwrap_or_default(),
        }
    }

    /// The log line, as each site wrote it before the trail existed (fields an event does
    /// not have are left out).
    fn log(&self) {
        macro_rules! line {
            ($level:expr) => {{
                let d = &self.detail;
                let bits = self.event.logged();
                let on = |bit: u16| bits & bit != 0;
                let subject = self.subject.as_ref().filter(|_| on(logged::SUBJECT));
                let words = self.event.subject_words();
                let kind = |w: bool| subject.filter(|_| w).map(|(k, _)| k.as_str());
                let id = |w: bool| subject.filter(|_| w).map(|(_, id)| id.as_str());
                let sub = matches!(words, SubjectWords::Sub | SubjectWords::SubOnly);
                let sub_kind = matches!(words, SubjectWords::Sub);
                let profile = matches!(words, SubjectWords::Profile);
                let owner = matches!(words, SubjectWords::Owner);
                tracing::event!(
                    $level,
                    event = self.event.name(),
                    grant_type = d.grant_type,
                    app_id = self.app_id.filter(|_| on(logged::APP)).map(display),
                    enrollment_id = self
                        .enrollment_id
                        .filter(|_| on(logged::ENROLLMENT))
                        .map(display),
                    grant_id = self.grant_id.filter(|_| on(logged::GRANT)).map(display),
                    client_id = self.client_id.as_deref().filter(|_| on(logged::CLIENT)),
                    secret_id = self.secret_id.filter(|_| on(logged::SECRET)).map(display),
                    sub_kind = kind(sub_kind),
                    sub = id(sub),
                    profile_kind = kind(profile),
                    profile = id(profile),
                    owner_id = id(owner),
                    scope = d.scope.as_deref(),
                    jti = self.jti.as_deref().filter(|_| on(logged::JTI)),
                    reason = self.reason.filter(|_| on(logged::REASON)),
                    imported = d.imported,
                    tokens_revoked = d.tokens_revoked,
                    grants_revoked = d.grants_revoked,
                    kid = d.kid.as_deref(),
                    algorithm = d.algorithm,
                    state = d.state,
                    next = d.next.as_deref(),
                    retry_at = d.retry_at.as_deref(),
                    dropped = d.dropped,
                    window = d.window,
                    source_ip = self.source_ip.filter(|_| on(logged::SOURCE)).map(display),
                    message = self.note,
                )
            }};
        }
        if self.event.is_warning() {
            line!(Level::WARN);
        } else {
            line!(Level::INFO);
        }
    }
}

fn clip(text: &str) -> String {
    let mut end = text.len().min(TEXT_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What a summary row stands for: everything of an issuance event (or a quota refusal) but
/// its time and `jti`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SummaryKey {
    event: Event,
    /// Minutes since the epoch: a row never spans more than one.
    minute: i64,
    app_id: Option<AppId>,
    secret_id: Option<SecretId>,
    grant_id: Option<GrantId>,
    enrollment_id: Option<EnrollmentId>,
    subject: Option<(SubjectKind, String)>,
    client_id: Option<String>,
    source_ip: Option<IpAddr>,
    reason: Option<&'static str>,
    grant_type: Option<&'static str>,
    scope: Option<String>,
    window: Option<&'static str>,
}

impl SummaryKey {
    /// Takes the event's parts (no copy: the event was built for this call).
    fn of(event: AuditEvent) -> Self {
        Self {
            event: event.event,
            minute: event.at.timestamp().div_euclid(60),
            app_id: event.app_id,
            secret_id: event.secret_id,
            grant_id: event.grant_id,
            enrollment_id: event.enrollment_id,
            subject: event.subject,
            client_id: event.client_id,
            source_ip: event.source_ip,
            reason: event.reason,
            grant_type: event.detail.grant_type,
            scope: event.detail.scope,
            window: event.detail.window,
        }
    }

    fn to_record(&self, tally: &Tally) -> AuditRecord {
        let mut event = AuditEvent::new(self.event)
            .app(self.app_id)
            .secret(self.secret_id)
            .grant(self.grant_id)
            .enrollment(self.enrollment_id)
            .detail(Detail {
                grant_type: self.grant_type,
                scope: self.scope.clone(),
                window: self.window,
                count: Some(tally.count),
                last_at: Some(
                    tally
                        .last
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ),
                ..Detail::default()
            });
        event.at = tally.first;
        event.id = Some(tally.id);
        event.subject = self.subject.clone();
        event.client_id = self.client_id.clone();
        event.source_ip = self.source_ip;
        event.reason = self.reason;
        event.to_record()
    }
}

/// How many tokens a summary stands for, and when the first and last were issued.
#[derive(Debug, Clone, Copy)]
struct Tally {
    count: u64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    /// The row's id, kept across retries like an event's.
    id: Uuid,
}

impl Tally {
    fn one(at: DateTime<Utc>) -> Self {
        Self {
            count: 1,
            first: at,
            last: at,
            // Given when first written, like an event's.
            id: Uuid::nil(),
        }
    }

    fn add(&mut self, other: Self) {
        self.count += other.count;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }
}

/// What [`AuditTrail::record`] keeps of an event.
enum Row {
    Event(AuditEvent),
    Summary(SummaryKey, Tally),
}

/// What waits for the store.
#[derive(Default)]
struct Pending {
    events: Vec<AuditEvent>,
    summaries: HashMap<SummaryKey, Tally>,
    counts: HashMap<(CredentialRef, NaiveDate), u64>,
    /// Events not kept since the last batch was taken.
    dropped: u64,
}

impl Pending {
    /// Rows waiting: summaries count against the same bound as events.
    fn rows(&self) -> usize {
        self.events.len() + self.summaries.len()
    }
}

/// One batch, taken out of the buffer to be written (and put back if that fails).
struct Batch {
    events: Vec<AuditEvent>,
    summaries: HashMap<SummaryKey, Tally>,
    counts: HashMap<(CredentialRef, NaiveDate), u64>,
    dropped: u64,
}

pub struct AuditTrail {
    clock: SharedClock,
    capacity: usize,
    issued_tokens: IssuedTokens,
    pending: Mutex<Pending>,
    /// One flush at a time: a flush that returns has written everything recorded before
    /// it began, even if the flusher task had taken part of it.
    flushing: tokio::sync::Mutex<()>,
    wake: Notify,
    /// `None`: events are kept forever.
    retention: Option<TimeDelta>,
    last_purge: Mutex<Option<Instant>>,
}

impl AuditTrail {
    pub fn new(
        clock: SharedClock,
        retention: Option<Duration>,
        issued_tokens: IssuedTokens,
    ) -> Self {
        Self::with_capacity(clock, retention, issued_tokens, CAPACITY)
    }

    fn with_capacity(
        clock: SharedClock,
        retention: Option<Duration>,
        issued_tokens: IssuedTokens,
        capacity: usize,
    ) -> Self {
        Self {
            clock,
            capacity,
            issued_tokens,
            pending: Mutex::default(),
            flushing: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            retention: retention.and_then(|r| TimeDelta::from_std(r).ok()),
            last_purge: Mutex::new(None),
        }
    }

    /// Logs the event and keeps it for the next batch (or adds it to its summary): a lock
    /// and a push, never I/O.
    pub fn record(&self, mut event: AuditEvent) {
        event.log();
        event.at = self.clock.now();
        let day = event.at.date_naive();
        let counted = event.event.issues_token().then(|| event.credentials());
        let summarise = match event.event {
            // Refusals a client can repeat at request rate, with nothing per request to keep.
            Event::QuotaExceeded => true,
            e => self.issued_tokens == IssuedTokens::Summary && e.is_issuance(),
        };
        let row = if summarise {
            let tally = Tally::one(event.at);
            Row::Summary(SummaryKey::of(event), tally)
        } else {
            Row::Event(event)
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for credential in counted.into_iter().flatten().flatten() {
            *pending.counts.entry((credential, day)).or_default() += 1;
        }
        let full = pending.rows() >= self.capacity;
        match row {
            Row::Summary(key, tally) => {
                if let Some(kept) = pending.summaries.get_mut(&key) {
                    kept.add(tally);
                    return;
                }
                if !full {
                    pending.summaries.insert(key, tally);
                    return;
                }
            }
            Row::Event(event) if !full => {
                pending.events.push(event);
                if pending.rows() == FLUSH_AT {
                    self.wake.notify_one();
                }
                return;
            }
            Row::Event(_) => {}
        }
        pending.dropped += 1;
        let first = pending.dropped == 1;
        drop(pending);
        metrics::audit_dropped(1);
        if first {
            tracing::warn!(
                capacity = self.capacity,
                "the audit buffer is full: events are logged but not kept until it drains"
            );
        }
    }

    fn take(&self) -> Batch {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        Batch {
            events: std::mem::take(&mut pending.events),
            summaries: std::mem::take(&mut pending.summaries),
            counts: std::mem::take(&mut pending.counts),
            dropped: std::mem::take(&mut pending.dropped),
        }
    }

    /// Puts a batch the store refused back in front of what arrived since, within the
    /// bound: what does not fit (the newest) is dropped and counted. Its summaries merge
    /// with newer ones for the same key and keep their id.
    fn restore(&self, batch: Batch) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let newer = std::mem::replace(&mut pending.events, batch.events);
        pending.events.extend(newer);
        for (key, mut tally) in batch.summaries {
            if let Some(newer) = pending.summaries.remove(&key) {
                tally.add(newer);
            }
            pending.summaries.insert(key, tally);
        }
        // Over the bound, the newest events go first, then (only if summaries alone
        // overflow it) whole summaries.
        let excess = pending.rows().saturating_sub(self.capacity);
        let events_dropped = excess.min(pending.events.len());
        let kept = pending.events.len() - events_dropped;
        pending.events.truncate(kept);
        let over: Vec<SummaryKey> = if excess > events_dropped {
            let left = excess - events_dropped;
            pending.summaries.keys().take(left).cloned().collect()
        } else {
            Vec::new()
        };
        for key in over {
            pending.summaries.remove(&key);
        }
        pending.dropped += batch.dropped + excess as u64;
        for (key, n) in batch.counts {
            *pending.counts.entry(key).or_default() += n;
        }
        drop(pending);
        if excess > 0 {
            metrics::audit_dropped(excess as u64);
        }
    }

    /// Writes what has accumulated in one transaction; on failure keeps it for the next
    /// try. Returns how many events were written.
    pub async fn flush(&self, store: &DynStore) -> Result<usize, AuthorityError> {
        let _turn = self.flushing.lock().await;
        let mut batch = self.take();
        if batch.events.is_empty()
            && batch.summaries.is_empty()
            && batch.counts.is_empty()
            && batch.dropped == 0
        {
            return Ok(0);
        }
        for event in &mut batch.events {
            event.id.get_or_insert_with(Uuid::now_v7);
        }
        for tally in batch.summaries.values_mut() {
            if tally.id.is_nil() {
                tally.id = Uuid::now_v7();
            }
        }
        let mut records: Vec<AuditRecord> =
            batch.events.iter().map(AuditEvent::to_record).collect();
        records.extend(
            batch
                .summaries
                .iter()
                .map(|(key, tally)| key.to_record(tally)),
        );
        if batch.dropped > 0 {
            let mut gap = AuditEvent::new(Event::AuditDropped).detail(Detail {
                dropped: Some(batch.dropped),
                ..Detail::default()
            });
            gap.at = self.clock.now();
            records.push(gap.to_record());
        }
        let counts: Vec<DailyCount> = batch
            .counts
            .iter()
            .map(|(&(of, day), &issued)| DailyCount { of, day, issued })
            .collect();
        match store.record_audit(&records, &counts).await {
            Ok(()) => Ok(records.len()),
            Err(e) => {
                self.restore(batch);
                Err(e.into())
            }
        }
    }

    /// Flushes every [`FLUSH_EVERY`], or sooner when [`FLUSH_AT`] events wait, until `stop`
    /// resolves (never in the middle of a write, whose batch would be lost); the caller
    /// flushes once more after the last request.
    pub async fn run_flusher(&self, store: &DynStore, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(FLUSH_EVERY) => {}
                () = self.wake.notified() => {}
            }
            if let Err(e) = self.flush(store).await {
                tracing::warn!(error = %e, "could not write the audit trail; will retry");
            }
        }
    }

    /// Deletes events (and daily counts) older than the retention; a no-op when events
    /// are kept forever. Idempotent, so every replica may run it.
    pub async fn purge(&self, store: &DynStore) -> Result<u64, AuthorityError> {
        let Some(retention) = self.retention else {
            return Ok(0);
        };
        *self.last_purge.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(store.purge_audit(self.clock.now() - retention).await?)
    }

    /// Whether an hourly purge is due on this replica.
    pub fn purge_due(&self) -> bool {
        self.retention.is_some()
            && self
                .last_purge
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none_or(|at| at.elapsed() >= PURGE_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::clock::{Clock, FixedClock};

    fn trail(capacity: usize) -> AuditTrail {
        let clock = FixedClock::new(DateTime::from_timestamp(1_750_000_000, 0).unwrap());
        AuditTrail::with_capacity(clock, None, IssuedTokens::Each, capacity)
    }

    fn summarising(capacity: usize) -> (AuditTrail, std::sync::Arc<FixedClock>) {
        let clock = FixedClock::new(DateTime::from_timestamp(1_750_000_000, 0).unwrap());
        let trail = AuditTrail::with_capacity(clock.clone(), None, IssuedTokens::Summary, capacity);
        (trail, clock)
    }

    fn from(app: AppId, ip: &str, jti: &str) -> AuditEvent {
        AuditEvent::new(Event::TokenIssued)
            .app(app)
            .jti(jti)
            .source(ip.parse().unwrap())
            .detail(Detail {
                grant_type: Some("client_credentials"),
                scope: Some("read".to_owned()),
                ..Detail::default()
            })
    }

    #[test]
    fn issuance_is_summarised_per_credential_address_and_minute() {
        let (trail, clock) = summarising(100);
        let app = AppId::generate();
        let start = clock.now();
        for n in 0..5 {
            trail.record(from(app, "10.0.0.1", &format!("j{n}")));
            clock.advance(TimeDelta::seconds(1));
        }
        trail.record(from(app, "10.0.0.2", "other-address"));
        trail.record(AuditEvent::new(Event::AuthFailed).app(app));
        // Past the minute's end: a new row, even for the same credential and address.
        clock.advance(TimeDelta::seconds(60));
        trail.record(from(app, "10.0.0.1", "next-minute"));

        let batch = trail.take();
        assert_eq!(batch.events.len(), 1, "other events stay one row each");
        let mut rows: Vec<AuditRecord> = batch
            .summaries
            .iter()
            .map(|(key, tally)| key.to_record(tally))
            .collect();
        rows.sort_by_key(|r| (r.at, r.source_ip.clone()));
        let counts: Vec<(String, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r.source_ip.clone().unwrap(),
                    r.detail["count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            counts,
            [
                ("10.0.0.1".to_owned(), 5),
                ("10.0.0.2".to_owned(), 1),
                ("10.0.0.1".to_owned(), 1)
            ]
        );
        let first = &rows[0];
        assert_eq!(first.at, start, "a summary is dated by its first token");
        assert_eq!(
            first.detail["last_at"],
            (start + TimeDelta::seconds(4)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        assert_eq!(first.event, "token.issued");
        assert_eq!(first.app_id, Some(app));
        assert_eq!(first.jti, None, "a summary names no single token");
        assert_eq!(first.detail["scope"], "read");
        assert_eq!(first.detail["grant_type"], "client_credentials");
        let day = start.date_naive();
        assert_eq!(
            batch.counts.get(&(CredentialRef::App(app), day)),
            Some(&7),
            "daily counts see every token"
        );
    }

    #[test]
    fn a_refused_batch_merges_its_summaries_with_newer_ones_and_keeps_their_ids() {
        let (trail, _) = summarising(100);
        let app = AppId::generate();
        for _ in 0..3 {
            trail.record(from(app, "10.0.0.1", "j"));
        }
        let mut refused = trail.take();
        let id = Uuid::now_v7();
        refused.summaries.values_mut().for_each(|t| t.id = id);
        for _ in 0..2 {
            trail.record(from(app, "10.0.0.1", "j"));
        }
        trail.restore(refused);
        let batch = trail.take();
        let tallies: Vec<(u64, Uuid)> = batch.summaries.values().map(|t| (t.count, t.id)).collect();
        assert_eq!(
            tallies,
            [(5, id)],
            "one row, all five tokens, the id already given"
        );
    }

    #[test]
    fn summaries_count_against_the_bound() {
        let (trail, _) = summarising(2);
        let app = AppId::generate();
        trail.record(from(app, "10.0.0.1", "j"));
        trail.record(from(app, "10.0.0.2", "j"));
        trail.record(from(app, "10.0.0.3", "j"));
        trail.record(from(app, "10.0.0.1", "j"));
        trail.record(AuditEvent::new(Event::AuthFailed).app(app));
        let batch = trail.take();
        assert_eq!(batch.summaries.len(), 2);
        assert!(batch.events.is_empty());
        assert_eq!(batch.dropped, 2, "the third address and the failure");
        let tokens: u64 = batch.summaries.values().map(|t| t.count).sum();
        assert_eq!(tokens, 3, "a kept summary still adds up its tokens");
    }

    fn issued(app: AppId) -> AuditEvent {
        AuditEvent::new(Event::TokenIssued).app(app).jti("j")
    }

    #[test]
    fn a_full_buffer_keeps_the_oldest_events_counts_the_rest_and_every_issue() {
        let trail = trail(3);
        let app = AppId::generate();
        for _ in 0..5 {
            trail.record(issued(app));
        }
        let batch = trail.take();
        assert_eq!(batch.events.len(), 3, "only `capacity` events are kept");
        assert_eq!(
            batch.dropped, 2,
            "the others are counted, not silently lost"
        );
        let day = DateTime::from_timestamp(1_750_000_000, 0)
            .unwrap()
            .date_naive();
        assert_eq!(
            batch.counts.get(&(CredentialRef::App(app), day)),
            Some(&5),
            "daily counts never drop an issue"
        );
        assert_eq!(trail.take().dropped, 0, "taking a batch starts a new count");
    }

    #[test]
    fn a_refused_batch_goes_back_in_front_within_the_bound() {
        let trail = trail(4);
        let app = AppId::generate();
        for _ in 0..3 {
            trail.record(issued(app));
        }
        let refused = trail.take();
        for _ in 0..2 {
            trail.record(AuditEvent::new(Event::AuthFailed).app(app));
        }
        trail.restore(refused);
        let batch = trail.take();
        let names: Vec<&str> = batch.events.iter().map(|e| e.event.name()).collect();
        assert_eq!(
            names,
            [
                "token.issued",
                "token.issued",
                "token.issued",
                "auth.failed"
            ],
            "the older batch comes first; the newest event that does not fit is dropped"
        );
        assert_eq!(batch.dropped, 1);
        let counted: u64 = batch.counts.values().sum();
        assert_eq!(counted, 3, "the refused batch's counts are kept");
    }

    #[test]
    fn free_text_is_clipped_on_a_character_boundary() {
        let long = "é".repeat(TEXT_MAX);
        let event = AuditEvent::new(Event::AuthFailed).client(&long);
        let kept = event.client_id.unwrap();
        assert!(kept.len() <= TEXT_MAX && long.starts_with(&kept));
    }
}
