use chrono::{DateTime, Utc};

use super::{AppId, ClientId, NewSecret, ScopeSet};

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
    pub created_at: DateTime<Utc>,
}
