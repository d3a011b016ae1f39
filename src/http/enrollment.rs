//! Invopop Access-compatible enrollments: `/access/v1/enrollment…`.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::IntoResponse,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{
    AppState,
    bearer::{Caller, require_bearer},
    body::{Body, BodyRules, ReadsBodies},
    client_auth::{AuthenticatesClients, ClientAuth, client_credentials},
    error::{ApiError, Dialect, Failure, with_rate_limit},
    extract::{BodyFormat, ClientIp, JsonKeys, bearer_token},
    openapi::{Documented, Errors},
};
use crate::{
    authority::{AuthorityError, EnrollmentQuery, Rule},
    domain::Enrollment,
};

/// The application's credentials (here, by HTTP Basic, or both naming the same credentials,
/// as the official Go client sends them) and which enrollment: `id`, `owner_id`, or the
/// enrollment token being renewed as `Authorization: Bearer`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AuthorizeEnrollmentRequest {
    #[schema(value_type = String, required = false)]
    client_id: Option<String>,
    #[schema(value_type = String, required = false)]
    client_secret: Option<String>,
    /// The enrollment id.
    #[schema(value_type = String, required = false)]
    id: Option<String>,
    #[schema(value_type = String, required = false)]
    owner_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateEnrollmentRequest {
    /// Any JSON, replacing the enrollment's data.
    #[schema(required = true)]
    data: Option<Value>,
}

/// The application's credentials travel here: the `Authorization` header carries the
/// owner's bearer token.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateEnrollmentRequest {
    #[schema(value_type = String, required = true)]
    client_id: Option<String>,
    #[schema(value_type = String, required = true)]
    client_secret: Option<String>,
    /// Must be the subject of the bearer token.
    #[schema(value_type = String, required = true)]
    owner_id: Option<String>,
    /// Any JSON.
    data: Option<Value>,
}

/// The enrollment object. `token` and `token_expires` appear only when a token was issued.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentResponse {
    app_id: String,
    #[schema(schema_with = super::openapi::timestamp)]
    created_at: String,
    data: Value,
    disabled: bool,
    id: String,
    owner_id: String,
    sandbox: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    token: Option<String>,
    /// Unix seconds: the token's `exp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = i64)]
    token_expires: Option<i64>,
    #[schema(schema_with = super::openapi::timestamp)]
    updated_at: String,
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<Enrollment> for EnrollmentResponse {
    fn from(e: Enrollment) -> Self {
        Self {
            app_id: e.app_id.to_string(),
            created_at: timestamp(e.created_at),
            data: e.data,
            disabled: e.disabled,
            id: e.id.to_string(),
            owner_id: e.owner_id.to_string(),
            sandbox: e.sandbox,
            token: None,
            token_expires: None,
            updated_at: timestamp(e.updated_at),
        }
    }
}

fn no_store(body: EnrollmentResponse) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Json(body))
}

#[utoipa::path(
    post,
    path = "/access/v1/enrollment/authorize",
    operation_id = "authorizeEnrollment",
    tag = "Access",
    summary = "Issue an enrollment token",
    description = "The application authenticates in the body, by HTTP Basic, or both (as the official Go client does; both must name the same credentials). The enrollment is named by `id`, `owner_id`, or an `Authorization: Bearer` enrollment token being renewed (then the credentials go in the body).",
    request_body(
        description = "JSON, or the same fields as a form.",
        content(
            (AuthorizeEnrollmentRequest = "application/json"),
            (AuthorizeEnrollmentRequest = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("clientBasic" = []), ("bearerToken" = []), ()),
    responses(
        (status = 200, description = "The enrollment with a new token.", body = EnrollmentResponse),
        Errors<Access, 400, 401, 403, 404, 413, 415, 429, 500, 503>,
    ),
)]
pub async fn authorize(
    State(state): State<AppState>,
    ClientIp(source_ip): ClientIp,
    headers: HeaderMap,
    Body(request, _): Body<Access, AuthorizeEnrollmentRequest>,
) -> Result<impl IntoResponse, AccessError> {
    let client = client_credentials(&headers, request.client_id, request.client_secret)?;
    let authorized = state
        .authority
        .authorize_enrollment(
            client.judge_from(source_ip),
            EnrollmentQuery {
                bearer: bearer_token(&headers),
                id: request.id.as_deref().filter(|s| !s.is_empty()),
                owner_id: request.owner_id.as_deref().filter(|s| !s.is_empty()),
            },
        )
        .await?;
    let mut body = EnrollmentResponse::from(Enrollment::clone(&authorized.enrollment));
    body.token = Some(authorized.token.access_token);
    body.token_expires = Some(authorized.token.expires_at.timestamp());
    Ok(with_rate_limit(
        no_store(body),
        authorized.token.quota.as_deref(),
    ))
}

