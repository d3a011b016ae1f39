//! The `expiresAt` validator against chrono's RFC 3339 parser as an independent oracle.
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use portcullis::domain::parse_utc_timestamp;

/// chrono's RFC 3339, narrowed to the seed's pattern: `T`, `Z`, at most nine fractional
/// digits and no leap second.
fn oracle(raw: &str) -> Option<DateTime<Utc>> {
    let b = raw.as_bytes();
    let fraction_ok = raw
        .split_once('.')
        .is_none_or(|(_, rest)| rest.len().saturating_sub(1) <= 9);
    let shape = raw.ends_with('Z')
        && b.get(10) == Some(&b'T')
        && b.get(17..19) != Some(b"60")
        && fraction_ok;
    shape
        .then(|| DateTime::parse_from_rfc3339(raw).ok())
        .flatten()
        .map(|t| t.with_timezone(&Utc))
}

fuzz_target!(|raw: &str| {
    assert_eq!(parse_utc_timestamp(raw), oracle(raw), "{raw:?}");
});
