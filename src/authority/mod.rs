//! The core: verify a credential, decide the scopes, mint a signed JWT.
//!
//! Nothing here knows HTTP or SQL. Each HTTP dialect translates its wire format into these
//! calls and maps [`AuthorityError`] to its own envelope.

pub mod app_secrets;
pub mod apps;
pub mod audit;
pub mod changes;
pub mod clock;
pub mod credentials;
pub mod enrollments;
mod error;
pub mod fresh;
pub mod grants;
pub mod keys;
pub mod lineage;
mod operations;
pub mod quotas;
pub mod records;
pub mod revocations;
pub mod secrets;
pub mod tokens;
pub mod usage;
pub mod verify;

use std::{net::IpAddr, time::Duration};

pub use error::{AuthorityError, Conflict, Invalid, Refusal, Rule};

use std::sync::Arc;

use serde_json::Value;

use crate::{
    domain::{
        AuthGrant, Change, CidrList, ClientId, Enrollment, EnrollmentId, GrantId, Origin, Profile,
        QuotaStatus, ScopeSet, Subject, SubjectKind,
    },
    store::{DynStore, UsageOf},
};
use app_secrets::AppSecrets;
use apps::Applications;
use audit::{AuditEvent, AuditTrail, Detail, Event};
use changes::ChangeHub;
use clock::SharedClock;
use credentials::{ClientAuthenticator, CredentialCache, VerificationLimits, VerifiedClient};
use enrollments::{CreateEnrollment, Enrollments, parse_enrollment_id, parse_owner};
use fresh::Generations;
use grants::{GrantLimits, Grants};
use keys::{KeyRing, KeyRingOptions, MasterKey};
use lineage::{Judge, Standing};
use quotas::Quotas;
use records::Records;
use revocations::RevocationList;
use secrets::SecretHasher;
use tokens::{Claims, IssuedToken, TokenMinter, TokenSpec};
use usage::UsageTracker;
use verify::TokenVerifier;

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
    pub enrollment: Duration,
    /// How long the API token of a grant that never expires lives (one of a grant that
    /// expires lives until then).
    pub grant_token_max: Duration,
}

impl Lifetimes {
    pub fn longest(&self) -> Duration {
        self.oauth
            .max(self.endorsed)
            .max(self.enrollment)
            .max(self.grant_token_max)
    }
}

/// Credentials as presented, before any judgement.
#[derive(Debug, Clone, Copy)]
pub struct ClientCredentials<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    /// A second reading of the same credentials: HTTP Basic's parts exactly as sent, when
    /// form-decoding them (RFC 6749 §2.3.1) changed them. Most clients do not encode, so an
    /// imported secret with `+` or `%` is tried both ways; generated secrets never differ.
    pub as_sent: Option<(&'a str, &'a str)>,
    pub source_ip: IpAddr,
}

impl<'a> ClientCredentials<'a> {
    /// Every reading, in order: the one given first, then the one as sent.
    fn readings(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        std::iter::once((self.client_id, self.client_secret)).chain(self.as_sent)
    }
}

/// A bearer token that verified and whose whole chain still stands.
#[derive(Debug, Clone)]
pub struct Principal {
    pub claims: Claims,
    /// The token's scope, narrowed by every link of its chain.
    pub scope: ScopeSet,
    /// Whose grants this token sees.
    pub profile: Profile,
    /// Where a grant created with this token comes from; `None` for grant-derived tokens.
    pub origin: Option<Origin>,
    enrollment: Option<Arc<Enrollment>>,
    grant: Option<Arc<AuthGrant>>,
}

impl Principal {
    fn new(claims: Claims, standing: Standing) -> Self {
        Self {
            claims,
            scope: standing.scope,
            profile: standing.profile,
            origin: standing.origin,
            enrollment: standing.enrollment,
            grant: standing.grant,
        }
    }

    /// The grant a grant-derived token acts through.
    pub fn grant(&self) -> Option<&Arc<AuthGrant>> {
        self.grant.as_ref()
    }

    /// Refuses the request unless the token's scope covers `needed`.
    pub fn require(&self, needed: &str) -> Result<(), AuthorityError> {
        let wanted = crate::domain::Scope::parse(needed).map_err(AuthorityError::internal)?;
        if self.scope.covers(&wanted) {
            Ok(())
        } else {
            Err(AuthorityError::InsufficientScope(needed.to_owned()))
        }
    }