#[utoipa::path(
    get,
    path = "/access/v1/enrollment",
    operation_id = "showEnrollment",
    tag = "Access",
    summary = "The bearer token's enrollment",
    security(("bearerToken" = [])),
    responses(
        (status = 200, description = "The enrollment, without a token.", body = EnrollmentResponse),
        Errors<Access, 401, 403, 404, 429, 500, 503>,
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    Caller(principal, _): Caller<Access>,
) -> Result<impl IntoResponse, AccessError> {
    let enrollment = state.authority.enrollment_of(&principal)?;
    Ok(no_store(enrollment.into()))
}

#[utoipa::path(
    patch,
    path = "/access/v1/enrollment",
    operation_id = "updateEnrollment",
    tag = "Access",
    summary = "Replace the bearer token's enrollment data",
    request_body(
        description = "JSON, or the same fields as a form.",
        content(
            (UpdateEnrollmentRequest = "application/json"),
            (UpdateEnrollmentRequest = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("bearerToken" = [])),
    responses(
        (status = 200, description = "The updated enrollment.", body = EnrollmentResponse),
        Errors<Access, 400, 401, 403, 404, 413, 415, 429, 500, 503>,
    ),
)]
pub async fn update(
    state: State<AppState>,
    caller: Caller<Access>,
    body: Body<Access, UpdateEnrollmentRequest>,
) -> Result<impl IntoResponse, AccessError> {
    replace_data(state, caller, body).await
}

/// `PATCH`, as the official client sends it.
#[utoipa::path(
    post,
    path = "/access/v1/enrollment",
    operation_id = "updateEnrollmentByPost",
    tag = "Access",
    summary = "Replace the bearer token's enrollment data (as the official client sends it)",
    request_body(
        description = "JSON, or the same fields as a form.",
        content(
            (UpdateEnrollmentRequest = "application/json"),
            (UpdateEnrollmentRequest = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("bearerToken" = [])),
    responses(
        (status = 200, description = "The updated enrollment.", body = EnrollmentResponse),
        Errors<Access, 400, 401, 403, 404, 413, 415, 429, 500, 503>,
    ),
)]
pub async fn update_by_post(
    state: State<AppState>,
    caller: Caller<Access>,
    body: Body<Access, UpdateEnrollmentRequest>,
) -> Result<impl IntoResponse, AccessError> {
    replace_data(state, caller, body).await
}

async fn replace_data(
    State(state): State<AppState>,
    Caller(principal, _): Caller<Access>,
    Body(request, _): Body<Access, UpdateEnrollmentRequest>,
) -> Result<impl IntoResponse, AccessError> {
    let data = request
        .data
        .ok_or_else(|| AuthorityError::invalid("data", Rule::Required))?;
    let enrollment = state
        .authority
        .update_enrollment_data(&principal, data)
        .await?;
    Ok(no_store(enrollment.into()))
}

