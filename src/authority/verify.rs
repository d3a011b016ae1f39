//! Verifying Portcullis's own tokens, for its bearer-protected routes and introspection.

use std::{collections::HashSet, sync::Arc};

use jsonwebtoken::{Validation, decode, decode_header};

use super::{AuthorityError, clock::SharedClock, keys::KeyRing, tokens::Claims};

/// Clock skew tolerated on `exp` and `nbf`. DESIGN §3 caps it at 30 seconds; larger values
/// would keep revoked-by-expiry tokens alive longer than operators expect.
pub const LEEWAY_SECS: i64 = 30;

/// Tokens we mint are well under this; anything longer is rejected before parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

const TOKEN_TYPE: &str = "at+jwt";

pub struct TokenVerifier {
    issuer: String,
    audience: String,
    keys: Arc<KeyRing>,
    clock: SharedClock,
}

impl TokenVerifier {
    pub fn new(issuer: String, audience: String, keys: Arc<KeyRing>, clock: SharedClock) -> Self {
        Self {
            issuer,
            audience,
            keys,
            clock,
        }
    }

    /// Checks signature, algorithm, `typ`, `iss`, `aud`, `exp` and `nbf`. Every failure is
    /// the same `InvalidToken`: callers learn nothing about which check failed.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthorityError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthorityError::InvalidToken);
        }
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
            .map_err(|_| AuthorityError::InvalidToken)?
            .claims;
        let now = self.clock.now().timestamp();
        if claims.exp + LEEWAY_SECS <= now || claims.nbf > now + LEEWAY_SECS {
            return Err(AuthorityError::InvalidToken);
        }
        Ok(claims)
    }
}
