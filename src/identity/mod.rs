//! Identity primitives: who is calling, and what they may do.
//!
//! Owns access tokens (HS256 JWTs, [`jwt`]) and the per-instance memory of
//! verified tokens ([`verified`]), the [`Caller`] a verified token becomes and
//! the [`Access`] a route requires ([`caller`]), scopes and roles ([`scope`]),
//! and passwords and client secrets (argon2id, [`password`]). A toolkit with
//! no HTTP in it: the guard that turns a request into a `Caller` sits with the
//! route table in [`crate::http`], and the routes that issue tokens (login,
//! refresh, OAuth client credentials) are the `auth` capability's. It never accepts a static
//! key, never fails open, and never logs a token, password or secret. The
//! model is in docs/security.md.

pub mod caller;
pub mod jwt;
pub mod password;
pub mod scope;
pub mod verified;

pub use caller::{Access, Caller};
pub use jwt::{AccessClaims, PrincipalKind, SessionRef, TokenKeys};
pub use scope::{Role, Scope, Scopes};
pub use verified::VerifiedTokens;

/// Lower-cased and trimmed; `None` if it cannot be an email address.
pub fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let plausible = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    plausible.then_some(email)
}

#[cfg(test)]
mod tests {
    use super::normalize_email;

    #[test]
    fn emails_normalize_case_insensitively() {
        assert_eq!(normalize_email("  Alice@Example.COM "), Some("alice@example.com".into()));
        assert_eq!(normalize_email("no-at-sign"), None);
        assert_eq!(normalize_email("a@b@c"), None);
        assert_eq!(normalize_email("a b@c"), None);
    }
}
