//! OAuth 2.0 token endpoint (RFC 6749 §4.4, client_credentials).

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{
    AppState,
    body::{Body, BodyRules, ReadsBodies},
    client_auth::{AuthenticatesClients, ClientAuth, client_credentials},
    error::{ApiError, Dialect, Failure, with_rate_limit},
    extract::{BodyFormat, ClientIp, JsonKeys},
    openapi::{Documented, Errors, typed},
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
#[schema(as = OAuthTokenRequest)]
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
#[schema(as = OAuthTokenResponse)]
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

fn token_response(token: IssuedToken, issued_token_type: Option<&'static str>) -> Response {
    let quota = token.quota;
    let body = (
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
    );
    with_rate_limit(body, quota.as_deref())
}

#[utoipa::path(
    post,
    path = "/oauth2/token",
    operation_id = "oauthToken",
    tag = "OAuth 2.0",
    summary = "Token endpoint: client_credentials and RFC 8693 token exchange",
    description = "client_credentials authenticates the client by HTTP Basic (`client_secret_basic`) or in the form (`client_secret_post`), never both. Token exchange needs no client authentication: its `subject_token` (an auth-grant API token) is the credential.",
    request_body(
        description = "A form.",
        content((TokenRequest = "application/x-www-form-urlencoded")),
    ),
    security(("clientBasic" = []), ()),
    responses(
        (status = 200, description = "RFC 6749 §5.1 token response.", body = TokenResponse),
        Errors<OAuth, 400, 401, 413, 429, 500, 503>,
    ),
)]
pub async fn token(
    State(state): State<AppState>,
    ClientIp(source_ip): ClientIp,
    headers: HeaderMap,
    // Repeated parameters are refused while reading (RFC 6749 §3.2): a struct field may
    // appear only once.
    Body(request, _): Body<OAuth, TokenRequest>,
) -> Result<Response, OAuthError> {
    let requested = request
        .scope
        .as_deref()
        .map(ScopeSet::parse)
        .transpose()
        .map_err(AuthorityError::from)?;
    match request.grant_type.as_deref() {
        Some("client_credentials") => {
            client_credentials_grant(&state, &headers, request, requested, source_ip).await
        }
        Some(TOKEN_EXCHANGE) => token_exchange(&state, request, requested, source_ip).await,
        Some(_) => Err(AuthorityError::UnsupportedGrantType.into()),
        None => Err(OAuthError::bad_request("grant_type is required")),
    }
}

async fn client_credentials_grant(
    state: &AppState,
    headers: &HeaderMap,
    request: TokenRequest,
    requested: Option<ScopeSet>,
    source_ip: std::net::IpAddr,
) -> Result<Response, OAuthError> {
    let client = client_credentials(headers, request.client_id, request.client_secret)?;
    let token = state
        .authority
        .client_credentials_token(client.judge_from(source_ip), requested, TokenRoute::OAuth)
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
        .ok_or_else(|| OAuthError::bad_request("subject_token is required"))?;
    match request.subject_token_type.as_deref() {
        Some(ACCESS_TOKEN_TYPE | JWT_TOKEN_TYPE) => {}
        Some(_) => {
            return Err(OAuthError::bad_request(
                "subject_token_type must be an access_token or a jwt",
            ));
        }
        None => {
            return Err(OAuthError::bad_request("subject_token_type is required"));
        }
    }
    if request
        .requested_token_type
        .as_deref()
        .is_some_and(|t| t != ACCESS_TOKEN_TYPE)
    {
        return Err(OAuthError::bad_request(
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

/// The flattened optional claims would derive to a schema that rejects `{"active":false}`;
/// its two shapes are spelled out instead.
impl utoipa::PartialSchema for IntrospectionResponse {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        typed(json!({
            "description": "RFC 7662 §2.2: an inactive token is `{\"active\":false}` and nothing else.",
            "oneOf": [
                {
                    "type": "object",
                    "required": ["active"],
                    "properties": { "active": { "type": "boolean", "enum": [false] } },
                    "additionalProperties": false
                },
                {
                    "allOf": [
                        { "$ref": "#/components/schemas/IntrospectedClaims" },
                        {
                            "type": "object",
                            "required": ["active"],
                            "properties": { "active": { "type": "boolean", "enum": [true] } }
                        }
                    ]
                }
            ]
        }))
    }
}

impl ToSchema for IntrospectionResponse {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>) {
        schemas.push((
            IntrospectedClaims::name().into(),
            <IntrospectedClaims as utoipa::PartialSchema>::schema(),
        ));
        IntrospectedClaims::schemas(schemas);
    }
}

/// The claims of an active token.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntrospectedClaims {
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
    /// The networks the token is bound to (CIDR blocks); absent for a token bound to none.
    /// Introspection does not judge the caller's own address, since the caller is the
    /// resource server, not the token's user: a resource server that honours the binding
    /// refuses the token unless the request it serves comes from one of these networks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    cidr: Vec<String>,
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
            cidr: c.cidr.to_strings(),
        }
    }
}

/// The `token` parameter of introspection and revocation.
fn token_parameter(request: &mut TokenParameterRequest) -> Result<String, OAuthError> {
    let token = request
        .token
        .take()
        .ok_or_else(|| OAuthError::bad_request("token is required"))?;
    // Longer than anything we mint: a malformed request, not merely an unknown token.
    if token.len() > crate::authority::verify::MAX_TOKEN_LEN {
        return Err(OAuthError::bad_request(
            "token is longer than any token this server issues",
        ));
    }
    Ok(token)
}

