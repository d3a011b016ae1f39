//! The only reader of files and environment variables for settings.
//!
//! Layers, later wins: `config/default.toml` (compiled in) → the file named by
//! `PORTCULLIS_CONFIG` → `PORTCULLIS__SECTION__KEY` environment variables.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use config::{Config, File, FileFormat};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{authority::audit::IssuedTokens, domain::SigningAlgorithm};

const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub admin: AdminSettings,
    pub database: DatabaseSettings,
    pub tokens: TokenSettings,
    pub keys: KeySettings,
    pub credentials: CredentialSettings,
    pub rate_limit: RateLimitSettings,
    pub grants: GrantSettings,
    pub audit: AuditSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub public_addr: SocketAddr,
    pub request_timeout_ms: u64,
    pub trusted_proxies: Vec<IpNet>,
    pub drain_delay_ms: u64,
    pub header_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub addr: SocketAddr,
    pub token: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub feed_heartbeat_ms: u64,
    pub feed_lost_cache_ttl_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub algorithm: SigningAlgorithm,
    pub oauth_lifetime_secs: u64,
    pub endorsed_lifetime_secs: u64,
    pub enrollment_lifetime_secs: u64,
    pub grant_token_max_lifetime_secs: u64,
    pub status_cache_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    pub master_key: Option<SecretString>,
    pub master_key_file: PathBuf,
    pub hs256_secret: Option<SecretString>,
    pub next_key_lead_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSettings {
    pub cache_ttl_secs: u64,
    pub cache_capacity: u64,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    pub hash_concurrency: usize,
    pub secret_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub verifications_per_client_per_minute: u32,
    pub verifications_per_ip_per_minute: u32,
    pub requests_per_client_per_second: u32,
    pub requests_per_ip_per_second: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSettings {
    pub max_active_per_profile: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Days audit events (and daily usage counts) are kept; 0 keeps them forever.
    pub retention_days: u32,
    /// Tokens issued at request rate: a summary row per credential and minute, or a row
    /// per token.
    pub issued_tokens: IssuedTokens,
}

impl AuditSettings {
    pub fn retention(&self) -> Option<Duration> {
        (self.retention_days > 0)
            .then(|| Duration::from_secs(u64::from(self.retention_days) * 86_400))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Layers {
    server: ServerSettings,
    admin: AdminSettings,
    database: DatabaseSettings,
    tokens: TokenSettings,
    keys: KeySettings,
    credentials: CredentialSettings,
    rate_limit: RateLimitSettings,
    grants: GrantSettings,
    audit: AuditSettings,
    log: LogSettings,
}

/// A configuration problem, phrased as the one line startup prints.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

fn invalid(key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{key}: {why}"))
}

impl Settings {
    /// Reads the three layers from this process's environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var_os("PORTCULLIS_CONFIG").map(PathBuf::from);
        Self::load_from(file, EnvVars::default())
    }

    /// Reads the defaults, an optional file and the given environment. Tests pass their own
    /// environment so they never depend on the process's.
    pub fn load_from(
        file: Option<PathBuf>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "PORTCULLIS_CONFIG names {}, which is not a readable file",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path).required(true));
        }
        let env: config::Map<String, String> = env.into_iter().collect();
        let layers: Layers = builder
            .add_source(
                config::Environment::with_prefix("PORTCULLIS")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("server.trusted_proxies")
                    .source(Some(env)),
            )
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| ConfigError(e.to_string()))?;
        layers.validate()
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.server.request_timeout_ms)
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.server.drain_delay_ms)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.server.header_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.server.idle_timeout_ms)
    }

    /// The issuer, defaulting to the public address (an unspecified IP reads as localhost).
    pub fn issuer(&self) -> String {
        if !self.tokens.issuer.is_empty() {
            return self.tokens.issuer.clone();
        }
        let addr = self.server.public_addr;
        if addr.ip().is_unspecified() {
            format!("http://localhost:{}", addr.port())
        } else {
            format!("http://{addr}")
        }
    }

    pub fn uses_sqlite(&self) -> bool {
        self.database.url.starts_with("sqlite:")
    }
}

/// Lets tests and `load` share one path: the caller's environment, not the process's.
pub struct EnvVars(Vec<(String, String)>);

impl Default for EnvVars {
    fn default() -> Self {
        Self(
            std::env::vars()
                .filter(|(k, _)| k.starts_with("PORTCULLIS__"))
                .collect(),
        )
    }
}