    pub fn subject(&self) -> Subject {
        Subject {
            kind: self.claims.sub_kind,
            id: self.claims.sub.clone(),
        }
    }

    /// The enrollment an enrollment token speaks for, as judged at this use.
    pub fn enrollment(&self) -> Option<&Arc<Enrollment>> {
        self.enrollment.as_ref()
    }
}

/// How `authorize_enrollment` finds the enrollment: a bearer token wins over the body.
#[derive(Debug, Clone, Copy)]
pub struct EnrollmentQuery<'a> {
    pub bearer: Option<&'a str>,
    pub id: Option<&'a str>,
    pub owner_id: Option<&'a str>,
}

/// An enrollment with a fresh token for it.
pub struct AuthorizedEnrollment {
    pub enrollment: Arc<Enrollment>,
    pub token: IssuedToken,
}

/// A token minted on an operator's word (the admin API), for an upstream login system.
#[derive(Debug, Clone)]
pub struct MintRequest {
    pub subject: Subject,
    pub scope: ScopeSet,
    pub lifetime: Option<Duration>,
}

/// `client_id` of tokens the operator mints for owners: no OAuth client asked for them.
pub const ADMIN_CLIENT_ID: &str = "portcullis-admin";

/// Everything the core is built from. The caller reads it from wherever settings live; the
/// core reads no files and no environment.
pub struct Options {
    pub issuer: String,
    pub audience: String,
    pub lifetimes: Lifetimes,
    pub master_key: MasterKey,
    pub keys: KeyRingOptions,
    pub hasher: Arc<SecretHasher>,
    pub limits: VerificationLimits,
    /// How long a verified secret skips argon2 (zero: never).
    pub credential_cache_ttl: Duration,
    /// How long apps, enrollments and grants are remembered (zero: never).
    pub record_cache_ttl: Duration,
    pub cache_capacity: u64,
    /// While the change feed is lost, how long anything remembered is still trusted.
    pub feed_lost_cache_ttl: Duration,
    pub max_active_grants_per_profile: u32,
    /// How long audit events are kept (`None`: forever).
    pub audit_retention: Option<Duration>,
    pub audit_issued_tokens: audit::IssuedTokens,
}

/// The core's one front door: each use case is one method here, and the parts behind it
/// are its own. The server and the CLI build it the same way, with [`Authority::build`].
pub struct Authority {
    apps: Applications,
    secrets: AppSecrets,
    enrollments: Enrollments,
    grants: Grants,
    changes: Arc<ChangeHub>,
    keys: Arc<KeyRing>,
    revocations: Arc<RevocationList>,
    usage: Arc<UsageTracker>,
    audit: Arc<AuditTrail>,
    quotas: Quotas,
    clock: SharedClock,
    credentials: ClientAuthenticator,
    tokens: TokenMinter,
    verifier: TokenVerifier,
    lifetimes: Lifetimes,
    records: Arc<Records>,
    store: DynStore,
}

