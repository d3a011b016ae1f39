//! Endorsed-compatible token issuing: `POST /api/v1/auth/tokens`.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
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
    openapi::{Documented, Errors},
};
use crate::{
    authority::{AuthorityError, TokenRoute},
    domain::{InvalidScope, ScopeSet},
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

impl ScopeParam {
    /// List items may themselves be space-delimited; every form means the same set.
    fn parse(&self) -> Result<ScopeSet, InvalidScope> {
        match self {
            Self::Text(raw) => ScopeSet::parse(raw),
            Self::List(items) => ScopeSet::from_items(
                items
                    .iter()
                    .flat_map(|item| item.split(' '))
                    .filter(|s| !s.is_empty()),
            ),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EndorsedTokenResponse)]
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

#[utoipa::path(
    post,
    path = "/api/v1/auth/tokens",
    operation_id = "createEndorsedToken",
    tag = "Endorsed",
    summary = "Issue an access token (client_credentials)",
    description = "Client credentials travel in the body. A body without a content type is read as a form.",
    request_body(
        description = "JSON, or the same fields as a form.",
        content(
            (CreateTokenRequest = "application/json"),
            (CreateTokenRequest = "application/x-www-form-urlencoded"),
        ),
    ),
    responses(
        (status = 200, description = "The token.", body = TokenResponse),
        Errors<Endorsed, 400, 401, 403, 413, 415, 429, 500, 503>,
    ),
)]
pub async fn create_token(
    State(state): State<AppState>,
    ClientIp(source_ip): ClientIp,
    headers: HeaderMap,
    Body(request, _): Body<Endorsed, CreateTokenRequest>,
) -> Result<impl IntoResponse, EndorsedError> {
    match request.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(_) => return Err(AuthorityError::UnsupportedGrantType.into()),
        None => return Err(EndorsedError::bad_request("grant_type is required")),
    }
    let client = client_credentials(&headers, request.client_id, request.client_secret)?;
    let requested = request
        .scope
        .as_ref()
        .map(ScopeParam::parse)
        .transpose()
        .map_err(AuthorityError::from)?;

    let token = state
        .authority
        .client_credentials_token(
            client.judge_from(source_ip),
            requested,
            TokenRoute::Endorsed,
        )
        .await?;
    let quota = token.quota;
    let body = (
        [(header::CACHE_CONTROL, "no-store")],
        Json(TokenResponse {
            is_error: false,
            access_token: token.access_token,
            token_type: "Bearer",
            expires_in: token.expires_in.to_string(),
            scope: token.scope.to_vec(),
        }),
    );
    Ok(with_rate_limit(body, quota.as_deref()))
}

/// The Endorsed dialect.
#[derive(Debug)]
pub struct Endorsed;

pub type EndorsedError = ApiError<Endorsed>;

impl Dialect for Endorsed {
    fn answer(failure: Failure) -> (StatusCode, &'static str) {
        use Failure as F;
        match failure {
            F::BadRequest | F::Invalid | F::UnsupportedGrantType | F::MalformedScope => {
                (StatusCode::BAD_REQUEST, "BAD_REQUEST")
            }
            F::MissingToken | F::InvalidToken | F::InvalidClient => {
                (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED")
            }
            F::Refused | F::InsufficientScope | F::GrantState | F::ScopeNotGranted => {
                (StatusCode::FORBIDDEN, "FORBIDDEN")
            }
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
        matches!(error, AuthorityError::UnsupportedGrantType)
            .then(|| "grant_type must be client_credentials".to_owned())
    }

    /// `{"is_error":true,"error":{"code":"…","issues":[{"message":"…"}]}}`.
    fn envelope(error: &EndorsedError) -> impl Serialize {
        #[derive(Serialize)]
        struct Envelope<'a> {
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
        Envelope {
            is_error: true,
            error: ErrorBody {
                code: error.code(),
                issues: [Issue {
                    message: error.message(),
                }],
            },
        }
    }
}

impl Documented for Endorsed {
    const NAME: &'static str = "Endorsed";
    const CODE_AT: &'static [&'static str] = &["error", "code"];
    const CHALLENGE: Option<&'static str> = None;

    fn envelope_schema() -> Value {
        json!({
            "description": "The Endorsed error envelope.",
            "type": "object",
            "required": ["is_error", "error"],
            "properties": {
                "is_error": { "type": "boolean", "enum": [true] },
                "error": {
                    "type": "object",
                    "required": ["code", "issues"],
                    "properties": {
                        "code": { "type": "string" },
                        "issues": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["message"],
                                "properties": { "message": { "type": "string" } }
                            }
                        }
                    }
                }
            }
        })
    }
}

