//! The admin API (separate listener): manage applications, their secrets, enrollments and
//! keys; read the audit trail and usage counts. Errors are RFC 9457 problems. Every route is
//! described by the OpenAPI document at `GET /admin/v1/openapi.json` (see `admin_openapi`):
//! a field added to a wire type here is documented by its derive, so it is one line.

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use axum::{
    Extension, Json, Router,
    extract::{
        FromRequest, FromRequestParts, Path, Query, Request, State,
        rejection::{JsonRejection, QueryRejection},
    },
    http::{StatusCode, header, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
// `IntoParams` is named in full where derived: the `params(…)` of `#[utoipa::path]` spells
// it out, which an import would make an unnecessary qualification.
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, admin_openapi,
    admin_openapi::Problems,
    bearer::missing_token,
    body::{RawBody, refuse_declared_oversize, too_large},
    error::{ApiError, Dialect, Failure},
    extract::bearer_token,
    openapi::{self, Document, OpenApiDocument},
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
    let (routes, document) = routes().split_for_parts();
    routes
        .fallback(|| async { Problem::new(Failure::NotFound, "no such admin route") })
        .route_layer(middleware::from_fn_with_state(
            expected,
            require_admin_token,
        ))
        .layer(Extension(AdminDocument(Document::render(document))))
        .with_state(state)
}

/// Every admin route, in one place: the router and its OpenAPI document are built from this
/// one list, so no admin route is served undocumented.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(admin_openapi::base())
        .routes(routes!(create_app, list_apps))
        .routes(routes!(show_app, update_app, delete_app))
        .routes(routes!(disable_app))
        .routes(routes!(enable_app))
        .routes(routes!(rotate_secret))
        .routes(routes!(create_secret, list_secrets))
        .routes(routes!(revoke_secret))
        .routes(routes!(app_usage))
        .routes(routes!(secret_usage))
        .routes(routes!(create_enrollment, list_enrollments))
        .routes(routes!(show_enrollment, delete_enrollment))
        .routes(routes!(disable_enrollment))
        .routes(routes!(enable_enrollment))
        .routes(routes!(list_audit))
        .routes(routes!(grant_usage))
        .routes(routes!(list_keys))
        .routes(routes!(rotate_keys))
        .routes(routes!(mint_token))
        .routes(routes!(metrics))
        .routes(routes!(openapi_document))
}

/// The admin document, a type of its own so it can never be confused with the public one.
#[derive(Clone)]
struct AdminDocument(Document);

#[utoipa::path(
    get,
    path = "/admin/v1/openapi.json",
    operation_id = "adminOpenapi",
    tag = "Operations",
    summary = "This document",
    responses(
        (status = 200, description = "OpenAPI 3.1.", body = inline(OpenApiDocument)),
        Problems<401>,
    ),
)]
async fn openapi_document(
    Extension(AdminDocument(document)): Extension<AdminDocument>,
) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // Behind the admin token: no shared cache may keep it.
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        document.bytes(),
    )
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "Operations",
    summary = "Prometheus metrics",
    responses(
        (
            status = 200,
            description = "The metrics of this replica.",
            content((String = "text/plain; version=0.0.4; charset=utf-8")),
        ),
        Problems<401>,
    ),
)]
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

/// Scopes default to `all:read all:write` (`default_scopes` to `allowed_scopes` when only
/// those are given). `client_id` and `client_secret` import existing credentials, together
/// or not at all.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAppRequest {
    /// 1 to 200 characters, no control characters.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[schema(schema_with = admin_openapi::nullable_scopes)]
    allowed_scopes: Option<String>,
    /// Within `allowed_scopes`.
    #[schema(schema_with = admin_openapi::nullable_scopes)]
    default_scopes: Option<String>,
    #[serde(default)]
    sandbox: bool,
    /// CIDR blocks (or bare addresses) the app's credentials may be presented from.
    #[schema(schema_with = admin_openapi::cidr_list_request)]
    allowed_cidrs: Option<Vec<String>>,
    /// CIDR blocks (or bare addresses) the app's tokens may be used from.
    #[schema(schema_with = admin_openapi::cidr_list_request)]
    token_bound_cidrs: Option<Vec<String>>,
    /// Tokens per UTC hour and/or day; absent or `null`: no quota.
    quota: Option<QuotaBody>,
    /// Printable ASCII, 1 to 255 characters.
    #[schema(max_length = 255)]
    client_id: Option<String>,
    /// Printable ASCII (RFC 6749 VSCHAR), 16 to 512 characters.
    #[schema(max_length = 512)]
    client_secret: Option<String>,
}

