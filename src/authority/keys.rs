//! Token signing keys: generated here, sealed with the master key in the store, parsed
//! once, and published as a JWK Set.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, RwLock},
};

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest::{SHA256, digest},
    encoding::AsDer,
    hmac,
    rand::{SecureRandom, SystemRandom},
    rsa::KeySize,
    signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
        RsaKeyPair,
    },
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::{
    AuthorityError, Conflict, Rule,
    audit::{AuditEvent, AuditTrail, Detail, Event},
    clock::SharedClock,
};
use crate::{
    domain::{KeyState, SigningAlgorithm, SigningKeyRecord},
    store::{DynStore, KeyRotation},
};

/// Seals signing keys at rest with AES-256-GCM; the key id is bound in as associated data
/// so a sealed blob cannot be swapped onto another key's row.
pub struct MasterKey(LessSafeKey);

impl MasterKey {
    pub const LEN: usize = 32;

    pub fn from_base64(encoded: &str) -> Result<Self, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded.trim().trim_end_matches('='))
            .map_err(|_| "the master key is not base64url".to_owned())?;
        if bytes.len() != Self::LEN {
            return Err(format!(
                "the master key must be {} bytes, got {}",
                Self::LEN,
                bytes.len()
            ));
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "unusable master key")?;
        Ok(Self(LessSafeKey::new(key)))
    }

    pub fn generate_base64() -> String {
        URL_SAFE_NO_PAD.encode(random_bytes::<{ MasterKey::LEN }>())
    }

    /// Reads the key file, creating it (mode 0600) with a fresh key if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        if !path.exists() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("{shown}: {e}"))?;
            }
            write_private_file(path, &Self::generate_base64())
                .map_err(|e| format!("{shown}: {e}"))?;
            tracing::warn!(
                path = %shown,
                "generated a master key file; fine for development, but in production set \
                 keys.master_key from a secret store"
            );
        }
        let encoded = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        Self::from_base64(&encoded).map_err(|e| format!("{shown}: {e}"))
    }

    fn seal(&self, kid: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce = random_bytes::<NONCE_LEN>();
        let mut sealed = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut sealed,
            )
            .expect("AES-GCM sealing cannot fail for in-memory buffers");
        let mut out = nonce.to_vec();
        out.append(&mut sealed);
        out
    }

    fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, AuthorityError> {
        let unreadable = || {
            AuthorityError::internal(format!(
                "signing key {kid} cannot be opened with this master key"
            ))
        };
        if sealed.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| unreadable())?;
        Ok(plain.to_vec())
    }
}

#[cfg(unix)]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system CSPRNG is available");
    buf
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

enum KeyMaterial {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Rs256(RsaKeyPair),
    Hs256(Box<hmac::Key>),
}

/// A parsed key ready to sign. Parsing happens once, when the key is loaded, because
/// re-parsing per token would roughly double the cost of ES256 signing.
pub struct SigningKey {
    kid: String,
    algorithm: SigningAlgorithm,
    material: KeyMaterial,
    /// `base64url(header)` is the same for every token this key signs.
    encoded_header: String,
    public_jwk: Option<Value>,
    rng: SystemRandom,
}

impl SigningKey {
    fn new(algorithm: SigningAlgorithm, material: KeyMaterial, kid: Option<String>) -> Self {
        let public_jwk = public_jwk(&material);
        let kid = kid.unwrap_or_else(|| match &public_jwk {
            Some(jwk) => thumbprint(jwk),
            None => "hs256".to_owned(),
        });
        let public_jwk = public_jwk.map(|mut jwk| {
            jwk["kid"] = json!(kid);
            jwk["alg"] = json!(algorithm.as_str());
            jwk["use"] = json!("sig");
            jwk
        });
        let header = json!({ "alg": algorithm.as_str(), "kid": kid, "typ": "at+jwt" });
        Self {
            encoded_header: b64(header.to_string().as_bytes()),
            kid,
            algorithm,
            material,
            public_jwk,
            rng: SystemRandom::new(),
        }
    }

