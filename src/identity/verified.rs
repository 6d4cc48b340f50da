//! Access tokens this instance has already verified, remembered for their
//! remaining lifetime so a client's next request skips HS256 verification and
//! claim parsing (measured: about a tenth of a typical read's time through the
//! whole stack, docs/performance.md).
//!
//! Why this is as strict as verifying every time:
//! - The key is the SHA-256 of the **whole** token, so only the byte-identical
//!   token hits; any change to header, claims or signature is a miss and goes
//!   through full verification. The token itself is not kept.
//! - Only tokens that passed full verification are inserted, so an attacker
//!   cannot fill the cache with anything but tokens Moat signed.
//! - A hit is used only while the token has not expired (`exp` strictly in
//!   the future, no leeway); afterwards it is verified again — and refused.
//! - What verification depends on does not change while the process runs:
//!   the keys and the issuer are fixed at startup. Revocation is not a
//!   property of the token but of its session (principal enabled, login
//!   session not revoked, client secret not rotated), checked in the database
//!   by every protected route, which a remembered token does not skip.
//!
//! Per-instance by nature (docs/caches.md): each instance verifies the same
//! tokens with the same keys; nothing is shared or needs to be.

use std::sync::Arc;

use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use super::caller::Caller;
use super::jwt::{API_AUDIENCE, AccessClaims, SessionRef, TokenError, TokenKeys};
use super::scope::Scopes;
use crate::ids::OrgId;

/// Tokens remembered at most (≈ 150 bytes each, so about 1.5 MiB). Beyond it
/// the least recently used are forgotten and simply verified again.
const CAPACITY: usize = 10_000;

/// Verifies API access tokens, remembering the ones that passed.
pub struct VerifiedTokens {
    keys: Arc<TokenKeys>,
    verified: Cache<[u8; 32], Caller>,
}

impl std::fmt::Debug for VerifiedTokens {
    // Never prints cache contents (callers' ids are not secrets, but there is no need).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens").field("remembered", &self.verified.len()).finish_non_exhaustive()
    }
}

impl VerifiedTokens {
    pub fn new(keys: Arc<TokenKeys>) -> Self {
        Self::with_capacity(keys, CAPACITY)
    }

    fn with_capacity(keys: Arc<TokenKeys>, capacity: usize) -> Self {
        Self { keys, verified: Cache::new(capacity) }
    }

    /// The caller an API access token names, or why it is refused.
    pub fn caller(&self, token: &str) -> Result<Caller, TokenError> {
        self.caller_at(token, time::OffsetDateTime::now_utc().unix_timestamp())
    }

