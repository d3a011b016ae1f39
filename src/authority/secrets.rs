//! Generating, hashing and verifying client secrets.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, AtomicUsize, Ordering},
    mpsc,
};

use argon2::{
    Algorithm, Argon2, CustomizedPasswordHasher, Params, PasswordHash, PasswordHasher,
    PasswordVerifier, Version,
};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use super::{AuthorityError, Rule};
use crate::domain::ClientId;

/// Prefixes let leak scanners recognise Portcullis credentials.
pub const CLIENT_ID_PREFIX: &str = "pcc_";
pub const SECRET_PREFIX: &str = "pcs_";

/// Imported secrets come from other providers, so only bounds are enforced; the upper bound
/// also caps what an anonymous caller can make the server hash.
pub const SECRET_MIN_LEN: usize = 16;
pub const SECRET_MAX_LEN: usize = 512;

fn random_token(prefix: &str, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system CSPRNG is available");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(buf))
}

/// 256 bits from the CSPRNG.
pub fn generate_secret() -> SecretString {
    random_token(SECRET_PREFIX, 32).into()
}

/// How much of a generated secret is shown to tell it apart from its siblings: the prefix
/// and 8 characters (48 of its 256 bits).
const SHOWN_LEN: usize = SECRET_PREFIX.len() + 8;

/// The start of a generated secret, safe to show; `None` for any other (an imported secret
/// may be short, so its start may be much of it).
pub fn shown_prefix(secret: &str) -> Option<String> {
    let generated = secret.starts_with(SECRET_PREFIX) && secret.len() == SECRET_PREFIX.len() + 43;
    generated.then(|| secret[..SHOWN_LEN].to_owned())
}

pub fn generate_client_id() -> ClientId {
    ClientId::parse(&random_token(CLIENT_ID_PREFIX, 16)).expect("generated ids are valid")
}

