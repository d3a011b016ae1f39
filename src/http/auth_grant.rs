//! LearnCard-compatible auth grants: every route needs a bearer token, and acts on the
//! grants of that token's profile only.

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
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::{
    AppState, BODY_LIMIT_BYTES,
    extract::{BodyError, BodyFormat, bearer_token, parse_body},
    log_internal, retry_after_secs,
};
use crate::{
    authority::{
        AuthorityError, Invalid, Principal, Rule,
        grants::{CreateGrant, ListGrants},
    },
    domain::{AuthGrant, GrantId, GrantStatus},
    store::{GrantFilter, Match},
};

/// `$in` lists are bounded like every other input.
const MAX_IN_VALUES: usize = 100;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateAuthGrantRequest {
    #[schema(value_type = String, required = false)]
    name: Option<String>,
    #[schema(value_type = String, required = false)]
    description: Option<String>,
    /// Space-delimited, covered by the caller's own scope. Default `*:read`.
    #[schema(value_type = String, required = false)]
    scope: Option<String>,
    /// Absent or `null`: never expires.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::openapi::grant_expiry)]
    expires_at: Option<Option<String>>,
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`, via `default`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListAuthGrantsRequest {
    /// Default 100.
    #[schema(value_type = u32, minimum = 1, maximum = 100, required = false)]
    limit: Option<u32>,
    /// The `createdAt` of the last grant of the previous page.
    #[schema(value_type = String, required = false)]
    cursor: Option<String>,
    #[schema(value_type = GrantQuery, required = false)]
    query: Option<GrantQuery>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct GrantQuery {
    #[schema(value_type = TextMatch, required = false)]
    id: Option<TextMatch>,
    #[schema(value_type = TextMatch, required = false)]
    name: Option<TextMatch>,
    #[schema(value_type = TextMatch, required = false)]
    description: Option<TextMatch>,
    #[schema(schema_with = super::openapi::grant_status)]
    status: Option<String>,
}

/// An exact value, or `{"$in": [...]}` (at most 100 values).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
enum TextMatch {
    Exact(String),
    AnyOf {
        #[serde(rename = "$in")]
        #[schema(max_items = 100)]
        values: Vec<String>,
    },
}

impl TextMatch {
    fn into_match(self, field: &'static str) -> Result<Match<String>, AuthorityError> {
        match self {
            Self::Exact(v) => Ok(Match::Exact(v)),
            Self::AnyOf { values } if values.len() <= MAX_IN_VALUES => Ok(Match::AnyOf(values)),
            Self::AnyOf { .. } => Err(AuthorityError::invalid(
                field,
                Rule::TooManyValues { max: MAX_IN_VALUES },
            )),
        }
    }
}

impl GrantQuery {
    fn into_filter(self) -> Result<GrantFilter, AuthorityError> {
        // Ids that are not UUIDs can match nothing; they are dropped rather than refused.
        let id = self
            .id
            .map(|m| m.into_match("query.id"))
            .transpose()?
            .map(|m| match m {
                Match::Exact(v) => Match::AnyOf(GrantId::parse(&v).into_iter().collect()),
                Match::AnyOf(vs) => {
                    Match::AnyOf(vs.iter().filter_map(|v| GrantId::parse(v).ok()).collect())
                }
            });
        let status = self
            .status
            .map(|raw| {
                GrantStatus::parse(&raw).ok_or_else(|| {
                    AuthorityError::invalid("query.status", Rule::OneOf("active or revoked"))
                })
            })
            .transpose()?;
        Ok(GrantFilter {
            id,
            name: self.name.map(|m| m.into_match("query.name")).transpose()?,
            description: self
                .description
                .map(|m| m.into_match("query.description"))
                .transpose()?,
            status,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateAuthGrantRequest {
    #[schema(schema_with = super::openapi::grant_updates)]
    updates: Map<String, Value>,
}

/// The grant as LearnCard shows it: no `id`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthGrantResponse {
    name: String,
    description: String,
    #[schema(pattern = "^auth-grant:")]
    challenge: String,
    #[schema(schema_with = super::openapi::grant_status)]
    status: &'static str,
    scope: String,
    #[schema(schema_with = super::openapi::timestamp)]
    created_at: String,
    #[schema(schema_with = super::openapi::nullable_timestamp, required = true)]
    expires_at: Option<String>,
    /// Beyond LearnCard's shape: when a token of this grant was last used.
    #[schema(schema_with = super::openapi::nullable_timestamp, required = true)]
    last_used_at: Option<String>,
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<AuthGrant> for AuthGrantResponse {
    fn from(g: AuthGrant) -> Self {
        Self {
            name: g.name,
            description: g.description,
            challenge: g.challenge,
            status: g.status.as_str(),
            scope: g.scope.to_string(),
            created_at: timestamp(g.created_at),
            expires_at: g.expires_at.map(timestamp),
            last_used_at: g.last_used_at.map(timestamp),
        }
    }
}

async fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, LearnCardError> {
    let Some(token) = bearer_token(headers) else {
        return Err(LearnCardError::missing_token());
    };
    Ok(state.authority.authenticate_bearer(token).await?)
}

/// An id that does not even decode to UTF-8 cannot exist: not found, like any unknown id,
/// rather than axum's plain-text 400.
fn grant_id(path: Result<Path<String>, PathRejection>) -> Result<String, LearnCardError> {
    path.map(|Path(id)| id)
        .map_err(|_| AuthorityError::NotFound.into())
}

/// An optional JSON body: empty means every field takes its default.
fn read_body<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, LearnCardError> {
    match body {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
        body => read_required_body(headers, body),
    }
}

fn read_required_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, LearnCardError> {
    let body = body.map_err(LearnCardError::from_body_rejection)?;
    parse_body(headers, &body, BodyFormat::Json).map_err(|e| match e {
        BodyError::UnsupportedMediaType => LearnCardError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send application/json",
        ),
        BodyError::Malformed(message) => LearnCardError::bad_request(message),
    })
}

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<String>, LearnCardError> {
    let principal = principal(&state, &headers).await?;
    let request: CreateAuthGrantRequest = read_body(&headers, body)?;
    let id = state
        .authority
        .create_grant(
            &principal,
            CreateGrant {
                name: request.name,
                description: request.description,
                scope: request.scope,
                expires_at: request.expires_at,
            },
        )
        .await?;
    Ok(Json(id.to_string()))
}

pub async fn show(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<AuthGrantResponse>, LearnCardError> {
    let principal = principal(&state, &headers).await?;
    let id = grant_id(id)?;
    let grant = state.authority.grant(&principal, &id).await?;
    Ok(Json(AuthGrant::clone(&grant).into()))
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<AuthGrantResponse>>, LearnCardError> {
    let principal = principal(&state, &headers).await?;
    let request: ListAuthGrantsRequest = read_body(&headers, body)?;
    let filter = request
        .query
        .map(GrantQuery::into_filter)
        .transpose()?
        .unwrap_or_default();
    let grants = state
        .authority
        .list_grants(
            &principal,
            ListGrants {
                limit: request.limit,
                cursor: request.cursor,
                filter,
            },
        )
        .await?;
    Ok(Json(
        grants.into_iter().map(AuthGrantResponse::from).collect(),
    ))
}

pub async fn update(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<bool>, LearnCardError> {
    let principal = principal(&state, &headers).await?;
    let id = grant_id(id)?;
    let request: UpdateAuthGrantRequest = read_required_body(&headers, body)?;
    let text = |field: &'static str| -> Result<Option<String>, LearnCardError> {
        match request.updates.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(AuthorityError::invalid(field, Rule::NotAString).into()),
        }
    };
    // Anything else in `updates` (scope, status, …) cannot be changed and is ignored.
    let changed = state
        .authority
        .update_grant(&principal, &id, text("name")?, text("description")?)
        .await?;
    Ok(Json(changed))
}

pub async fn revoke(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<bool>, LearnCardError> {
    let principal = principal(&state, &headers).await?;
    let id = grant_id(id)?;
    state.authority.revoke_grant(&principal, &id).await?;
    Ok(Json(true))
}

pub async fn delete(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<bool>, LearnCardError> {
    let principal = principal(&state, &headers).await?;
    let id = grant_id(id)?;
    state.authority.delete_grant(&principal, &id).await?;
    Ok(Json(true))
}

pub async fn api_token(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, LearnCardError> {
    let principal = principal(&state, &headers).await?;
    let id = grant_id(id)?;
    let token = state.authority.grant_api_token(&principal, &id).await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(token.access_token),
    ))
}

/// The LearnCard error envelope: `{"message":"…","code":"…","issues":[…]}`.
#[derive(Debug)]
pub struct LearnCardError {
    status: StatusCode,
    code: &'static str,
    message: String,
    issues: Vec<Value>,
    retry_after: Option<String>,
    challenge: Option<&'static str>,
}

impl LearnCardError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            issues: Vec::new(),
            retry_after: None,
            challenge: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    fn missing_token() -> Self {
        Self {
            // RFC 6750 §3.1: no error code when the request carried no token at all.
            challenge: Some("Bearer"),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "a bearer token is required",
            )
        }
    }

    fn from_body_rejection(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("the body may be at most {BODY_LIMIT_BYTES} bytes"),
            )
        } else {
            Self::bad_request("the request body could not be read")
        }
    }
}

impl From<AuthorityError> for LearnCardError {
    fn from(e: AuthorityError) -> Self {
        match e {
            e @ AuthorityError::InvalidToken => Self {
                challenge: Some("Bearer error=\"invalid_token\""),
                ..Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", e.to_string())
            },
            e @ (AuthorityError::InsufficientScope(_)
            | AuthorityError::GrantActive
            | AuthorityError::GrantInactive
            | AuthorityError::InvalidClient) => {
                Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", e.to_string())
            }
            AuthorityError::ScopeNotGranted(scope) => Self::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!("cannot grant '{scope}': the caller's token does not hold it"),
            ),
            e @ AuthorityError::Refused(_) => {
                Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", e.to_string())
            }
            AuthorityError::Invalid(Invalid { field, rule }) => Self {
                issues: vec![json!({ "message": rule.to_string(), "path": [field] })],
                ..Self::bad_request(format!("{field}: {rule}"))
            },
            e @ (AuthorityError::MalformedScope(_) | AuthorityError::UnsupportedGrantType) => {
                Self::bad_request(e.to_string())
            }
            AuthorityError::NotFound => {
                Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "Auth grant not found")
            }
            AuthorityError::Conflict(what) => {
                Self::new(StatusCode::CONFLICT, "CONFLICT", what.to_string())
            }
            AuthorityError::RateLimited { retry_after } => Self {
                retry_after: Some(retry_after_secs(retry_after)),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOO_MANY_REQUESTS",
                    "too many requests; retry later",
                )
            },
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
struct ErrorBody<'a> {
    message: &'a str,
    code: &'a str,
    issues: &'a [Value],
}

impl IntoResponse for LearnCardError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: &self.message,
            code: self.code,
            issues: &self.issues,
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(challenge) = self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
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

    proptest! {
        #![proptest_config(crate::proptest_config(256))]

        #[test]
        fn create_requests_tell_absent_null_and_set_expiry_apart(
            name in proptest::option::of(".{0,40}"),
            scope in proptest::option::of(".{0,40}"),
            expires_at in proptest::option::of(proptest::option::of(".{0,40}")),
        ) {
            let mut body = json!({ "name": name, "scope": scope });
            if let Some(at) = &expires_at {
                body["expiresAt"] = json!(at);
            }
            let got: CreateAuthGrantRequest =
                parse_body(&HeaderMap::new(), body.to_string().as_bytes(), BodyFormat::Json).unwrap();
            prop_assert_eq!(got.name, name);
            prop_assert_eq!(got.scope, scope);
            prop_assert_eq!(got.expires_at, expires_at);
        }

        #[test]
        fn list_requests_never_panic_and_refuse_unknown_fields(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            unknown in "[a-z]{1,8}",
        ) {
            if let Ok(request) = parse_body::<ListAuthGrantsRequest>(&HeaderMap::new(), &body, BodyFormat::Json) {
                let _ = request.query.map(GrantQuery::into_filter);
            }
            prop_assume!(!["limit", "cursor", "query"].contains(&unknown.as_str()));
            let body = json!({ unknown: 1 }).to_string();
            prop_assert!(parse_body::<ListAuthGrantsRequest>(&HeaderMap::new(), body.as_bytes(), BodyFormat::Json).is_err());
        }
    }
}
