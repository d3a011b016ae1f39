//! Client authentication: the one place a `client_id` + secret pair is judged.
//!
//! Warm path: an in-memory map keyed by an HMAC of (client_id, secret) for pairs that
//! passed argon2 recently; a hit costs one HMAC and a hash lookup. The key is a MAC, so
//! matching it is as good as a constant-time comparison of the secret. Cold path: rate
//! limits first (per client and per source IP), then a store lookup and argon2, which runs
//! against a dummy hash for unknown clients so every failure looks and times the same.
//!
//! An app may hold several live secrets; they share a salt, so one argon2 run checks them
//! all. A verified pair remembers which secret matched and when it expires, so an expired
//! secret is refused at its expiry on every replica whatever is cached. A secret with
//! `max_uses` has each use counted by one atomic statement in the store, warm hits
//! included, so replicas share its count exactly; secrets without it never pay that.
//!
//! Network binding is judged per request, cached or not: a verified pair carries the app's
//! and the secret's allowlists, so checking them costs no store read. A credential presented
//! from outside them is refused as a wrong secret is, at the same cost (one rate-limit charge
//! and one argon2 run, paid against a dummy hash when the pair was already verified), so the
//! answer does not tell a stolen secret from a wrong one.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aws_lc_rs::{
    hmac,
    rand::{SecureRandom, SystemRandom},
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};
use moka::future::Cache;

use chrono::{DateTime, Utc};

use super::audit::{AuditEvent, AuditTrail, Event};
use super::{
    AuthorityError, ClientCredentials,
    clock::SharedClock,
    fresh::{Generations, Stamp, Stamped, Subject},
    secrets::SecretHasher,
    usage::UsageTracker,
};
use crate::{
    domain::{
        AppId, AppSecret, Application, CidrList, ClientId, ScopeSet, SecretId, SecretState,
        TokenQuota,
    },
    store::{DynStore, UsageOf},
};

/// What the core needs to know about a client once its secret checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClient {
    pub app_id: AppId,
    pub client_id: ClientId,
    pub allowed_scopes: ScopeSet,
    pub default_scopes: ScopeSet,
    pub sandbox: bool,
    /// The secret that matched; tokens it mints name it.
    pub secret_id: SecretId,
    /// The secret has `max_uses`: every use is counted in the store.
    pub counted: bool,
    /// The matched secret's expiry (a rotated-out secret's is the end of its grace).
    pub valid_until: Option<DateTime<Utc>>,
    /// Where the app's credentials may be presented from.
    pub allowed_cidrs: CidrList,
    /// Where the matched secret may be presented from.
    pub secret_cidrs: CidrList,
    /// Where the tokens minted for the app may be used from; they carry it as a claim.
    pub token_bound_cidrs: CidrList,
    /// How many tokens the app may be issued per window.
    pub quota: TokenQuota,
}

impl VerifiedClient {
    fn new(app: &Application, secret: &AppSecret) -> Self {
        Self {
            app_id: app.id,
            client_id: app.client_id.clone(),
            allowed_scopes: app.allowed_scopes.clone(),
            default_scopes: app.default_scopes.clone(),
            sandbox: app.sandbox,
            secret_id: secret.id,
            counted: secret.max_uses.is_some(),
            valid_until: secret.expires_at,
            allowed_cidrs: app.allowed_cidrs.clone(),
            secret_cidrs: secret.allowed_cidrs.clone(),
            token_bound_cidrs: app.token_bound_cidrs.clone(),
            quota: app.quota,
        }
    }

    /// Whether the credential may be presented from `ip`: both the app's list and the
    /// secret's admit it.
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.allowed_cidrs.admits(ip) && self.secret_cidrs.admits(ip)
    }
}

/// Names one (client_id, secret) pair without holding the secret: an HMAC under a
/// per-process random key, so a memory dump yields nothing usable elsewhere.
type PairKey = [u8; 32];

