use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AppId, CidrList, InvalidId};

/// Identifier of one of an application's client secrets. Tokens minted with the secret
/// carry it (claim `secret_id`), so revoking the secret can revoke them too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretId(pub Uuid);

impl SecretId {
    /// Time-ordered (v7), so secrets made within one clock tick still list in the order
    /// they were made. Tokens carry the id, so it tells a resource server when the secret
    /// was made (to the millisecond); nothing else about it.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| InvalidId("secret id"))
    }
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One of an application's client secrets, as kept: its argon2id hash, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSecret {
    pub id: SecretId,
    pub app_id: AppId,
    pub hash: String,
    /// The start of a generated secret (`pcs_` and 8 more characters), so an operator can
    /// tell which secret a client holds; `None` for imported secrets (whose start may be
    /// much of the secret) and for secrets kept from before secrets had ids.
    pub prefix: Option<String>,
    pub description: String,
    pub created_at: DateTime<Utc>,
    /// From then on the secret no longer verifies.
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Successful verifications so far: exact for a secret with `max_uses`, written in
    /// batches (like `last_used_at`) for one without.
    pub use_count: u64,
    /// The secret verifies at most this many times.
    pub max_uses: Option<u64>,
    /// Where the secret may be presented from, besides the app's own list (empty: anywhere).
    pub allowed_cidrs: CidrList,
}

/// Whether a secret still verifies, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretState {
    Active,
    Expired,
    /// Used `max_uses` times.
    UsedUp,
}

impl SecretState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::UsedUp => "used_up",
        }
    }
}

impl AppSecret {
    /// The state as this record tells it; for a secret with `max_uses`, the store's
    /// counter has the last word.
    pub fn state_at(&self, now: DateTime<Utc>) -> SecretState {
        if self.expires_at.is_some_and(|t| t <= now) {
            SecretState::Expired
        } else if self.max_uses.is_some_and(|max| self.use_count >= max) {
            SecretState::UsedUp
        } else {
            SecretState::Active
        }
    }
}

/// What the store needs to add a secret.
#[derive(Debug, Clone)]
pub struct NewSecret {
    pub id: SecretId,
    pub hash: String,
    pub prefix: Option<String>,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_uses: Option<u64>,
    pub allowed_cidrs: CidrList,
}
