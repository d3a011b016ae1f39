//! The admin API (separate listener): manage applications, their secrets, enrollments and
//! keys; read the audit trail and usage counts. Errors are RFC 9457 problems.

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use axum::{
    Json, Router,
    extract::{
        FromRequest, Path, Query, Request, State,
        rejection::{JsonRejection, QueryRejection},
    },
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{
    AppState,
    bearer::missing_token,
    body::{RawBody, refuse_declared_oversize, too_large},
    error::{ApiError, Dialect, Failure},
    extract::bearer_token,
};
use crate::{
    authority::{
        AuthorityError, MintRequest, Rule,
        app_secrets::CreateSecret,
        apps::{CreateApplication, QuotaRequest, UpdateApplication},
        audit::{AuditQuery, USAGE_MAX_DAYS},
        enrollments::{CreateEnrollment, Created, parse_owner},
        keys::KeyInfo,
    },
    domain::{
        AppId, AppSecret, Application, AuditRecord, CredentialRef, Enrollment, EnrollmentId,
        GrantId, ScopeSet, SecretId, SecretState, Subject, SubjectKind, TokenQuota,
    },
    store::EnrollmentFilter,
};

pub fn router(state: AppState, admin_token: SecretString) -> Router {
    let expected = AdminTokenDigest::of(admin_token.expose_secret());
    Router::new()
        .route("/admin/v1/apps", post(create_app).get(list_apps))
        .route(
            "/admin/v1/apps/{id}",
            get(show_app).patch(update_app).delete(delete_app),
        )
        .route("/admin/v1/apps/{id}/disable", post(disable_app))
        .route("/admin/v1/apps/{id}/enable", post(enable_app))
        .route(
            "/admin/v1/enrollments",
            post(create_enrollment).get(list_enrollments),
        )
        .route(
            "/admin/v1/enrollments/{id}",
            get(show_enrollment).delete(delete_enrollment),
        )
        .route(
            "/admin/v1/enrollments/{id}/disable",
            post(disable_enrollment),
        )
        .route("/admin/v1/enrollments/{id}/enable", post(enable_enrollment))
        .route("/admin/v1/apps/{id}/rotate-secret", post(rotate_secret))
        .route(
            "/admin/v1/apps/{id}/secrets",
            post(create_secret).get(list_secrets),
        )
        .route(
            "/admin/v1/apps/{id}/secrets/{secret_id}",
            delete(revoke_secret),
        )
        .route("/admin/v1/audit", get(list_audit))
        .route("/admin/v1/apps/{id}/usage", get(app_usage))
        .route(
            "/admin/v1/apps/{id}/secrets/{secret_id}/usage",
            get(secret_usage),
        )
        .route("/admin/v1/grants/{id}/usage", get(grant_usage))
        .route("/admin/v1/keys", get(list_keys))
        .route("/admin/v1/keys/rotate", post(rotate_keys))
        .route("/admin/v1/tokens", post(mint_token))
        .route("/metrics", get(metrics))
        .fallback(|| async { Problem::new(Failure::NotFound, "no such admin route") })
        .route_layer(middleware::from_fn_with_state(
            expected,
            require_admin_token,
        ))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = crate::telemetry::metrics::render(state.authority.metrics_snapshot());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// Comparing digests keeps the comparison constant-time even across token lengths.
#[derive(Clone)]
struct AdminTokenDigest([u8; 32]);

impl AdminTokenDigest {
    fn of(token: &str) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        Self(out)
    }
}

async fn require_admin_token(
    State(expected): State<AdminTokenDigest>,
    request: Request,
    next: Next,
) -> Response {
    const REQUIRED: &str = "a valid admin bearer token is required";
    match bearer_token(request.headers()).map(AdminTokenDigest::of) {
        Some(digest) if bool::from(digest.0.ct_eq(&expected.0)) => next.run(request).await,
        Some(_) => Problem::new(Failure::InvalidToken, REQUIRED).into_response(),
        None => missing_token::<Admin>(REQUIRED).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAppRequest {
    name: String,
    allowed_scopes: Option<String>,
    default_scopes: Option<String>,
    #[serde(default)]
    sandbox: bool,
    /// CIDR blocks (or bare addresses) the app's credentials may be presented from.
    allowed_cidrs: Option<Vec<String>>,
    /// CIDR blocks (or bare addresses) the app's tokens may be used from.
    token_bound_cidrs: Option<Vec<String>>,
    /// Tokens per UTC hour and/or day; absent or `null`: no quota.
    quota: Option<QuotaBody>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// An issuance quota: at least one of the two, each 1 to 1e9. Any JSON number is read, so
/// a negative, fractional or huge one gets the range rule (400) rather than a type error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaBody {
    tokens_per_hour: Option<serde_json::Number>,
    tokens_per_day: Option<serde_json::Number>,
}

impl QuotaBody {
    fn request(self) -> Result<QuotaRequest, Problem> {
        let limit = |field: &'static str, n: Option<serde_json::Number>| match n {
            None => Ok(None),
            Some(n) => n.as_u64().map(Some).ok_or_else(|| {
                Problem::from(AuthorityError::invalid(
                    field,
                    Rule::Range {
                        min: 1,
                        max: TokenQuota::MAX,
                        unit: "",
                    },
                ))
            }),
        };
        Ok(QuotaRequest {
            tokens_per_hour: limit("quota.tokens_per_hour", self.tokens_per_hour)?,
            tokens_per_day: limit("quota.tokens_per_day", self.tokens_per_day)?,
        })
    }
}

/// An app's quota as shown: only the windows it limits.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QuotaResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens_per_hour: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens_per_day: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateAppRequest {
    name: Option<String>,
    allowed_scopes: Option<String>,
    default_scopes: Option<String>,
    sandbox: Option<bool>,
    /// Replaces the list; `[]` lifts the binding.
    allowed_cidrs: Option<Vec<String>>,
    /// Replaces the list; `[]` lifts the binding.
    token_bound_cidrs: Option<Vec<String>>,
    /// Replaces the quota; `null` lifts it.
    #[serde(default, deserialize_with = "super::auth_grant::present")]
    quota: Option<Option<QuotaBody>>,
}

#[derive(Debug, Serialize)]
pub struct AppResponse {
    id: AppId,
    client_id: String,
    name: String,
    allowed_scopes: String,
    default_scopes: String,
    sandbox: bool,
    /// Omitted while the app binds nothing, so such an app reads as it always has.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_cidrs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    token_bound_cidrs: Vec<String>,
    /// Omitted while the app has no quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    quota: Option<QuotaResponse>,
    disabled: bool,
    created_at: String,
    updated_at: String,
    last_used_at: Option<String>,
    /// Present only in the response that creates the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<Application> for AppResponse {
    fn from(app: Application) -> Self {
        Self {
            id: app.id,
            client_id: app.client_id.to_string(),
            name: app.name,
            allowed_scopes: app.allowed_scopes.to_string(),
            default_scopes: app.default_scopes.to_string(),
            sandbox: app.sandbox,
            allowed_cidrs: app.allowed_cidrs.to_strings(),
            token_bound_cidrs: app.token_bound_cidrs.to_strings(),
            quota: (!app.quota.is_unlimited()).then_some(QuotaResponse {
                tokens_per_hour: app.quota.per_hour,
                tokens_per_day: app.quota.per_day,
            }),
            disabled: app.disabled,
            created_at: rfc3339(app.created_at),
            updated_at: rfc3339(app.updated_at),
            last_used_at: app.last_used_at.map(rfc3339),
            client_secret: None,
        }
    }
}

async fn create_app(
    State(state): State<AppState>,
    AdminJson(request): AdminJson<CreateAppRequest>,
) -> Result<(StatusCode, Json<AppResponse>), Problem> {
    let import = match (request.client_id, request.client_secret) {
        (Some(id), Some(secret)) => Some((id, SecretString::from(secret))),
        (None, None) => None,
        _ => {
            return Err(Problem::bad_request(
                "client_id and client_secret are imported together or not at all",
            ));
        }
    };
    let created = state
        .authority
        .create_app(CreateApplication {
            name: request.name,
            allowed_scopes: request.allowed_scopes,
            default_scopes: request.default_scopes,
            sandbox: request.sandbox,
            allowed_cidrs: request.allowed_cidrs,
            token_bound_cidrs: request.token_bound_cidrs,
            quota: request.quota.map(QuotaBody::request).transpose()?,
            import,
        })
        .await?;
    let mut body = AppResponse::from(created.app);
    body.client_secret = created.client_secret.map(|s| s.expose_secret().to_owned());
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list_apps(State(state): State<AppState>) -> Result<Json<Vec<AppResponse>>, Problem> {
    let apps = state.authority.apps().await?;
    Ok(Json(apps.into_iter().map(AppResponse::from).collect()))
}

async fn show_app(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AppResponse>, Problem> {
    let app = state.authority.app(parse_id(&id)?).await?;
    Ok(Json(app.into()))
}

async fn update_app(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AdminJson(request): AdminJson<UpdateAppRequest>,
) -> Result<Json<AppResponse>, Problem> {
    let app = state
        .authority
        .update_app(
            parse_id(&id)?,
            UpdateApplication {
                name: request.name,
                allowed_scopes: request.allowed_scopes,
                default_scopes: request.default_scopes,
                sandbox: request.sandbox,
                allowed_cidrs: request.allowed_cidrs,
                token_bound_cidrs: request.token_bound_cidrs,
                quota: request
                    .quota
                    .map(|q| q.map(QuotaBody::request).transpose())
                    .transpose()?,
            },
        )
        .await?;
    Ok(Json(app.into()))
}

async fn delete_app(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state.authority.delete_app(parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn disable_app(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AppResponse>, Problem> {
    let app = state
        .authority
        .set_app_disabled(parse_id(&id)?, true)
        .await?;
    Ok(Json(app.into()))
}

async fn enable_app(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AppResponse>, Problem> {
    let app = state
        .authority
        .set_app_disabled(parse_id(&id)?, false)
        .await?;
    Ok(Json(app.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentRequest {
    app_id: AppId,
    owner_id: String,
    id: Option<String>,
    data: Option<Value>,
    scopes: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListEnrollmentsQuery {
    app_id: Option<String>,
    owner_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EnrollmentResponse {
    id: EnrollmentId,
    app_id: AppId,
    owner_id: String,
    data: Value,
    scopes: String,
    sandbox: bool,
    disabled: bool,
    created_at: String,
    updated_at: String,
    last_used_at: Option<String>,
}

impl From<Enrollment> for EnrollmentResponse {
    fn from(e: Enrollment) -> Self {
        Self {
            id: e.id,
            app_id: e.app_id,
            owner_id: e.owner_id.to_string(),
            data: e.data,
            scopes: e.scopes.to_string(),
            sandbox: e.sandbox,
            disabled: e.disabled,
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
            last_used_at: e.last_used_at.map(rfc3339),
        }
    }
}

async fn create_enrollment(
    State(state): State<AppState>,
    AdminJson(request): AdminJson<CreateEnrollmentRequest>,
) -> Result<(StatusCode, Json<EnrollmentResponse>), Problem> {
    let created = state
        .authority
        .create_enrollment(CreateEnrollment {
            app_id: Some(request.app_id),
            owner_id: request.owner_id,
            id: request.id,
            data: request.data,
            scopes: request.scopes,
        })
        .await?;
    Ok(match created {
        Created::New(e) => (StatusCode::CREATED, Json(e.into())),
        Created::Existing(e) => (StatusCode::OK, Json(e.into())),
    })
}

async fn list_enrollments(
    State(state): State<AppState>,
    query: Result<Query<ListEnrollmentsQuery>, QueryRejection>,
) -> Result<Json<Vec<EnrollmentResponse>>, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let filter = EnrollmentFilter {
        app_id: query
            .app_id
            .map(|raw| AppId::parse(&raw))
            .transpose()
            .map_err(|_| Problem::bad_request("app_id must be a UUID"))?,
        owner_id: query.owner_id.map(|raw| parse_owner(&raw)).transpose()?,
    };
    let list = state.authority.enrollments(&filter).await?;
    Ok(Json(
        list.into_iter().map(EnrollmentResponse::from).collect(),
    ))
}

async fn show_enrollment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EnrollmentResponse>, Problem> {
    let e = state.authority.enrollment(parse_enrollment(&id)?).await?;
    Ok(Json(e.into()))
}

async fn delete_enrollment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .authority
        .delete_enrollment(parse_enrollment(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn disable_enrollment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EnrollmentResponse>, Problem> {
    let e = state
        .authority
        .set_enrollment_disabled(parse_enrollment(&id)?, true)
        .await?;
    Ok(Json(e.into()))
}

async fn enable_enrollment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EnrollmentResponse>, Problem> {
    let e = state
        .authority
        .set_enrollment_disabled(parse_enrollment(&id)?, false)
        .await?;
    Ok(Json(e.into()))
}

fn parse_enrollment(raw: &str) -> Result<EnrollmentId, Problem> {
    EnrollmentId::parse(raw).map_err(|_| Problem::from(AuthorityError::NotFound))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintTokenRequest {
    sub: String,
    sub_kind: SubjectKind,
    /// Space-delimited.
    scope: String,
    expires_in: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct MintTokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

async fn mint_token(
    State(state): State<AppState>,
    AdminJson(request): AdminJson<MintTokenRequest>,
) -> Result<impl IntoResponse, Problem> {
    let scope = ScopeSet::parse(&request.scope).map_err(AuthorityError::from)?;
    let token = state
        .authority
        .mint(MintRequest {
            subject: Subject {
                kind: request.sub_kind,
                id: request.sub,
            },
            scope,
            lifetime: request.expires_in.map(Duration::from_secs),
        })
        .await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(MintTokenResponse {
            access_token: token.access_token,
            token_type: "Bearer",
            expires_in: token.expires_in,
        }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// Seconds the previous secret keeps working; 0 ends it at once.
    grace_period_secs: Option<u64>,
}

async fn rotate_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawBody(body, _): RawBody<Admin>,
) -> Result<Json<AppResponse>, Problem> {
    // The body is optional: an empty one means the configured grace period.
    let request: RotateSecretRequest = optional_json(&body)?;
    let grace = request
        .grace_period_secs
        .unwrap_or(state.secret_grace.as_secs());
    let rotated = state
        .authority
        .rotate_app_secret(parse_id(&id)?, Duration::from_secs(grace))
        .await?;
    let mut body = AppResponse::from(rotated.app);
    body.client_secret = rotated.client_secret.map(|s| s.expose_secret().to_owned());
    Ok(Json(body))
}

/// Everything optional: an empty body asks for a secret that never expires, unlimited.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSecretRequest {
    description: Option<String>,
    /// RFC 3339 UTC, e.g. 2030-01-31T00:00:00Z; not with `expires_in`.
    expires_at: Option<String>,
    /// Seconds from now; not with `expires_at`.
    expires_in: Option<u64>,
    max_uses: Option<u64>,
    /// CIDR blocks (or bare addresses) the secret may be presented from, besides the
    /// app's own list.
    allowed_cidrs: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub struct SecretResponse {
    id: SecretId,
    app_id: AppId,
    /// The start of a generated secret, to tell which one a client holds; null for
    /// imported secrets and those kept from before secrets had ids.
    prefix: Option<String>,
    description: String,
    /// `active`, `expired` or `used_up`.
    status: &'static str,
    created_at: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    use_count: u64,
    max_uses: Option<u64>,
    /// Omitted for a secret that binds nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_cidrs: Vec<String>,
    /// Present only in the response that creates the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

impl SecretResponse {
    fn new(secret: AppSecret, state: SecretState) -> Self {
        Self {
            id: secret.id,
            app_id: secret.app_id,
            prefix: secret.prefix,
            description: secret.description,
            status: state.as_str(),
            created_at: rfc3339(secret.created_at),
            expires_at: secret.expires_at.map(rfc3339),
            last_used_at: secret.last_used_at.map(rfc3339),
            use_count: secret.use_count,
            max_uses: secret.max_uses,
            allowed_cidrs: secret.allowed_cidrs.to_strings(),
            client_secret: None,
        }
    }
}

async fn create_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawBody(body, _): RawBody<Admin>,
) -> Result<(StatusCode, Json<SecretResponse>), Problem> {
    let request: CreateSecretRequest = optional_json(&body)?;
    let created = state
        .authority
        .create_app_secret(
            parse_id(&id)?,
            CreateSecret {
                description: request.description,
                expires_at: request.expires_at,
                expires_in: request.expires_in,
                max_uses: request.max_uses,
                allowed_cidrs: request.allowed_cidrs,
            },
        )
        .await?;
    let mut body = SecretResponse::new(created.secret, SecretState::Active);
    body.client_secret = Some(created.client_secret.expose_secret().to_owned());
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list_secrets(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<SecretResponse>>, Problem> {
    let secrets = state.authority.app_secrets(parse_id(&id)?).await?;
    Ok(Json(
        secrets
            .into_iter()
            .map(|(secret, state)| SecretResponse::new(secret, state))
            .collect(),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeSecretQuery {
    /// Also refuse every token the secret minted, and what was derived from them.
    #[serde(default)]
    revoke_tokens: bool,
}

#[derive(Debug, Serialize)]
pub struct RevokedSecretResponse {
    id: SecretId,
    tokens_revoked: bool,
    grants_revoked: usize,
}

async fn revoke_secret(
    State(state): State<AppState>,
    Path((id, secret_id)): Path<(String, String)>,
    query: Result<Query<RevokeSecretQuery>, QueryRejection>,
) -> Result<Json<RevokedSecretResponse>, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let app_id = parse_id(&id)?;
    let secret_id =
        SecretId::parse(&secret_id).map_err(|_| Problem::from(AuthorityError::NotFound))?;
    let revoked = state
        .authority
        .revoke_app_secret(app_id, secret_id, query.revoke_tokens)
        .await?;
    Ok(Json(RevokedSecretResponse {
        id: secret_id,
        tokens_revoked: revoked.tokens_revoked,
        grants_revoked: revoked.grants_revoked,
    }))
}

/// A JSON body that may be left out: empty (or blank) means every field's default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListAuditQuery {
    app_id: Option<String>,
    secret_id: Option<String>,
    grant_id: Option<String>,
    subject: Option<String>,
    event: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AuditEventResponse {
    id: String,
    at: String,
    event: String,
    app_id: Option<AppId>,
    secret_id: Option<SecretId>,
    grant_id: Option<String>,
    enrollment_id: Option<EnrollmentId>,
    sub_kind: Option<SubjectKind>,
    subject: Option<String>,
    client_id: Option<String>,
    jti: Option<String>,
    source_ip: Option<String>,
    reason: Option<String>,
    detail: Value,
}

impl From<AuditRecord> for AuditEventResponse {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.id.to_string(),
            at: rfc3339(r.at),
            event: r.event,
            app_id: r.app_id,
            secret_id: r.secret_id,
            grant_id: r.grant_id.map(|id| id.to_string()),
            enrollment_id: r.enrollment_id,
            sub_kind: r.subject_kind,
            subject: r.subject,
            client_id: r.client_id,
            jti: r.jti,
            source_ip: r.source_ip,
            reason: r.reason,
            detail: r.detail,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AuditPageResponse {
    events: Vec<AuditEventResponse>,
    /// Pass as `cursor` for the next (older) page; `null` on the last one.
    next_cursor: Option<String>,
}

async fn list_audit(
    State(state): State<AppState>,
    query: Result<Query<ListAuditQuery>, QueryRejection>,
) -> Result<Json<AuditPageResponse>, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let page = state
        .authority
        .audit_events(&AuditQuery {
            app_id: q.app_id,
            secret_id: q.secret_id,
            grant_id: q.grant_id,
            subject: q.subject,
            event: q.event,
            since: q.since,
            until: q.until,
            limit: q.limit,
            cursor: q.cursor,
        })
        .await?;
    Ok(Json(AuditPageResponse {
        events: page
            .events
            .into_iter()
            .map(AuditEventResponse::from)
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    days: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DayCountResponse {
    day: String,
    issued: u64,
}

#[derive(Debug, Serialize)]
pub struct UsageResponse {
    kind: &'static str,
    id: String,
    /// One entry per UTC day, oldest first, today last.
    days: Vec<DayCountResponse>,
}

impl UsageQuery {
    fn days(query: Result<Query<Self>, QueryRejection>) -> Result<Option<u32>, Problem> {
        let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
        query
            .days
            .map(|raw| {
                raw.parse::<u32>().map_err(|_| {
                    Problem::from(AuthorityError::invalid(
                        "days",
                        Rule::Range {
                            min: 1,
                            max: u64::from(USAGE_MAX_DAYS),
                            unit: "",
                        },
                    ))
                })
            })
            .transpose()
    }
}

fn usage_response(of: CredentialRef, days: Vec<(chrono::NaiveDate, u64)>) -> UsageResponse {
    UsageResponse {
        kind: of.kind(),
        id: of.id().to_string(),
        days: days
            .into_iter()
            .map(|(day, issued)| DayCountResponse {
                day: day.to_string(),
                issued,
            })
            .collect(),
    }
}

async fn app_usage(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<UsageResponse>, Problem> {
    let of = CredentialRef::App(parse_id(&id)?);
    let days = state.authority.usage(of, UsageQuery::days(query)?).await?;
    Ok(Json(usage_response(of, days)))
}

async fn secret_usage(
    State(state): State<AppState>,
    Path((id, secret_id)): Path<(String, String)>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<UsageResponse>, Problem> {
    let app_id = parse_id(&id)?;
    let secret_id =
        SecretId::parse(&secret_id).map_err(|_| Problem::from(AuthorityError::NotFound))?;
    let days = state
        .authority
        .secret_usage(app_id, secret_id, UsageQuery::days(query)?)
        .await?;
    Ok(Json(usage_response(CredentialRef::Secret(secret_id), days)))
}

async fn grant_usage(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<UsageResponse>, Problem> {
    let id = GrantId::parse(&id).map_err(|_| Problem::from(AuthorityError::NotFound))?;
    let of = CredentialRef::Grant(id);
    let days = state.authority.usage(of, UsageQuery::days(query)?).await?;
    Ok(Json(usage_response(of, days)))
}

fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // With the path, as the other admin routes' bodies report it: which field is wrong.
    let invalid =
        |e: &dyn std::fmt::Display| Problem::bad_request(format!("invalid JSON body: {e}"));
    let mut reader = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut reader).map_err(|e| invalid(&e))?;
    reader.end().map_err(|e| invalid(&e))?;
    Ok(value)
}

#[derive(Debug, Serialize)]
pub struct KeyResponse {
    kid: String,
    algorithm: &'static str,
    state: &'static str,
    created_at: String,
    activated_at: Option<String>,
    retired_at: Option<String>,
}

impl From<KeyInfo> for KeyResponse {
    fn from(k: KeyInfo) -> Self {
        Self {
            kid: k.kid,
            algorithm: k.algorithm.as_str(),
            state: k.state.as_str(),
            created_at: rfc3339(k.created_at),
            activated_at: k.activated_at.map(rfc3339),
            retired_at: k.retired_at.map(rfc3339),
        }
    }
}

async fn list_keys(State(state): State<AppState>) -> Json<Vec<KeyResponse>> {
    Json(
        state
            .authority
            .signing_keys()
            .into_iter()
            .map(KeyResponse::from)
            .collect(),
    )
}

async fn rotate_keys(State(state): State<AppState>) -> Result<Json<KeyResponse>, Problem> {
    Ok(Json(state.authority.rotate_keys().await?.into()))
}

fn parse_id(raw: &str) -> Result<AppId, Problem> {
    // An id that cannot exist is simply not found.
    AppId::parse(raw).map_err(|_| Problem::from(AuthorityError::NotFound))
}

/// JSON body whose rejections are problems, not axum's plain text.
pub struct AdminJson<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AdminJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        refuse_declared_oversize(req.headers())?;
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(too_large())
            }
            Err(rejection) => Err(Problem::from_json_rejection(&rejection)),
        }
    }
}

/// The admin API's dialect: RFC 9457 problem details.
#[derive(Debug)]
pub struct Admin;

pub type Problem = ApiError<Admin>;

impl Problem {
    fn from_json_rejection(rejection: &JsonRejection) -> Self {
        Self::bad_request(rejection.body_text()).with_status(rejection.status())
    }
}

impl Dialect for Admin {
    /// The status says it all; every problem's type is `about:blank`.
    fn answer(failure: Failure) -> (StatusCode, &'static str) {
        use Failure as F;
        let status = match failure {
            F::MissingToken | F::InvalidToken | F::InvalidClient => StatusCode::UNAUTHORIZED,
            F::Refused | F::InsufficientScope | F::GrantState => StatusCode::FORBIDDEN,
            F::BadRequest
            | F::Invalid
            | F::UnsupportedGrantType
            | F::MalformedScope
            | F::ScopeNotGranted => StatusCode::BAD_REQUEST,
            F::NotFound => StatusCode::NOT_FOUND,
            F::Conflict => StatusCode::CONFLICT,
            F::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            F::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            F::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            F::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            F::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, "about:blank")
    }

    fn reword(error: &AuthorityError) -> Option<String> {
        let words = match error {
            AuthorityError::NotFound => "no such resource",
            AuthorityError::Unavailable => "the store is unavailable",
            _ => return None,
        };
        Some(words.to_owned())
    }

    fn envelope(error: &Problem) -> impl Serialize {
        json!({
            "type": error.code(),
            "title": error.status().canonical_reason().unwrap_or("Error"),
            "status": error.status().as_u16(),
            "detail": error.message(),
        })
    }

    const CONTENT_TYPE: &'static str = "application/problem+json";
    const REALM: Option<&'static str> = Some("portcullis-admin");
}