/// Remembers which (client_id, secret) pairs passed argon2 recently, each stamped with the
/// generation of its client when the store was read (see [`super::fresh`]): a disable,
/// delete, rotation or scope change seen here is never undone by a verification that was
/// already in flight.
pub struct CredentialCache {
    entries: Option<Cache<PairKey, Stamped<VerifiedClient>>>,
    key: hmac::Key,
    generations: Arc<Generations>,
}

impl CredentialCache {
    /// `ttl` of zero disables caching: every request pays argon2.
    pub fn new(generations: Arc<Generations>, ttl: Duration, capacity: u64) -> Self {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .expect("the system CSPRNG is available");
        let entries = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        Self {
            entries,
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            generations,
        }
    }

    /// One key for everything presented (every reading): a client sends its credentials
    /// the same way each time, so it hits the same entry.
    fn pair_key(&self, presented: &ClientCredentials<'_>) -> PairKey {
        // Length-prefixing each part keeps ("ab", "c") and ("a", "bc") apart.
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in presented.readings().flat_map(|(id, secret)| [id, secret]) {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Frees the memory of every pair; stamps alone already keep stale pairs from use.
    pub fn invalidate_all(&self) {
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct VerificationLimits {
    pub per_client_per_minute: u32,
    pub per_ip_per_minute: u32,
    /// Every authenticated request, cache hits included; 0 = unlimited.
    pub requests_per_client_per_second: u32,
    pub requests_per_ip_per_second: u32,
}

/// Caps argon2 work per client and per source address. Only cache misses are counted,
/// and a good secret is cached after its first success, so in practice this counts
/// failed attempts.
struct Limiters {
    per_client: DefaultKeyedRateLimiter<(String, IpAddr)>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    /// Request rates, separate from the argon2 budget above; `None` when unlimited.
    requests_per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Keyed by who pays: an app for what it does with its own secret, a grant for the
    /// exchanges of its tokens.
    requests_per_client: Option<DefaultKeyedRateLimiter<Payer>>,
    clock: DefaultClock,
}

/// Whose request allowance a request spends. A grant's token is exchanged by whoever holds
/// it, not by the app it descends from, so exchanges never spend the app's own allowance
/// (a read-only grant token could otherwise starve the app's token, authorize, introspect
/// and revoke calls), and grants minted under the operator's tokens, which all name the
/// admin client, do not share one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Payer {
    /// By id, not client_id: a key that costs no allocation on the warm path.
    App(AppId),
    Grant(String),
}

/// The network a caller controls: one IPv4 address, or an IPv6 /64 (a single host is
/// usually handed a whole /64, so counting addresses inside it would count nothing). An
/// IPv4-mapped address is its IPv4 self, never a /64 shared by all of IPv4.
fn source_network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        ip @ IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(octets.into())
        }
    }
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

fn per_second<K: std::hash::Hash + Eq + Clone>(n: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(n).map(|n| RateLimiter::keyed(Quota::per_second(n)))
}

/// Which allowance ran out; a label for logs and metrics.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Verifications,
    IpRequests,
    ClientRequests,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verifications => "verifications",
            Self::IpRequests => "ip_requests",
            Self::ClientRequests => "client_requests",
        }
    }
}

impl Limiters {
    fn new(limits: VerificationLimits) -> Self {
        Self {
            per_client: RateLimiter::keyed(per_minute(limits.per_client_per_minute)),
            per_ip: RateLimiter::keyed(per_minute(limits.per_ip_per_minute)),
            requests_per_ip: per_second(limits.requests_per_ip_per_second),
            requests_per_client: per_second(limits.requests_per_client_per_second),
            clock: DefaultClock::default(),
        }
    }

    fn denied(
        &self,
        limit: Limit,
        not_until: governor::NotUntil<governor::clock::QuantaInstant>,
    ) -> AuthorityError {
        crate::telemetry::metrics::rate_limited(limit);
        AuthorityError::RateLimited {
            retry_after: not_until.wait_time_from(self.clock.now()),
        }
    }

    fn check_ip_request(&self, ip: IpAddr) -> Result<(), AuthorityError> {
        match &self.requests_per_ip {
            Some(limiter) => limiter
                .check_key(&source_network(ip))
                .map_err(|n| self.denied(Limit::IpRequests, n)),
            None => Ok(()),
        }
    }

