use chrono::{DateTime, Utc};

use super::{AppId, CidrList, ClientId, NewSecret, ScopeSet, TokenQuota};

/// An OAuth client: a backend service holding a `client_id` and one or more secrets
/// ([`super::AppSecret`], kept apart from this record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub id: AppId,
    pub client_id: ClientId,
    pub name: String,
    pub allowed_scopes: ScopeSet,
    pub default_scopes: ScopeSet,
    pub sandbox: bool,
    /// Where the app's credentials may be presented from (empty: anywhere).
    pub allowed_cidrs: CidrList,
    /// Where the tokens minted for the app may be used from (empty: anywhere).
    pub token_bound_cidrs: CidrList,
    /// How many tokens the app may be issued per UTC hour and day.
    pub quota: TokenQuota,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl Application {
    pub fn settings(&self) -> AppSettings {
        AppSettings {
            name: self.name.clone(),
            allowed_scopes: self.allowed_scopes.clone(),
            default_scopes: self.default_scopes.clone(),
            sandbox: self.sandbox,
            allowed_cidrs: self.allowed_cidrs.clone(),
            token_bound_cidrs: self.token_bound_cidrs.clone(),
            quota: self.quota,
        }
    }
}

/// What an application update may change; never its secrets or whether it is disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSettings {
    pub name: String,
    pub allowed_scopes: ScopeSet,
    pub default_scopes: ScopeSet,
    pub sandbox: bool,
    pub allowed_cidrs: CidrList,
    pub token_bound_cidrs: CidrList,
    pub quota: TokenQuota,
}

/// What the store needs to insert a new application, with its first secret.
#[derive(Debug, Clone)]
pub struct NewApplication {
    pub id: AppId,
    pub client_id: ClientId,
    pub name: String,
    pub secret: NewSecret,
    pub allowed_scopes: ScopeSet,
    pub default_scopes: ScopeSet,
    pub sandbox: bool,
    pub allowed_cidrs: CidrList,
    pub token_bound_cidrs: CidrList,
    pub quota: TokenQuota,
    pub created_at: DateTime<Utc>,
}
