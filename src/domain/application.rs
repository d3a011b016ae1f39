use chrono::{DateTime, Utc};

use super::{AppId, ClientId, ScopeSet};

/// An OAuth client: a backend service holding a `client_id` and a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub id: AppId,
    pub client_id: ClientId,
    pub name: String,
    /// argon2id PHC string of the current secret.
    pub secret_hash: String,
    /// The secret replaced by the last rotation, accepted until `previous_secret_expires_at`.
    pub previous_secret_hash: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
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

    /// The rotated-out secret's hash, while its grace period lasts.
    pub fn previous_secret_at(&self, now: DateTime<Utc>) -> Option<&str> {
        match (&self.previous_secret_hash, self.previous_secret_expires_at) {
            (Some(hash), Some(until)) if until > now => Some(hash),
            _ => None,
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

/// What the store needs to insert a new application.
#[derive(Debug, Clone)]
pub struct NewApplication {
    pub id: AppId,
    pub client_id: ClientId,
    pub name: String,
    pub secret_hash: String,
    pub allowed_scopes: ScopeSet,
    pub default_scopes: ScopeSet,
    pub sandbox: bool,
    pub created_at: DateTime<Utc>,
}
