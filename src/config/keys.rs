//! The two process secrets: the JWT signing key and the at-rest encryption key.
//!
//! This module owns parsing (base64, standard or url-safe, padding optional),
//! the strength rules the startup check enforces, and `moat keygen`. It must
//! never print, log or `Debug`-format key material: the only thing about a key
//! that leaves this module is its fingerprint ([`SigningKey::key_id`]).

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use rand::TryRngCore as _;
use sha2::{Digest as _, Sha256};

/// Minimum decoded length of the signing key (HS256 wants at least 256 bits).
pub const SIGNING_KEY_MIN_BYTES: usize = 32;
/// Length `moat keygen signing` produces: 48 bytes is one 64-character line of base64.
pub const SIGNING_KEY_GENERATED_BYTES: usize = 48;
/// Exact decoded length of the AES-256-GCM-SIV key.
pub const ENCRYPTION_KEY_BYTES: usize = 32;
/// Random keys of 32+ bytes show ~30 distinct byte values; fewer than this is a pattern.
const MIN_DISTINCT_BYTES: usize = 16;

/// Known defaults and placeholders: every placeholder shipped in this repository
/// (`.env.example`, `docker-compose.yml`, docs) plus common ones. One per line;
/// compared case-insensitively against the raw value and, decoded, against the bytes.
const KNOWN_PLACEHOLDERS: &str = include_str!("known_placeholder_keys.txt");
/// Words that only appear in a key someone typed rather than generated.
const PLACEHOLDER_WORDS: &[&str] = &[
    "changeme",
    "change-me",
    "change_me",
    "replace",
    "placeholder",
    "example",
    "insecure",
    "notsecret",
    "not-secret",
    "your-",
    "your_",
];

/// Why a configured key cannot be used in production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFlaw {
    Missing,
    Undecodable,
    TooShort { len: usize },
    WrongLength { len: usize },
    Placeholder,
    LowEntropy { distinct: usize },
    Passphrase,
    SameAsSigningKey,
}

impl fmt::Display for KeyFlaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => write!(f, "is missing"),
            Self::Undecodable => write!(f, "is not valid base64"),
            Self::TooShort { len } => {
                write!(f, "decodes to {len} bytes; at least {SIGNING_KEY_MIN_BYTES} random bytes are required")
            }
            Self::WrongLength { len } => {
                write!(f, "decodes to {len} bytes; exactly {ENCRYPTION_KEY_BYTES} random bytes are required")
            }
            Self::Placeholder => write!(f, "is a known default or placeholder value"),
            Self::LowEntropy { distinct } => {
                write!(f, "is visibly low-entropy ({distinct} distinct byte values; random keys have about 30)")
            }
            Self::Passphrase => write!(f, "decodes to printable text: it is a passphrase, not random bytes"),
            Self::SameAsSigningKey => write!(f, "is the same as MOAT_SIGNING_KEY"),
        }
    }
}

/// HS256 key for every JWT Moat signs.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

/// AES-256-GCM-SIV key for secrets at rest.
#[derive(Clone)]
pub struct EncryptionKey([u8; ENCRYPTION_KEY_BYTES]);

impl SigningKey {
    /// Parses and judges a configured value. `Err` carries the flaw and, when the
    /// value decoded at all, the bytes (development mode may still use weak ones).
    pub fn parse(raw: &str) -> Result<Self, (KeyFlaw, Option<Self>)> {
        let bytes = decode(raw);
        let usable = bytes.clone().filter(|b| !b.is_empty()).map(Self);
        if is_placeholder(raw, bytes.as_deref()) {
            return Err((KeyFlaw::Placeholder, usable));
        }
        let bytes = bytes.ok_or((KeyFlaw::Undecodable, None))?;
        let flaw = if bytes.len() < SIGNING_KEY_MIN_BYTES {
            Some(KeyFlaw::TooShort { len: bytes.len() })
        } else {
            pattern_flaw(&bytes)
        };
        match flaw {
            Some(flaw) => Err((flaw, usable)),
            None => Ok(Self(bytes)),
        }
    }

    /// A fresh random key for this process only (development mode).
    pub fn ephemeral() -> Self {
        Self(random_bytes(SIGNING_KEY_GENERATED_BYTES))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Short public fingerprint: safe to log and to put in a JWT `kid`.
    pub fn key_id(&self) -> String {
        fingerprint(&self.0)
    }
}

impl EncryptionKey {
    /// Parses and judges a configured value; see [`SigningKey::parse`].
    pub fn parse(raw: &str, signing: Option<&SigningKey>) -> Result<Self, (KeyFlaw, Option<Self>)> {
        let bytes = decode(raw);
        let usable = bytes.as_deref().and_then(|b| <[u8; ENCRYPTION_KEY_BYTES]>::try_from(b).ok()).map(Self);
        if is_placeholder(raw, bytes.as_deref()) {
            return Err((KeyFlaw::Placeholder, usable));
        }
        let bytes = bytes.ok_or((KeyFlaw::Undecodable, None))?;
        let Some(key) = usable else {
            return Err((KeyFlaw::WrongLength { len: bytes.len() }, None));
        };
        let flaw = pattern_flaw(&bytes)
            .or_else(|| signing.is_some_and(|s| s.as_bytes() == bytes.as_slice()).then_some(KeyFlaw::SameAsSigningKey));
        match flaw {
            Some(flaw) => Err((flaw, Some(key))),
            None => Ok(key),
        }
    }

    /// A fresh random key for this process only (development mode).
    pub fn ephemeral() -> Self {
        let mut key = [0u8; ENCRYPTION_KEY_BYTES];
        key.copy_from_slice(&random_bytes(ENCRYPTION_KEY_BYTES));
        Self(key)
    }