/// RFC 6749 Appendix A.2: a secret is VSCHARs, %x20-7E, so spaces included.
pub fn check_secret_shape(secret: &str) -> Result<(), AuthorityError> {
    let ok = (SECRET_MIN_LEN..=SECRET_MAX_LEN).contains(&secret.len())
        && secret.bytes().all(|b| matches!(b, 0x20..=0x7e));
    if ok {
        Ok(())
    } else {
        Err(AuthorityError::invalid(
            "client_secret",
            Rule::VisibleAscii {
                min: SECRET_MIN_LEN,
                max: SECRET_MAX_LEN,
            },
        ))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Concurrent argon2 jobs; each occupies a blocking thread and `memory_kib` of RAM.
    pub concurrency: usize,
}

type Job = Box<dyn FnOnce(&Argon2<'static>) + Send>;

/// Jobs allowed to wait per worker: at ~17 ms each, 64 is about a second of work.
const QUEUE_PER_WORKER: usize = 64;

/// argon2id on a fixed set of `concurrency` dedicated threads, so a flood of wrong secrets
/// queues here instead of starving the async executor, and memory stays bounded: each
/// thread reuses its own ~19 MiB working area instead of every pooled thread keeping one.
pub struct SecretHasher {
    jobs: Mutex<mpsc::Sender<Job>>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    /// Verified against when the client is unknown, so that answer costs the same time.
    dummy_hash: String,
    /// This hasher's own algorithm, version and parameters, as a PHC string carries them.
    own: PasswordHash,
    /// argon2 computations done, for `portcullis_argon2_runs_total`.
    runs: AtomicU64,
}

impl SecretHasher {
    pub fn new(params: HashParams) -> Result<Self, AuthorityError> {
        let argon_params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(AuthorityError::internal)?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
        let own = argon
            .hash_password(generate_secret().expose_secret().as_bytes())
            .map_err(AuthorityError::internal)?;
        let dummy_hash = own.to_string();
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let waiting = Arc::new(AtomicUsize::new(0));
        for n in 0..params.concurrency.max(1) {
            let receiver = receiver.clone();
            let waiting = waiting.clone();
            let argon = argon.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking a job, never while hashing.
                        let job = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(job) = job else { return };
                        waiting.fetch_sub(1, Ordering::Relaxed);
                        job(&argon);
                    }
                })
                .map_err(AuthorityError::internal)?;
        }
        Ok(Self {
            jobs: Mutex::new(sender),
            waiting,
            max_waiting: QUEUE_PER_WORKER * params.concurrency.max(1),
            dummy_hash,
            own,
            runs: AtomicU64::new(0),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, AuthorityError> {
        if self.waiting.load(Ordering::Relaxed) >= self.max_waiting {
            // Shedding beats queueing past any client's timeout.
            tracing::warn!(event = "argon2.overloaded", waiting = self.max_waiting);
            return Err(AuthorityError::Unavailable);
        }
        let (done, result) = oneshot::channel();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Box::new(move |argon: &Argon2<'static>| {
                // A caller that gave up (timeout, disconnect) needs no answer.
                if !done.is_closed() {
                    let _ = done.send(job(argon));
                }
            }));
        if sent.is_err() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(AuthorityError::internal("the argon2 workers are gone"));
        }
        result.await.map_err(AuthorityError::internal)
    }

    /// argon2 computations done so far (hashes and verifications, dummy ones included).
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Jobs waiting for a worker right now.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A PHC string for `secret` with a fresh salt.
    pub async fn hash(&self, secret: &SecretString) -> Result<String, AuthorityError> {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let secret = secret.clone();
        self.run(move |argon| {
            argon
                .hash_password(secret.expose_secret().as_bytes())
                .map(|h| h.to_string())
        })
        .await?
        .map_err(AuthorityError::internal)
    }

    /// A PHC string for `secret` with the salt and parameters of a sibling, another live
    /// secret of the same client, the first of `siblings` hashed as this hasher hashes: a
    /// single argon2 run then checks a presented secret against all of them
    /// ([`Self::verify_any`]), so a client with several live secrets costs no more to fail
    /// against than one with one. The salt's job (no work shared between different
    /// clients) is intact. With no such sibling (none, or all hashed under older
    /// parameters) it gets a fresh salt, so parameter upgrades still land.
    pub async fn hash_beside(
        &self,
        secret: &SecretString,
        siblings: &[&str],
    ) -> Result<String, AuthorityError> {
        let salt = siblings.iter().find_map(|sibling| {
            PasswordHash::new(sibling)
                .ok()
                .filter(|sibling| same_function(sibling, &self.own))
                .and_then(|sibling| sibling.salt)
        });
        let Some(salt) = salt else {
            return self.hash(secret).await;
        };
        self.runs.fetch_add(1, Ordering::Relaxed);
        let secret = secret.clone();
        self.run(move |argon| {
            argon
                .hash_password_with_salt(secret.expose_secret().as_bytes(), &salt)
                .map(|h| h.to_string())
        })
        .await?
        .map_err(AuthorityError::internal)
    }

    /// Which of `hashes` (PHC strings of one client's live secrets) `secret` matches, if
    /// any. One argon2 run per distinct salt and parameters among them, whichever matches
    /// and wherever: secrets hashed [beside](Self::hash_beside) each other cost one run
    /// together. With no hashes (no such client) it runs against a dummy hash, so that
    /// answer costs what a wrong secret does.
    pub async fn verify_any(
        &self,
        secret: &str,
        hashes: &[&str],
    ) -> Result<Option<usize>, AuthorityError> {
        let hashes: Vec<Option<PasswordHash>> =
            hashes.iter().map(|h| PasswordHash::new(h).ok()).collect();
        let dummy_hash = self.dummy_hash.clone();
        let secret = SecretString::from(secret);
        let (matched, runs) = self
            .run(move |argon| {
                let secret = secret.expose_secret().as_bytes();
                match match_any(argon, secret, &hashes) {
                    // No client, or no hash argon2 could take: the dummy, so still one run.
                    (_, 0) => {
                        let _ = argon.verify_password(secret, dummy_hash.as_str());
                        (None, 1)
                    }
                    found => found,
                }
            })
            .await?;
        self.runs.fetch_add(runs, Ordering::Relaxed);
        Ok(matched)
    }
}

/// The same argon2 function: algorithm, version and parameters.
fn same_function(a: &PasswordHash, b: &PasswordHash) -> bool {
    a.algorithm == b.algorithm && a.version == b.version && a.params == b.params
}

