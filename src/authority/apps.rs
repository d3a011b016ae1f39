//! Managing applications (OAuth clients): the operations behind the admin API and CLI.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::audit::{AuditEvent, AuditTrail, Detail, Event};
use super::{
    AuthorityError, Conflict, Rule,
    changes::ChangeHub,
    clock::SharedClock,
    secrets::{self, SecretHasher},
};
use crate::{
    domain::{
        AppId, Application, Change, CidrList, ClientId, NewApplication, NewSecret, ScopeSet,
        SecretId, TokenQuota,
    },
    store::{DynStore, Guarded},
};

pub const DEFAULT_SCOPES: &str = "all:read all:write";
const NAME_MAX_LEN: usize = 200;

#[derive(Debug, Default)]
pub struct CreateApplication {
    pub name: String,
    /// Defaults to the default scopes.
    pub allowed_scopes: Option<String>,
    /// Defaults to `all:read all:write`, or to the allowed scopes when only those are given.
    pub default_scopes: Option<String>,
    pub sandbox: bool,
    /// Networks the app's credentials may be presented from (CIDR blocks or addresses).
    pub allowed_cidrs: Option<Vec<String>>,
    /// Networks the app's tokens may be used from.
    pub token_bound_cidrs: Option<Vec<String>>,
    /// Tokens per UTC hour and day; `None`: no quota.
    pub quota: Option<QuotaRequest>,
    /// An existing `client_id` + secret pair, when migrating from another provider.
    pub import: Option<(String, SecretString)>,
}

/// An issuance quota as asked for; at least one window must be given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QuotaRequest {
    pub tokens_per_hour: Option<u64>,
    pub tokens_per_day: Option<u64>,
}

fn parse_quota(request: Option<QuotaRequest>) -> Result<TokenQuota, AuthorityError> {
    let Some(request) = request else {
        return Ok(TokenQuota::default());
    };
    let limit = |field: &'static str, n: Option<u64>| match n {
        Some(n) if !(1..=TokenQuota::MAX).contains(&n) => Err(AuthorityError::invalid(
            field,
            Rule::Range {
                min: 1,
                max: TokenQuota::MAX,
                unit: "",
            },
        )),
        n => Ok(n),
    };
    let quota = TokenQuota {
        per_hour: limit("quota.tokens_per_hour", request.tokens_per_hour)?,
        per_day: limit("quota.tokens_per_day", request.tokens_per_day)?,
    };
    if quota.is_unlimited() {
        return Err(AuthorityError::invalid("quota", Rule::NotAQuota));
    }
    Ok(quota)
}

#[derive(Debug, Default)]
pub struct UpdateApplication {
    pub name: Option<String>,
    pub allowed_scopes: Option<String>,
    pub default_scopes: Option<String>,
    pub sandbox: Option<bool>,
    /// An empty list lifts the binding.
    pub allowed_cidrs: Option<Vec<String>>,
    pub token_bound_cidrs: Option<Vec<String>>,
    /// `Some(None)` lifts the quota.
    pub quota: Option<Option<QuotaRequest>>,
}

/// A created application with its secret, which exists in plain text only here, once.
pub struct CreatedApplication {
    pub app: Application,
    /// `None` for imported credentials: the caller already holds that secret.
    pub client_secret: Option<SecretString>,
}

pub struct Applications {
    store: DynStore,
    audit: Arc<AuditTrail>,
    hasher: Arc<SecretHasher>,
    changes: Arc<ChangeHub>,
    clock: SharedClock,
}

fn parse_scopes(field: &'static str, raw: &str) -> Result<ScopeSet, AuthorityError> {
    ScopeSet::parse(raw).map_err(|e| AuthorityError::invalid(field, Rule::Scope(e)))
}

/// A list of networks for `field`; absent is the same as empty: any address.
pub(super) fn parse_cidrs(
    field: &'static str,
    raw: Option<&[String]>,
) -> Result<CidrList, AuthorityError> {
    CidrList::parse(raw.unwrap_or_default())
        .map_err(|e| AuthorityError::invalid(field, Rule::Cidr(e)))
}

