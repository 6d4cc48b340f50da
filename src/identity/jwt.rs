//! JSON Web Tokens: HS256 only, signed with `MOAT_SIGNING_KEY`, verified with
//! it or a key in `MOAT_SIGNING_KEYS_PREVIOUS` chosen by the header's `kid`.
//!
//! The algorithm is pinned: `alg: none`, RS/ES and every other algorithm are
//! refused before any key is consulted. `iss`, `aud` and `exp` are always
//! validated. Token material is never logged.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::scope::Scopes;
use crate::config::SigningKey;

/// Audience of access tokens for the HTTP API.
pub const API_AUDIENCE: &str = "moat:api";
/// Longest token accepted (a Moat token is a few hundred bytes).
const MAX_TOKEN_LEN: usize = 4096;
/// Clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 5;

/// Why a token was refused (logged at debug; the client only learns "invalid").
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token uses an algorithm other than HS256")]
    Algorithm,
    #[error("the token names no key or one Moat does not have")]
    UnknownKey,
    #[error("the token is expired")]
    Expired,
    #[error("the token failed verification ({0})")]
    Invalid(String),
}

/// The keys that sign and verify tokens, and the issuer they name.
#[derive(Clone, Debug)]
pub struct TokenKeys {
    current: SigningKey,
    previous: Vec<SigningKey>,
    issuer: String,
}

impl TokenKeys {
    pub fn new(current: SigningKey, previous: Vec<SigningKey>, issuer: String) -> Self {
        Self { current, previous, issuer }
    }

    /// `iss` of every token: the public origin.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs `claims` with the current key; the header carries its `kid`.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.key_id());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(self.current.as_bytes()))
    }

    /// Verifies signature, algorithm, `kid`, `iss`, `aud` and `exp`.
    pub fn verify<C: DeserializeOwned>(&self, token: &str, audience: &str) -> Result<C, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::Json(_) => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.key_id() == kid)
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = LEEWAY_SECS;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<C>(token, &DecodingKey::from_secret(key.as_bytes()), &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
                other => TokenError::Invalid(format!("{other:?}")),
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    User,
    Client,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Client => "client",
        }
    }
}

/// What a token's session is, besides its principal: what revokes it early
/// (checked by `moat_session_active` in every tenant transaction).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionRef {
    /// A user's refresh family (login session): revoked by logout, reuse, a password reset.
    pub sid: Option<Uuid>,
    /// A service client's secret generation: a rotation ends tokens minted before it.
    pub generation: Option<i32>,
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub org: Uuid,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    pub kind: PrincipalKind,
    /// The user's session (refresh family), for tokens minted at login or refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    /// The client's secret generation, for client-credentials tokens.
    #[serde(default, rename = "sgen", skip_serializing_if = "Option::is_none")]
    pub secret_gen: Option<i32>,
}

/// A freshly minted access token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccessToken {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    pub expires_in: u64,
    /// Echoed for OAuth clients (RFC 6749 §5.1); users learn theirs from `/v1/me`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl TokenKeys {
    /// Mints an access token for the API audience.
    pub fn mint_access(
        &self,
        ttl: Duration,
        kind: PrincipalKind,
        id: Uuid,
        org: crate::ids::OrgId,
        scopes: &Scopes,
        session: SessionRef,
    ) -> Result<AccessToken, jsonwebtoken::errors::Error> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: API_AUDIENCE.to_owned(),
            sub: id,
            org: org.0,
            scope: scopes.to_string(),
            iat: now,
            exp: now.saturating_add(ttl_secs),
            jti: Uuid::new_v4(),
            kind,
            sid: session.sid,
            secret_gen: session.generation,
        };
        Ok(AccessToken {
            access_token: self.sign(&claims)?,
            token_type: "Bearer",
            expires_in: ttl.as_secs(),
            scope: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
    struct Claims {
        iss: String,
        aud: String,
        sub: String,
        exp: i64,
    }

    fn keys() -> TokenKeys {
        TokenKeys::new(SigningKey::ephemeral(), Vec::new(), "https://moat.example.com".into())
    }

    fn claims(keys: &TokenKeys, aud: &str, exp_offset: i64) -> Claims {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Claims { iss: keys.issuer().into(), aud: aud.into(), sub: "u".into(), exp: now + exp_offset }
    }

    #[test]
    fn signs_and_verifies_and_checks_audience_and_expiry() {
        let keys = keys();
        let token = keys.sign(&claims(&keys, API_AUDIENCE, 60)).unwrap_or_default();
        assert!(keys.verify::<Claims>(&token, API_AUDIENCE).is_ok());
        assert!(matches!(keys.verify::<Claims>(&token, "moat:ws"), Err(TokenError::Invalid(_))));
        let expired = keys.sign(&claims(&keys, API_AUDIENCE, -60)).unwrap_or_default();
        assert_eq!(keys.verify::<Claims>(&expired, API_AUDIENCE), Err(TokenError::Expired));
    }

    #[test]
    fn previous_keys_verify_and_unknown_keys_do_not() {
        let old = keys();
        let token = old.sign(&claims(&old, API_AUDIENCE, 60)).unwrap_or_default();
        let rotated = TokenKeys::new(SigningKey::ephemeral(), vec![old.current.clone()], old.issuer.clone());
        assert!(rotated.verify::<Claims>(&token, API_AUDIENCE).is_ok());
        assert_eq!(keys().verify::<Claims>(&token, API_AUDIENCE), Err(TokenError::UnknownKey));
    }
}