/// An issuance quota: at least one of the two, each 1 to 1e9. Any JSON number is read, so
/// a negative, fractional or huge one gets the range rule (400) rather than a type error.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaBody {
    /// Tokens per UTC hour.
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1_000_000_000)]
    tokens_per_hour: Option<serde_json::Number>,
    /// Tokens per UTC day.
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1_000_000_000)]
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
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct QuotaResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    tokens_per_hour: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    tokens_per_day: Option<u64>,
}

/// Only the fields sent change; absent or null leaves a field as it is (but `quota: null`
/// lifts the quota).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAppRequest {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[schema(schema_with = admin_openapi::nullable_scopes)]
    allowed_scopes: Option<String>,
    #[schema(schema_with = admin_openapi::nullable_scopes)]
    default_scopes: Option<String>,
    sandbox: Option<bool>,
    /// Replaces the list; `[]` lifts the binding.
    #[schema(schema_with = admin_openapi::cidr_list_request)]
    allowed_cidrs: Option<Vec<String>>,
    /// Replaces the list; `[]` lifts the binding.
    #[schema(schema_with = admin_openapi::cidr_list_request)]
    token_bound_cidrs: Option<Vec<String>>,
    /// Replaces the quota; `null` lifts it.
    #[serde(default, deserialize_with = "super::auth_grant::present")]
    #[schema(value_type = Option<QuotaBody>)]
    quota: Option<Option<QuotaBody>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppResponse {
    #[schema(schema_with = admin_openapi::uuid)]
    id: AppId,
    client_id: String,
    name: String,
    #[schema(schema_with = admin_openapi::scopes)]
    allowed_scopes: String,
    #[schema(schema_with = admin_openapi::scopes)]
    default_scopes: String,
    sandbox: bool,
    /// Omitted while the app binds nothing, so such an app reads as it always has.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = admin_openapi::cidr_list, required = false)]
    allowed_cidrs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = admin_openapi::cidr_list, required = false)]
    token_bound_cidrs: Vec<String>,
    /// Omitted while the app has no quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    quota: Option<QuotaResponse>,
    disabled: bool,
    #[schema(schema_with = openapi::timestamp)]
    created_at: String,
    #[schema(schema_with = openapi::timestamp)]
    updated_at: String,
    #[schema(schema_with = openapi::nullable_timestamp, required = true)]
    last_used_at: Option<String>,
    /// Present only in the response that creates the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
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

#[utoipa::path(
    post,
    path = "/admin/v1/apps",
    operation_id = "createApp",
    tag = "Apps",
    summary = "Create an application, or import an existing client_id and secret",
    request_body = CreateAppRequest,
    responses(
        (
            status = 201,
            description = "The new application; `client_secret` is shown this once (absent for imported credentials).",
            body = AppResponse,
            links(
                ("show" = (operation_id = "showApp", parameters(("id" = "$response.body#/id")))),
                ("update" = (operation_id = "updateApp", parameters(("id" = "$response.body#/id")))),
                ("createSecret" = (operation_id = "createSecret", parameters(("id" = "$response.body#/id")))),
                ("listSecrets" = (operation_id = "listSecrets", parameters(("id" = "$response.body#/id")))),
                ("rotateSecret" = (operation_id = "rotateSecret", parameters(("id" = "$response.body#/id")))),
                ("usage" = (operation_id = "appUsage", parameters(("id" = "$response.body#/id")))),
                ("disable" = (operation_id = "disableApp", parameters(("id" = "$response.body#/id")))),
            ),
        ),
        Problems<400, 401, 409, 413, 415, 422, 500, 503>,
    ),
)]
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