    fn caller_at(&self, token: &str, now: i64) -> Result<Caller, TokenError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(caller) = self.verified.get(&key) {
            if caller.expires_at > now {
                return Ok(caller);
            }
            self.verified.remove(&key);
        }
        let claims = self.keys.verify::<AccessClaims>(token, API_AUDIENCE)?;
        let scopes = Scopes::parse(&claims.scope).map_err(|_| TokenError::Invalid("unknown scope".into()))?;
        let session = SessionRef { sid: claims.sid, generation: claims.secret_gen };
        let caller = Caller {
            id: claims.sub,
            kind: claims.kind,
            org: OrgId(claims.org),
            scopes,
            expires_at: claims.exp,
            session,
        };
        if caller.expires_at > now {
            self.verified.insert(key, caller.clone());
        }
        Ok(caller)
    }

    /// Tokens currently remembered (for tests).
    pub fn len(&self) -> usize {
        self.verified.len()
    }

    pub fn is_empty(&self) -> bool {
        self.verified.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::config::SigningKey;
    use crate::identity::{PrincipalKind, Role};

    fn keys() -> Arc<TokenKeys> {
        Arc::new(TokenKeys::new(SigningKey::ephemeral(), Vec::new(), "https://moat.example.com".into()))
    }

    fn token(keys: &TokenKeys, ttl: Duration) -> String {
        let scopes = Role::Member.scopes();
        keys.mint_access(
            ttl,
            PrincipalKind::User,
            Uuid::new_v4(),
            crate::ids::OrgId(Uuid::new_v4()),
            &scopes,
            SessionRef::default(),
        )
        .map(|t| t.access_token)
        .unwrap_or_default()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn a_verified_token_is_remembered_and_gives_the_same_caller() {
        let verified = VerifiedTokens::new(keys());
        let token = token(&verified.keys, Duration::from_secs(600));
        let first = verified.caller(&token);
        assert!(first.is_ok());
        assert_eq!(verified.len(), 1);
        let second = verified.caller(&token);
        assert_eq!(first.map(|c| (c.id, c.org, c.scopes)), second.map(|c| (c.id, c.org, c.scopes)));
    }

    #[test]
    fn a_remembered_token_altered_in_any_part_is_refused() {
        let verified = VerifiedTokens::new(keys());
        let token = token(&verified.keys, Duration::from_secs(600));
        assert!(verified.caller(&token).is_ok());
        let (header, rest) = token.split_once('.').unwrap_or_default();
        let (claims, signature) = rest.split_once('.').unwrap_or_default();
        let flip = |part: &str| {
            let mut bytes = part.as_bytes().to_vec();
            bytes[4] = if bytes[4] == b'A' { b'B' } else { b'A' };
            String::from_utf8(bytes).unwrap_or_default()
        };
        for altered in [
            format!("{}.{claims}.{signature}", flip(header)),
            format!("{header}.{}.{signature}", flip(claims)),
            format!("{header}.{claims}.{}", flip(signature)),
            format!("{token}A"),
            format!("{header}.{claims}."),
        ] {
            assert!(verified.caller(&altered).is_err(), "{altered}");
        }
        assert_eq!(verified.len(), 1, "refused tokens are never remembered");
    }

    fn signed(keys: &TokenKeys, exp: i64) -> String {
        let claims = AccessClaims {
            iss: keys.issuer().to_owned(),
            aud: API_AUDIENCE.to_owned(),
            sub: Uuid::new_v4(),
            org: Uuid::new_v4(),
            scope: Role::Member.scopes().to_string(),
            iat: exp - 900,
            exp,
            jti: Uuid::new_v4(),
            kind: PrincipalKind::User,
            sid: None,
            secret_gen: None,
        };
        keys.sign(&claims).unwrap_or_default()
    }

    #[test]
    fn a_remembered_token_is_not_used_once_expired() {
        let verified = VerifiedTokens::new(keys());
        let expired = signed(&verified.keys, now() - 60);
        assert_eq!(verified.caller(&expired).map(|_| ()), Err(TokenError::Expired));
        assert!(verified.is_empty(), "a refused token is not remembered");
        // As if remembered while it was still valid: the stale entry is dropped and verification refuses.
        let key: [u8; 32] = Sha256::digest(expired.as_bytes()).into();
        let caller = Caller {
            id: Uuid::new_v4(),
            kind: PrincipalKind::User,
            org: crate::ids::OrgId(Uuid::new_v4()),
            scopes: Role::Admin.scopes(),
            expires_at: now() - 60,
            session: SessionRef::default(),
        };
        verified.verified.insert(key, caller);
        assert_eq!(verified.caller(&expired).map(|_| ()), Err(TokenError::Expired));
        assert!(verified.is_empty());
        // Expired but within verification's leeway: accepted, never remembered.
        assert!(verified.caller(&signed(&verified.keys, now() - 2)).is_ok());
        assert!(verified.is_empty());
        // A hit is used only strictly before `exp`.
        let valid = token(&verified.keys, Duration::from_secs(60));
        let exp = verified.caller(&valid).map(|c| c.expires_at).unwrap_or_default();
        assert!(verified.caller_at(&valid, exp).is_ok(), "verification (real clock) still accepts it");
        assert!(verified.is_empty(), "the hit at `exp` was dropped, and not remembered again");
    }

    #[test]
    fn tokens_for_another_audience_or_key_are_refused_and_not_remembered() {
        let verified = VerifiedTokens::new(keys());
        let other = token(&keys(), Duration::from_secs(600));
        assert_eq!(verified.caller(&other).map(|_| ()), Err(TokenError::UnknownKey));
        assert!(verified.is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let verified = VerifiedTokens::with_capacity(keys(), 100);
        for _ in 0..1_000 {
            assert!(verified.caller(&token(&verified.keys, Duration::from_secs(600))).is_ok());
        }
        assert!(verified.len() <= 100, "{}", verified.len());
    }
}
