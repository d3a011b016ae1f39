//! Bearer tokens, as every bearer route reads them: no token is a 401 with a plain `Bearer`
//! challenge (RFC 6750 §3.1: no error code when none was sent); a token that does not verify
//! is a 401 with `error="invalid_token"`.

use std::marker::PhantomData;

use axum::{extract::FromRequestParts, http::HeaderMap, http::request::Parts};

use super::{
    AppState,
    error::{ApiError, Dialect, Failure},
    extract::{ClientIp, bearer_token},
};
use crate::authority::Principal;

/// The `Authorization: Bearer` token, which the route requires.
pub fn require_bearer<D: Dialect>(headers: &HeaderMap) -> Result<&str, ApiError<D>> {
    bearer_token(headers).ok_or_else(|| missing_token("a bearer token is required"))
}

/// The answer to a request that sent no bearer token.
pub fn missing_token<D: Dialect>(message: &str) -> ApiError<D> {
    ApiError::new(Failure::MissingToken, message)
}

/// The caller a verified bearer token speaks for.
pub struct Caller<D>(pub Principal, pub PhantomData<D>);

impl<D: Dialect> FromRequestParts<AppState> for Caller<D> {
    type Rejection = ApiError<D>;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Ok(ClientIp(source_ip)) = ClientIp::from_request_parts(parts, state).await;
        let token = require_bearer::<D>(&parts.headers)?;
        let principal = state
            .authority
            .authenticate_bearer(token, source_ip)
            .await?;
        Ok(Self(principal, PhantomData))
    }
}
