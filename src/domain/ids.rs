use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Identifier of an application (its primary key, exposed as `app_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppId(pub Uuid);

impl AppId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// An id no app has (generated ids are v7, never nil): a lookup that finds nothing.
    pub fn nobody() -> Self {
        Self(Uuid::nil())
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| InvalidId("app id"))
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The public half of an application's credentials.
///
/// Printable ASCII only, bounded length: it is used as a cache and rate-limit key
/// and echoed in tokens, so it must never carry control characters or unbounded data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        let valid = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_graphic());
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidId("client_id"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid {0}")]
pub struct InvalidId(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_rejects_what_cannot_be_a_key() {
        let long = "a".repeat(ClientId::MAX_LEN + 1);
        for (raw, why) in [
            ("", "empty"),
            ("has space", "whitespace"),
            ("nul\0byte", "control character"),
            ("é", "non-ASCII"),
            (long.as_str(), "too long"),
        ] {
            assert!(ClientId::parse(raw).is_err(), "{why} must be rejected");
        }
        assert!(ClientId::parse("pcc_abc-DEF.123").is_ok());
    }
}
