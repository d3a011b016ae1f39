//! LearnCard-compatible auth grants: every route needs a bearer token, and acts on the
//! grants of that token's profile only.

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::{StatusCode, header, request::Parts},
    response::IntoResponse,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::{
    AppState,
    bearer::Caller,
    body::{Body, BodyOrDefault, BodyRules, ReadsBodies},
    error::{ApiError, Dialect, Failure},
    extract::{BodyFormat, JsonKeys},
    openapi::{Documented, Errors, GrantIdString, TokenString, True},
};
use crate::{
    authority::{
        AuthorityError, Rule,
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
    /// Beyond LearnCard's shape: requests per minute allowed with the grant's tokens on
    /// Portcullis's bearer routes (counted by each replica); absent: no limit.
    #[schema(value_type = u64, minimum = 1, maximum = 1000000, required = false)]
    requests_per_minute: Option<u64>,
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`, via `default`).
pub(super) fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
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
    /// Only for a grant that has a request quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    requests_per_minute: Option<u32>,
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
            requests_per_minute: g.requests_per_minute,
        }
    }
}

/// The grant id of the path. One that does not even decode to UTF-8 cannot exist: not
/// found, like any unknown id, rather than axum's plain-text 400.
pub struct GrantIdParam(String);

impl<S: Send + Sync> FromRequestParts<S> for GrantIdParam {
    type Rejection = LearnCardError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Self(id)),
            Err(_) => Err(AuthorityError::NotFound.into()),
        }
    }
}

/// The caller of every route here: a bearer token's profile.
type Profile = Caller<LearnCard>;

#[utoipa::path(
    post,
    path = "/auth-grant/create",
    operation_id = "createAuthGrant",
    tag = "Auth grants",
    summary = "Create an auth grant (scope authGrants:write)",
    description = "403 when the requested scope exceeds the caller's, when the caller's token derives from a grant, or when the profile holds the maximum number of active grants.",
    request_body(
        description = "JSON, or the same fields as a form.",
        content(
            (Option<CreateAuthGrantRequest> = "application/json"),
            (Option<CreateAuthGrantRequest> = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("bearerToken" = [])),
    responses(
        (
            status = 200,
            description = "The new grant's id.",
            body = inline(GrantIdString),
            links(
                ("show" = (operation_id = "showAuthGrant", parameters(("id" = "$response.body")))),
                ("update" = (operation_id = "updateAuthGrant", parameters(("id" = "$response.body")))),
                ("revoke" = (operation_id = "revokeAuthGrant", parameters(("id" = "$response.body")))),
                ("delete" = (operation_id = "deleteAuthGrant", parameters(("id" = "$response.body")))),
                ("apiToken" = (operation_id = "createAuthGrantApiToken", parameters(("id" = "$response.body")))),
            ),
        ),
        Errors<LearnCard, 400, 401, 403, 413, 415, 429, 500, 503>,
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Caller(principal, _): Profile,
    BodyOrDefault(request, _): BodyOrDefault<LearnCard, CreateAuthGrantRequest>,
) -> Result<Json<String>, LearnCardError> {
    let id = state
        .authority
        .create_grant(
            &principal,
            CreateGrant {
                name: request.name,
                description: request.description,
                scope: request.scope,
                expires_at: request.expires_at,
                requests_per_minute: request.requests_per_minute,
            },
        )
        .await?;
    Ok(Json(id.to_string()))
}

#[utoipa::path(
    get,
    path = "/auth-grant/{id}",
    operation_id = "showAuthGrant",
    tag = "Auth grants",
    summary = "Show an auth grant (scope authGrants:read)",
    params(("id" = String, Path)),
    security(("bearerToken" = [])),
    responses(
        (status = 200, description = "The grant.", body = AuthGrantResponse),
        Errors<LearnCard, 401, 404, 429, 500, 503>,
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    Caller(principal, _): Profile,
    GrantIdParam(id): GrantIdParam,
) -> Result<Json<AuthGrantResponse>, LearnCardError> {
    let grant = state.authority.grant(&principal, &id).await?;
    Ok(Json(AuthGrant::clone(&grant).into()))
}

#[utoipa::path(
    post,
    path = "/profile/auth-grants",
    operation_id = "listAuthGrants",
    tag = "Auth grants",
    summary = "List the caller's auth grants, newest first (scope authGrants:read)",
    request_body(
        description = "JSON, or the same fields as a form.",
        content(
            (Option<ListAuthGrantsRequest> = "application/json"),
            (Option<ListAuthGrantsRequest> = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("bearerToken" = [])),
    responses(
        (status = 200, description = "At most `limit` grants.", body = Vec<AuthGrantResponse>),
        Errors<LearnCard, 400, 401, 413, 415, 429, 500, 503>,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Caller(principal, _): Profile,
    BodyOrDefault(request, _): BodyOrDefault<LearnCard, ListAuthGrantsRequest>,
) -> Result<Json<Vec<AuthGrantResponse>>, LearnCardError> {
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

#[utoipa::path(
    post,
    path = "/auth-grant/update/{id}",
    operation_id = "updateAuthGrant",
    tag = "Auth grants",
    summary = "Rename or redescribe an auth grant (scope authGrants:write)",
    params(("id" = String, Path)),
    request_body(
        description = "JSON, or the same fields as a form.",
        content(
            (UpdateAuthGrantRequest = "application/json"),
            (UpdateAuthGrantRequest = "application/x-www-form-urlencoded"),
        ),
    ),
    security(("bearerToken" = [])),
    responses(
        (
            status = 200,
            description = "`true` if changed; `false` when only non-updatable fields were sent.",
            body = bool,
            content_type = "application/json",
        ),
        Errors<LearnCard, 400, 401, 404, 413, 415, 429, 500, 503>,
    ),
)]
pub async fn update(
    State(state): State<AppState>,
    Caller(principal, _): Profile,
    GrantIdParam(id): GrantIdParam,
    Body(request, _): Body<LearnCard, UpdateAuthGrantRequest>,
) -> Result<Json<bool>, LearnCardError> {
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

#[utoipa::path(
    post,
    path = "/auth-grant/{id}/revoke",
    operation_id = "revokeAuthGrant",
    tag = "Auth grants",
    summary = "Revoke an auth grant (scope authGrants:write; idempotent)",
    params(("id" = String, Path)),
    security(("bearerToken" = [])),
    responses(
        (status = 200, description = "Revoked.", body = inline(True)),
        Errors<LearnCard, 401, 404, 429, 500, 503>,
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    Caller(principal, _): Profile,
    GrantIdParam(id): GrantIdParam,
) -> Result<Json<bool>, LearnCardError> {
    state.authority.revoke_grant(&principal, &id).await?;
    Ok(Json(true))
}

#[utoipa::path(
    delete,
    path = "/auth-grant/{id}",
    operation_id = "deleteAuthGrant",
    tag = "Auth grants",
    summary = "Delete a revoked auth grant (scope authGrants:delete)",
    description = "An active grant must be revoked first (401).",
    params(("id" = String, Path)),
    security(("bearerToken" = [])),
    responses(
        (status = 200, description = "Deleted.", body = inline(True)),
        Errors<LearnCard, 401, 404, 429, 500, 503>,
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    Caller(principal, _): Profile,
    GrantIdParam(id): GrantIdParam,
) -> Result<Json<bool>, LearnCardError> {
    state.authority.delete_grant(&principal, &id).await?;
    Ok(Json(true))
}

#[utoipa::path(
    post,
    path = "/auth-grant/{id}/api-token",
    operation_id = "createAuthGrantApiToken",
    tag = "Auth grants",
    summary = "Mint an API token acting with the grant's scope (scope authGrants:read)",
    description = "401 when the grant is revoked or expired.",
    params(("id" = String, Path)),
    security(("bearerToken" = [])),
    responses(
        (status = 200, description = "The token (a JWT).", body = inline(TokenString)),
        Errors<LearnCard, 401, 403, 404, 429, 500, 503>,
    ),
)]
pub async fn api_token(
    State(state): State<AppState>,
    Caller(principal, _): Profile,
    GrantIdParam(id): GrantIdParam,
) -> Result<impl IntoResponse, LearnCardError> {
    let token = state.authority.grant_api_token(&principal, &id).await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(token.access_token),
    ))
}

/// The LearnCard dialect.
#[derive(Debug)]
pub struct LearnCard;

pub type LearnCardError = ApiError<LearnCard>;

impl Dialect for LearnCard {
    fn answer(failure: Failure) -> (StatusCode, &'static str) {
        use Failure as F;
        match failure {
            F::BadRequest | F::Invalid | F::MalformedScope | F::UnsupportedGrantType => {
                (StatusCode::BAD_REQUEST, "BAD_REQUEST")
            }
            F::MissingToken
            | F::InvalidToken
            | F::InsufficientScope
            | F::GrantState
            | F::InvalidClient => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            F::Refused | F::ScopeNotGranted => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            F::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            F::Conflict => (StatusCode::CONFLICT, "CONFLICT"),
            F::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            F::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
            }
            F::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"),
            F::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            F::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_SERVER_ERROR"),
        }
    }

    fn reword(error: &AuthorityError) -> Option<String> {
        match error {
            AuthorityError::ScopeNotGranted(scope) => Some(format!(
                "cannot grant '{scope}': the caller's token does not hold it"
            )),
            AuthorityError::NotFound => Some("Auth grant not found".to_owned()),
            _ => None,
        }
    }

    /// `{"message":"…","code":"…","issues":[…]}`: one issue per field that broke a rule.
    fn envelope(error: &LearnCardError) -> impl Serialize {
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            message: &'a str,
            code: &'static str,
            issues: Vec<Issue<'a>>,
        }
        #[derive(Serialize)]
        struct Issue<'a> {
            message: &'a str,
            path: [&'static str; 1],
        }
        ErrorBody {
            message: error.message(),
            code: error.code(),
            issues: error
                .field()
                .map(|(field, rule)| Issue {
                    message: rule,
                    path: [field],
                })
                .into_iter()
                .collect(),
        }
    }
}

impl Documented for LearnCard {
    const NAME: &'static str = "LearnCard";
    const CODE_AT: &'static [&'static str] = &["code"];
    const CHALLENGE: Option<&'static str> = Some("When the bearer token is missing or invalid.");

    fn envelope_schema() -> Value {
        json!({
            "description": "The LearnCard error envelope.",
            "type": "object",
            "required": ["message", "code", "issues"],
            "properties": {
                "message": { "type": "string" },
                "code": { "type": "string" },
                "issues": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["message", "path"],
                        "properties": {
                            "message": { "type": "string" },
                            "path": { "type": "array", "items": { "type": "string" } }
                        }
                    }
                }
            }
        })
    }
}

impl ReadsBodies for LearnCard {
    const BODY: BodyRules = BodyRules {
        absent: BodyFormat::Json,
        json: true,
        keys: JsonKeys::Exact,
        unsupported: "send application/json",
    };
}

#[cfg(test)]
mod properties {
    use axum::http::HeaderMap;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::http::extract::parse_body;

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
