//! OAuth 2.0 token endpoint (RFC 6749 §4.4, client_credentials).

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
    extract::{
        BasicAuth, BasicCredentials, BodyFormat, ClientIp, basic_auth, body_format, parse_form,
    },
    log_internal, retry_after_secs,
};
use crate::{
    authority::{
        AuthorityError, TokenRoute,
        tokens::{Claims, IssuedToken},
    },
    domain::{ScopeSet, SubjectKind},
};

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// One form for both grants: `client_credentials` (client authentication by HTTP Basic or
/// `client_id` + `client_secret` here, never both) and RFC 8693 token exchange (the
/// `subject_token` is the credential; no client authentication).
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    #[schema(schema_with = super::openapi::oauth_grant_type, required = true)]
    grant_type: Option<String>,
    /// Space-delimited; default: the application's default scopes, or the grant's scope.
    #[schema(value_type = String, required = false)]
    scope: Option<String>,
    /// `client_secret_post`; must match the Basic user when both are sent.
    #[schema(value_type = String, required = false)]
    client_id: Option<String>,
    #[schema(value_type = String, required = false)]
    client_secret: Option<String>,
    /// Token exchange: an auth-grant API token.
    #[schema(value_type = String, required = false)]
    subject_token: Option<String>,
    #[schema(schema_with = super::openapi::subject_token_type)]
    subject_token_type: Option<String>,
    #[schema(schema_with = super::openapi::requested_token_type)]
    requested_token_type: Option<String>,
}

/// RFC 6749 §5.1; `issued_token_type` only for token exchange (RFC 8693 §2.2.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::openapi::requested_token_type)]
    issued_token_type: Option<&'static str>,
    #[schema(schema_with = super::openapi::bearer_token_type)]
    token_type: &'static str,
    expires_in: u64,
    /// Space-delimited.
    scope: String,
}

fn token_response(
    token: IssuedToken,
    issued_token_type: Option<&'static str>,
) -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(TokenResponse {
            access_token: token.access_token,
            issued_token_type,
            token_type: "Bearer",
            expires_in: token.expires_in,
            scope: token.scope.to_string(),
        }),
    )
}

/// Client authentication by `client_secret_basic` or `client_secret_post`, never both.
fn client_credentials_from(
    headers: &HeaderMap,
    body_id: Option<String>,
    body_secret: Option<String>,
) -> Result<BasicCredentials, OAuthError> {
    match (basic_auth(headers), body_id, body_secret) {
        (BasicAuth::Malformed, _, _) => Err(AuthorityError::InvalidClient.into()),
        (BasicAuth::Present(_), _, Some(_)) => Err(OAuthError::invalid_request(
            "use one client authentication method, not both",
        )),
        (BasicAuth::Present(basic), body_id, None) => {
            basic.named_alike(body_id.as_deref(), None).ok_or_else(|| {
                OAuthError::invalid_request(
                    "client_id in the body does not match the Authorization header",
                )
            })
        }
        (BasicAuth::Absent, Some(id), Some(secret)) => Ok(BasicCredentials::from_body(id, secret)),
        (BasicAuth::Absent, _, _) => Err(AuthorityError::InvalidClient.into()),
    }
}

