//! Secrets at rest: AES-256-GCM-SIV under `MOAT_ENCRYPTION_KEY`.
//!
//! Owns the one sealed format every stored secret uses. Each seal draws a
//! fresh random nonce and binds the ciphertext to associated data naming its
//! row and field, so a ciphertext copied to another row or field does not
//! open. The key id travels with the ciphertext, so a key rotation can tell
//! which key opens it. This module never logs or formats plaintext or keys.
//!
//! Layout: `version (1 byte) | key id (16 ASCII hex) | nonce (12) | ciphertext+tag`.

use aes_gcm_siv::aead::{Aead, Generate as _, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};

use crate::config::EncryptionKey;

const VERSION: u8 = 1;
const KID_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + KID_LEN + NONCE_LEN;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the sealed value is malformed")]
    Malformed,
    /// The key id is kept for callers that must act on it, but never displayed.
    #[error("the sealed value was made with a key Moat does not have")]
    UnknownKey(String),
    #[error("the sealed value does not open: wrong key, wrong associated data, or tampered")]
    Tampered,
    #[error("the system random number generator failed")]
    Random,
}

/// Seals with the current key; opens with the current or a previous one.
#[derive(Clone, Debug)]
pub struct Sealer {
    current: EncryptionKey,
    previous: Vec<EncryptionKey>,
}

impl Sealer {
    pub fn new(current: EncryptionKey, previous: Vec<EncryptionKey>) -> Self {
        Self { current, previous }
    }

    /// Id of the key new seals use.
    pub fn key_id(&self) -> String {
        self.current.key_id()
    }

    /// Encrypts `plaintext` bound to `aad` (e.g. `b"refresh_tokens.sealed_token:<id>"`).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let cipher = cipher(&self.current);
        let nonce = Nonce::try_generate().map_err(|_| SealError::Random)?;
        let ciphertext = cipher.encrypt(&nonce, Payload { msg: plaintext, aad }).map_err(|_| SealError::Tampered)?;
        let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(self.current.key_id().as_bytes());
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts a value sealed with `aad`; fails if anything was changed.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < HEADER_LEN + 16 || sealed[0] != VERSION {
            return Err(SealError::Malformed);
        }
        let kid = std::str::from_utf8(&sealed[1..=KID_LEN]).map_err(|_| SealError::Malformed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.key_id() == kid)
            .ok_or_else(|| SealError::UnknownKey(kid.to_owned()))?;
        let nonce = Nonce::try_from(&sealed[1 + KID_LEN..HEADER_LEN]).map_err(|_| SealError::Malformed)?;
        cipher(key).decrypt(&nonce, Payload { msg: &sealed[HEADER_LEN..], aad }).map_err(|_| SealError::Tampered)
    }

    /// The key id of a sealed value, without opening it.
    pub fn key_id_of(sealed: &[u8]) -> Option<&str> {
        sealed.get(1..=KID_LEN).and_then(|kid| std::str::from_utf8(kid).ok())
    }
}

fn cipher(key: &EncryptionKey) -> Aes256GcmSiv {
    Aes256GcmSiv::new(key.as_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EncryptionKey {
        EncryptionKey::ephemeral()
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let sealer = Sealer::new(key(), Vec::new());
        let (a, b) = (sealer.seal(b"token", b"row:1"), sealer.seal(b"token", b"row:1"));
        assert!(a.is_ok() && b.is_ok());
        assert_ne!(a, b, "two seals of the same plaintext must differ");
        assert_eq!(sealer.open(&a.unwrap_or_default(), b"row:1"), Ok(b"token".to_vec()));
    }

    #[test]
    fn other_aad_key_or_tampering_fails() {
        let sealer = Sealer::new(key(), Vec::new());
        let sealed = sealer.seal(b"token", b"row:1").unwrap_or_default();
        assert_eq!(sealer.open(&sealed, b"row:2"), Err(SealError::Tampered));
        let mut flipped = sealed.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        assert_eq!(sealer.open(&flipped, b"row:1"), Err(SealError::Tampered));
        let stranger = Sealer::new(key(), Vec::new());
        assert!(matches!(stranger.open(&sealed, b"row:1"), Err(SealError::UnknownKey(_))));
        assert_eq!(sealer.open(&sealed[..10], b"row:1"), Err(SealError::Malformed));
    }

    #[test]
    fn previous_keys_still_open() {
        let old = key();
        let sealed = Sealer::new(old.clone(), Vec::new()).seal(b"token", b"a").unwrap_or_default();
        let rotated = Sealer::new(key(), vec![old.clone()]);
        assert_eq!(rotated.open(&sealed, b"a"), Ok(b"token".to_vec()));
        assert_eq!(Sealer::key_id_of(&sealed), Some(old.key_id().as_str()));
    }
}