impl IntoIterator for EnvVars {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl Layers {
    fn validate(self) -> Result<Settings, ConfigError> {
        if self.server.request_timeout_ms == 0 {
            return Err(invalid("server.request_timeout_ms", "must be positive"));
        }
        for (key, ms) in [
            ("server.header_timeout_ms", self.server.header_timeout_ms),
            ("server.idle_timeout_ms", self.server.idle_timeout_ms),
        ] {
            if ms == 0 || ms > 3600 * 1000 {
                return Err(invalid(key, "must be between 1 ms and one hour"));
            }
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be positive"));
        }
        if self.database.acquire_timeout_ms >= self.server.request_timeout_ms {
            return Err(invalid(
                "database.acquire_timeout_ms",
                "must be below server.request_timeout_ms so an outage answers 503 in time",
            ));
        }
        if self.database.feed_heartbeat_ms == 0 {
            return Err(invalid("database.feed_heartbeat_ms", "must be positive"));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be positive"));
        }
        if !(self.database.url.starts_with("sqlite:")
            || self.database.url.starts_with("postgres:")
            || self.database.url.starts_with("postgresql:"))
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite: or postgres:",
            ));
        }
        if let Some(token) = &self.admin.token
            && token.expose_secret().len() < 32
        {
            return Err(invalid("admin.token", "must be at least 32 characters"));
        }
        if self.tokens.audience.is_empty() {
            return Err(invalid("tokens.audience", "must not be empty"));
        }
        for (key, secs) in [
            (
                "tokens.oauth_lifetime_secs",
                self.tokens.oauth_lifetime_secs,
            ),
            (
                "tokens.endorsed_lifetime_secs",
                self.tokens.endorsed_lifetime_secs,
            ),
        ] {
            if secs == 0 || secs > 366 * 24 * 3600 {
                return Err(invalid(key, "must be between 1 second and 366 days"));
            }
        }
        if self.tokens.algorithm == SigningAlgorithm::HS256 {
            let long_enough = self
                .keys
                .hs256_secret
                .as_ref()
                .is_some_and(|s| s.expose_secret().len() >= 32);
            if !long_enough {
                return Err(invalid(
                    "keys.hs256_secret",
                    "HS256 needs a secret of at least 32 bytes (256 bits)",
                ));
            }
        }
        if self.keys.next_key_lead_secs > 24 * 3600 {
            return Err(invalid(
                "keys.next_key_lead_secs",
                "must be at most one day",
            ));
        }
        if self.credentials.argon2_memory_kib < 8 * 1024 || self.credentials.argon2_iterations == 0
        {
            return Err(invalid(
                "credentials.argon2_memory_kib",
                "argon2 needs at least 8192 KiB and one iteration",
            ));
        }
        if self.credentials.argon2_parallelism == 0 {
            return Err(invalid(
                "credentials.argon2_parallelism",
                "must be positive",
            ));
        }
        for (key, n) in [
            (
                "rate_limit.verifications_per_client_per_minute",
                self.rate_limit.verifications_per_client_per_minute,
            ),
            (
                "rate_limit.verifications_per_ip_per_minute",
                self.rate_limit.verifications_per_ip_per_minute,
            ),
        ] {
            if n == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        if self.grants.max_active_per_profile == 0 {
            return Err(invalid("grants.max_active_per_profile", "must be positive"));
        }
        Ok(Settings {
            grants: self.grants,
            audit: self.audit,
            server: self.server,
            admin: self.admin,
            database: self.database,
            tokens: self.tokens,
            keys: self.keys,
            credentials: self.credentials,
            rate_limit: self.rate_limit,
            log: self.log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_load_and_are_safe() {
        let s = load(&[]).unwrap();
        assert_eq!(s.database.url, "sqlite://data/portcullis.db");
        assert_eq!(s.tokens.algorithm, SigningAlgorithm::ES256);
        assert!(s.admin.token.is_none(), "no admin listener without a token");
        assert!(s.server.trusted_proxies.is_empty());
        assert_eq!(s.issuer(), "http://localhost:8080");
    }

    #[test]
    fn environment_overrides_defaults() {
        let s = load(&[
            ("PORTCULLIS__DATABASE__URL", "postgres://db/x"),
            ("PORTCULLIS__TOKENS__OAUTH_LIFETIME_SECS", "600"),
            ("PORTCULLIS__SERVER__TRUSTED_PROXIES", "10.0.0.0/8,::1/128"),
        ])
        .unwrap();
        assert_eq!(s.database.url, "postgres://db/x");
        assert_eq!(s.tokens.oauth_lifetime_secs, 600);
        assert_eq!(s.server.trusted_proxies.len(), 2);
    }

    #[test]
    fn invalid_settings_name_their_key() {
        let cases = [
            ("PORTCULLIS__TOKENS__ALGORITHM", "none", "tokens.algorithm"),
            (
                "PORTCULLIS__TOKENS__ALGORITHM",
                "HS256",
                "keys.hs256_secret",
            ),
            ("PORTCULLIS__ADMIN__TOKEN", "short", "admin.token"),
            ("PORTCULLIS__DATABASE__URL", "mysql://x", "database.url"),
            (
                "PORTCULLIS__SERVER__PUBLIC_ADDR",
                "nowhere",
                "server.public_addr",
            ),
            (
                "PORTCULLIS__TOKENS__OAUTH_LIFETIME_SECS",
                "0",
                "tokens.oauth_lifetime_secs",
            ),
            ("PORTCULLIS__SERVER__NO_SUCH_KEY", "1", "no_such_key"),
            (
                "PORTCULLIS__SERVER__HEADER_TIMEOUT_MS",
                "0",
                "server.header_timeout_ms",
            ),
            (
                "PORTCULLIS__SERVER__IDLE_TIMEOUT_MS",
                "0",
                "server.idle_timeout_ms",
            ),
            (
                "PORTCULLIS__SERVER__MAX_CONNECTIONS",
                "0",
                "server.max_connections",
            ),
        ];
        for (var, value, key) in cases {
            let err = load(&[(var, value)]).expect_err(var).to_string();
            assert!(
                err.contains(key),
                "{var}={value}: '{err}' should name {key}"
            );
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }
}