#[utoipa::path(
    get,
    path = "/admin/v1/apps",
    operation_id = "listApps",
    tag = "Apps",
    summary = "List applications",
    responses(
        (status = 200, description = "Every application.", body = Vec<AppResponse>),
        Problems<401, 500, 503>,
    ),
)]
async fn list_apps(State(state): State<AppState>) -> Result<Json<Vec<AppResponse>>, Problem> {
    let apps = state.authority.apps().await?;
    Ok(Json(apps.into_iter().map(AppResponse::from).collect()))
}

#[utoipa::path(
    get,
    path = "/admin/v1/apps/{id}",
    operation_id = "showApp",
    tag = "Apps",
    summary = "Show an application",
    params(AppPath),
    responses(
        (status = 200, description = "The application.", body = AppResponse),
        Problems<401, 404, 500, 503>,
    ),
)]
async fn show_app(
    State(state): State<AppState>,
    AdminPath(AppPath { id }): AdminPath<AppPath>,
) -> Result<Json<AppResponse>, Problem> {
    let app = state.authority.app(parse_id(&id)?).await?;
    Ok(Json(app.into()))
}

#[utoipa::path(
    patch,
    path = "/admin/v1/apps/{id}",
    operation_id = "updateApp",
    tag = "Apps",
    summary = "Update an application's name, scopes, sandbox flag or network binding",
    params(AppPath),
    request_body = UpdateAppRequest,
    responses(
        (status = 200, description = "The updated application.", body = AppResponse),
        Problems<400, 401, 404, 409, 413, 415, 422, 500, 503>,
    ),
)]
async fn update_app(
    State(state): State<AppState>,
    AdminPath(AppPath { id }): AdminPath<AppPath>,
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

#[utoipa::path(
    delete,
    path = "/admin/v1/apps/{id}",
    operation_id = "deleteApp",
    tag = "Apps",
    summary = "Delete an application, its secrets and enrollments",
    params(AppPath),
    responses(
        (status = 204, description = "Deleted."),
        Problems<401, 404, 500, 503>,
    ),
)]
async fn delete_app(
    State(state): State<AppState>,
    AdminPath(AppPath { id }): AdminPath<AppPath>,
) -> Result<StatusCode, Problem> {
    state.authority.delete_app(parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/admin/v1/apps/{id}/disable",
    operation_id = "disableApp",
    tag = "Apps",
    summary = "Disable an application: its credentials and tokens stop working at once",
    params(AppPath),
    responses(
        (status = 200, description = "The application.", body = AppResponse),
        Problems<401, 404, 409, 500, 503>,
    ),
)]
async fn disable_app(
    State(state): State<AppState>,
    AdminPath(AppPath { id }): AdminPath<AppPath>,
) -> Result<Json<AppResponse>, Problem> {
    let app = state
        .authority
        .set_app_disabled(parse_id(&id)?, true)
        .await?;
    Ok(Json(app.into()))
}

