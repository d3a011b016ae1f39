//! An application's client secrets: several live at once (to rotate without downtime, or
//! one per deployment), each with an optional description, expiry and maximum number of
//! uses, shown once and revoked one by one — optionally with every token it minted.
//! Rotation is "add a new secret; the others expire at the end of the grace period".

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::audit::{AuditEvent, AuditTrail, Detail, Event};
use super::{
    AuthorityError, Conflict, Rule,
    apps::{Applications, CreatedApplication, parse_cidrs},
    changes::ChangeHub,
    clock::SharedClock,
    revocations::secret_marker,
    secrets::{self, SecretHasher},
};
use crate::{
    domain::{
        AppId, AppSecret, Change, CidrList, NewSecret, SecretId, SecretState, parse_utc_timestamp,
    },
    store::{DynStore, SecretAdded, SecretTokens},
};

/// Unexpired secrets an app may hold at once. Each is compared on every cold verification
/// (one argon2 run for all, but one comparison each), and a handful covers every rotation
/// scheme; more would be a leak waiting to happen.
pub const MAX_SECRETS_PER_APP: u32 = 10;
pub const DESCRIPTION_MAX_LEN: usize = 200;
/// The longest a secret can be given to live: ten years.
pub const MAX_LIFETIME_SECS: u64 = 10 * 366 * 24 * 3600;
pub const MAX_USES_LIMIT: u64 = 1_000_000_000;

/// A token minted in the instant a secret was revoked may carry a later `exp` than the
/// revoking replica expects; the marker outlives the longest lifetime by this much.
const MARKER_MARGIN: TimeDelta = TimeDelta::minutes(5);

#[derive(Debug, Default)]
pub struct CreateSecret {
    pub description: Option<String>,
    /// An RFC 3339 UTC timestamp in the future; not with `expires_in`.
    pub expires_at: Option<String>,
    /// Seconds from now; not with `expires_at`.
    pub expires_in: Option<u64>,
    pub max_uses: Option<u64>,
    /// Networks the secret may be presented from, besides the app's own list.
    pub allowed_cidrs: Option<Vec<String>>,
}

/// A new secret, which exists in plain text only here, once.
pub struct CreatedSecret {
    pub secret: AppSecret,
    pub client_secret: SecretString,
}

/// What revoking a secret revoked besides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokedSecret {
    pub tokens_revoked: bool,
    /// Active auth grants created with the secret's tokens, now revoked.
    pub grants_revoked: usize,
}

pub struct AppSecrets {
    store: DynStore,
    audit: Arc<AuditTrail>,
    hasher: Arc<SecretHasher>,
    changes: Arc<ChangeHub>,
    clock: SharedClock,
    /// The longest any token lives, so that a revocation of a secret's tokens outlives
    /// every one of them.
    longest_token: Duration,
}

fn check_description(description: &str) -> Result<(), AuthorityError> {
    if description.chars().count() > DESCRIPTION_MAX_LEN {
        return Err(AuthorityError::invalid(
            "description",
            Rule::MaxChars {
                max: DESCRIPTION_MAX_LEN,
            },
        ));
    }
    if description.chars().any(char::is_control) {
        return Err(AuthorityError::invalid(
            "description",
            Rule::ControlCharacters,
        ));
    }
    Ok(())
}

