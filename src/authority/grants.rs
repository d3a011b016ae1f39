//! Auth grants: scoped, expiring, revocable credentials that a profile (the subject of a
//! bearer token) creates for itself, turns into API tokens, and exchanges for short-lived
//! access tokens.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};

use super::audit::{AuditEvent, AuditTrail, Detail, Event};
use super::{
    AuthorityError, Principal, Refusal, Rule,
    changes::ChangeHub,
    clock::SharedClock,
    lineage::Judge,
    records::Records,
    revocations::RevocationList,
    tokens::{IssuedToken, TokenMinter, TokenSpec},
};
use crate::{
    domain::{AuthGrant, Change, GrantId, GrantStatus, ScopeSet, SecretId, parse_utc_timestamp},
    store::{DynStore, GrantFilter, Match},
};

pub const READ: &str = "authGrants:read";
pub const WRITE: &str = "authGrants:write";
pub const DELETE: &str = "authGrants:delete";

pub const DEFAULT_SCOPE: &str = "*:read";
pub const LIST_DEFAULT_LIMIT: u32 = 100;
pub const LIST_MAX_LIMIT: u32 = 100;

#[derive(Debug, Default)]
pub struct CreateGrant {
    pub name: Option<String>,
    pub description: Option<String>,
    pub scope: Option<String>,
    /// `None` or `Some(None)`: never expires.
    pub expires_at: Option<Option<String>>,
    /// Requests per minute with the grant's tokens on the bearer routes; `None`: no limit.
    pub requests_per_minute: Option<u64>,
}

/// The most requests per minute a grant's quota may allow.
pub const REQUESTS_PER_MINUTE_MAX: u32 = 1_000_000;

#[derive(Debug, Default)]
pub struct ListGrants {
    pub limit: Option<u32>,
    /// The `createdAt` of the last grant of the previous page.
    pub cursor: Option<String>,
    pub filter: GrantFilter,
}

/// How long grant-derived tokens live, and how many grants a profile may hold.
#[derive(Debug, Clone, Copy)]
pub struct GrantLimits {
    pub api_token_max_lifetime: Duration,
    pub exchanged_lifetime: Duration,
    pub max_active_per_profile: u32,
}

pub struct Grants {
    store: DynStore,
    audit: Arc<AuditTrail>,
    records: Arc<Records>,
    revocations: Arc<RevocationList>,
    changes: Arc<ChangeHub>,
    clock: SharedClock,
    api_token_max_lifetime: Duration,
    exchanged_lifetime: Duration,
    max_active_per_profile: u32,
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), AuthorityError> {
    if value.chars().count() > max {
        return Err(AuthorityError::invalid(field, Rule::MaxChars { max }));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(AuthorityError::invalid(field, Rule::ControlCharacters));
    }
    Ok(())
}

pub fn parse_grant_id(raw: &str) -> Result<GrantId, AuthorityError> {
    // An id that cannot exist is simply not found, like another profile's grant.
    GrantId::parse(raw).map_err(|_| AuthorityError::NotFound)
}

impl Grants {
    pub fn new(
        store: DynStore,
        records: Arc<Records>,
        revocations: Arc<RevocationList>,
        changes: Arc<ChangeHub>,
        clock: SharedClock,
        limits: GrantLimits,
        audit: Arc<AuditTrail>,
    ) -> Self {
        Self {
            store,
            audit,
            records,
            revocations,
            changes,
            clock,
            api_token_max_lifetime: limits.api_token_max_lifetime,
            exchanged_lifetime: limits.exchanged_lifetime,
            max_active_per_profile: limits.max_active_per_profile,
        }
    }

