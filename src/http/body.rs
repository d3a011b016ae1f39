//! Request bodies, read by each dialect's rules and refused in its envelope.

use std::marker::PhantomData;

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderMap, StatusCode, header},
};
use serde::de::DeserializeOwned;

use super::{
    BODY_LIMIT_BYTES,
    error::{ApiError, Dialect, Failure},
    extract::{BodyError, BodyFormat, JsonKeys, body_format, parse_body_as},
};

/// How a dialect reads request bodies.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    /// How a body sent without `Content-Type` is read.
    pub absent: BodyFormat,
    /// Whether JSON is read at all (OAuth reads forms only).
    pub json: bool,
    pub keys: JsonKeys,
    /// What a body in any other media type is told.
    pub unsupported: &'static str,
}

/// A dialect whose routes take bodies.
pub trait ReadsBodies: Dialect {
    const BODY: BodyRules;
}

/// A request body read as `T` by `D`'s rules.
pub struct Body<D, T>(pub T, pub PhantomData<D>);

/// [`Body`], where an empty body (or only whitespace) means every field takes its default.
pub struct BodyOrDefault<D, T>(pub T, pub PhantomData<D>);

/// The body's bytes, bounded, whatever they hold.
pub struct RawBody<D>(pub Bytes, pub PhantomData<D>);

impl<D: ReadsBodies, T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<D, T> {
    type Rejection = ApiError<D>;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let format = body_format(request.headers());
        let RawBody(bytes, _) = RawBody::<D>::from_request(request, state).await?;
        parse::<D, T>(format, &bytes).map(|value| Self(value, PhantomData))
    }
}

impl<D, T, S> FromRequest<S> for BodyOrDefault<D, T>
where
    D: ReadsBodies,
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError<D>;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let format = body_format(request.headers());
        let RawBody(bytes, _) = RawBody::<D>::from_request(request, state).await?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            T::default()
        } else {
            parse::<D, T>(format, &bytes)?
        };
        Ok(Self(value, PhantomData))
    }
}

impl<D: Dialect, S: Send + Sync> FromRequest<S> for RawBody<D> {
    type Rejection = ApiError<D>;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        refuse_declared_oversize(request.headers())?;
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Self(bytes, PhantomData)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(too_large())
            }
            Err(_) => Err(ApiError::bad_request("the request body could not be read")),
        }
    }
}

/// A declared length over the limit is refused before a byte is read, rather than waiting
/// (until the request timeout) for a body that may never come.
pub fn refuse_declared_oversize<D: Dialect>(headers: &HeaderMap) -> Result<(), ApiError<D>> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > BODY_LIMIT_BYTES as u64 => Err(too_large()),
        _ => Ok(()),
    }
}

pub fn too_large<D: Dialect>() -> ApiError<D> {
    ApiError::new(
        Failure::PayloadTooLarge,
        format!("the body may be at most {BODY_LIMIT_BYTES} bytes"),
    )
}

fn parse<D: ReadsBodies, T: DeserializeOwned>(
    format: BodyFormat,
    body: &[u8],
) -> Result<T, ApiError<D>> {
    let rules = D::BODY;
    let format = match format {
        BodyFormat::Absent => rules.absent,
        BodyFormat::Json if !rules.json => BodyFormat::Unsupported,
        format => format,
    };
    parse_body_as(format, body, rules.keys).map_err(|e| match e {
        BodyError::UnsupportedMediaType => {
            ApiError::new(Failure::UnsupportedMediaType, rules.unsupported)
        }
        BodyError::Malformed(message) => ApiError::bad_request(message),
    })
}