#[utoipa::path(
    post,
    path = "/admin/v1/apps/{id}/enable",
    operation_id = "enableApp",
    tag = "Apps",
    summary = "Enable an application",
    params(AppPath),
    responses(
        (status = 200, description = "The application.", body = AppResponse),
        Problems<401, 404, 409, 500, 503>,
    ),
)]
async fn enable_app(
    State(state): State<AppState>,
    AdminPath(AppPath { id }): AdminPath<AppPath>,
) -> Result<Json<AppResponse>, Problem> {
    let app = state
        .authority
        .set_app_disabled(parse_id(&id)?, false)
        .await?;
    Ok(Json(app.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentRequest {
    /// An existing application's id.
    #[schema(schema_with = admin_openapi::uuid)]
    app_id: AppId,
    /// Printable ASCII, 1 to 255 characters.
    #[schema(min_length = 1, max_length = 255)]
    owner_id: String,
    /// A UUID the caller chooses (v7 allowed); default a new one.
    #[schema(schema_with = admin_openapi::nullable_uuid)]
    id: Option<String>,
    /// Any JSON up to 64 KiB.
    #[schema(schema_with = admin_openapi::any_json)]
    data: Option<Value>,
    /// Within the app's allowed scopes; default the app's default scopes.
    #[schema(schema_with = admin_openapi::nullable_scopes)]
    scopes: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListEnrollmentsQuery {
    /// Only this application's enrollments.
    #[param(value_type = uuid::Uuid, required = false)]
    app_id: Option<String>,
    /// Only this owner's enrollments.
    #[param(value_type = String, required = false)]
    owner_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentResponse {
    #[schema(schema_with = admin_openapi::uuid)]
    id: EnrollmentId,
    #[schema(schema_with = admin_openapi::uuid)]
    app_id: AppId,
    owner_id: String,
    /// Any JSON.
    data: Value,
    #[schema(schema_with = admin_openapi::scopes)]
    scopes: String,
    sandbox: bool,
    disabled: bool,
    #[schema(schema_with = openapi::timestamp)]
    created_at: String,
    #[schema(schema_with = openapi::timestamp)]
    updated_at: String,
    #[schema(schema_with = openapi::nullable_timestamp, required = true)]
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

#[utoipa::path(
    post,
    path = "/admin/v1/enrollments",
    operation_id = "createEnrollment",
    tag = "Enrollments",
    summary = "Enroll an owner with an application (idempotent for the same app, owner and id)",
    request_body = CreateEnrollmentRequest,
    responses(
        (
            status = 201,
            description = "The new enrollment.",
            body = EnrollmentResponse,
            links(
                ("show" = (operation_id = "showEnrollment", parameters(("id" = "$response.body#/id")))),
                ("disable" = (operation_id = "disableEnrollment", parameters(("id" = "$response.body#/id")))),
                ("enable" = (operation_id = "enableEnrollment", parameters(("id" = "$response.body#/id")))),
                ("delete" = (operation_id = "deleteEnrollment", parameters(("id" = "$response.body#/id")))),
            ),
        ),
        (status = 200, description = "The owner was already enrolled with the app: that enrollment.", body = EnrollmentResponse),
        Problems<400, 401, 409, 413, 415, 422, 500, 503>,
    ),
)]
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

#[utoipa::path(
    get,
    path = "/admin/v1/enrollments",
    operation_id = "listEnrollments",
    tag = "Enrollments",
    summary = "List enrollments, optionally of one app and/or owner",
    params(ListEnrollmentsQuery),
    responses(
        (status = 200, description = "The matching enrollments.", body = Vec<EnrollmentResponse>),
        Problems<400, 401, 500, 503>,
    ),
)]
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

#[utoipa::path(
    get,
    path = "/admin/v1/enrollments/{id}",
    operation_id = "showEnrollment",
    tag = "Enrollments",
    summary = "Show an enrollment",
    params(EnrollmentPath),
    responses(
        (status = 200, description = "The enrollment.", body = EnrollmentResponse),
        Problems<401, 404, 500, 503>,
    ),
)]
async fn show_enrollment(
    State(state): State<AppState>,
    AdminPath(EnrollmentPath { id }): AdminPath<EnrollmentPath>,
) -> Result<Json<EnrollmentResponse>, Problem> {
    let e = state.authority.enrollment(parse_enrollment(&id)?).await?;
    Ok(Json(e.into()))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/enrollments/{id}",
    operation_id = "deleteEnrollment",
    tag = "Enrollments",
    summary = "Delete an enrollment; its tokens stop working at once",
    params(EnrollmentPath),
    responses(
        (status = 204, description = "Deleted."),
        Problems<401, 404, 500, 503>,
    ),
)]
async fn delete_enrollment(
    State(state): State<AppState>,
    AdminPath(EnrollmentPath { id }): AdminPath<EnrollmentPath>,
) -> Result<StatusCode, Problem> {
    state
        .authority
        .delete_enrollment(parse_enrollment(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/admin/v1/enrollments/{id}/disable",
    operation_id = "disableEnrollment",
    tag = "Enrollments",
    summary = "Disable an enrollment; its tokens stop working at once",
    params(EnrollmentPath),
    responses(
        (status = 200, description = "The enrollment.", body = EnrollmentResponse),
        Problems<401, 404, 409, 500, 503>,
    ),
)]
async fn disable_enrollment(
    State(state): State<AppState>,
    AdminPath(EnrollmentPath { id }): AdminPath<EnrollmentPath>,
) -> Result<Json<EnrollmentResponse>, Problem> {
    let e = state
        .authority
        .set_enrollment_disabled(parse_enrollment(&id)?, true)
        .await?;
    Ok(Json(e.into()))
}

#[utoipa::path(
    post,
    path = "/admin/v1/enrollments/{id}/enable",
    operation_id = "enableEnrollment",
    tag = "Enrollments",
    summary = "Enable an enrollment",
    params(EnrollmentPath),
    responses(
        (status = 200, description = "The enrollment.", body = EnrollmentResponse),
        Problems<401, 404, 409, 500, 503>,
    ),
)]
async fn enable_enrollment(
    State(state): State<AppState>,
    AdminPath(EnrollmentPath { id }): AdminPath<EnrollmentPath>,
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintTokenRequest {
    /// The owner's id, or the app's client_id.
    #[schema(min_length = 1, max_length = 255)]
    sub: String,
    #[schema(schema_with = admin_openapi::subject_kind)]
    sub_kind: SubjectKind,
    #[schema(schema_with = admin_openapi::scopes)]
    scope: String,
    /// Seconds; default the OAuth token lifetime, at most the longest configured lifetime.
    #[schema(minimum = 1)]
    expires_in: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MintTokenResponse {
    access_token: String,
    #[schema(schema_with = openapi::bearer_token_type)]
    token_type: &'static str,
    /// Seconds.
    expires_in: u64,
}

#[utoipa::path(
    post,
    path = "/admin/v1/tokens",
    operation_id = "mintToken",
    tag = "Tokens",
    summary = "Mint a token for an owner (vouched for by an upstream login system) or an app",
    description = "For `sub_kind: app`, `sub` is an enabled app's client_id and `scope` must lie within its allowed scopes; the token is bound to the app's `token_bound_cidrs`.",
    request_body = MintTokenRequest,
    responses(
        (
            status = 200,
            description = "The token; sent with `Cache-Control: no-store`.",
            body = MintTokenResponse,
            headers(("Cache-Control" = String, description = "`no-store`.")),
        ),
        Problems<400, 401, 413, 415, 422, 500, 503>,
    ),
)]
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

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// Seconds the previous secret keeps working; 0 ends it at once.
    grace_period_secs: Option<u64>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/apps/{id}/rotate-secret",
    operation_id = "rotateSecret",
    tag = "Secrets",
    summary = "Add a new secret; every other secret of the app expires after the grace period",
    description = "The body is optional (read as JSON whatever its content type); without it the configured grace period applies.",
    params(AppPath),
    request_body(content((Option<RotateSecretRequest> = "application/json"))),
    responses(
        (status = 200, description = "The application with the new `client_secret`, shown this once.", body = AppResponse),
        Problems<400, 401, 404, 409, 413, 500, 503>,
    ),
)]
async fn rotate_secret(
    State(state): State<AppState>,
    AdminPath(AppPath { id }): AdminPath<AppPath>,
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
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecretRequest {
    /// At most 200 characters, no control characters.
    #[schema(max_length = 200)]
    description: Option<String>,
    /// RFC 3339 UTC, e.g. 2030-01-31T00:00:00Z, in the future and at most ten years ahead;
    /// not with `expires_in`.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// Seconds from now; not with `expires_at`.
    #[schema(minimum = 1, maximum = 316_224_000)]
    expires_in: Option<u64>,
    /// Verifications the secret allows before it is used up.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    max_uses: Option<u64>,
    /// CIDR blocks (or bare addresses) the secret may be presented from, besides the
    /// app's own list.
    #[schema(schema_with = admin_openapi::cidr_list_request)]
    allowed_cidrs: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretResponse {
    #[schema(schema_with = admin_openapi::uuid)]
    id: SecretId,
    #[schema(schema_with = admin_openapi::uuid)]
    app_id: AppId,
    /// The start of a generated secret, to tell which one a client holds; null for
    /// imported secrets and those kept from before secrets had ids.
    #[schema(required = true)]
    prefix: Option<String>,
    description: String,
    #[schema(schema_with = admin_openapi::secret_status)]
    status: &'static str,
    #[schema(schema_with = openapi::timestamp)]
    created_at: String,
    #[schema(schema_with = openapi::nullable_timestamp, required = true)]
    expires_at: Option<String>,
    #[schema(schema_with = openapi::nullable_timestamp, required = true)]
    last_used_at: Option<String>,
    use_count: u64,
    #[schema(required = true)]
    max_uses: Option<u64>,
    /// Omitted for a secret that binds nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = admin_openapi::cidr_list, required = false)]
    allowed_cidrs: Vec<String>,
    /// Present only in the response that creates the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
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

#[utoipa::path(
    post,
    path = "/admin/v1/apps/{id}/secrets",
    operation_id = "createSecret",
    tag = "Secrets",
    summary = "Add a secret to an application; the others keep working",
    description = "The body is optional (read as JSON whatever its content type); without it the secret never expires and has no use limit. 409 when the app already holds the most unexpired secrets allowed.",
    params(AppPath),
    request_body(content((Option<CreateSecretRequest> = "application/json"))),
    responses(
        (
            status = 201,
            description = "The new secret, with `client_secret` shown this once.",
            body = SecretResponse,
            links(
                ("usage" = (operation_id = "secretUsage", parameters(("id" = "$response.body#/app_id"), ("secret_id" = "$response.body#/id")))),
                ("revoke" = (operation_id = "revokeSecret", parameters(("id" = "$response.body#/app_id"), ("secret_id" = "$response.body#/id")))),
            ),
        ),
        Problems<400, 401, 404, 409, 413, 500, 503>,
    ),
)]
async fn create_secret(
    State(state): State<AppState>,
    AdminPath(AppPath { id }): AdminPath<AppPath>,
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

#[utoipa::path(
    get,
    path = "/admin/v1/apps/{id}/secrets",
    operation_id = "listSecrets",
    tag = "Secrets",
    summary = "List an application's secrets (never the secrets themselves), oldest first",
    params(AppPath),
    responses(
        (status = 200, description = "The secrets.", body = Vec<SecretResponse>),
        Problems<401, 404, 500, 503>,
    ),
)]
async fn list_secrets(
    State(state): State<AppState>,
    AdminPath(AppPath { id }): AdminPath<AppPath>,
) -> Result<Json<Vec<SecretResponse>>, Problem> {
    let secrets = state.authority.app_secrets(parse_id(&id)?).await?;
    Ok(Json(
        secrets
            .into_iter()
            .map(|(secret, state)| SecretResponse::new(secret, state))
            .collect(),
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RevokeSecretQuery {
    /// Also refuse every token the secret minted, and what was derived from them.
    #[serde(default)]
    revoke_tokens: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedSecretResponse {
    #[schema(schema_with = admin_openapi::uuid)]
    id: SecretId,
    /// Whether the secret's tokens were revoked too.
    tokens_revoked: bool,
    /// Active auth grants created with the secret's tokens, now revoked.
    grants_revoked: usize,
}

#[utoipa::path(
    delete,
    path = "/admin/v1/apps/{id}/secrets/{secret_id}",
    operation_id = "revokeSecret",
    tag = "Secrets",
    summary = "Revoke one secret, and optionally every token it minted",
    params(SecretPath, RevokeSecretQuery),
    responses(
        (status = 200, description = "What was revoked.", body = RevokedSecretResponse),
        Problems<400, 401, 404, 409, 500, 503>,
    ),
)]
async fn revoke_secret(
    State(state): State<AppState>,
    AdminPath(SecretPath { id, secret_id }): AdminPath<SecretPath>,
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

/// The audit listing's filters, each optional; all given must match. Read as strings and
/// validated by the core, as the CLI's flags are.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAuditQuery {
    /// Events of this application.
    #[param(value_type = uuid::Uuid, required = false)]
    app_id: Option<String>,
    /// Events of this secret.
    #[param(value_type = uuid::Uuid, required = false)]
    secret_id: Option<String>,
    /// Events of this auth grant.
    #[param(value_type = uuid::Uuid, required = false)]
    grant_id: Option<String>,
    /// Events of this subject (an owner id or a client_id), at most 256 bytes.
    #[param(value_type = String, min_length = 1, max_length = 256, required = false)]
    subject: Option<String>,
    #[param(schema_with = admin_openapi::audit_event)]
    event: Option<String>,
    /// Events at or after this RFC 3339 time.
    #[param(value_type = String, format = DateTime, required = false)]
    since: Option<String>,
    /// Events before this RFC 3339 time; later than `since`.
    #[param(value_type = String, format = DateTime, required = false)]
    until: Option<String>,
    /// Events per page; default 100.
    #[param(value_type = u32, minimum = 1, maximum = 1000, required = false)]
    limit: Option<String>,
    /// The previous page's `next_cursor`.
    #[param(value_type = String, required = false)]
    cursor: Option<String>,
}

/// One credential event. Never holds a secret or a token; every field is always present.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventResponse {
    #[schema(schema_with = admin_openapi::uuid)]
    id: String,
    #[schema(schema_with = openapi::timestamp)]
    at: String,
    #[schema(schema_with = admin_openapi::audit_event)]
    event: String,
    #[schema(schema_with = admin_openapi::nullable_uuid, required = true)]
    app_id: Option<AppId>,
    #[schema(schema_with = admin_openapi::nullable_uuid, required = true)]
    secret_id: Option<SecretId>,
    #[schema(schema_with = admin_openapi::nullable_uuid, required = true)]
    grant_id: Option<String>,
    #[schema(schema_with = admin_openapi::nullable_uuid, required = true)]
    enrollment_id: Option<EnrollmentId>,
    #[schema(schema_with = admin_openapi::nullable_subject_kind, required = true)]
    sub_kind: Option<SubjectKind>,
    #[schema(required = true)]
    subject: Option<String>,
    /// The client_id presented or acting.
    #[schema(required = true)]
    client_id: Option<String>,
    /// The token's id, for events about one token.
    #[schema(required = true)]
    jti: Option<String>,
    #[schema(required = true)]
    source_ip: Option<String>,
    /// Why an attempt failed or was refused.
    #[schema(required = true)]
    reason: Option<String>,
    /// Event-specific facts (a JSON object), such as `grant_type`, `scope` or `window`; a
    /// summary row (tokens issued, quota refusals) has `count` and `last_at`.
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

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPageResponse {
    /// Newest first.
    events: Vec<AuditEventResponse>,
    /// Pass as `cursor` for the next (older) page; `null` on the last one.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    operation_id = "listAudit",
    tag = "Audit",
    summary = "Credential events, newest first, filtered and paged",
    params(ListAuditQuery),
    responses(
        (status = 200, description = "One page of events.", body = AuditPageResponse),
        Problems<400, 401, 500, 503>,
    ),
)]
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

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// How many UTC days back, today included; default 30.
    #[param(value_type = u32, minimum = 1, maximum = 366, required = false)]
    days: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DayCountResponse {
    #[schema(schema_with = admin_openapi::day)]
    day: String,
    /// Tokens issued that day.
    issued: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageResponse {
    #[schema(schema_with = admin_openapi::usage_kind)]
    kind: &'static str,
    #[schema(schema_with = admin_openapi::uuid)]
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

#[utoipa::path(
    get,
    path = "/admin/v1/apps/{id}/usage",
    operation_id = "appUsage",
    tag = "Audit",
    summary = "Tokens issued with an application, per UTC day",
    params(AppPath, UsageQuery),
    responses(
        (status = 200, description = "Per-day counts.", body = UsageResponse),
        Problems<400, 401, 404, 500, 503>,
    ),
)]
async fn app_usage(
    State(state): State<AppState>,
    AdminPath(AppPath { id }): AdminPath<AppPath>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<UsageResponse>, Problem> {
    let of = CredentialRef::App(parse_id(&id)?);
    let days = state.authority.usage(of, UsageQuery::days(query)?).await?;
    Ok(Json(usage_response(of, days)))
}

#[utoipa::path(
    get,
    path = "/admin/v1/apps/{id}/secrets/{secret_id}/usage",
    operation_id = "secretUsage",
    tag = "Audit",
    summary = "Tokens issued with one of an application's secrets, per UTC day",
    params(SecretPath, UsageQuery),
    responses(
        (status = 200, description = "Per-day counts.", body = UsageResponse),
        Problems<400, 401, 404, 500, 503>,
    ),
)]
async fn secret_usage(
    State(state): State<AppState>,
    AdminPath(SecretPath { id, secret_id }): AdminPath<SecretPath>,
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

#[utoipa::path(
    get,
    path = "/admin/v1/grants/{id}/usage",
    operation_id = "grantUsage",
    tag = "Audit",
    summary = "Tokens issued with an auth grant, per UTC day",
    params(GrantPath),
    responses(
        (status = 200, description = "Per-day counts.", body = UsageResponse),
        Problems<400, 401, 404, 500, 503>,
    ),
)]
async fn grant_usage(
    State(state): State<AppState>,
    AdminPath(GrantPath { id }): AdminPath<GrantPath>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<UsageResponse>, Problem> {
    let id = GrantId::parse(&id).map_err(|_| Problem::from(AuthorityError::NotFound))?;
    let of = CredentialRef::Grant(id);
    let days = state.authority.usage(of, UsageQuery::days(query)?).await?;
    Ok(Json(usage_response(of, days)))
}

/// A JSON body that may be left out: empty (or blank) means every field's default.
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

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyResponse {
    kid: String,
    #[schema(schema_with = admin_openapi::key_algorithm)]
    algorithm: &'static str,
    #[schema(schema_with = admin_openapi::key_state)]
    state: &'static str,
    #[schema(schema_with = openapi::timestamp)]
    created_at: String,
    #[schema(schema_with = openapi::nullable_timestamp, required = true)]
    activated_at: Option<String>,
    #[schema(schema_with = openapi::nullable_timestamp, required = true)]
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

#[utoipa::path(
    get,
    path = "/admin/v1/keys",
    operation_id = "listKeys",
    tag = "Keys",
    summary = "List signing keys and their states",
    responses(
        (status = 200, description = "The keys this replica knows.", body = Vec<KeyResponse>),
        Problems<401>,
    ),
)]
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

