//! Endorsed-compatible token issuing: `POST /api/v1/auth/tokens`.

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    AppState,
    extract::{BodyError, BodyFormat, ClientIp, parse_body},
    log_internal, retry_after_secs,
};
use crate::{
    authority::{AuthorityError, ClientCredentials, TokenRoute},
    domain::ScopeSet,
};

/// The application's credentials always travel in the body on this route.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTokenRequest {
    #[schema(value_type = String, required = true)]
    client_id: Option<String>,
    #[schema(value_type = String, required = true)]
    client_secret: Option<String>,
    #[schema(schema_with = super::openapi::client_credentials_grant, required = true)]
    grant_type: Option<String>,
    /// Default: the application's default scopes.
    scope: Option<ScopeParam>,
}

/// JSON bodies may send scopes as an array or a space-delimited string; forms send a string.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
enum ScopeParam {
    List(Vec<String>),
    Text(String),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    #[schema(schema_with = super::openapi::always_false)]
    is_error: bool,
    access_token: String,
    #[schema(schema_with = super::openapi::bearer_token_type)]
    token_type: &'static str,
    /// A string, as Endorsed documents it.
    #[schema(pattern = "^[0-9]+$")]
    expires_in: String,
    scope: Vec<String>,
}

pub async fn create_token(
    State(state): State<AppState>,
    ClientIp(source_ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, EndorsedError> {
    let body = body.map_err(EndorsedError::from_body_rejection)?;
    let request: CreateTokenRequest =
        parse_body(&headers, &body, BodyFormat::Form).map_err(|e| match e {
            BodyError::UnsupportedMediaType => EndorsedError::unsupported_media_type(),
            BodyError::Malformed(message) => EndorsedError::bad_request(message),
        })?;

    match request.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(_) => {
            return Err(EndorsedError::bad_request(
                "grant_type must be client_credentials",
            ));
        }
        None => return Err(EndorsedError::bad_request("grant_type is required")),
    }
    let (Some(client_id), Some(client_secret)) = (&request.client_id, &request.client_secret)
    else {
        return Err(EndorsedError::bad_request(
            "client_id and client_secret are required",
        ));
    };
    let requested = match &request.scope {
        None => None,
        Some(ScopeParam::Text(raw)) => Some(ScopeSet::parse(raw)),
        Some(ScopeParam::List(items)) => Some(ScopeSet::from_items(
            items
                .iter()
                .flat_map(|item| item.split(' '))
                .filter(|s| !s.is_empty()),
        )),
    }
    .transpose()
    .map_err(AuthorityError::from)?;

    let token = state
        .authority
        .client_credentials_token(
            ClientCredentials {
                client_id,
                client_secret,
                source_ip,
            },
            requested,
            TokenRoute::Endorsed,
        )
        .await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(TokenResponse {
            is_error: false,
            access_token: token.access_token,
            token_type: "Bearer",
            expires_in: token.expires_in.to_string(),
            scope: token.scope.to_vec(),
        }),
    ))
}

/// The Endorsed error envelope:
/// `{"is_error":true,"error":{"code":"…","issues":[{"message":"…"}]}}`.
#[derive(Debug)]
pub struct EndorsedError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<String>,
}

impl EndorsedError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send application/json or application/x-www-form-urlencoded",
        )
    }

    fn from_body_rejection(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("the body may be at most {} bytes", super::BODY_LIMIT_BYTES),
            )
        } else {
            Self::bad_request("the request body could not be read")
        }
    }
}

impl From<AuthorityError> for EndorsedError {
    fn from(e: AuthorityError) -> Self {
        match e {
            AuthorityError::InvalidClient => Self::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "invalid client credentials",
            ),
            e @ AuthorityError::InvalidToken => {
                Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", e.to_string())
            }
            e @ (AuthorityError::Forbidden(_)
            | AuthorityError::InsufficientScope(_)
            | AuthorityError::GrantActive
            | AuthorityError::GrantInactive) => {
                Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", e.to_string())
            }
            AuthorityError::RateLimited { retry_after } => Self {
                retry_after: Some(retry_after_secs(retry_after)),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOO_MANY_REQUESTS",
                    "too many failed attempts; retry later",
                )
            },
            AuthorityError::UnsupportedGrantType => {
                Self::bad_request("grant_type must be client_credentials")
            }
            e @ (AuthorityError::MalformedScope(_) | AuthorityError::Invalid { .. }) => {
                Self::bad_request(e.to_string())
            }
            e @ AuthorityError::ScopeNotGranted(_) => {
                Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", e.to_string())
            }
            AuthorityError::NotFound => Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "not found"),
            AuthorityError::Conflict(what) => Self::new(StatusCode::CONFLICT, "CONFLICT", what),
            AuthorityError::Unavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "temporarily unavailable; retry shortly",
            ),
            AuthorityError::Internal(source) => {
                log_internal(source.as_ref());
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_SERVER_ERROR",
                    "internal server error",
                )
            }
        }
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    is_error: bool,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    issues: [Issue<'a>; 1],
}

#[derive(Serialize)]
struct Issue<'a> {
    message: &'a str,
}

impl IntoResponse for EndorsedError {
    fn into_response(self) -> Response {
        let body = ErrorEnvelope {
            is_error: true,
            error: ErrorBody {
                code: self.code,
                issues: [Issue {
                    message: &self.message,
                }],
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self
            .retry_after
            .and_then(|s| HeaderValue::from_str(&s).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, secs);
        }
        response
    }
}