#[utoipa::path(
    put,
    path = "/access/v1/enrollment/{id}",
    operation_id = "createEnrollment",
    tag = "Access",
    summary = "Enroll an owner (idempotent for the same app, owner and id)",
    description = "The bearer token must speak for `owner_id`; the application's credentials go in the body.",
    params(("id" = String, Path)),
    request_body(
        description = "JSON, or the same fields as a form.",
        content(
            (CreateEnrollmentRequest = "application/json"),
            (CreateEnrollmentRequest = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("bearerToken" = [])),
    responses(
        (status = 200, description = "The enrollment.", body = EnrollmentResponse),
        Errors<Access, 400, 401, 403, 409, 413, 415, 429, 500, 503>,
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    ClientIp(source_ip): ClientIp,
    EnrollmentIdParam(id): EnrollmentIdParam,
    headers: HeaderMap,
    Body(request, _): Body<Access, CreateEnrollmentRequest>,
) -> Result<impl IntoResponse, AccessError> {
    let owner_token = require_bearer(&headers)?;
    let client = client_credentials(&headers, request.client_id, request.client_secret)?;
    let owner_id = request
        .owner_id
        .ok_or_else(|| AuthorityError::invalid("owner_id", Rule::Required))?;
    let enrollment = state
        .authority
        .enroll(
            client.judge_from(source_ip),
            owner_token,
            &id,
            &owner_id,
            request.data,
        )
        .await?;
    Ok(no_store(enrollment.into()))
}

/// The enrollment id of the path, refused in the dialect's envelope rather than axum's
/// plain-text 400.
pub struct EnrollmentIdParam(String);

impl<S: Send + Sync> FromRequestParts<S> for EnrollmentIdParam {
    type Rejection = AccessError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Self(id)),
            Err(_) => Err(AccessError::invalid("id", "must be valid UTF-8")),
        }
    }
}

/// The Invopop Access dialect.
#[derive(Debug)]
pub struct Access;

pub type AccessError = ApiError<Access>;

impl Dialect for Access {
    fn answer(failure: Failure) -> (StatusCode, &'static str) {
        use Failure as F;
        match failure {
            F::BadRequest | F::UnsupportedGrantType | F::MalformedScope => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            F::Invalid => (StatusCode::BAD_REQUEST, "validation"),
            F::MissingToken | F::InvalidToken | F::InvalidClient => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            F::Refused | F::InsufficientScope | F::ScopeNotGranted | F::GrantState => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
            F::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            F::Conflict => (StatusCode::CONFLICT, "conflict"),
            F::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            F::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            F::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            F::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            F::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn reword(error: &AuthorityError) -> Option<String> {
        matches!(error, AuthorityError::NotFound).then(|| "enrollment not found".to_owned())
    }

    /// `{"code":"…","message":"…","fields":{…}}`, `fields` only for validation errors.
    fn envelope(error: &AccessError) -> impl Serialize {
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            code: &'static str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            fields: Option<BTreeMap<&'static str, &'a str>>,
        }
        ErrorBody {
            code: error.code(),
            message: error.message(),
            fields: error
                .field()
                .map(|(field, rule)| BTreeMap::from([(field, rule)])),
        }
    }
}

impl Documented for Access {
    const NAME: &'static str = "Access";
    const CODE_AT: &'static [&'static str] = &["code"];
    const CHALLENGE: Option<&'static str> = Some("When the bearer token is missing or invalid.");

    fn envelope_schema() -> Value {
        json!({
            "description": "The Invopop Access error envelope; `fields` only for validation errors.",
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": { "type": "string" },
                "message": { "type": "string" },
                "fields": {
                    "type": "object",
                    "additionalProperties": { "type": "string" }
                }
            }
        })
    }
}

impl ReadsBodies for Access {
    /// The Go service this dialect mirrors matches field names case-insensitively, and its
    /// clients rely on it (`{"Data":…}`).
    const BODY: BodyRules = BodyRules {
        absent: BodyFormat::Json,
        json: true,
        keys: JsonKeys::GoFold,
        unsupported: "send application/json",
    };
}

impl AuthenticatesClients for Access {
    const CLIENT_AUTH: ClientAuth = ClientAuth::SameInBoth;

    fn missing_credentials() -> AccessError {
        AccessError::invalid("client_id", "client_id and client_secret are required")
    }
}
