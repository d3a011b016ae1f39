//! The `Authorization: Basic` decoder (RFC 6749 §2.3.1).
#![no_main]

use base64::{Engine, engine::general_purpose::STANDARD};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use portcullis::http::extract::{BasicAuth, decode_basic};

fn encode(id: &str, secret: &str) -> String {
    let pair = format!(
        "{}:{}",
        utf8_percent_encode(id, NON_ALPHANUMERIC),
        utf8_percent_encode(secret, NON_ALPHANUMERIC)
    );
    format!("Basic {}", STANDARD.encode(pair))
}

/// The form-decoded reading of a header.
fn decoded(header: &str) -> Option<(String, String)> {
    match decode_basic(header.as_bytes()) {
        BasicAuth::Present(found) => Some((found.client_id, found.client_secret)),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    // Any header value: never a panic, at most two readings, and whatever decodes
    // re-encodes to the same pair.
    if let BasicAuth::Present(found) = decode_basic(data) {
        assert!(!found.client_id.is_empty());
        assert!(found.readings().count() <= 2);
        let again = encode(&found.client_id, &found.client_secret);
        if again.len() <= 4096 {
            assert_eq!(decoded(&again), Some((found.client_id, found.client_secret)));
        }
    }

    // The same bytes as a client's id and secret survive encoding exactly.
    let text = String::from_utf8_lossy(data);
    if let Some((id, secret)) = text.split_once('\u{1}')
        && !id.is_empty()
    {
        let header = encode(id, secret);
        if header.len() <= 4096 {
            assert_eq!(decoded(&header), Some((id.to_owned(), secret.to_owned())));
        }
    }
});