pub async fn token(
    State(state): State<AppState>,
    ClientIp(source_ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, OAuthError> {
    let body = body.map_err(OAuthError::from_body_rejection)?;
    if !matches!(body_format(&headers), BodyFormat::Form | BodyFormat::Absent) {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    // Repeated parameters are rejected here too (RFC 6749 §3.2): a struct field may
    // appear only once.
    let request: TokenRequest = parse_form(&body).map_err(OAuthError::invalid_request)?;

    let requested = request
        .scope
        .as_deref()
        .map(ScopeSet::parse)
        .transpose()
        .map_err(AuthorityError::from)?;
    match request.grant_type.as_deref() {
        Some("client_credentials") => {
            client_credentials(&state, &headers, request, requested, source_ip).await
        }
        Some(TOKEN_EXCHANGE) => token_exchange(&state, request, requested, source_ip).await,
        Some(_) => Err(AuthorityError::UnsupportedGrantType.into()),
        None => Err(OAuthError::invalid_request("grant_type is required")),
    }
}

async fn client_credentials(
    state: &AppState,
    headers: &HeaderMap,
    request: TokenRequest,
    requested: Option<ScopeSet>,
    source_ip: std::net::IpAddr,
) -> Result<Response, OAuthError> {
    let client = client_credentials_from(headers, request.client_id, request.client_secret)?;

    let token = state
        .authority
        .client_credentials_token(client.presented(source_ip), requested, TokenRoute::OAuth)
        .await?;
    Ok(token_response(token, None).into_response())
}

/// RFC 8693: an auth-grant token in, a short-lived access token for the same grant out.
/// The subject token is the credential, so no client authentication is required.
async fn token_exchange(
    state: &AppState,
    request: TokenRequest,
    requested: Option<ScopeSet>,
    source_ip: std::net::IpAddr,
) -> Result<Response, OAuthError> {
    let subject_token = request
        .subject_token
        .ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?;
    match request.subject_token_type.as_deref() {
        Some(ACCESS_TOKEN_TYPE | JWT_TOKEN_TYPE) => {}
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "subject_token_type must be an access_token or a jwt",
            ));
        }
        None => {
            return Err(OAuthError::invalid_request(
                "subject_token_type is required",
            ));
        }
    }
    if request
        .requested_token_type
        .as_deref()
        .is_some_and(|t| t != ACCESS_TOKEN_TYPE)
    {
        return Err(OAuthError::invalid_request(
            "only access tokens can be requested",
        ));
    }
    let token = state
        .authority
        .exchange(&subject_token, requested, source_ip)
        .await?;
    Ok(token_response(token, Some(ACCESS_TOKEN_TYPE)).into_response())
}

/// The calling application authenticates by HTTP Basic or `client_id` + `client_secret`
/// here, never both.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenParameterRequest {
    #[schema(value_type = String, required = true)]
    token: Option<String>,
    /// Accepted and ignored: every token is looked up the same way.
    #[allow(dead_code)]
    #[schema(value_type = String, required = false)]
    token_type_hint: Option<String>,
    #[schema(value_type = String, required = false)]
    client_id: Option<String>,
    #[schema(value_type = String, required = false)]
    client_secret: Option<String>,
}

/// RFC 7662 §2.2. Inactive tokens get `{"active":false}` and nothing else.
#[derive(Debug, Serialize)]
pub struct IntrospectionResponse {
    active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    claims: Option<IntrospectedClaims>,
}

/// The claims of an active token.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct IntrospectedClaims {
    scope: String,
    client_id: String,
    sub: String,
    #[schema(schema_with = super::openapi::subject_kind)]
    sub_kind: SubjectKind,
    exp: i64,
    iat: i64,
    nbf: i64,
    iss: String,
    aud: String,
    jti: String,
    #[schema(schema_with = super::openapi::bearer_token_type)]
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    grant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    enrollment_id: Option<String>,
}

impl From<Claims> for IntrospectedClaims {
    fn from(c: Claims) -> Self {
        Self {
            scope: c.scope,
            client_id: c.client_id,
            sub: c.sub,
            sub_kind: c.sub_kind,
            exp: c.exp,
            iat: c.iat,
            nbf: c.nbf,
            iss: c.iss,
            aud: c.aud,
            jti: c.jti,
            token_type: "Bearer",
            grant_id: c.grant_id,
            enrollment_id: c.enrollment_id,
        }
    }
}

/// Reads a form with a `token` parameter and the caller's client credentials (Basic or in
/// the form, not both), as introspection and revocation share.
fn token_parameter_request(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(BasicCredentials, String), OAuthError> {
    let body = body.map_err(OAuthError::from_body_rejection)?;
    if !matches!(body_format(headers), BodyFormat::Form | BodyFormat::Absent) {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let request: TokenParameterRequest = parse_form(&body).map_err(OAuthError::invalid_request)?;
    let client = client_credentials_from(headers, request.client_id, request.client_secret)?;
    let token = request
        .token
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    // Longer than anything we mint: a malformed request, not merely an unknown token.
    if token.len() > crate::authority::verify::MAX_TOKEN_LEN {
        return Err(OAuthError::invalid_request(
            "token is longer than any token this server issues",
        ));
    }
    Ok((client, token))
}

pub async fn introspect(
    State(state): State<AppState>,
    ClientIp(source_ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, OAuthError> {
    let (client, token) = token_parameter_request(&headers, body)?;
    let claims = state
        .authority
        .introspect(client.presented(source_ip), &token)
        .await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(IntrospectionResponse {
            active: claims.is_some(),
            claims: claims.map(IntrospectedClaims::from),
        }),
    ))
}

pub async fn revoke(
    State(state): State<AppState>,
    ClientIp(source_ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, OAuthError> {
    let (client, token) = token_parameter_request(&headers, body)?;
    state
        .authority
        .revoke(client.presented(source_ip), &token)
        .await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], StatusCode::OK))
}

/// RFC 6749 §5.2 error response.
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn from_body_rejection(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!("the body may be at most {} bytes", super::BODY_LIMIT_BYTES),
            )
        } else {
            Self::invalid_request("the request body could not be read")
        }
    }
}