impl Authority {
    /// Opens the signing keys (creating them on first use), loads the revocations and wires
    /// the caches to the change hub, over an already-migrated store.
    pub async fn build(
        store: DynStore,
        clock: SharedClock,
        options: Options,
    ) -> Result<Self, AuthorityError> {
        let generations = Arc::new(Generations::new(options.feed_lost_cache_ttl, clock.clone()));
        let credential_cache = Arc::new(CredentialCache::new(
            generations.clone(),
            options.credential_cache_ttl,
            options.cache_capacity,
        ));
        let records = Arc::new(Records::new(
            store.clone(),
            generations.clone(),
            options.record_cache_ttl,
            options.cache_capacity,
        ));
        let revocations = Arc::new(RevocationList::default());
        let audit = Arc::new(AuditTrail::new(
            clock.clone(),
            options.audit_retention,
            options.audit_issued_tokens,
        ));
        let changes = Arc::new(ChangeHub::new(
            store.clone(),
            clock.clone(),
            generations,
            credential_cache.clone(),
            records.clone(),
            revocations.clone(),
        ));
        let keys = Arc::new(
            KeyRing::open(
                store.clone(),
                options.master_key,
                clock.clone(),
                options.keys,
                audit.clone(),
            )
            .await?,
        );
        changes.attach_keys(keys.clone());
        revocations.load_all(&store, clock.now()).await?;
        let usage = Arc::new(UsageTracker::default());
        let lifetimes = options.lifetimes;
        Ok(Self {
            apps: Applications::new(
                store.clone(),
                options.hasher.clone(),
                changes.clone(),
                clock.clone(),
                audit.clone(),
            ),
            secrets: AppSecrets::new(
                store.clone(),
                options.hasher.clone(),
                changes.clone(),
                clock.clone(),
                lifetimes.longest(),
                audit.clone(),
            ),
            enrollments: Enrollments::new(
                store.clone(),
                records.clone(),
                changes.clone(),
                clock.clone(),
                audit.clone(),
            ),
            grants: Grants::new(
                store.clone(),
                records.clone(),
                revocations.clone(),
                changes.clone(),
                clock.clone(),
                GrantLimits {
                    api_token_max_lifetime: lifetimes.grant_token_max,
                    exchanged_lifetime: lifetimes.oauth,
                    max_active_per_profile: options.max_active_grants_per_profile,
                },
                audit.clone(),
            ),
            credentials: ClientAuthenticator::new(
                store.clone(),
                options.hasher,
                credential_cache,
                options.limits,
                usage.clone(),
                audit.clone(),
                clock.clone(),
            ),
            tokens: TokenMinter::new(
                options.issuer.clone(),
                options.audience.clone(),
                keys.clone(),
                clock.clone(),
            ),
            verifier: TokenVerifier::new(
                options.issuer,
                options.audience,
                keys.clone(),
                clock.clone(),
            ),
            changes,
            revocations,
            usage,
            audit,
            quotas: Quotas::new(store.clone()),
            keys,
            clock,
            lifetimes,
            records,
            store,
        })
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
        let client = self.credentials.authenticate_unspent(&credentials).await?;
        let scope = match requested.filter(|s| !s.is_empty()) {
            Some(wanted) => match client.allowed_scopes.first_uncovered(&wanted) {
                Some(missing) => {
                    self.audit.record(
                        AuditEvent::new(Event::TokenRefused)
                            .app(client.app_id)
                            .secret(client.secret_id)
                            .client(client.client_id.as_str())
                            .reason("scope not granted")
                            .source(credentials.source_ip)
                            .detail(Detail {
                                scope: Some(missing.to_string()),
                                ..Detail::default()
                            }),
                    );
                    return Err(AuthorityError::ScopeNotGranted(missing.to_string()));
                }
                None => wanted,
            },
            None => client.default_scopes.clone(),
        };
        // After the request is judged, so a refused one costs no quota; then the secret's
        // use, so a refused one costs no use either (a quota token is lost if the secret
        // turns out used up: the safe way round).
        let quota = self.spend_quota(&client, credentials.source_ip).await?;
        self.credentials
            .spend_use(&client, credentials.source_ip)
            .await?;
        let lifetime = match route {
            TokenRoute::OAuth => self.lifetimes.oauth,
            TokenRoute::Endorsed => self.lifetimes.endorsed,
        };
        let subject = Subject {
            kind: SubjectKind::App,
            id: client.client_id.to_string(),
        };
        let mut token = self.tokens.mint(TokenSpec {
            subject: &subject,
            client_id: client.client_id.as_str(),
            scope: &scope,
            lifetime,
            enrollment_id: None,
            grant_id: None,
            grant_type: "client_credentials",
            parent_jti: None,
            secret_id: Some(client.secret_id.to_string()),
            cidr: client.token_bound_cidrs.clone(),
        })?;
        token.quota = quota;
        // The warm path's share: a few small copies and a push under a lock, no I/O.
        self.audit.record(
            AuditEvent::new(Event::TokenIssued)
                .app(client.app_id)
                .secret(client.secret_id)
                .client(client.client_id.as_str())
                .subject(SubjectKind::App, client.client_id.as_str())
                .jti(&token.jti)
                .source(credentials.source_ip)
                .detail(Detail {
                    grant_type: Some("client_credentials"),
                    scope: Some(token.scope.to_string()),
                    ..Detail::default()
                }),
        );
        Ok(token)
    }

