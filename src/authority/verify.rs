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
/// revocation and status are still checked on every use.
const VERIFIED_TTL: Duration = Duration::from_secs(300);
const VERIFIED_CAPACITY: u64 = 100_000;

pub struct TokenVerifier {
    issuer: String,
    audience: String,
    keys: Arc<KeyRing>,
    clock: SharedClock,
    verified: Cache<[u8; 32], Arc<Claims>>,
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
        let claims = match self.verified.get(&key) {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verify_signature(token)?);
                self.verified.insert(key, claims.clone());
                claims
            }
        };
        let now = self.clock.now().timestamp();
        if claims.exp + LEEWAY_SECS <= now || claims.nbf > now + LEEWAY_SECS {
            return Err(AuthorityError::InvalidToken);
        }
        Ok(Claims::clone(&claims))
    }

    /// Everything about the token that does not change with time.
    fn verify_signature(&self, token: &str) -> Result<Claims, AuthorityError> {
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
        decode::<Claims>(token, &verifier.key, &validation)
            .map(|data| data.claims)
            .map_err(|_| AuthorityError::InvalidToken)
    }
}