/// Computes each distinct (function, salt) once and compares every hash in constant time,
/// without stopping at a match, so the work done says nothing about which one matched.
/// Returns the match and how many argon2 runs it took.
fn match_any(
    argon: &Argon2<'_>,
    secret: &[u8],
    hashes: &[Option<PasswordHash>],
) -> (Option<usize>, u64) {
    let mut computed: Vec<PasswordHash> = Vec::with_capacity(hashes.len());
    let mut matched = None;
    for (i, hash) in hashes.iter().enumerate() {
        let Some(hash) = hash else { continue };
        let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
            continue;
        };
        let done = computed
            .iter()
            .position(|c| same_function(c, hash) && c.salt == hash.salt);
        let output = match done {
            Some(j) => &computed[j],
            None => {
                let Ok(params) = Params::try_from(hash) else {
                    continue;
                };
                let Ok(output) = argon.hash_password_customized(
                    secret,
                    salt,
                    Some(hash.algorithm.as_str()),
                    hash.version,
                    params,
                ) else {
                    continue;
                };
                computed.push(output);
                &computed[computed.len() - 1]
            }
        };
        // `Output`'s equality is constant-time.
        if output.hash.as_ref() == Some(expected) && matched.is_none() {
            matched = Some(i);
        }
    }
    (matched, computed.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> SecretHasher {
        SecretHasher::new(HashParams {
            memory_kib: 8192,
            iterations: 1,
            parallelism: 1,
            concurrency: 2,
        })
        .unwrap()
    }

    #[test]
    fn generated_credentials_are_prefixed_and_long_enough() {
        let secret = generate_secret();
        let s = secret.expose_secret();
        assert!(s.starts_with(SECRET_PREFIX));
        // 32 bytes base64url without padding: 43 characters of 6 bits each.
        assert_eq!(s.len(), SECRET_PREFIX.len() + 43);
        assert_ne!(s, generate_secret().expose_secret());
        assert!(check_secret_shape(s).is_ok());
        assert!(generate_client_id().as_str().starts_with(CLIENT_ID_PREFIX));
        assert_eq!(shown_prefix(s).as_deref(), Some(&s[..12]));
        for imported in [
            "legacy-secret-from-another-provider",
            "pcs_short-but-prefixed",
        ] {
            assert_eq!(
                shown_prefix(imported),
                None,
                "{imported}: none of it is shown"
            );
        }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_and_verify() {
        let h = hasher();
        let secret = generate_secret();
        let phc = h.hash(&secret).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(!phc.contains(secret.expose_secret()));
        assert_eq!(
            h.verify_any(secret.expose_secret(), &[&phc]).await.unwrap(),
            Some(0)
        );
        assert_eq!(
            h.verify_any("pcs_wrong-wrong-wrong", &[&phc])
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn secrets_hashed_beside_each_other_share_one_run_and_stay_apart() {
        let h = hasher();
        let (old, new) = (generate_secret(), generate_secret());
        let old_phc = h.hash(&old).await.unwrap();
        let new_phc = h.hash_beside(&new, &[&old_phc]).await.unwrap();
        let salt = |phc: &str| PasswordHash::new(phc).unwrap().salt;
        assert_eq!(
            salt(&new_phc),
            salt(&old_phc),
            "one salt, so one run checks both"
        );
        assert_ne!(new_phc, old_phc);
        let both = [new_phc.as_str(), old_phc.as_str()];
        assert_eq!(
            h.verify_any(new.expose_secret(), &both).await.unwrap(),
            Some(0)
        );
        assert_eq!(
            h.verify_any(old.expose_secret(), &both).await.unwrap(),
            Some(1)
        );
        assert_eq!(
            h.verify_any("pcs_neither-of-the-two", &both).await.unwrap(),
            None
        );

        // One run for both, counted by what `match_any` computes.
        let argon = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 1, 1, None).unwrap(),
        );
        let parsed: Vec<_> = both.iter().map(|p| PasswordHash::new(p).ok()).collect();
        assert_eq!(
            match_any(&argon, old.expose_secret().as_bytes(), &parsed),
            (Some(1), 1)
        );
        assert_eq!(
            match_any(&argon, b"pcs_neither-of-the-two", &parsed),
            (None, 1)
        );
    }

    #[tokio::test]
    async fn a_sibling_from_other_parameters_gets_a_fresh_salt() {
        let h = hasher();
        let older = SecretHasher::new(HashParams {
            memory_kib: 8192,
            iterations: 2,
            parallelism: 1,
            concurrency: 1,
        })
        .unwrap();
        let old_phc = older.hash(&generate_secret()).await.unwrap();
        let new = generate_secret();
        let new_phc = h.hash_beside(&new, &[&old_phc]).await.unwrap();
        let parsed = PasswordHash::new(&new_phc).unwrap();
        assert_ne!(parsed.salt, PasswordHash::new(&old_phc).unwrap().salt);
        assert!(
            same_function(&parsed, &h.own),
            "the new secret gets today's parameters"
        );
        assert_eq!(
            h.verify_any(new.expose_secret(), &[&new_phc, &old_phc])
                .await
                .unwrap(),
            Some(0)
        );
    }

    #[test]
    fn imported_secrets_are_vschar_strings() {
        for ok in [
            "with spaces in it!",
            " leading and trailing ",
            "+%:~ every-symbol #",
        ] {
            assert!(check_secret_shape(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "tab\there-is-refused",
            "newline\nrefused-too",
            "caf\u{e9}-is-not-ascii!",
            "short",
        ] {
            assert!(check_secret_shape(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_hash_argon2_cannot_take_still_costs_one_run() {
        let h = hasher();
        // Parses as PHC, but m=1 KiB is below argon2's minimum: nothing can be computed.
        let unusable = "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
        assert!(PasswordHash::new(unusable).is_ok());
        let before = h.runs();
        assert_eq!(
            h.verify_any("pcs_anything-at-all", &[unusable])
                .await
                .unwrap(),
            None
        );
        assert_eq!(h.runs() - before, 1, "the dummy runs instead");
    }

    #[tokio::test]
    async fn unknown_clients_never_verify() {
        let h = hasher();
        assert_eq!(
            h.verify_any("anything-at-all-123", &[]).await.unwrap(),
            None
        );
    }
}
