//! Minting RFC 9068 JWT access tokens.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    AuthorityError,
    clock::SharedClock,
    keys::{KeyRing, SigningKey},
};
use crate::domain::{CidrList, ScopeSet, Subject, SubjectKind};

/// The claims of every token Portcullis issues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    pub sub_kind: SubjectKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    /// The `jti` of the token this one was exchanged from (RFC 8693): it stands only while
    /// that one does, and never outlives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_jti: Option<String>,
    /// The app secret that minted this token (client_credentials and enrollment tokens):
    /// revoking that secret with its tokens revokes this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    /// The networks the token may be used from (Vault's `token_bound_cidrs`); absent for a
    /// token bound to none. Tokens derived from it carry the same.
    #[serde(default, skip_serializing_if = "CidrList::is_empty")]
    pub cidr: CidrList,
}

/// What to put in a token; the minter adds issuer, audience, times and id.
#[derive(Debug, Clone)]
pub struct TokenSpec<'a> {
    pub subject: &'a Subject,
    pub client_id: &'a str,
    pub scope: &'a ScopeSet,
    pub lifetime: Duration,
    pub enrollment_id: Option<String>,
    pub grant_id: Option<String>,
    /// How the token was obtained, for metrics ("client_credentials", "token_exchange", …).
    pub grant_type: &'static str,
    pub parent_jti: Option<String>,
    pub secret_id: Option<String>,
    /// The networks the token is bound to (empty: none).
    pub cidr: CidrList,
}

#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
    pub expires_at: DateTime<Utc>,
    pub scope: ScopeSet,
    pub jti: String,
    /// The app's quota after this token, when it has one (the RateLimit headers).
    pub quota: Option<crate::domain::QuotaStatus>,
}

pub struct TokenMinter {
    issuer: String,
    audience: String,
    keys: Arc<KeyRing>,
    clock: SharedClock,
}

impl TokenMinter {
    pub fn new(issuer: String, audience: String, keys: Arc<KeyRing>, clock: SharedClock) -> Self {
        Self {
            issuer,
            audience,
            keys,
            clock,
        }
    }

    pub fn mint(&self, spec: TokenSpec<'_>) -> Result<IssuedToken, AuthorityError> {
        self.sign(&self.keys.current(), self.clock.now(), spec)
    }

    /// Mints a token that may outlive the time a retired key normally stays published (a
    /// grant's API token lives as long as its grant), issued at `now` so that a lifetime
    /// counted to a given instant ends exactly there. The key that signs it is first
    /// recorded to stay published until the token expires.
    pub async fn mint_lasting(
        &self,
        spec: TokenSpec<'_>,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, AuthorityError> {
        let key = self.keys.current();
        let lifetime = TimeDelta::from_std(spec.lifetime).map_err(AuthorityError::internal)?;
        self.keys.keep_published_until(&key, now + lifetime).await?;
        self.sign(&key, now, spec)
    }

    fn sign(
        &self,
        key: &SigningKey,
        now: DateTime<Utc>,
        spec: TokenSpec<'_>,
    ) -> Result<IssuedToken, AuthorityError> {
        let lifetime = TimeDelta::from_std(spec.lifetime).map_err(AuthorityError::internal)?;
        let expires_at = now + lifetime;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: spec.subject.id.clone(),
            aud: self.audience.clone(),
            exp: expires_at.timestamp(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            jti: Uuid::new_v4().to_string(),
            client_id: spec.client_id.to_owned(),
            scope: spec.scope.to_string(),
            sub_kind: spec.subject.kind,
            enrollment_id: spec.enrollment_id,
            grant_id: spec.grant_id,
            parent_jti: spec.parent_jti,
            secret_id: spec.secret_id,
            cidr: spec.cidr,
        };
        let payload = serde_json::to_vec(&claims).map_err(AuthorityError::internal)?;

        let mut token = String::with_capacity(512);
        token.push_str(key.encoded_header());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = key.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        crate::telemetry::metrics::token_issued(spec.grant_type);

        Ok(IssuedToken {
            access_token: token,
            expires_in: spec.lifetime.as_secs(),
            expires_at,
            scope: spec.scope.clone(),
            jti: claims.jti,
            quota: None,
        })
    }
}
