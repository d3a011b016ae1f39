//! The error core every dialect shares. An [`ApiError`] is a status, a code, a message and,
//! where they apply, a retry-after, a challenge and the one field that broke a rule; one
//! `IntoResponse` writes them all the same way. A [`Dialect`] only says which status and code
//! each kind of [`Failure`] gets, where it words a core error its own way, and how its
//! envelope shapes the body.

use std::{marker::PhantomData, time::Duration};

use axum::{
    Json,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{
    authority::{AuthorityError, Invalid},
    domain::{QuotaState, QuotaStatus},
};

/// What went wrong, in words every dialect shares: the core's errors, and what the HTTP
/// layer finds while reading a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The request cannot be read as this route's request (bad syntax, a missing parameter).
    BadRequest,
    /// One field breaks a rule.
    Invalid,
    UnsupportedMediaType,
    PayloadTooLarge,
    /// No bearer token was sent.
    MissingToken,
    InvalidToken,
    InvalidClient,
    RateLimited,
    Refused,
    InsufficientScope,
    /// The auth grant is in the wrong state (still active, or no longer).
    GrantState,
    UnsupportedGrantType,
    MalformedScope,
    ScopeNotGranted,
    NotFound,
    Conflict,
    Unavailable,
    Internal,
}

impl Failure {
    /// Every failure, for the document that lists what each dialect can answer.
    pub const ALL: [Self; 18] = [
        Self::BadRequest,
        Self::Invalid,
        Self::UnsupportedMediaType,
        Self::PayloadTooLarge,
        Self::MissingToken,
        Self::InvalidToken,
        Self::InvalidClient,
        Self::RateLimited,
        Self::Refused,
        Self::InsufficientScope,
        Self::GrantState,
        Self::UnsupportedGrantType,
        Self::MalformedScope,
        Self::ScopeNotGranted,
        Self::NotFound,
        Self::Conflict,
        Self::Unavailable,
        Self::Internal,
    ];

    fn of(e: &AuthorityError) -> Self {
        match e {
            AuthorityError::InvalidClient => Self::InvalidClient,
            AuthorityError::RateLimited { .. } | AuthorityError::QuotaExceeded(_) => {
                Self::RateLimited
            }
            AuthorityError::InvalidToken => Self::InvalidToken,
            AuthorityError::Refused(_) => Self::Refused,
            AuthorityError::InsufficientScope(_) => Self::InsufficientScope,
            AuthorityError::GrantActive | AuthorityError::GrantInactive => Self::GrantState,
            AuthorityError::UnsupportedGrantType => Self::UnsupportedGrantType,
            AuthorityError::MalformedScope(_) => Self::MalformedScope,
            AuthorityError::ScopeNotGranted(_) => Self::ScopeNotGranted,
            AuthorityError::Invalid(_) => Self::Invalid,
            AuthorityError::NotFound => Self::NotFound,
            AuthorityError::Conflict(_) => Self::Conflict,
            AuthorityError::Unavailable => Self::Unavailable,
            AuthorityError::Internal(_) => Self::Internal,
        }
    }
}

/// A wire dialect's error envelope.
pub trait Dialect: Sized + 'static {
    /// The status and code each kind of failure gets: one row per failure.
    fn answer(failure: Failure) -> (StatusCode, &'static str);

    /// Where the dialect words a core error its own way; `None` keeps the shared wording.
    fn reword(_error: &AuthorityError) -> Option<String> {
        None
    }

    /// The error body.
    fn envelope(error: &ApiError<Self>) -> impl Serialize;

    /// The media type of error bodies.
    const CONTENT_TYPE: &'static str = "application/json";
    /// Error answers that must not be cached (RFC 6749 §5.2 asks it of OAuth).
    const NO_STORE: bool = false;
    /// The challenge a 401 for bad client credentials carries, if any.
    const CLIENT_CHALLENGE: Option<&'static str> = None;
    /// The realm the dialect's bearer challenges name, if any.
    const REALM: Option<&'static str> = None;
}

/// An error answer in dialect `D`.
#[derive(Debug)]
pub struct ApiError<D> {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
    /// The quota a refusal is about (RateLimit headers); rare, so kept out of line.
    quota: Option<Box<QuotaStatus>>,
    challenge: Option<Challenge>,
    /// Rare, so kept out of line: errors travel in every handler's `Result`.
    field: Option<Box<(&'static str, String)>>,
    dialect: PhantomData<fn() -> D>,
}

/// What a 401 asks the caller to present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    /// RFC 6750 §3.1: no error code when the request carried no token.
    Bearer,
    InvalidBearer,
    /// The dialect's [`Dialect::CLIENT_CHALLENGE`].
    Client,
}

