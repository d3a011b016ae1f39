//! The JWT verifier: arbitrary strings and real tokens with bytes overwritten must all be
//! rejected; only the untouched token verifies.
#![no_main]

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use chrono::{DateTime, TimeDelta};
use libfuzzer_sys::fuzz_target;
use portcullis::{
    authority::{
        clock::{FixedClock, SharedClock},
        keys::{KeyRing, KeyRingOptions, MasterKey},
        tokens::{TokenMinter, TokenSpec},
        verify::TokenVerifier,
    },
    domain::{ScopeSet, SigningAlgorithm, Subject, SubjectKind},
    store::{self, ConnectOptions},
};

const ISSUER: &str = "https://portcullis.fuzz";
const AUDIENCE: &str = "portcullis-fuzz";

struct Fixture {
    verifier: TokenVerifier,
    token: String,
    /// Keeps the store's pool alive for as long as the key ring.
    _runtime: tokio::runtime::Runtime,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let clock: SharedClock = FixedClock::new(DateTime::from_timestamp(1_900_000_000, 0).unwrap());
    let keys = runtime.block_on(async {
        // One connection: every connection to `sqlite::memory:` is a database of its own.
        let store = store::connect(&ConnectOptions {
            url: "sqlite::memory:".into(),
            max_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            feed_heartbeat: Duration::from_secs(2),
        })
        .await
        .expect("an in-memory store");
        store.migrate().await.expect("migrations");
        let options = KeyRingOptions {
            algorithm: SigningAlgorithm::ES256,
            hs256_secret: None,
            retired_key_visibility: TimeDelta::hours(1),
            next_key_lead: TimeDelta::zero(),
        };
        let master = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        Arc::new(
            KeyRing::open(store, master, clock.clone(), options)
                .await
                .unwrap(),
        )
    });
    let minter = TokenMinter::new(ISSUER.into(), AUDIENCE.into(), keys.clone(), clock.clone());
    let token = minter
        .mint(TokenSpec {
            subject: &Subject {
                kind: SubjectKind::App,
                id: "pcc_fuzz".into(),
            },
            client_id: "pcc_fuzz",
            scope: &ScopeSet::parse("users:read").unwrap(),
            lifetime: Duration::from_secs(300),
            enrollment_id: None,
            grant_id: None,
            grant_type: "client_credentials",
            parent_jti: None,
        })
        .unwrap()
        .access_token;
    let verifier = TokenVerifier::new(ISSUER.into(), AUDIENCE.into(), keys, clock);
    assert!(verifier.verify(&token).is_ok(), "the minted token verifies");
    Fixture {
        verifier,
        token,
        _runtime: runtime,
    }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let candidate = if mode & 1 == 0 {
        // The input itself as a token.
        rest.to_vec()
    } else {
        // The real token with (position, byte) pairs from the input written over it.
        let mut bytes = f.token.clone().into_bytes();
        for edit in rest.chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([edit[0], edit[1]])) % bytes.len();
            bytes[at] = edit[2];
        }
        bytes
    };
    let Ok(candidate) = std::str::from_utf8(&candidate) else {
        return;
    };
    if candidate != f.token {
        assert!(
            f.verifier.verify(candidate).is_err(),
            "accepted a token we did not mint: {candidate}"
        );
    }
});