    /// A fresh asymmetric key and its PKCS#8 DER encoding.
    pub fn generate(algorithm: SigningAlgorithm) -> Result<(Self, Vec<u8>), AuthorityError> {
        let rng = SystemRandom::new();
        let pkcs8 = match algorithm {
            SigningAlgorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(AuthorityError::internal)?
                    .as_ref()
                    .to_vec()
            }
            SigningAlgorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(AuthorityError::internal)?
                .as_ref()
                .to_vec(),
            SigningAlgorithm::RS256 => RsaKeyPair::generate(KeySize::Rsa2048)
                .and_then(|k| k.as_der())
                .map_err(AuthorityError::internal)?
                .as_ref()
                .to_vec(),
            SigningAlgorithm::HS256 => {
                return Err(AuthorityError::internal(
                    "HS256 keys come from configuration, not generation",
                ));
            }
        };
        let key = Self::from_pkcs8(algorithm, None, &pkcs8)?;
        Ok((key, pkcs8))
    }

    fn from_pkcs8(
        algorithm: SigningAlgorithm,
        kid: Option<String>,
        der: &[u8],
    ) -> Result<Self, AuthorityError> {
        let material = match algorithm {
            SigningAlgorithm::ES256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map(KeyMaterial::Es256)
            }
            SigningAlgorithm::EdDSA => Ed25519KeyPair::from_pkcs8(der).map(KeyMaterial::EdDsa),
            SigningAlgorithm::RS256 => RsaKeyPair::from_pkcs8(der).map(KeyMaterial::Rs256),
            SigningAlgorithm::HS256 => {
                return Err(AuthorityError::internal("HS256 keys are not stored"));
            }
        }
        .map_err(AuthorityError::internal)?;
        Ok(Self::new(algorithm, material, kid))
    }

    /// The symmetric key for HS256, from a configured secret of at least 256 bits.
    pub fn hs256(secret: &[u8]) -> Self {
        // The kid names the secret without revealing it.
        let kid = format!("hs256-{}", &b64(digest(&SHA256, secret).as_ref())[..16]);
        Self::new(
            SigningAlgorithm::HS256,
            KeyMaterial::Hs256(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret))),
            Some(kid),
        )
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    pub fn public_jwk(&self) -> Option<&Value> {
        self.public_jwk.as_ref()
    }

    pub fn encoded_header(&self) -> &str {
        &self.encoded_header
    }

    /// The JWS signature over `signing_input` (`header.payload`).
    pub fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, AuthorityError> {
        match &self.material {
            KeyMaterial::Es256(k) => k
                .sign(&self.rng, signing_input)
                .map(|s| s.as_ref().to_vec())
                .map_err(AuthorityError::internal),
            KeyMaterial::EdDsa(k) => Ok(k.sign(signing_input).as_ref().to_vec()),
            KeyMaterial::Rs256(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &self.rng, signing_input, &mut sig)
                    .map_err(AuthorityError::internal)?;
                Ok(sig)
            }
            KeyMaterial::Hs256(k) => Ok(hmac::sign(k, signing_input).as_ref().to_vec()),
        }
    }
}

fn public_jwk(material: &KeyMaterial) -> Option<Value> {
    match material {
        KeyMaterial::Es256(k) => {
            // Uncompressed SEC1 point: 0x04 || x || y.
            let point = k.public_key().as_ref();
            Some(json!({
                "kty": "EC", "crv": "P-256",
                "x": b64(&point[1..33]), "y": b64(&point[33..65]),
            }))
        }
        KeyMaterial::EdDsa(k) => Some(json!({
            "kty": "OKP", "crv": "Ed25519", "x": b64(k.public_key().as_ref()),
        })),
        KeyMaterial::Rs256(k) => {
            let public = k.public_key();
            Some(json!({
                "kty": "RSA",
                "n": b64(public.modulus().big_endian_without_leading_zero()),
                "e": b64(public.exponent().big_endian_without_leading_zero()),
            }))
        }
        KeyMaterial::Hs256(_) => None,
    }
}

/// RFC 7638 JWK thumbprint: SHA-256 over the required members in lexicographic order.
fn thumbprint(jwk: &Value) -> String {
    let required: &[&str] = match jwk["kty"].as_str() {
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("OKP") => &["crv", "kty", "x"],
        _ => &["e", "kty", "n"],
    };
    // serde_json's default map is ordered by key, so this serialises canonically.
    let canonical: serde_json::Map<String, Value> = required
        .iter()
        .map(|k| ((*k).to_owned(), jwk[*k].clone()))
        .collect();
    b64(digest(&SHA256, Value::Object(canonical).to_string().as_bytes()).as_ref())
}

/// A key that verifies our own tokens, with its algorithm pinned: the token header never
/// chooses the algorithm.
pub struct VerificationKey {
    pub algorithm: jsonwebtoken::Algorithm,
    pub key: jsonwebtoken::DecodingKey,
}