impl From<AuthorityError> for OAuthError {
    fn from(e: AuthorityError) -> Self {
        match e {
            AuthorityError::InvalidClient => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            ),
            // RFC 8693 §2.2.2: an unacceptable subject token is invalid_request.
            AuthorityError::InvalidToken => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the subject token is invalid, expired, or its grant is no longer active",
            ),
            e @ AuthorityError::InsufficientScope(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_scope", e.to_string())
            }
            e @ (AuthorityError::Refused(_)
            | AuthorityError::GrantActive
            | AuthorityError::GrantInactive) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_grant", e.to_string())
            }
            AuthorityError::RateLimited { retry_after } => Self {
                retry_after: Some(retry_after_secs(retry_after)),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "temporarily_unavailable",
                    "too many requests; retry later",
                )
            },
            AuthorityError::UnsupportedGrantType => Self::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            ),
            e @ AuthorityError::MalformedScope(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_scope", e.to_string())
            }
            e @ AuthorityError::ScopeNotGranted(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_scope", e.to_string())
            }
            e @ AuthorityError::Invalid(_) => Self::invalid_request(e.to_string()),
            AuthorityError::NotFound => Self::invalid_request("not found"),
            AuthorityError::Conflict(what) => Self::invalid_request(what.to_string()),
            AuthorityError::Unavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "temporarily unavailable; retry shortly",
            ),
            AuthorityError::Internal(source) => {
                log_internal(source.as_ref());
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal server error",
                )
            }
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            error_description: &self.description,
        };
        let mut response = (
            self.status,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(body),
        )
            .into_response();
        let headers = response.headers_mut();
        // RFC 6749 §5.2 requires the challenge when Basic was tried, and HTTP requires
        // one on every 401, so every invalid_client carries it.
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"portcullis\", charset=\"UTF-8\""),
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

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const FIELDS: [&str; 7] = [
        "grant_type",
        "scope",
        "client_id",
        "client_secret",
        "subject_token",
        "subject_token_type",
        "requested_token_type",
    ];

    fn field(request: &TokenRequest, name: &str) -> Option<String> {
        match name {
            "grant_type" => request.grant_type.clone(),
            "scope" => request.scope.clone(),
            "client_id" => request.client_id.clone(),
            "client_secret" => request.client_secret.clone(),
            "subject_token" => request.subject_token.clone(),
            "subject_token_type" => request.subject_token_type.clone(),
            _ => request.requested_token_type.clone(),
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]

        #[test]
        fn token_requests_round_trip(
            values in proptest::collection::vec(proptest::option::of(".{0,40}"), FIELDS.len()),
            unknown in proptest::option::of(("x_[a-z]{1,8}", ".{0,8}")),
        ) {
            let mut pairs: Vec<(&str, &str)> = FIELDS
                .iter()
                .zip(&values)
                .filter_map(|(k, v)| Some((*k, v.as_deref()?)))
                .collect();
            // Unknown parameters are ignored (RFC 6749 §3.2).
            if let Some((k, v)) = &unknown {
                pairs.push((k, v));
            }
            let body = serde_urlencoded::to_string(&pairs).unwrap();
            let got: TokenRequest = parse_form(body.as_bytes()).unwrap();
            for (name, sent) in FIELDS.iter().zip(&values) {
                prop_assert_eq!(&field(&got, name), sent, "{}", name);
            }
        }

        #[test]
        fn repeated_parameters_are_rejected(
            repeated in proptest::sample::select(&FIELDS[..]),
            first in "[a-z]{0,8}",
            second in "[a-z]{0,8}",
        ) {
            let body = serde_urlencoded::to_string([
                (repeated, first.as_str()),
                ("grant_type_hint", "x"),
                (repeated, second.as_str()),
            ])
            .unwrap();
            prop_assert!(parse_form::<TokenRequest>(body.as_bytes()).is_err());
            let twice = format!("token=a&{body}&token=b");
            prop_assert!(
                parse_form::<TokenParameterRequest>(twice.as_bytes()).is_err()
            );
        }
    }
}