    pub async fn create(
        &self,
        principal: &Principal,
        request: CreateGrant,
    ) -> Result<GrantId, AuthorityError> {
        principal.require(WRITE)?;
        let origin = principal.origin.ok_or(Refusal::GrantFromGrant)?;
        let name = request.name.unwrap_or_default();
        let description = request.description.unwrap_or_default();
        check_text("name", &name, AuthGrant::NAME_MAX_LEN)?;
        check_text("description", &description, AuthGrant::DESCRIPTION_MAX_LEN)?;
        let scope = ScopeSet::parse(request.scope.as_deref().unwrap_or(DEFAULT_SCOPE))
            .map_err(|e| AuthorityError::invalid("scope", Rule::Scope(e)))?;
        if scope.is_empty() {
            return Err(AuthorityError::invalid("scope", Rule::Empty));
        }
        // A grant can never carry more than the token that creates it.
        if let Some(missing) = principal.scope.first_uncovered(&scope) {
            return Err(AuthorityError::ScopeNotGranted(missing.to_string()));
        }
        let now = self.clock.now();
        let expires_at = match request.expires_at.flatten() {
            None => None,
            Some(raw) => {
                let at = parse_utc_timestamp(&raw)
                    .ok_or_else(|| AuthorityError::invalid("expiresAt", Rule::NotUtcTimestamp))?;
                if at <= now {
                    return Err(AuthorityError::invalid("expiresAt", Rule::NotInTheFuture));
                }
                Some(at)
            }
        };
        let requests_per_minute = match request.requests_per_minute {
            None => None,
            Some(n) => Some(
                u32::try_from(n)
                    .ok()
                    .filter(|n| (1..=REQUESTS_PER_MINUTE_MAX).contains(n))
                    .ok_or_else(|| {
                        AuthorityError::invalid(
                            "requestsPerMinute",
                            Rule::Range {
                                min: 1,
                                max: u64::from(REQUESTS_PER_MINUTE_MAX),
                                unit: "",
                            },
                        )
                    })?,
            ),
        };
        let id = GrantId::generate();
        let grant = AuthGrant {
            id,
            profile: principal.subject(),
            origin,
            secret_id: principal
                .claims
                .secret_id
                .as_deref()
                .and_then(|raw| SecretId::parse(raw).ok()),
            client_id: principal.claims.client_id.clone(),
            token_bound_cidrs: principal.claims.cidr.clone(),
            requests_per_minute,
            name,
            description,
            challenge: format!("auth-grant:{}", uuid::Uuid::new_v4()),
            status: GrantStatus::Active,
            scope,
            created_at: now,
            expires_at,
            last_used_at: None,
        };
        if !self
            .store
            .insert_grant(&grant, self.max_active_per_profile)
            .await?
        {
            return Err(Refusal::GrantCapReached.into());
        }
        self.audit.record(
            AuditEvent::new(Event::GrantCreated)
                .grant(id)
                .subject(grant.profile.kind, &grant.profile.id)
                .app(origin.app_id())
                .enrollment(origin.enrollment_id())
                .secret(grant.secret_id)
                .detail(Detail {
                    scope: Some(grant.scope.to_string()),
                    ..Detail::default()
                }),
        );
        Ok(id)
    }

    /// The grant `raw` names, if the caller may reach it: any grant of its profile, or for a
    /// token derived from a grant, that grant alone (a grant's token must not reach, mint
    /// for or revoke its siblings). Anything else is `NotFound`.
    fn reachable(principal: &Principal, raw: &str) -> Result<GrantId, AuthorityError> {
        let id = parse_grant_id(raw)?;
        match principal.grant() {
            Some(own) if own.id != id => Err(AuthorityError::NotFound),
            _ => Ok(id),
        }
    }

    /// The grant if it belongs to the caller's profile; anything else is `NotFound`.
    async fn owned(
        &self,
        principal: &Principal,
        id: GrantId,
    ) -> Result<Arc<AuthGrant>, AuthorityError> {
        match self.records.grant(id).await? {
            Some(grant) if grant.owner() == principal.profile => Ok(grant),
            _ => Err(AuthorityError::NotFound),
        }
    }