pub struct KeyRingOptions {
    pub algorithm: SigningAlgorithm,
    pub hs256_secret: Option<Vec<u8>>,
    /// How long a retired key stays published: the longest fixed token lifetime. A key that
    /// signed a token living longer (a grant's API token) stays until that token expires.
    pub retired_key_visibility: TimeDelta,
    /// How long a `next` key is published before a rotation may make it sign: long enough
    /// for every replica to have reloaded its keys.
    pub next_key_lead: TimeDelta,
}

/// Everything one replica derives from the store's keys, swapped as a whole on reload.
struct Loaded {
    current: Arc<SigningKey>,
    jwks: Arc<Value>,
    verifiers: HashMap<String, Arc<VerificationKey>>,
    states: Vec<KeyInfo>,
}

/// A key's public facts, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    pub state: KeyState,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// The keys this replica signs with, publishes and accepts. All replicas read the same
/// rows, and reload them when told a rotation happened (and periodically, as a backstop).
pub struct KeyRing {
    store: DynStore,
    master: MasterKey,
    clock: SharedClock,
    options: KeyRingOptions,
    loaded: RwLock<Arc<Loaded>>,
    audit: Arc<AuditTrail>,
}

impl KeyRing {
    /// Loads the keys. On an empty store it creates a current key and a `next` one published
    /// ahead of use, in one decision serialized in the database: replicas starting together
    /// all end up with the same current key. A change of algorithm publishes a `next` key of
    /// the new one; it signs from the next rotation, once every replica publishes it.
    pub async fn open(
        store: DynStore,
        master: MasterKey,
        clock: SharedClock,
        options: KeyRingOptions,
        audit: Arc<AuditTrail>,
    ) -> Result<Self, AuthorityError> {
        let mut candidates = None;
        if options.algorithm != SigningAlgorithm::HS256 {
            let records = store.signing_keys().await?;
            let settled = records.iter().any(|r| r.state == KeyState::Current)
                && records
                    .iter()
                    .any(|r| r.state == KeyState::Next && r.algorithm == options.algorithm);
            if !settled {
                let current = new_record(&master, &clock, options.algorithm, KeyState::Current)?;
                let next = new_record(&master, &clock, options.algorithm, KeyState::Next)?;
                store
                    .initialize_signing_keys(&current, &next, clock.now())
                    .await?;
                candidates = Some([current, next]);
            }
        }
        let loaded = load(&store, &master, &clock, &options).await?;
        for candidate in candidates.iter().flatten() {
            // Only the candidates the decision kept are stored; another replica's won otherwise.
            if let Some(kept) = loaded.states.iter().find(|k| k.kid == candidate.kid) {
                audit.record(AuditEvent::new(Event::KeyCreated).detail(Detail {
                    kid: Some(kept.kid.clone()),
                    algorithm: Some(kept.algorithm.as_str()),
                    state: Some(kept.state.as_str()),
                    ..Detail::default()
                }));
            }
        }
        if options.algorithm != SigningAlgorithm::HS256
            && loaded.current.algorithm != options.algorithm
        {
            tracing::info!(
                configured = %options.algorithm,
                current = %loaded.current.algorithm,
                "the current signing key has another algorithm; the next rotation switches to \
                 the configured one"
            );
        }
        Ok(Self {
            store,
            master,
            clock,
            options,
            loaded: RwLock::new(Arc::new(loaded)),
            audit,
        })
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the keys from the store.
    pub async fn reload(&self) -> Result<(), AuthorityError> {
        let loaded = load(&self.store, &self.master, &self.clock, &self.options).await?;
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    /// Makes the published `next` key current, retires the current one (it stays in JWKS
    /// while tokens it signed may live), and publishes a fresh `next` key. Refused with a
    /// conflict while the `next` key is younger than the lead time: a replica that has not
    /// reloaded since it was published would reject the tokens it signs.
    pub async fn rotate(&self) -> Result<KeyInfo, AuthorityError> {
        if self.options.algorithm == SigningAlgorithm::HS256 {
            return Err(AuthorityError::invalid(
                "algorithm",
                Rule::Hs256NotRotatable,
            ));
        }
        let next = new_record(
            &self.master,
            &self.clock,
            self.options.algorithm,
            KeyState::Next,
        )?;
        let outcome = self
            .store
            .rotate_signing_keys(&next, self.clock.now(), self.options.next_key_lead)
            .await?;
        // Even a refused rotation may have published the candidate, when no key waited.
        self.reload().await?;
        match outcome {
            KeyRotation::Rotated { current } => {
                let info = self
                    .keys()
                    .into_iter()
                    .find(|k| k.kid == current)
                    .ok_or_else(|| AuthorityError::internal("the new current key is not listed"))?;
                self.audit
                    .record(AuditEvent::new(Event::KeyRotated).detail(Detail {
                        kid: Some(info.kid.clone()),
                        algorithm: Some(info.algorithm.as_str()),
                        next: Some(next.kid.clone()),
                        ..Detail::default()
                    }));
                Ok(info)
            }
            KeyRotation::TooEarly { retry_at } => {
                self.audit.record(
                    AuditEvent::new(Event::KeyRotationRefused)
                        .note("the next signing key is younger than keys.next_key_lead_secs")
                        .detail(Detail {
                            retry_at: Some(retry_at.to_rfc3339()),
                            ..Detail::default()
                        }),
                );
                Err(Conflict::NextKeyTooNew { retry_at }.into())
            }
        }
    }

    pub fn current(&self) -> Arc<SigningKey> {
        self.loaded().current.clone()
    }

    /// Before `key` signs a token that expires at `until`: if that is later than the key
    /// would stay published were it retired now, records that it must stay published until
    /// then, so no rotation cuts the token short. Every replica reads the record.
    pub async fn keep_published_until(
        &self,
        key: &SigningKey,
        until: DateTime<Utc>,
    ) -> Result<(), AuthorityError> {
        if until <= self.clock.now() + self.options.retired_key_visibility {
            return Ok(());
        }
        self.store.keep_signing_key_until(key.kid(), until).await?;
        Ok(())
    }

    /// The JWK Set document.
    pub fn jwks(&self) -> Arc<Value> {
        self.loaded().jwks.clone()
    }

    /// Every stored key with its state.
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.loaded().states.clone()
    }

    /// One of our own keys by id. The id only selects among keys we already trust; nothing
    /// is ever fetched or derived from a token header.
    pub fn verifier(&self, kid: &str) -> Option<Arc<VerificationKey>> {
        self.loaded().verifiers.get(kid).cloned()
    }
}

async fn load(
    store: &DynStore,
    master: &MasterKey,
    clock: &SharedClock,
    options: &KeyRingOptions,
) -> Result<Loaded, AuthorityError> {
    let records = store.signing_keys().await?;
    let current = match &options.hs256_secret {
        Some(secret) if options.algorithm == SigningAlgorithm::HS256 => SigningKey::hs256(secret),
        _ => {
            // Any current key signs, even of another algorithm: replicas still configured
            // for the old algorithm must agree with the one that rotated.
            let record = records
                .iter()
                .find(|r| r.state == KeyState::Current)
                .ok_or_else(|| AuthorityError::internal("no current signing key"))?;
            open_record(master, record)?
        }
    };
    let jwks = jwks(
        &records,
        master,
        clock.now(),
        options.retired_key_visibility,
    )?;
    let mut verifiers = verifiers_for(&jwks)?;
    if let (Some(secret), SigningAlgorithm::HS256) = (&options.hs256_secret, current.algorithm) {
        verifiers.insert(
            current.kid().to_owned(),
            Arc::new(VerificationKey {
                algorithm: jsonwebtoken::Algorithm::HS256,
                key: jsonwebtoken::DecodingKey::from_secret(secret),
            }),
        );
    }
    let states = records
        .iter()
        .map(|r| KeyInfo {
            kid: r.kid.clone(),
            algorithm: r.algorithm,
            state: r.state,
            created_at: r.created_at,
            activated_at: r.activated_at,
            retired_at: r.retired_at,
        })
        .collect();
    Ok(Loaded {
        current: Arc::new(current),
        jwks: Arc::new(jwks),
        verifiers,
        states,
    })
}

fn verifiers_for(jwks: &Value) -> Result<HashMap<String, Arc<VerificationKey>>, AuthorityError> {
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(jwks.clone()).map_err(AuthorityError::internal)?;
    let mut out = HashMap::new();
    for jwk in &set.keys {
        let (Some(kid), Some(alg)) = (&jwk.common.key_id, jwk.common.key_algorithm) else {
            continue;
        };
        let algorithm: jsonwebtoken::Algorithm =
            alg.to_string().parse().map_err(AuthorityError::internal)?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(AuthorityError::internal)?;
        out.insert(kid.clone(), Arc::new(VerificationKey { algorithm, key }));
    }
    Ok(out)
}

fn open_record(
    master: &MasterKey,
    record: &SigningKeyRecord,
) -> Result<SigningKey, AuthorityError> {
    let der = master.open(&record.kid, &record.sealed_private_key)?;
    SigningKey::from_pkcs8(record.algorithm, Some(record.kid.clone()), &der)
}

fn new_record(
    master: &MasterKey,
    clock: &SharedClock,
    algorithm: SigningAlgorithm,
    state: KeyState,
) -> Result<SigningKeyRecord, AuthorityError> {
    let (key, pkcs8) = SigningKey::generate(algorithm)?;
    let now = clock.now();
    Ok(SigningKeyRecord {
        kid: key.kid().to_owned(),
        algorithm,
        state,
        sealed_private_key: master.seal(key.kid(), &pkcs8),
        public_jwk: key.public_jwk().map(Value::to_string).unwrap_or_default(),
        created_at: now,
        activated_at: (state == KeyState::Current).then_some(now),
        retired_at: None,
        tokens_live_until: None,
    })
}

/// The published keys, derived from the sealed private keys rather than read from the
/// stored public JWK: a row that was not sealed with our master key (someone with write
/// access to the database planting a key) is refused, not trusted.
fn jwks(
    records: &[SigningKeyRecord],
    master: &MasterKey,
    now: DateTime<Utc>,
    retired_visibility: TimeDelta,
) -> Result<Value, AuthorityError> {
    let mut keys = Vec::new();
    for record in records {
        let visible = match record.state {
            KeyState::Next | KeyState::Current => true,
            KeyState::Retired => {
                record
                    .retired_at
                    .is_some_and(|at| at + retired_visibility > now)
                    || record.tokens_live_until.is_some_and(|until| until > now)
            }
        };
        if visible {
            match open_record(master, record) {
                Ok(key) => keys.extend(key.public_jwk().cloned()),
                Err(e) => tracing::error!(kid = %record.kid, error = %e, "refusing a signing key"),
            }
        }
    }
    Ok(json!({ "keys": keys }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_the_same_master_key_and_kid() {
        let master = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let sealed = master.seal("kid-1", b"private");
        assert_eq!(master.open("kid-1", &sealed).unwrap(), b"private");
        assert!(master.open("kid-2", &sealed).is_err(), "kid is bound in");
        let other = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        assert!(other.open("kid-1", &sealed).is_err());
    }

    #[test]
    fn a_key_not_sealed_with_our_master_key_is_never_published() {
        let ours = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let theirs = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let record = |master: &MasterKey| {
            let (key, pkcs8) = SigningKey::generate(SigningAlgorithm::ES256).unwrap();
            SigningKeyRecord {
                kid: key.kid().to_owned(),
                algorithm: SigningAlgorithm::ES256,
                state: KeyState::Current,
                sealed_private_key: master.seal(key.kid(), &pkcs8),
                public_jwk: key.public_jwk().unwrap().to_string(),
                created_at: Utc::now(),
                activated_at: None,
                retired_at: None,
                tokens_live_until: None,
            }
        };
        let (good, planted) = (record(&ours), record(&theirs));
        let published = jwks(
            &[good.clone(), planted],
            &ours,
            Utc::now(),
            TimeDelta::hours(1),
        );
        let kids: Vec<&str> = published.as_ref().unwrap()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, vec![good.kid.as_str()]);
    }

    #[test]
    fn master_keys_must_be_32_bytes_of_base64url() {
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(MasterKey::from_base64(&b64(&[0u8; 16])).is_err());
        assert!(MasterKey::from_base64(&b64(&[7u8; 32])).is_ok());
    }

    #[test]
    fn every_asymmetric_algorithm_generates_reloads_and_publishes() {
        for alg in [
            SigningAlgorithm::ES256,
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::RS256,
        ] {
            let (key, der) = SigningKey::generate(alg).unwrap();
            let again = SigningKey::from_pkcs8(alg, Some(key.kid().to_owned()), &der).unwrap();
            assert_eq!(key.public_jwk(), again.public_jwk(), "{alg}");
            let jwk = key.public_jwk().unwrap();
            assert_eq!(jwk["alg"], alg.as_str());
            assert_eq!(jwk["kid"], key.kid());
            assert!(!key.sign(b"x.y").unwrap().is_empty());
        }
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
        });
        assert_eq!(
            thumbprint(&jwk),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
