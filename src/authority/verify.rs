//! Verifying Portcullis's own tokens, for its bearer-protected routes and introspection.

use std::{collections::HashSet, sync::Arc, time::Duration};

use aws_lc_rs::digest::{SHA256, digest};
use jsonwebtoken::{Validation, decode, decode_header};
use moka::sync::Cache;

use super::{AuthorityError, clock::SharedClock, keys::KeyRing, tokens::Claims};

/// Clock skew tolerated on `exp` and `nbf`. DESIGN §3 caps it at 30 seconds; larger values
/// would keep revoked-by-expiry tokens alive longer than operators expect.
pub const LEEWAY_SECS: i64 = 30;

/// Tokens we mint are well under this; anything longer is rejected before parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

const TOKEN_TYPE: &str = "at+jwt";

/// Signature checks are the costly part of a bearer request (~57 µs for ES256), and
/// clients reuse a token many times, so tokens whose signature checked out are remembered
/// by their SHA-256 (collision-resistant, so no other string can pose as one). Time,
/// revocation and status are still checked on every use, and so is the key: a token whose
/// key is no longer published is no longer ours, whatever was remembered.
const VERIFIED_TTL: Duration = Duration::from_secs(300);
const VERIFIED_CAPACITY: u64 = 100_000;

/// A token whose signature checked out, with the key that signed it.
struct Verified {
    kid: String,
    claims: Claims,
}

pub struct TokenVerifier {
    issuer: String,
    audience: String,
    keys: Arc<KeyRing>,
    clock: SharedClock,
    verified: Cache<[u8; 32], Arc<Verified>>,
}

impl TokenVerifier {
    pub fn new(issuer: String, audience: String, keys: Arc<KeyRing>, clock: SharedClock) -> Self {
        Self {
            issuer,
            audience,
            keys,
            clock,
            verified: Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(VERIFIED_TTL)
                .build(),
        }
    }

    /// Checks signature, algorithm, `typ`, `iss`, `aud`, `exp` and `nbf`. Every failure is
    /// the same `InvalidToken`: callers learn nothing about which check failed.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthorityError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthorityError::InvalidToken);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        let verified = match self.verified.get(&key) {
            Some(hit) if self.keys.verifier(&hit.kid).is_some() => hit,
            _ => {
                let verified = Arc::new(self.verify_signature(token)?);
                self.verified.insert(key, verified.clone());
                verified
            }
        };
        let claims = &verified.claims;
        let now = self.clock.now().timestamp();
        if claims.exp + LEEWAY_SECS <= now || claims.nbf > now + LEEWAY_SECS {
            return Err(AuthorityError::InvalidToken);
        }
        Ok(claims.clone())
    }

    /// Everything about the token that does not change with time.
    fn verify_signature(&self, token: &str) -> Result<Verified, AuthorityError> {
        let header = decode_header(token).map_err(|_| AuthorityError::InvalidToken)?;
        if header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(AuthorityError::InvalidToken);
        }
        let kid = header.kid.as_deref().ok_or(AuthorityError::InvalidToken)?;
        let verifier = self
            .keys
            .verifier(kid)
            .ok_or(AuthorityError::InvalidToken)?;
        if header.alg != verifier.algorithm {
            return Err(AuthorityError::InvalidToken);
        }
        let mut validation = Validation::new(verifier.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.required_spec_claims =
            HashSet::from(["exp", "iss", "aud", "sub"].map(String::from));
        // Time is checked below against the injected clock, not the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = decode::<Claims>(token, &verifier.key, &validation)
            .map(|data| data.claims)
            .map_err(|_| AuthorityError::InvalidToken)?;
        Ok(Verified {
            kid: kid.to_owned(),
            claims,
        })
    }
}

#[cfg(test)]
mod properties {
    use std::sync::LazyLock;