    /// Counts one request made with a grant's token against its per-minute quota.
    fn spend_grant_request(
        &self,
        grant: &AuthGrant,
        claims: &Claims,
        per_minute: u32,
        source_ip: IpAddr,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), AuthorityError> {
        let exceeded = match self.quotas.spend_grant_request(grant.id, per_minute, now) {
            Ok(_) => return Ok(()),
            Err(exceeded) => exceeded,
        };
        self.audit.record(
            AuditEvent::new(Event::QuotaExceeded)
                .grant(grant.id)
                .app(grant.origin.app_id())
                .secret(grant.secret_id)
                .client(&claims.client_id)
                .subject(claims.sub_kind, &claims.sub)
                .jti(&claims.jti)
                .reason("grant request quota")
                .source(source_ip)
                .detail(Detail {
                    window: Some(exceeded.window.policy()),
                    ..Detail::default()
                }),
        );
        Err(AuthorityError::QuotaExceeded(Box::new(exceeded)))
    }

    /// Spends one token of the app's issuance quota (see [`quotas`]); `None` for an app
    /// without one. A used-up window is refused and recorded as `quota.exceeded`.
    async fn spend_quota(
        &self,
        client: &VerifiedClient,
        source_ip: IpAddr,
    ) -> Result<Option<QuotaStatus>, AuthorityError> {
        let exceeded = match self
            .quotas
            .spend(client.app_id, client.quota, self.clock.now())
            .await?
        {
            Ok(status) => return Ok(status),
            Err(exceeded) => exceeded,
        };
        self.audit.record(
            AuditEvent::new(Event::QuotaExceeded)
                .app(client.app_id)
                .secret(client.secret_id)
                .client(client.client_id.as_str())
                .reason("token quota")
                .source(source_ip)
                .detail(Detail {
                    window: Some(exceeded.window.policy()),
                    ..Detail::default()
                }),
        );
        Err(AuthorityError::QuotaExceeded(Box::new(exceeded)))
    }

    /// Verifies a bearer token used from `source_ip`, and checks that what it was issued for
    /// is still active and that the token is not bound to networks `source_ip` is outside.
    pub async fn authenticate_bearer(
        &self,
        token: &str,
        source_ip: IpAddr,
    ) -> Result<Principal, AuthorityError> {
        self.bearer(token, Some(source_ip)).await
    }

    /// `used_from`: the address the token is used from, judged against its binding; `None`
    /// when the caller is not the token's user (introspection by a resource server).
    async fn bearer(
        &self,
        token: &str,
        used_from: Option<IpAddr>,
    ) -> Result<Principal, AuthorityError> {
        let principal = self.judge_bearer(token, used_from).await;
        if let Err(AuthorityError::InvalidToken) = principal {
            crate::telemetry::metrics::auth_failed("bearer");
        }
        principal
    }

    async fn judge_bearer(
        &self,
        token: &str,
        used_from: Option<IpAddr>,
    ) -> Result<Principal, AuthorityError> {
        let claims = self.verifier.verify(token)?;
        if self.revocations.revokes(&claims) {
            return Err(AuthorityError::InvalidToken);
        }
        if let Some(source_ip) = used_from {
            check_binding(&self.audit, &claims, source_ip)?;
        }
        let now = self.clock.now();
        let judge = Judge {
            records: &self.records,
            revocations: &self.revocations,
            now,
        };
        let standing = judge
            .token(&claims)
            .await?
            .ok_or(AuthorityError::InvalidToken)?;
        if let Some(grant) = &standing.grant {
            // Only when the token's user makes the request: introspection by a resource
            // server is not a use of the grant's allowance.
            if let (Some(per_minute), Some(source_ip)) = (grant.requests_per_minute, used_from) {
                self.spend_grant_request(grant, &claims, per_minute, source_ip, now)?;
            }
            self.usage.record(UsageOf::Grant(grant.id), now);
        }
        if let Some(enrollment) = &standing.enrollment {
            self.usage.record(UsageOf::Enrollment(enrollment.id), now);
        }
        Ok(Principal::new(claims, standing))
    }

    /// RFC 8693 token exchange of an auth grant's token. Rate limits apply as on every
    /// token route: the source first, then the grant whose token it is (never the app
    /// it descends from: see [`credentials::Payer`]).
    pub async fn exchange(
        &self,
        subject_token: &str,
        requested: Option<ScopeSet>,
        source_ip: IpAddr,
    ) -> Result<IssuedToken, AuthorityError> {
        self.credentials.check_source(source_ip)?;
        let subject = self.authenticate_bearer(subject_token, source_ip).await?;
        // Only a grant's own API token is exchanged, never one exchanged from it (whose
        // holder could otherwise replay it to spend the grant's allowance); anything else is
        // refused before it costs anyone's allowance but its source's.
        let Some(grant) = subject
            .claims
            .grant_id
            .as_ref()
            .filter(|_| subject.claims.parent_jti.is_none())
        else {
            return Err(AuthorityError::InvalidToken);
        };
        self.credentials
            .check_payer(&credentials::Payer::Grant(grant.clone()))?;
        self.grants.exchange(&subject, requested, &self.tokens)
    }