fn check_name(name: &str) -> Result<(), AuthorityError> {
    if name.trim().is_empty() || name.chars().count() > NAME_MAX_LEN {
        return Err(AuthorityError::invalid(
            "name",
            Rule::Length {
                min: 1,
                max: NAME_MAX_LEN,
            },
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(AuthorityError::invalid("name", Rule::ControlCharacters));
    }
    Ok(())
}

fn check_defaults_allowed(allowed: &ScopeSet, defaults: &ScopeSet) -> Result<(), AuthorityError> {
    match allowed.first_uncovered(defaults) {
        Some(scope) => Err(AuthorityError::invalid(
            "default_scopes",
            Rule::BeyondAllowedScopes(scope.to_string()),
        )),
        None => Ok(()),
    }
}

impl Applications {
    pub fn new(
        store: DynStore,
        hasher: Arc<SecretHasher>,
        changes: Arc<ChangeHub>,
        clock: SharedClock,
        audit: Arc<AuditTrail>,
    ) -> Self {
        Self {
            store,
            audit,
            hasher,
            changes,
            clock,
        }
    }

    /// Makes every replica forget what it remembers about this app.
    pub(super) async fn forget(&self, app: &Application) {
        self.changes
            .announce(Change::App {
                client_id: app.client_id.to_string(),
                id: Some(app.id.0),
            })
            .await;
    }

    pub async fn create(
        &self,
        request: CreateApplication,
    ) -> Result<CreatedApplication, AuthorityError> {
        check_name(&request.name)?;
        let default_scopes = match (&request.default_scopes, &request.allowed_scopes) {
            (Some(raw), _) => parse_scopes("default_scopes", raw)?,
            (None, Some(allowed)) => parse_scopes("allowed_scopes", allowed)?,
            (None, None) => parse_scopes("default_scopes", DEFAULT_SCOPES)?,
        };
        let allowed_scopes = match &request.allowed_scopes {
            Some(raw) => parse_scopes("allowed_scopes", raw)?,
            None => default_scopes.clone(),
        };
        check_defaults_allowed(&allowed_scopes, &default_scopes)?;
        let allowed_cidrs = parse_cidrs("allowed_cidrs", request.allowed_cidrs.as_deref())?;
        let token_bound_cidrs =
            parse_cidrs("token_bound_cidrs", request.token_bound_cidrs.as_deref())?;
        let quota = parse_quota(request.quota)?;

        let (client_id, secret, imported) = match request.import {
            Some((client_id, secret)) => {
                let client_id = ClientId::parse(&client_id).map_err(|_| {
                    AuthorityError::invalid(
                        "client_id",
                        Rule::PrintableAscii {
                            min: 1,
                            max: ClientId::MAX_LEN,
                        },
                    )
                })?;
                if client_id.as_str() == super::ADMIN_CLIENT_ID {
                    return Err(AuthorityError::invalid("client_id", Rule::Reserved));
                }
                secrets::check_secret_shape(secret.expose_secret())?;
                (client_id, secret, true)
            }
            None => (
                secrets::generate_client_id(),
                secrets::generate_secret(),
                false,
            ),
        };
        let hash = self.hasher.hash(&secret).await?;
        let now = self.clock.now();
        let app = self
            .store
            .insert_application(&NewApplication {
                id: AppId::generate(),
                client_id,
                name: request.name,
                secret: NewSecret {
                    id: SecretId::generate(),
                    hash,
                    prefix: secrets::shown_prefix(secret.expose_secret()),
                    description: String::new(),
                    created_at: now,
                    expires_at: None,
                    max_uses: None,
                    allowed_cidrs: CidrList::default(),
                },
                allowed_scopes,
                default_scopes,
                sandbox: request.sandbox,
                allowed_cidrs,
                token_bound_cidrs,
                quota,
                created_at: now,
            })
            .await
            .map_err(|e| match AuthorityError::from(e) {
                AuthorityError::Conflict(_) => Conflict::ClientIdTaken.into(),
                other => other,
            })?;
        self.audit.record(
            AuditEvent::new(Event::AppCreated)
                .app(app.id)
                .client(app.client_id.as_str())
                .detail(Detail {
                    imported: Some(imported),
                    ..Detail::default()
                }),
        );
        Ok(CreatedApplication {
            app,
            client_secret: (!imported).then_some(secret),
        })
    }

    pub async fn list(&self) -> Result<Vec<Application>, AuthorityError> {
        Ok(self.store.list_applications().await?)
    }

    pub async fn get(&self, id: AppId) -> Result<Application, AuthorityError> {
        self.store
            .application(id)
            .await?
            .ok_or(AuthorityError::NotFound)
    }

    /// Applies `changes` to the settings as they stand when written: if another update lands
    /// between the read and the write, the changes are applied again on top of it (a few
    /// times, then a conflict), so neither undoes the other and the default scopes stay
    /// within the allowed ones.
    pub async fn update(
        &self,
        id: AppId,
        changes: UpdateApplication,
    ) -> Result<Application, AuthorityError> {
        const ATTEMPTS: usize = 3;
        if let Some(name) = &changes.name {
            check_name(name)?;
        }
        let allowed = changes
            .allowed_scopes
            .as_deref()
            .map(|raw| parse_scopes("allowed_scopes", raw))
            .transpose()?;
        let defaults = changes
            .default_scopes
            .as_deref()
            .map(|raw| parse_scopes("default_scopes", raw))
            .transpose()?;
        let allowed_cidrs = changes
            .allowed_cidrs
            .as_deref()
            .map(|raw| parse_cidrs("allowed_cidrs", Some(raw)))
            .transpose()?;
        let token_bound_cidrs = changes
            .token_bound_cidrs
            .as_deref()
            .map(|raw| parse_cidrs("token_bound_cidrs", Some(raw)))
            .transpose()?;
        let quota = changes.quota.map(parse_quota).transpose()?;
        for _ in 0..ATTEMPTS {
            let expected = self.get(id).await?.settings();
            let mut new = expected.clone();
            if let Some(name) = &changes.name {
                new.name.clone_from(name);
            }
            if let Some(allowed) = &allowed {
                new.allowed_scopes = allowed.clone();
            }
            if let Some(defaults) = &defaults {
                new.default_scopes = defaults.clone();
            }
            if let Some(sandbox) = changes.sandbox {
                new.sandbox = sandbox;
            }
            if let Some(cidrs) = &allowed_cidrs {
                new.allowed_cidrs = cidrs.clone();
            }
            if let Some(cidrs) = &token_bound_cidrs {
                new.token_bound_cidrs = cidrs.clone();
            }
            if let Some(quota) = quota {
                new.quota = quota;
            }
            check_defaults_allowed(&new.allowed_scopes, &new.default_scopes)?;
            match self
                .store
                .update_application_settings(id, &expected, &new, self.clock.now())
                .await?
            {
                Guarded::Written(app) => {
                    self.announce(&app, Event::AppUpdated).await;
                    return Ok(app);
                }
                Guarded::Stale => continue,
                Guarded::Missing => return Err(AuthorityError::NotFound),
            }
        }
        Err(Conflict::AppKeptChanging.into())
    }

    pub async fn set_disabled(
        &self,
        id: AppId,
        disabled: bool,
    ) -> Result<Application, AuthorityError> {
        let app = self
            .store
            .set_application_disabled(id, disabled, self.clock.now())
            .await?
            .ok_or(AuthorityError::NotFound)?;
        self.forget(&app).await;
        let event = if disabled {
            Event::AppDisabled
        } else {
            Event::AppEnabled
        };
        self.audit.record(
            AuditEvent::new(event)
                .app(app.id)
                .client(app.client_id.as_str()),
        );
        Ok(app)
    }

    pub async fn delete(&self, id: AppId) -> Result<(), AuthorityError> {
        let app = self.get(id).await?;
        if !self.store.delete_application(id).await? {
            return Err(AuthorityError::NotFound);
        }
        self.forget(&app).await;
        self.audit.record(
            AuditEvent::new(Event::AppDeleted)
                .app(id)
                .client(app.client_id.as_str()),
        );
        Ok(())
    }

    async fn announce(&self, app: &Application, event: Event) {
        self.forget(app).await;
        self.audit.record(
            AuditEvent::new(event)
                .app(app.id)
                .client(app.client_id.as_str()),
        );
    }
}
