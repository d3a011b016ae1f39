//! Generating, hashing and verifying client secrets.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
    mpsc,
};

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
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
        let dummy_hash = argon
            .hash_password(generate_secret().expose_secret().as_bytes())
            .map_err(AuthorityError::internal)?
            .to_string();
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

    /// Jobs waiting for a worker right now.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A PHC string for `secret` with a fresh salt.
    pub async fn hash(&self, secret: &SecretString) -> Result<String, AuthorityError> {
        let secret = secret.clone();
        self.run(move |argon| {
            argon
                .hash_password(secret.expose_secret().as_bytes())
                .map(|h| h.to_string())
        })
        .await?
        .map_err(AuthorityError::internal)
    }

    /// Checks `secret` against `phc`, or against a dummy hash when there is none so that
    /// "no such client" takes as long as "wrong secret". Always false without a hash.
    pub async fn verify(&self, secret: &str, phc: Option<&str>) -> Result<bool, AuthorityError> {
        let known = phc.is_some();
        let phc = phc.unwrap_or(&self.dummy_hash).to_owned();
        let secret = SecretString::from(secret);
        let matched = self
            .run(move |argon| {
                argon
                    .verify_password(secret.expose_secret().as_bytes(), phc.as_str())
                    .is_ok()
            })
            .await?;
        Ok(known && matched)
    }
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
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_and_verify() {
        let h = hasher();
        let secret = generate_secret();
        let phc = h.hash(&secret).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(!phc.contains(secret.expose_secret()));
        assert!(h.verify(secret.expose_secret(), Some(&phc)).await.unwrap());
        assert!(!h.verify("pcs_wrong-wrong-wrong", Some(&phc)).await.unwrap());
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
    async fn unknown_clients_never_verify() {
        let h = hasher();
        assert!(!h.verify("anything-at-all-123", None).await.unwrap());
    }
}