    use aws_lc_rs::hmac;
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        authority::{
            clock::FixedClock,
            keys::{KeyRingOptions, MasterKey},
            tokens::{TokenMinter, TokenSpec},
        },
        domain::{KeyState, ScopeSet, SigningAlgorithm, Subject, SubjectKind},
        store::{self, ConnectOptions},
    };

    const ISSUER: &str = "https://portcullis.test";
    const AUDIENCE: &str = "portcullis-props";

    struct Fixture {
        keys: Arc<KeyRing>,
        verifier: TokenVerifier,
        now: DateTime<Utc>,
        /// Signed by the current key, valid at `now`.
        token: String,
        /// The published `next` key: trusted, but it did not sign `token`.
        next_kid: String,
        /// Keeps the store's pool alive for as long as the key ring.
        _runtime: tokio::runtime::Runtime,
    }

    /// One key ring for every case: opening a store and generating keys per case would
    /// dominate the run.
    static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let now = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let clock: SharedClock = FixedClock::new(now);
        let keys = runtime.block_on(async {
            // One connection: every connection to `sqlite::memory:` is a database of its own.
            let store = store::connect(&ConnectOptions {
                url: "sqlite::memory:".into(),
                max_connections: 1,
                acquire_timeout: Duration::from_secs(5),
                feed_heartbeat: Duration::from_secs(2),
            })
            .await
            .unwrap();
            store.migrate().await.unwrap();
            let options = KeyRingOptions {
                algorithm: SigningAlgorithm::ES256,
                hs256_secret: None,
                retired_key_visibility: chrono::TimeDelta::hours(1),
                next_key_lead: chrono::TimeDelta::zero(),
            };
            let master = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
            Arc::new(
                KeyRing::open(
                    store,
                    master,
                    clock.clone(),
                    options,
                    Arc::new(crate::authority::audit::AuditTrail::new(
                        clock.clone(),
                        None,
                        Default::default(),
                    )),
                )
                .await
                .unwrap(),
            )
        });
        let next_kid = keys
            .keys()
            .into_iter()
            .find(|k| k.state == KeyState::Next)
            .unwrap()
            .kid;
        let minter = TokenMinter::new(ISSUER.into(), AUDIENCE.into(), keys.clone(), clock.clone());
        let token = minter
            .mint(TokenSpec {
                subject: &Subject {
                    kind: SubjectKind::App,
                    id: "pcc_props".into(),
                },
                client_id: "pcc_props",
                scope: &ScopeSet::parse("users:read").unwrap(),
                lifetime: Duration::from_secs(300),
                enrollment_id: None,
                grant_id: None,
                grant_type: "client_credentials",
                parent_jti: None,
                secret_id: None,
                cidr: Default::default(),
            })
            .unwrap()
            .access_token;
        let verifier = TokenVerifier::new(ISSUER.into(), AUDIENCE.into(), keys.clone(), clock);
        Fixture {
            keys,
            verifier,
            now,
            token,
            next_kid,
            _runtime: runtime,
        }
    });

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Signs `header.payload` the way the header claims: `none` gets no signature, `HS256`
    /// is keyed with the current key's public JWK (the classic algorithm-confusion forgery),
    /// anything else gets the current key's real signature.
    fn sign(header: &Value, payload: &Value) -> String {
        let current = FIXTURE.keys.current();
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(payload.to_string().as_bytes())
        );
        let signature = match header["alg"].as_str() {
            Some("none") => Vec::new(),
            Some("HS256") => {
                let public = current.public_jwk().unwrap().to_string();
                let key = hmac::Key::new(hmac::HMAC_SHA256, public.as_bytes());
                hmac::sign(&key, input.as_bytes()).as_ref().to_vec()
            }
            _ => current.sign(input.as_bytes()).unwrap(),
        };
        format!("{input}.{}", b64(&signature))
    }

    fn claims(iss: &str, aud: &str, exp: i64, nbf: i64) -> Value {
        json!({
            "iss": iss, "sub": "pcc_props", "aud": aud, "exp": exp, "iat": nbf, "nbf": nbf,
            "jti": "j", "client_id": "pcc_props", "scope": "users:read", "sub_kind": "app",
        })
    }

    fn token_like() -> impl Strategy<Value = String> {
        let segment = "[A-Za-z0-9_-]{0,60}";
        prop_oneof![
            any::<String>(),
            (segment, segment, segment).prop_map(|(h, p, s)| format!("{h}.{p}.{s}")),
            // Real segments in a forged arrangement.
            (0..3usize, 0..3usize, 0..3usize).prop_map(|(a, b, c)| {
                let parts: Vec<&str> = FIXTURE.token.split('.').collect();
                format!("{}.{}.{}", parts[a], parts[b], parts[c])
            }),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]

        #[test]
        fn arbitrary_strings_are_rejected(token in token_like()) {
            prop_assume!(token != FIXTURE.token);
            prop_assert!(FIXTURE.verifier.verify(&token).is_err());
        }

        #[test]
        fn any_altered_byte_is_rejected(
            at in any::<prop::sample::Index>(),
            replacement in prop_oneof![
                proptest::char::range('A', 'Z'), proptest::char::range('a', 'z'),
                proptest::char::range('0', '9'), Just('-'), Just('_'), Just('.'), Just('='),
                any::<char>(),
            ],
        ) {
            let f = &*FIXTURE;
            prop_assert!(f.verifier.verify(&f.token).is_ok(), "the untouched token verifies");
            let mut chars: Vec<char> = f.token.chars().collect();
            let at = at.index(chars.len());
            prop_assume!(chars[at] != replacement);
            chars[at] = replacement;
            let altered: String = chars.into_iter().collect();
            prop_assert!(f.verifier.verify(&altered).is_err(), "byte {} set to {:?}", at, replacement);
        }

        #[test]
        fn only_the_pinned_header_is_accepted(
            alg in proptest::sample::select(&["ES256", "none", "HS256", "RS256", "EdDSA", "es256"][..]),
            kid in prop_oneof![Just(0), Just(1), Just(2)],
            typ in proptest::option::of(proptest::sample::select(&["at+jwt", "JWT", "AT+JWT", "at+jwt "][..])),
        ) {
            let f = &*FIXTURE;
            let current = f.keys.current();
            let kid = [current.kid(), f.next_kid.as_str(), "unknown"][kid];
            let mut header = json!({ "alg": alg, "kid": kid });
            if let Some(typ) = typ {
                header["typ"] = json!(typ);
            }
            let now = f.now.timestamp();
            let token = sign(&header, &claims(ISSUER, AUDIENCE, now + 60, now));
            let pinned = alg == "ES256" && kid == current.kid() && typ == Some("at+jwt");
            prop_assert_eq!(f.verifier.verify(&token).is_ok(), pinned, "{}", header);
        }

        #[test]
        fn issuer_audience_and_time_are_checked_against_the_injected_clock(
            iss in prop_oneof![3 => Just(ISSUER.to_owned()), 1 => ".{0,30}"],
            aud in prop_oneof![3 => Just(AUDIENCE.to_owned()), 1 => ".{0,30}"],
            exp in -100..100i64,
            nbf in -100..100i64,
        ) {
            let f = &*FIXTURE;
            let now = f.now.timestamp();
            let header = json!({ "alg": "ES256", "kid": f.keys.current().kid(), "typ": "at+jwt" });
            let token = sign(&header, &claims(&iss, &aud, now + exp, now + nbf));
            let expected = iss == ISSUER
                && aud == AUDIENCE
                && now < now + exp + LEEWAY_SECS
                && now + nbf <= now + LEEWAY_SECS;
            prop_assert_eq!(f.verifier.verify(&token).is_ok(), expected);
        }

        #[test]
        fn required_claims_cannot_be_dropped(
            dropped in proptest::sample::select(&["iss", "sub", "aud", "exp", "nbf", "jti", "client_id", "scope", "sub_kind"][..]),
        ) {
            let f = &*FIXTURE;
            let now = f.now.timestamp();
            let header = json!({ "alg": "ES256", "kid": f.keys.current().kid(), "typ": "at+jwt" });
            let mut payload = claims(ISSUER, AUDIENCE, now + 60, now);
            payload.as_object_mut().unwrap().remove(dropped);
            prop_assert!(f.verifier.verify(&sign(&header, &payload)).is_err());
        }
    }
}
