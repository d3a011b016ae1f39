//! Portcullis: a credential-exchange server. Credentials in, short-lived signed JWTs out.
//!
//! Dependencies point one way: `http` → `authority` → `store` (trait) → `domain`.
//! - `http/` is the only place axum appears; handlers parse a dialect's wire format, call
//!   the core and render the dialect's envelope.
//! - `authority/` is the core (credentials, scopes, keys, minting) and knows neither HTTP
//!   nor SQL.
//! - `store/` is the only place sqlx appears.
//! - `config` is the only reader of settings from files and the environment.

pub mod app;
pub mod authority;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod store;
pub mod telemetry;

/// Property tests run a bounded number of cases so `cargo test` stays quick;
/// `PROPTEST_CASES` overrides it for a longer hunt.
#[cfg(test)]
pub(crate) fn proptest_config(default_cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    proptest::test_runner::Config::with_cases(cases)
}