    pub async fn get(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<Arc<AuthGrant>, AuthorityError> {
        principal.require(READ)?;
        self.owned(principal, Self::reachable(principal, id)?).await
    }

    pub async fn list(
        &self,
        principal: &Principal,
        request: ListGrants,
    ) -> Result<Vec<AuthGrant>, AuthorityError> {
        principal.require(READ)?;
        let limit = request.limit.unwrap_or(LIST_DEFAULT_LIMIT);
        if !(1..=LIST_MAX_LIMIT).contains(&limit) {
            return Err(AuthorityError::invalid(
                "limit",
                Rule::Range {
                    min: 1,
                    max: u64::from(LIST_MAX_LIMIT),
                    unit: "",
                },
            ));
        }
        let before = request
            .cursor
            .as_deref()
            .map(|raw| {
                DateTime::parse_from_rfc3339(raw)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| AuthorityError::invalid("cursor", Rule::NotACursor))
            })
            .transpose()?;
        let mut filter = request.filter;
        if let Some(own) = principal.grant() {
            let asked_for_it = match &filter.id {
                None => true,
                Some(Match::Exact(id)) => *id == own.id,
                Some(Match::AnyOf(ids)) => ids.contains(&own.id),
            };
            if !asked_for_it {
                return Ok(Vec::new());
            }
            filter.id = Some(Match::Exact(own.id));
        }
        Ok(self
            .store
            .list_grants(&principal.profile, &filter, before, limit)
            .await?)
    }

