use std::time::Duration;

use crate::{domain::InvalidScope, store::StoreError};

/// Everything the core can answer, in domain words. Each HTTP dialect maps these to its
/// own status codes and envelopes; the core knows no status codes.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// Unknown client, wrong secret and disabled app are deliberately one answer.
    #[error("invalid client credentials")]
    InvalidClient,
    #[error("too many failed attempts")]
    RateLimited { retry_after: Duration },
    #[error("unsupported grant type")]
    UnsupportedGrantType,
    #[error(transparent)]
    MalformedScope(#[from] InvalidScope),
    #[error("scope '{0}' is not granted to this client")]
    ScopeNotGranted(String),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("the store is unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AuthorityError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(e.into())
    }
}

impl From<StoreError> for AuthorityError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self::Conflict(what),
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "store unavailable");
                Self::Unavailable
            }
            StoreError::Internal(source) => Self::Internal(source),
        }
    }
}
