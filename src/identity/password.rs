//! Passwords and client secrets: argon2id (OWASP parameters: 19 MiB, t=2, p=1),
//! always computed on the blocking pool so a login never stalls the runtime.
//!
//! Verification against a missing account uses [`Hasher::dummy`], a real hash
//! of a random password made at startup, so an unknown email costs the same
//! time as a wrong password.

use std::sync::Arc;

use tokio::sync::Semaphore;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use base64::Engine as _;
use rand::TryRngCore as _;

/// Longest password or secret accepted (argon2 cost does not grow with it, but
/// bounding input is cheap insurance).
pub const MAX_LEN: usize = 1024;
/// Shortest password `moat admin create-user` accepts.
pub const MIN_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the hashing task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Verifies passwords and secrets with bounded concurrency; cheap to clone.
///
/// Each argon2 run takes 19 MiB and a core for tens of milliseconds: a flood
/// of logins waits for a permit instead of exhausting memory and the
/// blocking pool.
#[derive(Clone)]
pub struct Hasher {
    dummy: Arc<str>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher(argon2id)")
    }
}

impl Hasher {
    /// Prepares the dummy hash (one argon2 run on the blocking pool).
    pub async fn new() -> Result<Self, HashError> {
        let dummy = hash(random_secret(32)).await?;
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Ok(Self { dummy: dummy.into(), permits: Arc::new(Semaphore::new(cores * 2)) })
    }

    /// Whether `secret` matches `phc`. A malformed stored hash never matches.
    pub async fn verify(&self, secret: String, phc: String) -> Result<bool, HashError> {
        let _permit = self.permits.acquire().await.map_err(|e| HashError::Hash(e.to_string()))?;
        verify(secret, phc).await
    }

    /// A hash to verify against when there is no account, so timing matches.
    pub fn dummy(&self) -> &str {
        &self.dummy
    }
}

/// argon2id PHC string of `secret` with a fresh salt.
pub async fn hash(secret: String) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(secret.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| HashError::Hash(e.to_string()))
    })
    .await?
}

/// Whether `secret` matches `phc`, without the concurrency bound (tests, CLI).
pub async fn verify(secret: String, phc: String) -> Result<bool, HashError> {
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return false;
        };
        Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok()
    })
    .await
    .map_err(HashError::from)
}

/// `len` random bytes, base64url without padding (passwords, client secrets, refresh tokens).
pub fn random_secret(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    fill_random(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Fills `bytes` from the operating system's random number generator.
pub fn fill_random(bytes: &mut [u8]) {
    #[allow(clippy::expect_used)] // no OS randomness means no safe secret can exist: stop.
    rand::rngs::OsRng.try_fill_bytes(bytes).expect("the operating system's random number generator failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let a = hash("correct horse battery".into()).await.unwrap_or_default();
        let b = hash("correct horse battery".into()).await.unwrap_or_default();
        assert!(a.starts_with("$argon2id$") && a != b, "salted: {a} {b}");
        assert!(verify("correct horse battery".into(), a.clone()).await.unwrap_or(false));
        assert!(!verify("wrong".into(), a).await.unwrap_or(true));
        assert!(!verify("x".into(), "not a hash".into()).await.unwrap_or(true));
    }
}