#[utoipa::path(
    post,
    path = "/oauth2/introspect",
    operation_id = "oauthIntrospect",
    tag = "OAuth 2.0",
    summary = "RFC 7662 token introspection",
    description = "Unknown, expired, revoked or foreign tokens are `{\"active\":false}`. A token bound to networks reports them as `cidr`; the caller's own address is not judged against them (the caller is the resource server, not the token's user).",
    request_body(
        description = "A form.",
        content((TokenParameterRequest = "application/x-www-form-urlencoded")),
    ),
    security(("clientBasic" = []), ()),
    responses(
        (status = 200, description = "The token's state.", body = IntrospectionResponse),
        Errors<OAuth, 400, 401, 413, 429, 500, 503>,
    ),
)]
pub async fn introspect(
    State(state): State<AppState>,
    ClientIp(source_ip): ClientIp,
    headers: HeaderMap,
    Body(mut request, _): Body<OAuth, TokenParameterRequest>,
) -> Result<impl IntoResponse, OAuthError> {
    let client = client_credentials(
        &headers,
        request.client_id.take(),
        request.client_secret.take(),
    )?;
    let token = token_parameter(&mut request)?;
    let claims = state
        .authority
        .introspect(client.judge_from(source_ip), &token)
        .await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(IntrospectionResponse {
            active: claims.is_some(),
            claims: claims.map(IntrospectedClaims::from),
        }),
    ))
}

#[utoipa::path(
    post,
    path = "/oauth2/revoke",
    operation_id = "oauthRevoke",
    tag = "OAuth 2.0",
    summary = "RFC 7009 token revocation",
    description = "200 even for unknown tokens.",
    request_body(
        description = "A form.",
        content((TokenParameterRequest = "application/x-www-form-urlencoded")),
    ),
    security(("clientBasic" = []), ()),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke; empty body."),
        Errors<OAuth, 400, 401, 413, 429, 500, 503>,
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    ClientIp(source_ip): ClientIp,
    headers: HeaderMap,
    Body(mut request, _): Body<OAuth, TokenParameterRequest>,
) -> Result<impl IntoResponse, OAuthError> {
    let client = client_credentials(
        &headers,
        request.client_id.take(),
        request.client_secret.take(),
    )?;
    let token = token_parameter(&mut request)?;
    state
        .authority
        .revoke(client.judge_from(source_ip), &token)
        .await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], StatusCode::OK))
}

/// The OAuth 2.0 dialect: RFC 6749 §5.2 errors.
#[derive(Debug)]
pub struct OAuth;

pub type OAuthError = ApiError<OAuth>;

impl Dialect for OAuth {
    fn answer(failure: Failure) -> (StatusCode, &'static str) {
        use Failure as F;
        match failure {
            // RFC 8693 §2.2.2: an unacceptable subject token is invalid_request.
            F::BadRequest
            | F::Invalid
            | F::UnsupportedMediaType
            | F::MissingToken
            | F::InvalidToken
            | F::NotFound
            | F::Conflict => (StatusCode::BAD_REQUEST, "invalid_request"),
            F::InsufficientScope | F::MalformedScope | F::ScopeNotGranted => {
                (StatusCode::BAD_REQUEST, "invalid_scope")
            }
            F::Refused | F::GrantState => (StatusCode::BAD_REQUEST, "invalid_grant"),
            F::UnsupportedGrantType => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
            F::InvalidClient => (StatusCode::UNAUTHORIZED, "invalid_client"),
            F::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"),
            F::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable"),
            F::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
            F::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        }
    }

    fn reword(error: &AuthorityError) -> Option<String> {
        let words = match error {
            AuthorityError::InvalidClient => "client authentication failed",
            AuthorityError::InvalidToken => {
                "the subject token is invalid, expired, or its grant is no longer active"
            }
            AuthorityError::UnsupportedGrantType => {
                "the supported grant types are client_credentials and \
                 urn:ietf:params:oauth:grant-type:token-exchange"
            }
            _ => return None,
        };
        Some(words.to_owned())
    }

    fn envelope(error: &OAuthError) -> impl Serialize {
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            error: &'static str,
            error_description: &'a str,
        }
        ErrorBody {
            error: error.code(),
            error_description: error.message(),
        }
    }

    const NO_STORE: bool = true;
    // RFC 6749 §5.2 requires the challenge when Basic was tried, and HTTP requires one on
    // every 401, so every invalid_client carries it.
    const CLIENT_CHALLENGE: Option<&'static str> =
        Some("Basic realm=\"portcullis\", charset=\"UTF-8\"");
}

impl Documented for OAuth {
    const NAME: &'static str = "OAuth";
    const CODE_AT: &'static [&'static str] = &["error"];
    const CHALLENGE: Option<&'static str> = Some("Always: `Basic realm=\"portcullis\"`.");

    fn envelope_schema() -> Value {
        json!({
            "description": "The RFC 6749 §5.2 error response.",
            "type": "object",
            "required": ["error", "error_description"],
            "properties": {
                "error": { "type": "string" },
                "error_description": { "type": "string" }
            }
        })
    }
}

impl ReadsBodies for OAuth {
    const BODY: BodyRules = BodyRules {
        absent: BodyFormat::Form,
        json: false,
        keys: JsonKeys::Exact,
        unsupported: "the body must be application/x-www-form-urlencoded",
    };
}

impl AuthenticatesClients for OAuth {
    const CLIENT_AUTH: ClientAuth = ClientAuth::OneMethod;
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::http::extract::parse_form;

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
