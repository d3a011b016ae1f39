//! Invopop Access-compatible enrollments: `/access/v1/enrollment…`.

use axum::{
    Json,
    body::Bytes,
    extract::{
        Path, State,
        rejection::{BytesRejection, PathRejection},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{
    AppState, BODY_LIMIT_BYTES,
    extract::{
        BasicAuth, BasicCredentials, BodyError, BodyFormat, ClientIp, JsonKeys, basic_auth,
        bearer_token, parse_body_keyed,
    },
    log_internal, retry_after_secs,
};
use crate::{
    authority::{AuthorityError, EnrollmentQuery, Invalid, Principal},
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

/// Client credentials from HTTP Basic, the body, or both: the official Go client always
/// sends both, so when it does they must name the same credentials. A difference is any bad
/// credential's 401, decided here without hashing, and not saying which part differed.
fn app_credentials(
    headers: &HeaderMap,
    client_id: Option<String>,
    client_secret: Option<String>,
) -> Result<BasicCredentials, AccessError> {
    match (basic_auth(headers), client_id, client_secret) {
        (BasicAuth::Present(basic), client_id, client_secret) => basic
            .named_alike(client_id.as_deref(), client_secret.as_deref())
            .ok_or_else(|| AuthorityError::InvalidClient.into()),
        (BasicAuth::Malformed, _, _) => Err(AuthorityError::InvalidClient.into()),
        (BasicAuth::Absent, Some(id), Some(secret)) => Ok(BasicCredentials::from_body(id, secret)),
        (BasicAuth::Absent, _, _) => Err(AccessError::validation(
            "client_id",
            "client_id and client_secret are required",
        )),
    }
}

fn read_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, AccessError> {
    let body = body.map_err(AccessError::from_body_rejection)?;
    // The Go service this dialect mirrors matches field names case-insensitively, and its
    // clients rely on it (`{"Data":…}`).
    parse_body_keyed(headers, &body, BodyFormat::Json, JsonKeys::GoFold).map_err(|e| match e {
        BodyError::UnsupportedMediaType => AccessError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json",
        ),
        BodyError::Malformed(message) => AccessError::bad_request(message),
    })
}

async fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, AccessError> {
    let token = bearer_token(headers).ok_or(AuthorityError::InvalidToken)?;
    Ok(state.authority.authenticate_bearer(token).await?)
}

pub async fn authorize(
    State(state): State<AppState>,
    ClientIp(source_ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, AccessError> {
    let request: AuthorizeEnrollmentRequest = read_body(&headers, body)?;
    let client = app_credentials(&headers, request.client_id, request.client_secret)?;
    let authorized = state
        .authority
        .authorize_enrollment(
            client.presented(source_ip),
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
    Ok(no_store(body))
}

pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AccessError> {
    let principal = principal(&state, &headers).await?;
    let enrollment = state.authority.enrollment_of(&principal)?;
    Ok(no_store(enrollment.into()))
}

pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, AccessError> {
    let principal = principal(&state, &headers).await?;
    let request: UpdateEnrollmentRequest = read_body(&headers, body)?;
    let data = request
        .data
        .ok_or_else(|| AccessError::validation("data", "is required"))?;
    let enrollment = state
        .authority
        .update_enrollment_data(&principal, data)
        .await?;
    Ok(no_store(enrollment.into()))
}

pub async fn create(
    State(state): State<AppState>,
    ClientIp(source_ip): ClientIp,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, AccessError> {
    // In the dialect's envelope rather than axum's plain-text 400.
    let Path(id) = id.map_err(|_| AccessError::validation("id", "must be valid UTF-8"))?;
    let request: CreateEnrollmentRequest = read_body(&headers, body)?;
    let owner_token = bearer_token(&headers).ok_or(AuthorityError::InvalidToken)?;
    let client = app_credentials(&headers, request.client_id, request.client_secret)?;
    let owner_id = request
        .owner_id
        .ok_or_else(|| AccessError::validation("owner_id", "is required"))?;
    let enrollment = state
        .authority
        .enroll(
            client.presented(source_ip),
            owner_token,
            &id,
            &owner_id,
            request.data,
        )
        .await?;
    Ok(no_store(enrollment.into()))
}

/// The Access error envelope: `{"code":"…","message":"…","fields":{…}}`.
#[derive(Debug)]
pub struct AccessError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Option<Map<String, Value>>,
    retry_after: Option<String>,
    bearer_challenge: bool,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a Map<String, Value>>,
}

impl AccessError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: None,
            retry_after: None,
            bearer_challenge: false,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut fields = Map::new();
        fields.insert(field.to_owned(), Value::String(message.clone()));
        Self {
            fields: Some(fields),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "validation",
                format!("{field}: {message}"),
            )
        }
    }

    fn from_body_rejection(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body may be at most {BODY_LIMIT_BYTES} bytes"),
            )
        } else {
            Self::bad_request("the request body could not be read")
        }
    }
}

impl From<AuthorityError> for AccessError {
    fn from(e: AuthorityError) -> Self {
        match e {
            AuthorityError::InvalidClient => Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid client credentials",
            ),
            e @ AuthorityError::InvalidToken => Self {
                bearer_challenge: true,
                ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            },
            e @ (AuthorityError::Refused(_)
            | AuthorityError::InsufficientScope(_)
            | AuthorityError::ScopeNotGranted(_)
            | AuthorityError::GrantActive
            | AuthorityError::GrantInactive) => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            AuthorityError::RateLimited { retry_after } => Self {
                retry_after: Some(retry_after_secs(retry_after)),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    "too many requests; retry later",
                )
            },
            AuthorityError::Invalid(Invalid { field, rule }) => {
                Self::validation(field, rule.to_string())
            }
            e @ (AuthorityError::UnsupportedGrantType | AuthorityError::MalformedScope(_)) => {
                Self::bad_request(e.to_string())
            }
            AuthorityError::NotFound => {
                Self::new(StatusCode::NOT_FOUND, "not_found", "enrollment not found")
            }
            AuthorityError::Conflict(what) => {
                Self::new(StatusCode::CONFLICT, "conflict", what.to_string())
            }
            AuthorityError::Unavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; retry shortly",
            ),
            AuthorityError::Internal(source) => {
                log_internal(source.as_ref());
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal server error",
                )
            }
        }
    }
}

impl IntoResponse for AccessError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
            fields: self.fields.as_ref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if self.bearer_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        if let Some(secs) = self
            .retry_after
            .and_then(|s| HeaderValue::from_str(&s).ok())
        {
            headers.insert(header::RETRY_AFTER, secs);
        }
        response
    }
}