    /// True if a name or description was set; false when nothing updatable was sent.
    pub async fn update(
        &self,
        principal: &Principal,
        id: &str,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<bool, AuthorityError> {
        principal.require(WRITE)?;
        let id = Self::reachable(principal, id)?;
        self.owned(principal, id).await?;
        if name.is_none() && description.is_none() {
            return Ok(false);
        }
        if let Some(name) = &name {
            check_text("name", name, AuthGrant::NAME_MAX_LEN)?;
        }
        if let Some(description) = &description {
            check_text("description", description, AuthGrant::DESCRIPTION_MAX_LEN)?;
        }
        let updated = self
            .store
            .update_grant_text(
                id,
                &principal.profile,
                name.as_deref(),
                description.as_deref(),
            )
            .await?;
        if !updated {
            return Err(AuthorityError::NotFound);
        }
        self.changes.announce(Change::Grant { id: id.0 }).await;
        Ok(true)
    }

    /// Idempotent: revoking a revoked grant is still `true`.
    pub async fn revoke(&self, principal: &Principal, id: &str) -> Result<(), AuthorityError> {
        principal.require(WRITE)?;
        let id = Self::reachable(principal, id)?;
        if !self.store.revoke_grant(id, &principal.profile).await? {
            return Err(AuthorityError::NotFound);
        }
        self.changes.announce(Change::Grant { id: id.0 }).await;
        self.audit
            .record(AuditEvent::new(Event::GrantRevoked).grant(id).subject(
                principal.profile.subject.kind,
                &principal.profile.subject.id,
            ));
        Ok(())
    }

    /// Only a revoked grant can be deleted.
    pub async fn delete(&self, principal: &Principal, id: &str) -> Result<(), AuthorityError> {
        principal.require(DELETE)?;
        let id = Self::reachable(principal, id)?;
        if self
            .store
            .delete_revoked_grant(id, &principal.profile)
            .await?
        {
            self.changes.announce(Change::Grant { id: id.0 }).await;
            self.audit
                .record(AuditEvent::new(Event::GrantDeleted).grant(id).subject(
                    principal.profile.subject.kind,
                    &principal.profile.subject.id,
                ));
            return Ok(());
        }
        self.owned(principal, id).await?;
        Err(AuthorityError::GrantActive)
    }

    /// An API token acting for the grant's profile with the grant's scope (as far as the
    /// grant's origin still allows it), valid until the grant expires; for a grant that
    /// never expires, for the configured maximum.
    pub async fn api_token(
        &self,
        principal: &Principal,
        id: &str,
        minter: &TokenMinter,
    ) -> Result<IssuedToken, AuthorityError> {
        principal.require(READ)?;
        let grant = self
            .owned(principal, Self::reachable(principal, id)?)
            .await?;
        let now = self.clock.now();
        let judge = Judge {
            records: &self.records,
            revocations: &self.revocations,
            now,
        };
        let scope = judge
            .grant(&grant)
            .await?
            .ok_or(AuthorityError::GrantInactive)?;
        // Reading a grant is not holding it: a narrower token may not mint a wider one.
        if let Some(missing) = principal.scope.first_uncovered(&scope) {
            return Err(AuthorityError::ScopeNotGranted(missing.to_string()));
        }
        // The token lives exactly as long as its grant (the judge found it unexpired), never
        // longer; the configured maximum bounds only tokens of grants that never expire.
        let lifetime = match grant.expires_at {
            Some(expires_at) => (expires_at - now).to_std().unwrap_or_default(),
            None => self.api_token_max_lifetime,
        };
        let token = minter
            .mint_lasting(
                TokenSpec {
                    subject: &grant.profile,
                    client_id: &grant.client_id,
                    scope: &scope,
                    lifetime,
                    enrollment_id: None,
                    grant_id: Some(grant.id.to_string()),
                    grant_type: "auth_grant",
                    parent_jti: None,
                    secret_id: None,
                    cidr: grant.token_bound_cidrs.clone(),
                },
                now,
            )
            .await?;
        self.audit.record(
            AuditEvent::new(Event::GrantApiToken)
                .grant(grant.id)
                .subject(grant.profile.kind, &grant.profile.id)
                .jti(&token.jti),
        );
        Ok(token)
    }

    /// RFC 8693: trades a grant's token for a short-lived access token, optionally narrower.
    /// `subject` comes from `Authority::authenticate_bearer`, which judged the token's whole
    /// chain and narrowed its scope to what the chain still allows.
    pub fn exchange(
        &self,
        subject: &Principal,
        requested: Option<ScopeSet>,
        minter: &TokenMinter,
    ) -> Result<IssuedToken, AuthorityError> {
        let grant = subject.grant().ok_or(AuthorityError::InvalidToken)?;
        // Only a grant's API token is exchanged: a token exchanged from another could be
        // traced to its parent but not to every ancestor.
        if subject.claims.parent_jti.is_some() {
            return Err(AuthorityError::InvalidToken);
        }
        let scope = match requested.filter(|s| !s.is_empty()) {
            Some(wanted) => {
                if let Some(missing) = subject.scope.first_uncovered(&wanted) {
                    return Err(AuthorityError::ScopeNotGranted(missing.to_string()));
                }
                wanted
            }
            None => subject.scope.clone(),
        };
        // Nor may it outlive the token it came from, whose revocation it must follow.
        let left = u64::try_from(subject.claims.exp - self.clock.now().timestamp())
            .map_or(Duration::from_secs(1), |s| Duration::from_secs(s.max(1)));
        let token = minter.mint(TokenSpec {
            subject: &grant.profile,
            client_id: &grant.client_id,
            scope: &scope,
            lifetime: self.lifetime_within(grant, self.exchanged_lifetime.min(left)),
            enrollment_id: None,
            grant_id: Some(grant.id.to_string()),
            grant_type: "token_exchange",
            parent_jti: Some(subject.claims.jti.clone()),
            secret_id: None,
            cidr: subject.claims.cidr.clone(),
        })?;
        self.audit.record(
            AuditEvent::new(Event::GrantExchanged)
                .grant(grant.id)
                .subject(grant.profile.kind, &grant.profile.id)
                .jti(&token.jti),
        );
        Ok(token)
    }

    /// `wanted`, cut short so no token outlives its grant.
    fn lifetime_within(&self, grant: &AuthGrant, wanted: Duration) -> Duration {
        let Some(expires_at) = grant.expires_at else {
            return wanted;
        };
        let left = (expires_at - self.clock.now())
            .max(TimeDelta::seconds(1))
            .to_std()
            .unwrap_or(Duration::from_secs(1));
        wanted.min(Duration::from_secs(left.as_secs().max(1)))
    }
}