/// When a secret asked for with `request` expires, judged at `now`.
fn expiry(
    request: &CreateSecret,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, AuthorityError> {
    let longest = TimeDelta::seconds(MAX_LIFETIME_SECS as i64);
    match (&request.expires_at, request.expires_in) {
        (Some(_), Some(_)) => Err(AuthorityError::invalid(
            "expires_in",
            Rule::NotWith("expires_at"),
        )),
        (Some(raw), None) => {
            let at = parse_utc_timestamp(raw)
                .ok_or_else(|| AuthorityError::invalid("expires_at", Rule::NotUtcTimestamp))?;
            if at <= now {
                return Err(AuthorityError::invalid("expires_at", Rule::NotInTheFuture));
            }
            if at > now + longest {
                return Err(AuthorityError::invalid(
                    "expires_at",
                    Rule::AtMostYearsAhead(10),
                ));
            }
            Ok(Some(at))
        }
        (None, Some(secs)) => {
            if !(1..=MAX_LIFETIME_SECS).contains(&secs) {
                return Err(AuthorityError::invalid(
                    "expires_in",
                    Rule::Range {
                        min: 1,
                        max: MAX_LIFETIME_SECS,
                        unit: " seconds",
                    },
                ));
            }
            Ok(Some(now + TimeDelta::seconds(secs as i64)))
        }
        (None, None) => Ok(None),
    }
}

fn check_max_uses(max_uses: Option<u64>) -> Result<(), AuthorityError> {
    match max_uses {
        Some(n) if !(1..=MAX_USES_LIMIT).contains(&n) => Err(AuthorityError::invalid(
            "max_uses",
            Rule::Range {
                min: 1,
                max: MAX_USES_LIMIT,
                unit: "",
            },
        )),
        _ => Ok(()),
    }
}

impl AppSecrets {
    pub fn new(
        store: DynStore,
        hasher: Arc<SecretHasher>,
        changes: Arc<ChangeHub>,
        clock: SharedClock,
        longest_token: Duration,
        audit: Arc<AuditTrail>,
    ) -> Self {
        Self {
            store,
            audit,
            hasher,
            changes,
            clock,
            longest_token,
        }
    }

    /// The app's secrets with their state now, oldest first (`NotFound` without the app).
    pub async fn list(
        &self,
        apps: &Applications,
        app_id: AppId,
    ) -> Result<Vec<(AppSecret, SecretState)>, AuthorityError> {
        apps.get(app_id).await?;
        let now = self.clock.now();
        let secrets = self.store.app_secrets(app_id).await?;
        Ok(secrets
            .into_iter()
            .map(|s| {
                let state = s.state_at(now);
                (s, state)
            })
            .collect())
    }

    /// A new secret beside the app's others, hashed with their salt so that checking all of
    /// them still costs one argon2 run.
    async fn generate_beside(
        &self,
        siblings: &[AppSecret],
        description: String,
        (created_at, expires_at): (DateTime<Utc>, Option<DateTime<Utc>>),
        (max_uses, allowed_cidrs): (Option<u64>, CidrList),
    ) -> Result<(SecretString, NewSecret), AuthorityError> {
        let secret = secrets::generate_secret();
        // Newest first: the likeliest to be hashed as the hasher hashes today.
        let hashes: Vec<&str> = siblings.iter().rev().map(|s| s.hash.as_str()).collect();
        let hash = self.hasher.hash_beside(&secret, &hashes).await?;
        let new = NewSecret {
            id: SecretId::generate(),
            hash,
            prefix: secrets::shown_prefix(secret.expose_secret()),
            description,
            created_at,
            expires_at,
            max_uses,
            allowed_cidrs,
        };
        Ok((secret, new))
    }

    pub async fn create(
        &self,
        apps: &Applications,
        app_id: AppId,
        request: CreateSecret,
    ) -> Result<CreatedSecret, AuthorityError> {
        let description = request.description.clone().unwrap_or_default();
        check_description(&description)?;
        let now = self.clock.now();
        let expires_at = expiry(&request, now)?;
        check_max_uses(request.max_uses)?;
        let allowed_cidrs = parse_cidrs("allowed_cidrs", request.allowed_cidrs.as_deref())?;
        let app = apps.get(app_id).await?;
        let siblings = self.store.app_secrets(app_id).await?;
        let (client_secret, new) = self
            .generate_beside(
                &siblings,
                description,
                (now, expires_at),
                (request.max_uses, allowed_cidrs),
            )
            .await?;
        let secret = match self
            .store
            .add_app_secret(app_id, &new, MAX_SECRETS_PER_APP)
            .await?
        {
            SecretAdded::Added(secret) => secret,
            SecretAdded::Full => return Err(too_many()),
            SecretAdded::Missing | SecretAdded::Stale => return Err(AuthorityError::NotFound),
        };
        // Nothing cached can depend on a secret that did not exist: no notice is needed.
        self.audit.record(
            AuditEvent::new(Event::SecretCreated)
                .app(app.id)
                .client(app.client_id.as_str())
                .secret(secret.id),
        );
        Ok(CreatedSecret {
            secret,
            client_secret,
        })
    }

    /// Revokes one secret of the app (`NotFound` if the app holds no such secret). With
    /// `revoke_tokens`, every token it minted is refused from now on, on every replica, and
    /// so is everything derived from them: grants created with them are revoked.
    pub async fn revoke(
        &self,
        apps: &Applications,
        app_id: AppId,
        secret_id: SecretId,
        revoke_tokens: bool,
    ) -> Result<RevokedSecret, AuthorityError> {
        let app = apps.get(app_id).await?;
        let now = self.clock.now();
        let tokens = revoke_tokens
            .then(|| {
                let longest = TimeDelta::from_std(self.longest_token).ok()?;
                Some(SecretTokens {
                    marker: secret_marker(&secret_id.to_string()),
                    until: now.checked_add_signed(longest)? + MARKER_MARGIN,
                })
            })
            .map(|t| t.ok_or_else(|| AuthorityError::internal("token lifetime out of range")))
            .transpose()?;
        let grants = self
            .store
            .revoke_app_secret(app_id, secret_id, tokens.as_ref(), now)
            .await?
            .ok_or(AuthorityError::NotFound)?;
        // Cached verifications of the secret go first, then its tokens and their grants.
        apps.forget(&app).await;
        if let Some(tokens) = &tokens {
            self.changes
                .announce(Change::Revoked {
                    jti: tokens.marker.clone(),
                    exp: tokens.until.timestamp(),
                })
                .await;
            for id in &grants {
                self.changes.announce(Change::Grant { id: id.0 }).await;
            }
        }
        self.audit.record(
            AuditEvent::new(Event::SecretRevoked)
                .app(app.id)
                .client(app.client_id.as_str())
                .secret(secret_id)
                .detail(Detail {
                    tokens_revoked: Some(revoke_tokens),
                    grants_revoked: Some(grants.len()),
                    ..Detail::default()
                }),
        );
        Ok(RevokedSecret {
            tokens_revoked: revoke_tokens,
            grants_revoked: grants.len(),
        })
    }

    /// Adds a new secret (returned in plain text this one time); every other secret of the
    /// app expires after `grace` (zero ends them at once), unless it expires sooner. Of two
    /// concurrent rotations one wins and the other gets a conflict, so no answered secret is
    /// unusable.
    pub async fn rotate(
        &self,
        apps: &Applications,
        app_id: AppId,
        grace: Duration,
    ) -> Result<CreatedApplication, AuthorityError> {
        let app = apps.get(app_id).await?;
        let too_long = || AuthorityError::invalid("grace_period_secs", Rule::TooLong);
        let grace = TimeDelta::from_std(grace).map_err(|_| too_long())?;
        let siblings = self.store.app_secrets(app_id).await?;
        let now = self.clock.now();
        let (client_secret, new) = self
            .generate_beside(
                &siblings,
                String::new(),
                (now, None),
                (None, CidrList::default()),
            )
            .await?;
        let grace_ends = new
            .created_at
            .checked_add_signed(grace)
            .ok_or_else(too_long)?;
        let others_until = (!grace.is_zero()).then_some(grace_ends);
        let expected: Vec<SecretId> = siblings.iter().map(|s| s.id).collect();
        match self
            .store
            .rotate_app_secrets(app_id, &expected, &new, others_until, MAX_SECRETS_PER_APP)
            .await?
        {
            SecretAdded::Added(_) => {}
            SecretAdded::Stale => return Err(Conflict::SecretRotatedMeanwhile.into()),
            SecretAdded::Full => return Err(too_many()),
            SecretAdded::Missing => return Err(AuthorityError::NotFound),
        }
        apps.forget(&app).await;
        self.audit.record(
            AuditEvent::new(Event::SecretRotated)
                .app(app.id)
                .client(app.client_id.as_str())
                .secret(new.id),
        );
        Ok(CreatedApplication {
            app: apps.get(app_id).await?,
            client_secret: Some(client_secret),
        })
    }
}

fn too_many() -> AuthorityError {
    Conflict::TooManySecrets {
        max: MAX_SECRETS_PER_APP,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_is_one_of_two_ways_bounded_and_in_the_future() {
        let now = parse_utc_timestamp("2030-01-01T00:00:00Z").unwrap();
        let ask = |expires_at: Option<&str>, expires_in: Option<u64>| {
            expiry(
                &CreateSecret {
                    expires_at: expires_at.map(str::to_owned),
                    expires_in,
                    ..CreateSecret::default()
                },
                now,
            )
        };
        assert_eq!(ask(None, None).unwrap(), None);
        assert_eq!(
            ask(None, Some(60)).unwrap(),
            Some(now + TimeDelta::seconds(60))
        );
        assert_eq!(
            ask(Some("2030-01-02T00:00:00Z"), None).unwrap(),
            Some(now + TimeDelta::days(1))
        );
        for (at, secs, why) in [
            (Some("2030-01-02T00:00:00Z"), Some(60), "both ways at once"),
            (Some("2029-12-31T23:59:59Z"), None, "in the past"),
            (Some("2030-01-01T00:00:00Z"), None, "now is not the future"),
            (Some("2030-01-02 00:00:00"), None, "not RFC 3339 UTC"),
            (
                Some("2041-01-01T00:00:00Z"),
                None,
                "more than ten years ahead",
            ),
            (None, Some(0), "zero seconds"),
            (None, Some(MAX_LIFETIME_SECS + 1), "more than ten years"),
        ] {
            assert!(ask(at, secs).is_err(), "{why} must be refused");
        }
    }

    #[test]
    fn descriptions_and_use_limits_are_bounded() {
        assert!(check_description("CI runner, eu-west").is_ok());
        assert!(check_description(&"x".repeat(DESCRIPTION_MAX_LEN)).is_ok());
        assert!(check_description(&"x".repeat(DESCRIPTION_MAX_LEN + 1)).is_err());
        assert!(check_description("line\nbreak").is_err());
        assert!(check_max_uses(None).is_ok());
        assert!(check_max_uses(Some(1)).is_ok());
        assert!(check_max_uses(Some(0)).is_err());
        assert!(check_max_uses(Some(MAX_USES_LIMIT + 1)).is_err());
    }
}