    /// RFC 7662: the claims of a token that is active right now, or `None` for anything
    /// else (garbage, foreign, expired, revoked, or whose grant/enrollment/app is gone).
    pub async fn introspect(
        &self,
        caller: ClientCredentials<'_>,
        token: &str,
    ) -> Result<Option<Claims>, AuthorityError> {
        self.credentials.authenticate(&caller).await?;
        // The caller is the resource server, not the token's user: its own address says
        // nothing about where the token is used. The binding is reported (`cidr`) for the
        // resource server to judge against the address of the request it serves.
        match self.bearer(token, None).await {
            // What the token may do now, which its chain may have narrowed since it was minted.
            Ok(principal) => Ok(Some(Claims {
                scope: principal.scope.to_string(),
                ..principal.claims
            })),
            Err(AuthorityError::InvalidToken) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// RFC 7009: revokes `token` if it was issued to the calling app. Unknown, invalid,
    /// expired or another app's tokens are left alone, and the answer is the same.
    pub async fn revoke(
        &self,
        caller: ClientCredentials<'_>,
        token: &str,
    ) -> Result<(), AuthorityError> {
        let client = self.credentials.authenticate(&caller).await?;
        let Ok(claims) = self.verifier.verify(token) else {
            return Ok(());
        };
        if claims.client_id != client.client_id.as_str() {
            self.audit.record(
                AuditEvent::new(Event::TokenRevokeRefused)
                    .app(client.app_id)
                    .client(client.client_id.as_str())
                    .jti(&claims.jti)
                    .source(caller.source_ip),
            );
            return Ok(());
        }
        let expires_at = chrono::DateTime::from_timestamp(claims.exp, 0)
            .ok_or_else(|| AuthorityError::internal("exp out of range"))?;
        self.store
            .revoke_token(&claims.jti, expires_at, self.clock.now())
            .await?;
        self.changes
            .announce(Change::Revoked {
                jti: claims.jti.clone(),
                exp: claims.exp,
            })
            .await;
        self.audit.record(
            AuditEvent::new(Event::TokenRevoked)
                .app(client.app_id)
                .client(client.client_id.as_str())
                .jti(&claims.jti)
                .subject(claims.sub_kind, &claims.sub)
                .grant(
                    claims
                        .grant_id
                        .as_deref()
                        .and_then(|id| GrantId::parse(id).ok()),
                )
                .source(caller.source_ip),
        );
        Ok(())
    }

    /// The Access dialect's authorize: the app proves itself, then names the enrollment by
    /// bearer token (renewal, or an owner's token), by id, or by owner.
    pub async fn authorize_enrollment(
        &self,
        credentials: ClientCredentials<'_>,
        query: EnrollmentQuery<'_>,
    ) -> Result<AuthorizedEnrollment, AuthorityError> {
        let client = self.credentials.authenticate_unspent(&credentials).await?;
        let wanted_id = query.id.map(parse_enrollment_id).transpose()?;
        let wanted_owner = query.owner_id.map(parse_owner).transpose()?;

        let enrollment = match query.bearer {
            Some(token) => {
                let claims = self.verifier.verify(token)?;
                if self.revocations.revokes(&claims) {
                    return Err(AuthorityError::InvalidToken);
                }
                check_binding(&self.audit, &claims, credentials.source_ip)?;
                let found = self.enrollment_named_by_token(&client, &claims).await?;
                let mismatch = wanted_id.is_some_and(|id| id != found.id)
                    || wanted_owner.as_ref().is_some_and(|o| *o != found.owner_id);
                if mismatch {
                    return Err(Refusal::NotTheTokensEnrollment.into());
                }
                found
            }
            None => match (wanted_id, &wanted_owner) {
                (Some(id), owner) => {
                    let found = self.enrollments.get_for_app(client.app_id, id).await?;
                    if owner.as_ref().is_some_and(|o| *o != found.owner_id) {
                        return Err(Refusal::NotTheEnrollmentsOwner.into());
                    }
                    found
                }
                (None, Some(owner)) => self.enrollments.get_for_owner(client.app_id, owner).await?,
                (None, None) => {
                    return Err(AuthorityError::invalid("id", Rule::NoEnrollmentNamed));
                }
            },
        };
        if enrollment.disabled {
            self.audit.record(
                AuditEvent::new(Event::TokenRefused)
                    .app(client.app_id)
                    .secret(client.secret_id)
                    .client(client.client_id.as_str())
                    .enrollment(enrollment.id)
                    .reason("enrollment disabled")
                    .source(credentials.source_ip),
            );
            return Err(Refusal::EnrollmentDisabled.into());
        }
        // As for client credentials: a refused request spends no quota and no use.
        let quota = self.spend_quota(&client, credentials.source_ip).await?;
        self.credentials
            .spend_use(&client, credentials.source_ip)
            .await?;
        let mut token = self.mint_enrollment_token(&client, &enrollment)?;
        token.quota = quota;
        self.usage
            .record(UsageOf::Enrollment(enrollment.id), self.clock.now());
        self.audit.record(
            AuditEvent::new(Event::EnrollmentAuthorized)
                .enrollment(enrollment.id)
                .app(client.app_id)
                .secret(client.secret_id)
                .client(client.client_id.as_str())
                .subject(SubjectKind::Owner, enrollment.owner_id.as_str())
                .jti(&token.jti)
                .source(credentials.source_ip),
        );
        Ok(AuthorizedEnrollment { enrollment, token })
    }

    /// The enrollment a bearer token speaks for, as seen by `client`: its own enrollment
    /// token (renewal), or an owner token from the operator naming the owner. A renewal
    /// token must name the very enrollment it was minted for (same owner, minted after the
    /// enrollment was created); its standing otherwise is judged below, like any
    /// authorize, so a disabled enrollment is refused as such.
    async fn enrollment_named_by_token(
        &self,
        client: &VerifiedClient,
        claims: &Claims,
    ) -> Result<Arc<Enrollment>, AuthorityError> {
        if claims.sub_kind != SubjectKind::Owner || claims.grant_id.is_some() {
            return Err(AuthorityError::InvalidToken);
        }
        match &claims.enrollment_id {
            Some(id) => {
                let id = EnrollmentId::parse(id).map_err(|_| AuthorityError::InvalidToken)?;
                let found = self.enrollments.get_for_app(client.app_id, id).await?;
                let names_it = claims.client_id == client.client_id.as_str()
                    && claims.sub == found.owner_id.as_str()
                    && !lineage::issued_before(claims, found.created_at);
                if !names_it {
                    return Err(AuthorityError::InvalidToken);
                }
                Ok(found)
            }
            None if claims.client_id == ADMIN_CLIENT_ID => {
                let owner = parse_owner(&claims.sub).map_err(|_| AuthorityError::InvalidToken)?;
                self.enrollments.get_for_owner(client.app_id, &owner).await
            }
            None => Err(AuthorityError::InvalidToken),
        }
    }

    fn mint_enrollment_token(
        &self,
        client: &VerifiedClient,
        enrollment: &Enrollment,
    ) -> Result<IssuedToken, AuthorityError> {
        // An app whose allowed scopes were narrowed since enrolling gets only what it may
        // still have.
        let scope = enrollment.scopes.intersect(&client.allowed_scopes);
        self.tokens.mint(TokenSpec {
            subject: &Subject {
                kind: SubjectKind::Owner,
                id: enrollment.owner_id.to_string(),
            },
            client_id: client.client_id.as_str(),
            scope: &scope,
            lifetime: self.lifetimes.enrollment,
            enrollment_id: Some(enrollment.id.to_string()),
            grant_id: None,
            grant_type: "enrollment",
            parent_jti: None,
            secret_id: Some(client.secret_id.to_string()),
            cidr: client.token_bound_cidrs.clone(),
        })
    }

    /// The enrollment behind an enrollment token, as judged when the token was presented.
    pub fn enrollment_of(&self, principal: &Principal) -> Result<Enrollment, AuthorityError> {
        principal
            .enrollment()
            .map(|e| Enrollment::clone(e))
            .ok_or(AuthorityError::InvalidToken)
    }

    pub async fn update_enrollment_data(
        &self,
        principal: &Principal,
        data: Value,
    ) -> Result<Enrollment, AuthorityError> {
        let enrollment = principal.enrollment().ok_or(AuthorityError::InvalidToken)?;
        self.enrollments.update_data(enrollment, data).await
    }

    /// Creates an enrollment for the owner that `owner_token` speaks for, with the app
    /// that `credentials` prove. Repeating the same request returns the same enrollment.
    pub async fn enroll(
        &self,
        credentials: ClientCredentials<'_>,
        owner_token: &str,
        id: &str,
        owner_id: &str,
        data: Option<Value>,
    ) -> Result<Enrollment, AuthorityError> {
        let client = self.credentials.authenticate(&credentials).await?;
        let owner = self
            .authenticate_bearer(owner_token, credentials.source_ip)
            .await?;
        // Only the operator vouches for owners; an enrollment's or grant's token does not.
        if owner.origin != Some(Origin::Operator) {
            return Err(AuthorityError::InvalidToken);
        }
        if owner.claims.sub != owner_id {
            return Err(Refusal::NotTheTokensOwner.into());
        }
        let created = self
            .enrollments
            .create(CreateEnrollment {
                app_id: Some(client.app_id),
                owner_id: owner_id.to_owned(),
                id: Some(id.to_owned()),
                data,
                scopes: None,
            })
            .await?;
        Ok(created.into_inner())
    }

    /// Mints a token on the operator's word (admin API).
    pub async fn mint(&self, request: MintRequest) -> Result<IssuedToken, AuthorityError> {
        let longest = self.lifetimes.longest();
        let lifetime = request.lifetime.unwrap_or(self.lifetimes.oauth);
        if lifetime.is_zero() || lifetime > longest {
            return Err(AuthorityError::invalid(
                "expires_in",
                Rule::Range {
                    min: 1,
                    max: longest.as_secs(),
                    unit: " seconds",
                },
            ));
        }
        let mut app_id = None;
        // A token minted for an app is bound as the app's own tokens are.
        let (client_id, cidr) = match request.subject.kind {
            SubjectKind::Owner => {
                parse_owner(&request.subject.id).map_err(|_| {
                    AuthorityError::invalid(
                        "sub",
                        Rule::PrintableAscii {
                            min: 1,
                            max: crate::domain::OwnerId::MAX_LEN,
                        },
                    )
                })?;
                (ADMIN_CLIENT_ID.to_owned(), CidrList::default())
            }
            SubjectKind::App => {
                let client_id = ClientId::parse(&request.subject.id)
                    .map_err(|_| AuthorityError::invalid("sub", Rule::NotAClientId))?;
                let app = self
                    .store
                    .application_by_client_id(&client_id)
                    .await?
                    .filter(|app| !app.disabled)
                    .ok_or_else(|| AuthorityError::invalid("sub", Rule::NoSuchEnabledApp))?;
                if let Some(scope) = app.allowed_scopes.first_uncovered(&request.scope) {
                    return Err(AuthorityError::ScopeNotGranted(scope.to_string()));
                }
                app_id = Some(app.id);
                (client_id.to_string(), app.token_bound_cidrs)
            }
        };
        let token = self.tokens.mint(TokenSpec {
            subject: &request.subject,
            client_id: &client_id,
            scope: &request.scope,
            lifetime,
            enrollment_id: None,
            grant_id: None,
            grant_type: "admin_mint",
            parent_jti: None,
            secret_id: None,
            cidr,
        })?;
        self.audit.record(
            AuditEvent::new(Event::TokenMinted)
                .subject(request.subject.kind, &request.subject.id)
                .app(app_id)
                .jti(&token.jti),
        );
        Ok(token)
    }
}

/// A bound token used from outside its networks is as invalid as any other invalid token;
/// the refusal is logged on its own so operators can tell it apart.
fn check_binding(
    audit: &AuditTrail,
    claims: &Claims,
    source_ip: IpAddr,
) -> Result<(), AuthorityError> {
    if claims.cidr.admits(source_ip) {
        return Ok(());
    }
    audit.record(
        AuditEvent::new(Event::AuthRefused)
            .reason("network")
            .client(&claims.client_id)
            .jti(&claims.jti)
            .subject(claims.sub_kind, &claims.sub)
            .grant(
                claims
                    .grant_id
                    .as_deref()
                    .and_then(|id| GrantId::parse(id).ok()),
            )
            .source(source_ip),
    );
    Err(AuthorityError::InvalidToken)
}
