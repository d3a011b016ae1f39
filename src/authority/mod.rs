//! The core: verify a credential, decide the scopes, mint a signed JWT.
//!
//! Nothing here knows HTTP or SQL. Each HTTP dialect translates its wire format into these
//! calls and maps [`AuthorityError`] to its own envelope.

pub mod apps;
pub mod clock;
pub mod credentials;
mod error;
pub mod keys;
pub mod secrets;
pub mod tokens;

use std::{net::IpAddr, time::Duration};

pub use error::AuthorityError;

use crate::{
    domain::{ScopeSet, Subject, SubjectKind},
    store::DynStore,
};
use apps::Applications;
use credentials::ClientAuthenticator;
use tokens::{IssuedToken, TokenMinter, TokenSpec};

/// Which route's lifetime a client_credentials token gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRoute {
    OAuth,
    Endorsed,
}

#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub oauth: Duration,
    pub endorsed: Duration,
}

/// Credentials as presented, before any judgement.
#[derive(Debug, Clone, Copy)]
pub struct ClientCredentials<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub source_ip: IpAddr,
}

pub struct Authority {
    pub apps: Applications,
    pub credentials: ClientAuthenticator,
    pub tokens: TokenMinter,
    pub lifetimes: Lifetimes,
    store: DynStore,
}

impl Authority {
    pub fn new(
        apps: Applications,
        credentials: ClientAuthenticator,
        tokens: TokenMinter,
        lifetimes: Lifetimes,
        store: DynStore,
    ) -> Self {
        Self {
            apps,
            credentials,
            tokens,
            lifetimes,
            store,
        }
    }

    /// The client_credentials grant: the app itself is the subject. An absent or empty
    /// request gets the app's default scopes; anything beyond the allowed scopes is refused,
    /// never silently reduced.
    pub async fn client_credentials_token(
        &self,
        credentials: ClientCredentials<'_>,
        requested: Option<ScopeSet>,
        route: TokenRoute,
    ) -> Result<IssuedToken, AuthorityError> {
        let client = self
            .credentials
            .authenticate(
                credentials.client_id,
                credentials.client_secret,
                credentials.source_ip,
            )
            .await?;
        let scope = match requested.filter(|s| !s.is_empty()) {
            Some(wanted) => match client.allowed_scopes.first_uncovered(&wanted) {
                Some(missing) => return Err(AuthorityError::ScopeNotGranted(missing.to_string())),
                None => wanted,
            },
            None => client.default_scopes.clone(),
        };
        let lifetime = match route {
            TokenRoute::OAuth => self.lifetimes.oauth,
            TokenRoute::Endorsed => self.lifetimes.endorsed,
        };
        let subject = Subject {
            kind: SubjectKind::App,
            id: client.client_id.to_string(),
        };
        self.tokens.mint(TokenSpec {
            subject: &subject,
            client_id: client.client_id.as_str(),
            scope: &scope,
            lifetime,
            enrollment_id: None,
            grant_id: None,
        })
    }

    /// Whether the store answers; readiness follows this.
    pub async fn store_ready(&self) -> bool {
        self.store.ping().await.is_ok()
    }
}