    fn check_payer_request(&self, payer: &Payer) -> Result<(), AuthorityError> {
        match &self.requests_per_client {
            Some(limiter) => limiter
                .check_key(payer)
                .map_err(|n| self.denied(Limit::ClientRequests, n)),
            None => Ok(()),
        }
    }

    /// Charges one attempt to the source network and to (client, source network): a
    /// stranger guessing one client's secret exhausts only their own allowance, never the
    /// legitimate callers' of that client elsewhere.
    fn check(&self, client_id: &str, ip: IpAddr) -> Result<(), AuthorityError> {
        let network = source_network(ip);
        let denied = self
            .per_ip
            .check_key(&network)
            .and_then(|_| self.per_client.check_key(&(client_id.to_owned(), network)));
        denied.map_err(|not_until| self.denied(Limit::Verifications, not_until))
    }

    fn forget_idle(&self) {
        self.per_client.retain_recent();
        self.per_client.shrink_to_fit();
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
        if let Some(limiter) = &self.requests_per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.requests_per_client {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// A client's record and secrets as one verification read them, stamped just before.
struct ReadApp<'r> {
    client_id: &'r ClientId,
    app: Option<Application>,
    secrets: Vec<AppSecret>,
    stamp: (Stamp, DateTime<Utc>),
}

pub struct ClientAuthenticator {
    store: DynStore,
    hasher: Arc<SecretHasher>,
    cache: Arc<CredentialCache>,
    limiters: Limiters,
    usage: Arc<UsageTracker>,
    audit: Arc<AuditTrail>,
    clock: SharedClock,
}

impl ClientAuthenticator {
    pub fn new(
        store: DynStore,
        hasher: Arc<SecretHasher>,
        cache: Arc<CredentialCache>,
        limits: VerificationLimits,
        usage: Arc<UsageTracker>,
        audit: Arc<AuditTrail>,
        clock: SharedClock,
    ) -> Self {
        Self {
            store,
            hasher,
            cache,
            limiters: Limiters::new(limits),
            usage,
            audit,
            clock,
        }
    }

    pub async fn authenticate(
        &self,
        presented: &ClientCredentials<'_>,
    ) -> Result<Arc<VerifiedClient>, AuthorityError> {
        let client = self.authenticate_unspent(presented).await?;
        self.spend_use(&client, presented.source_ip).await?;
        Ok(client)
    }

    /// [`Self::authenticate`] without spending a use of the secret: for a caller that may
    /// still refuse the request (a scope it may not have, a used-up quota), and must then
    /// call [`Self::spend_use`] before it answers with a token. A refused request must not
    /// use up a secret that counts its uses.
    pub async fn authenticate_unspent(
        &self,
        presented: &ClientCredentials<'_>,
    ) -> Result<Arc<VerifiedClient>, AuthorityError> {
        // The source's allowance first, before any work; the client's only once the caller
        // has proved to be that client.
        self.check_source(presented.source_ip)?;
        let hashed = AtomicBool::new(false);
        let client = match &self.cache.entries {
            None => self.verify(presented, &hashed).await?.value,
            Some(entries) => self.verify_cached(entries, presented, &hashed).await?,
        };
        if !client.admits(presented.source_ip) {
            return Err(self
                .refuse_network(presented, &client, hashed.load(Ordering::Acquire))
                .await);
        }
        self.check_payer(&Payer::App(client.app_id))?;
        Ok(client)
    }

    /// Spends one use of the client's secret (exact across replicas: one conditional
    /// update, only for a secret with `max_uses`) and records the credentials' last use.
    pub async fn spend_use(
        &self,
        client: &VerifiedClient,
        source_ip: IpAddr,
    ) -> Result<(), AuthorityError> {
        let now = self.clock.now();
        if client.counted {
            if !self.store.spend_secret_use(client.secret_id, now).await? {
                crate::telemetry::metrics::auth_failed("client");
                self.audit.record(
                    AuditEvent::new(Event::AuthFailed)
                        .app(client.app_id)
                        .client(client.client_id.as_str())
                        .secret(client.secret_id)
                        .reason("secret used up")
                        .source(source_ip),
                );
                return Err(AuthorityError::InvalidClient);
            }
            self.usage.record(UsageOf::App(client.app_id), now);
        } else {
            self.usage.record_all(
                &[
                    UsageOf::App(client.app_id),
                    UsageOf::Secret(client.secret_id),
                ],
                now,
            );
        }
        Ok(())
    }

    /// Refuses a good credential presented from outside its networks, at what a wrong secret
    /// costs: if this request did not run argon2 itself (the pair was cached), it is charged
    /// as a guess and runs it against a dummy hash, so neither the time taken nor a 429 from
    /// the guess limits tells the caller that the secret itself was right.
    async fn refuse_network(
        &self,
        presented: &ClientCredentials<'_>,
        client: &VerifiedClient,
        hashed: bool,
    ) -> AuthorityError {
        let source_ip = presented.source_ip;
        let client_id = client.client_id.as_str();
        if !hashed {
            if let Err(limited) = self.limiters.check(client_id, source_ip) {
                self.audit.record(
                    AuditEvent::new(Event::AuthRateLimited)
                        .client(client_id)
                        .source(source_ip),
                );
                return limited;
            }
            if let Err(e) = self.hasher.verify_any(presented.client_secret, &[]).await {
                return e;
            }
        }
        crate::telemetry::metrics::auth_failed("client");
        self.audit.record(
            AuditEvent::new(Event::AuthRefused)
                .reason("network")
                .app(client.app_id)
                .client(client_id)
                .secret(client.secret_id)
                .source(source_ip),
        );
        AuthorityError::InvalidClient
    }

    async fn verify_cached(
        &self,
        entries: &Cache<PairKey, Stamped<VerifiedClient>>,
        presented: &ClientCredentials<'_>,
        hashed: &AtomicBool,
    ) -> Result<Arc<VerifiedClient>, AuthorityError> {
        let generations = &self.cache.generations;
        let key = self.cache.pair_key(presented);
        for _ in 0..2 {
            // Concurrent requests for the same pair share one verification: a burst of cold
            // requests costs one argon2 run and one rate-limit token, not one each.
            let entry = entries
                .try_get_with(key, self.verify(presented, hashed))
                .await
                .map_err(|shared| shared.as_ref().duplicate())?;
            // A verification that began before a change seen here (perhaps one this request
            // merely joined), or a secret that expired while it sat here.
            let subject = Subject::Client(entry.value.client_id.as_str());
            let stale = !generations.is_fresh(subject, entry.stamp, entry.born)
                || entry
                    .value
                    .valid_until
                    .is_some_and(|t| t <= self.clock.now());
            if !stale {
                return Ok(entry.value);
            }
            entries.invalidate(&key).await;
        }
        // Changes keep landing mid-verification: answer from a read of our own, uncached.
        Ok(self.verify(presented, hashed).await?.value)
    }

    /// The cold path: rate limits, store lookup, argon2 — once per reading of what was
    /// presented, so the work a request costs depends on the request alone, never on
    /// which reading (if any) names a client.
    /// Sets `hashed` once it pays for this request's guess (rate limit and argon2); a future
    /// that joins another request's verification is never polled, and never sets it.
    async fn verify(
        &self,
        presented: &ClientCredentials<'_>,
        hashed: &AtomicBool,
    ) -> Result<Stamped<VerifiedClient>, AuthorityError> {
        hashed.store(true, Ordering::Release);
        let source_ip = presented.source_ip;
        // Shapes that can never match are refused before any work; they reveal nothing
        // since no stored credential could have them.
        let readings: Vec<(ClientId, &str)> = presented
            .readings()
            .filter_map(|(id, secret)| {
                let id = ClientId::parse(id).ok()?;
                let possible = !secret.is_empty() && secret.len() <= super::secrets::SECRET_MAX_LEN;
                possible.then_some((id, secret))
            })
            .collect();
        if readings.is_empty() {
            return Err(AuthorityError::InvalidClient);
        }
        // Each reading is a guess, and each is charged as one.
        for (client_id, _) in &readings {
            let client_id = client_id.as_str();
            self.limiters.check(client_id, source_ip).inspect_err(|_| {
                self.audit.record(
                    AuditEvent::new(Event::AuthRateLimited)
                        .client(client_id)
                        .source(source_ip),
                );
            })?;
        }

        let mut read: Option<ReadApp<'_>> = None;
        for (client_id, secret) in &readings {
            let read = match read.take() {
                Some(same) if same.client_id == client_id => read.insert(same),
                _ => {
                    // Stamped before the read, so a change landing during it is never cached.
                    let stamp = self
                        .cache
                        .generations
                        .stamp_now(Subject::Client(client_id.as_str()));
                    let app = self.store.application_by_client_id(client_id).await?;
                    // Read for an unknown client too (an id no app has), so that the
                    // store's work, like argon2's, does not tell whether the client exists.
                    let owner = app.as_ref().map_or_else(AppId::nobody, |app| app.id);
                    let secrets = self.store.app_secrets(owner).await?;
                    read.insert(ReadApp {
                        client_id,
                        app,
                        secrets,
                        stamp,
                    })
                }
            };
            if let Some(matched) = self
                .check_secret(secret, read.app.as_ref(), &read.secrets)
                .await?
                && let Some(app) = read.app.as_ref().filter(|app| !app.disabled)
            {
                return Ok(Stamped::new(VerifiedClient::new(app, matched), read.stamp));
            }
        }
        crate::telemetry::metrics::auth_failed("client");
        // The app, when the client id names one: the trail of an app shows attempts on it.
        let (app_id, reason) = match read.and_then(|read| read.app) {
            None => (None, "unknown client"),
            Some(app) if app.disabled => (Some(app.id), "app disabled"),
            Some(app) => (Some(app.id), "wrong or expired secret"),
        };
        self.audit.record(
            AuditEvent::new(Event::AuthFailed)
                .app(app_id)
                .reason(reason)
                .client(presented.client_id)
                .source(source_ip),
        );
        Err(AuthorityError::InvalidClient)
    }

    /// Which of the app's live secrets (unexpired, not used up as read) `secret` is, if
    /// any. Without an app, or without live secrets, the check runs against a dummy hash,
    /// so "no such client" costs what "wrong secret" does.
    async fn check_secret<'s>(
        &self,
        secret: &str,
        app: Option<&Application>,
        secrets: &'s [AppSecret],
    ) -> Result<Option<&'s AppSecret>, AuthorityError> {
        let now = self.clock.now();
        if app.is_none() {
            self.hasher.verify_any(secret, &[]).await?;
            return Ok(None);
        }
        // An app's secrets share a salt (see `SecretHasher::hash_beside`): one argon2 run
        // checks them all, so how many an app holds does not show in how long a wrong
        // secret takes.
        let live: Vec<&AppSecret> = secrets
            .iter()
            .filter(|s| s.state_at(now) == SecretState::Active)
            .collect();
        let hashes: Vec<&str> = live.iter().map(|s| s.hash.as_str()).collect();
        let matched = self.hasher.verify_any(secret, &hashes).await?;
        Ok(matched.map(|i| live[i]))
    }

    /// Charges one request to the caller's source network (0 = unlimited).
    pub fn check_source(&self, source_ip: IpAddr) -> Result<(), AuthorityError> {
        self.limiters.check_ip_request(source_ip)
    }

    /// Charges one request to a client that has proved who it is, or to the grant whose
    /// token is being exchanged.
    pub fn check_payer(&self, payer: &Payer) -> Result<(), AuthorityError> {
        self.limiters.check_payer_request(payer)
    }

    pub fn hash_runs(&self) -> u64 {
        self.hasher.runs()
    }

    pub fn hash_queue_depth(&self) -> usize {
        self.hasher.queue_depth()
    }

    /// Drops rate-limit state for keys that have been quiet; called periodically.
    pub fn forget_idle(&self) {
        self.limiters.forget_idle();
    }
}