impl<D: Dialect> ApiError<D> {
    /// `failure` as this dialect answers it.
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        let (status, code) = D::answer(failure);
        // HTTP wants a challenge on every 401; the dialects send the ones they always have.
        let challenge = match failure {
            _ if status != StatusCode::UNAUTHORIZED => None,
            Failure::MissingToken => Some(Challenge::Bearer),
            Failure::InvalidToken => Some(Challenge::InvalidBearer),
            Failure::InvalidClient => D::CLIENT_CHALLENGE.map(|_| Challenge::Client),
            _ => None,
        };
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            quota: None,
            challenge,
            field: None,
            dialect: PhantomData,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Failure::BadRequest, message)
    }

    /// `field` breaks the rule `rule` says, as the core's [`Invalid`] does.
    pub fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        let rule = rule.into();
        Self {
            field: Some(Box::new((field, rule.clone()))),
            ..Self::new(Failure::Invalid, format!("{field}: {rule}"))
        }
    }

    /// The status an upstream parser chose (the admin API's JSON rejections).
    pub fn with_status(self, status: StatusCode) -> Self {
        Self { status, ..self }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The field that broke a rule, and the rule.
    pub fn field(&self) -> Option<(&'static str, &str)> {
        self.field.as_deref().map(|(f, rule)| (*f, rule.as_str()))
    }

    fn challenge_header(&self) -> Option<HeaderValue> {
        let bearer = |error: &str| match (D::REALM, error) {
            (None, "") => "Bearer".to_owned(),
            (None, error) => format!("Bearer {error}"),
            (Some(realm), "") => format!("Bearer realm=\"{realm}\""),
            (Some(realm), error) => format!("Bearer realm=\"{realm}\", {error}"),
        };
        let value = match self.challenge? {
            Challenge::Bearer => bearer(""),
            Challenge::InvalidBearer => bearer("error=\"invalid_token\""),
            Challenge::Client => D::CLIENT_CHALLENGE?.to_owned(),
        };
        HeaderValue::from_str(&value).ok()
    }
}

impl<D: Dialect> From<AuthorityError> for ApiError<D> {
    fn from(e: AuthorityError) -> Self {
        let message = D::reword(&e).unwrap_or_else(|| shared_wording(&e));
        let error = Self::new(Failure::of(&e), message);
        match e {
            AuthorityError::RateLimited { retry_after } => Self {
                retry_after: Some(retry_after),
                ..error
            },
            AuthorityError::QuotaExceeded(exceeded) => {
                let wait = exceeded
                    .status
                    .iter()
                    .find(|s| s.window == exceeded.window)
                    .map_or(1, |s| s.reset_secs);
                Self {
                    retry_after: Some(Duration::from_secs(wait)),
                    quota: Some(Box::new(exceeded.status)),
                    ..error
                }
            }
            AuthorityError::Invalid(Invalid { field, rule }) => Self {
                field: Some(Box::new((field, rule.to_string()))),
                ..error
            },
            AuthorityError::Internal(source) => {
                log_internal(source.as_ref());
                error
            }
            _ => error,
        }
    }
}

/// How the dialects word a core error unless they say otherwise. 5xx bodies are opaque.
fn shared_wording(e: &AuthorityError) -> String {
    match e {
        AuthorityError::RateLimited { .. } => "too many requests; retry later".to_owned(),
        AuthorityError::Unavailable => "temporarily unavailable; retry shortly".to_owned(),
        AuthorityError::Internal(_) => "internal server error".to_owned(),
        e => e.to_string(),
    }
}

impl<D: Dialect> IntoResponse for ApiError<D> {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(D::envelope(&self))).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(D::CONTENT_TYPE),
        );
        if D::NO_STORE {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        }
        if let Some(challenge) = self.challenge_header() {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(wait) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
        }
        if let Some(quota) = &self.quota {
            insert_rate_limit(headers, quota);
        }
        response
    }
}

/// The RateLimit-Policy and RateLimit fields of draft-ietf-httpapi-ratelimit-headers (-08
/// onwards: structured-field lists of named policies), one item per limited window, e.g.
/// `RateLimit-Policy: "hourly";q=1000;w=3600` and `RateLimit: "hourly";r=998;t=1234`.
/// `r` is approximate on success (see [`crate::authority::quotas`]); nothing is added for
/// credentials without a quota.
pub fn insert_rate_limit(headers: &mut HeaderMap, quota: &[QuotaState]) {
    if quota.is_empty() {
        return;
    }
    let mut policy = String::new();
    let mut limit = String::new();
    for (i, state) in quota.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let name = state.window.policy();
        policy.push_str(&format!(
            "{sep}\"{name}\";q={};w={}",
            state.limit,
            state.window.seconds()
        ));
        limit.push_str(&format!(
            "{sep}\"{name}\";r={};t={}",
            state.remaining, state.reset_secs
        ));
    }
    for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, limit)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// `response` with the RateLimit fields of `quota`, when the credential has one.
pub fn with_rate_limit(response: impl IntoResponse, quota: Option<&[QuotaState]>) -> Response {
    let mut response = response.into_response();
    if let Some(quota) = quota {
        insert_rate_limit(response.headers_mut(), quota);
    }
    response
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `Retry-After` in whole seconds, never zero.
fn retry_after_secs(wait: Duration) -> u64 {
    let rounded_up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    rounded_up.max(1)
}

/// A 5xx body is opaque; its cause is logged here once, with the whole source chain.
fn log_internal(source: &(dyn std::error::Error + 'static)) {
    let mut chain = source.to_string();
    let mut next = source.source();
    while let Some(cause) = next {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        next = cause.source();
    }
    tracing::error!(error = %chain, "internal error");
}