    pub fn as_bytes(&self) -> &[u8; ENCRYPTION_KEY_BYTES] {
        &self.0
    }

    /// Short public fingerprint, stored beside every ciphertext as its key id.
    pub fn key_id(&self) -> String {
        fingerprint(&self.0)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(kid={}, redacted)", self.key_id())
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey(kid={}, redacted)", self.key_id())
    }
}

/// What `moat keygen signing` prints: standard base64 of 48 random bytes.
pub fn generate_signing() -> String {
    loop {
        let encoded = base64::engine::general_purpose::STANDARD.encode(random_bytes(SIGNING_KEY_GENERATED_BYTES));
        // A random key can in theory trip a placeholder-word rule; never print one that would.
        if SigningKey::parse(&encoded).is_ok() {
            return encoded;
        }
    }
}

/// What `moat keygen encryption` prints: standard base64 of exactly 32 random bytes.
pub fn generate_encryption() -> String {
    loop {
        let encoded = base64::engine::general_purpose::STANDARD.encode(random_bytes(ENCRYPTION_KEY_BYTES));
        if EncryptionKey::parse(&encoded, None).is_ok() {
            return encoded;
        }
    }
}

/// Decodes standard or url-safe base64, padding optional, surrounding whitespace ignored.
pub fn decode(raw: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let raw = raw.trim();
    [GeneralPurpose::new(&alphabet::STANDARD, LENIENT), GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT)]
        .iter()
        .find_map(|engine| engine.decode(raw).ok())
}

fn is_placeholder(raw: &str, bytes: Option<&[u8]>) -> bool {
    let lowered = raw.trim().to_ascii_lowercase();
    KNOWN_PLACEHOLDERS.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).any(|known| {
        known.eq_ignore_ascii_case(&lowered) || bytes.is_some_and(|b| decode(known).is_some_and(|k| k == b))
    }) || PLACEHOLDER_WORDS.iter().any(|w| lowered.contains(w))
}

fn pattern_flaw(bytes: &[u8]) -> Option<KeyFlaw> {
    let mut seen = [false; 256];
    bytes.iter().for_each(|b| seen[usize::from(*b)] = true);
    let distinct = seen.iter().filter(|s| **s).count();
    if distinct < MIN_DISTINCT_BYTES {
        return Some(KeyFlaw::LowEntropy { distinct });
    }
    // 32 random bytes are all printable ASCII with probability (95/256)^32 ≈ 1e-14.
    if bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Some(KeyFlaw::Passphrase);
    }
    None
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    #[allow(clippy::expect_used)] // no OS randomness means no safe key can exist: stop.
    rand::rngs::OsRng.try_fill_bytes(&mut buf).expect("the operating system's random number generator failed");
    buf
}

fn fingerprint(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    #[test]
    fn generated_keys_are_accepted_and_distinct() {
        let (a, b) = (generate_signing(), generate_signing());
        assert_ne!(a, b);
        assert_eq!(decode(&a).map(|k| k.len()), Some(SIGNING_KEY_GENERATED_BYTES));
        let e = generate_encryption();
        assert_eq!(decode(&e).map(|k| k.len()), Some(ENCRYPTION_KEY_BYTES));
        assert!(EncryptionKey::parse(&e, None).is_ok());
    }

    #[test]
    fn accepts_url_safe_and_unpadded_forms() {
        let bytes = random_bytes(33);
        let url = URL_SAFE_NO_PAD.encode(&bytes);
        let key = SigningKey::parse(&url).map_err(|e| e.0);
        assert_eq!(key.map(|k| k.0), Ok(bytes.clone()));
        let padded = format!("  {}\n", STANDARD.encode(&bytes));
        assert!(SigningKey::parse(&padded).is_ok());
    }

    #[test]
    fn refuses_weak_signing_keys() {
        let flaw = |raw: &str| SigningKey::parse(raw).err().map(|e| e.0);
        assert_eq!(flaw("change-me-in-production"), Some(KeyFlaw::Placeholder));
        assert_eq!(flaw("CHANGEME"), Some(KeyFlaw::Placeholder));
        assert_eq!(flaw("secret"), Some(KeyFlaw::Placeholder));
        assert_eq!(flaw("not base64 at all!"), Some(KeyFlaw::Undecodable));
        assert_eq!(flaw(&STANDARD.encode(random_bytes(31))), Some(KeyFlaw::TooShort { len: 31 }));
        assert_eq!(flaw(&STANDARD.encode([7u8; 64])), Some(KeyFlaw::LowEntropy { distinct: 1 }));
        let text = STANDARD.encode("this is my very own secret signing key!!");
        assert_eq!(flaw(&text), Some(KeyFlaw::Passphrase));
    }

    #[test]
    fn refuses_bad_encryption_keys() {
        let flaw = |raw: &str, s: Option<&SigningKey>| EncryptionKey::parse(raw, s).err().map(|e| e.0);
        assert_eq!(flaw(&STANDARD.encode(random_bytes(31)), None), Some(KeyFlaw::WrongLength { len: 31 }));
        assert_eq!(flaw(&STANDARD.encode(random_bytes(48)), None), Some(KeyFlaw::WrongLength { len: 48 }));
        let shared = STANDARD.encode(random_bytes(32));
        let signing = SigningKey::parse(&shared).ok();
        assert_eq!(flaw(&shared, signing.as_ref()), Some(KeyFlaw::SameAsSigningKey));
    }

    #[test]
    fn debug_never_shows_material() {
        let raw = generate_signing();
        let key = SigningKey::parse(&raw).ok();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&raw[..16]), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