impl ReadsBodies for Endorsed {
    const BODY: BodyRules = BodyRules {
        absent: BodyFormat::Form,
        json: true,
        keys: JsonKeys::Exact,
        unsupported: "send application/json or application/x-www-form-urlencoded",
    };
}

impl AuthenticatesClients for Endorsed {
    /// The application's credentials always travel in the body on this route.
    const CLIENT_AUTH: ClientAuth = ClientAuth::BodyOnly;

    fn missing_credentials() -> EndorsedError {
        EndorsedError::bad_request("client_id and client_secret are required")
    }
}

#[cfg(test)]
mod properties {
    use axum::http::HeaderValue;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::http::extract::parse_body;

    #[derive(Debug, Serialize)]
    struct Sent {
        client_id: Option<String>,
        client_secret: Option<String>,
        grant_type: Option<String>,
        scope: Option<String>,
    }

    fn form() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        h
    }

    fn valid_scope() -> impl Strategy<Value = String> {
        "([a-zA-Z0-9_.-]{1,12}|\\*):([a-zA-Z0-9_.-]{1,12}|\\*)"
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]

        #[test]
        fn form_requests_round_trip(
            client_id in proptest::option::of(".{0,40}"),
            client_secret in proptest::option::of(".{0,40}"),
            grant_type in proptest::option::of(".{0,40}"),
            scope in proptest::option::of(".{0,40}"),
            absent_content_type in any::<bool>(),
        ) {
            let sent = Sent { client_id, client_secret, grant_type, scope };
            let body = serde_urlencoded::to_string(&sent).unwrap();
            let headers = if absent_content_type { HeaderMap::new() } else { form() };
            let got: CreateTokenRequest =
                parse_body(&headers, body.as_bytes(), BodyFormat::Form).unwrap();
            prop_assert_eq!(&got.client_id, &sent.client_id);
            prop_assert_eq!(&got.client_secret, &sent.client_secret);
            prop_assert_eq!(&got.grant_type, &sent.grant_type);
            match (&got.scope, &sent.scope) {
                (Some(ScopeParam::Text(got)), Some(sent)) => prop_assert_eq!(got, sent),
                (None, None) => {}
                (got, sent) => prop_assert!(false, "scope {:?} read as {:?}", sent, got),
            }
        }

        #[test]
        fn scopes_as_array_string_or_form_mean_the_same_set(
            scopes in proptest::collection::vec(valid_scope(), 0..8),
            split_at in any::<prop::sample::Index>(),
        ) {
            let expected = ScopeSet::from_items(scopes.iter().map(String::as_str)).unwrap();
            let joined = scopes.join(" ");
            // An array whose items are themselves space-delimited runs of scopes.
            let cut = split_at.index(scopes.len() + 1);
            let chunked = json!([scopes[..cut].join(" "), scopes[cut..].join(" ")]);
            let bodies = [
                (HeaderMap::new(), serde_json::to_vec(&json!({ "scope": scopes })).unwrap(), BodyFormat::Json),
                (HeaderMap::new(), serde_json::to_vec(&json!({ "scope": chunked })).unwrap(), BodyFormat::Json),
                (HeaderMap::new(), serde_json::to_vec(&json!({ "scope": joined })).unwrap(), BodyFormat::Json),
                (form(), serde_urlencoded::to_string([("scope", &joined)]).unwrap().into_bytes(), BodyFormat::Form),
            ];
            for (headers, body, absent) in bodies {
                let got: CreateTokenRequest = parse_body(&headers, &body, absent).unwrap();
                let parsed = got.scope.as_ref().map(ScopeParam::parse);
                prop_assert_eq!(parsed, Some(Ok(expected.clone())), "{}", String::from_utf8_lossy(&body));
            }
        }

        #[test]
        fn arbitrary_bodies_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..256), json in any::<bool>(),
        ) {
            let absent = if json { BodyFormat::Json } else { BodyFormat::Form };
            if let Ok(request) = parse_body::<CreateTokenRequest>(&HeaderMap::new(), &body, absent) {
                let _ = request.scope.as_ref().map(ScopeParam::parse);
            }
        }
    }
}