#[utoipa::path(
    post,
    path = "/admin/v1/keys/rotate",
    operation_id = "rotateKeys",
    tag = "Keys",
    summary = "Rotate: the published `next` key starts signing, and a new `next` is made",
    description = "409 while the `next` key is too new for every replica to publish it (`keys.next_key_lead_secs`); 400 when the algorithm is HS256, which has no rotation.",
    responses(
        (status = 200, description = "The key that now signs.", body = KeyResponse),
        Problems<400, 401, 409, 500, 503>,
    ),
)]
async fn rotate_keys(State(state): State<AppState>) -> Result<Json<KeyResponse>, Problem> {
    Ok(Json(state.authority.rotate_keys().await?.into()))
}

fn parse_id(raw: &str) -> Result<AppId, Problem> {
    // An id that cannot exist is simply not found.
    AppId::parse(raw).map_err(|_| Problem::from(AuthorityError::NotFound))
}

/// The path of an application's routes. Ids are read as text: one that cannot exist is
/// simply not found.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AppPath {
    /// The application's id.
    #[param(value_type = uuid::Uuid)]
    id: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SecretPath {
    /// The application's id.
    #[param(value_type = uuid::Uuid)]
    id: String,
    /// The secret's id.
    #[param(value_type = uuid::Uuid)]
    secret_id: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EnrollmentPath {
    /// The enrollment's id.
    #[param(value_type = uuid::Uuid)]
    id: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct GrantPath {
    /// The auth grant's id.
    #[param(value_type = uuid::Uuid)]
    id: String,
}

/// Path parameters whose rejections are problems: a segment that does not percent-decode
/// to UTF-8 names nothing that can exist, so it is not found, as a malformed id is.
pub struct AdminPath<T>(T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for AdminPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|_| Problem::from(AuthorityError::NotFound))
    }
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
