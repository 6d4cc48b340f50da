//! [`Access`] (what a route requires) and [`Caller`] (who passed the guard).
//! Only the guard ([`crate::http::guard`]) creates a `Caller`, from a verified token.

use uuid::Uuid;

use super::jwt::{PrincipalKind, SessionRef};
use super::scope::{Scope, Scopes};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No bearer token (health, login, refresh, logout, OAuth token endpoint).
    Public,
    /// Any valid access token.
    Authenticated,
    /// A valid access token carrying this scope.
    Scope(Scope),
}

/// The authenticated caller of a request: the guard ([`crate::http::guard`])
/// makes one from a verified token, and the runner one for an agent's token request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub kind: PrincipalKind,
    pub org: crate::ids::OrgId,
    pub scopes: Scopes,
    /// When the access token expires (unix seconds).
    pub expires_at: i64,
    /// What else ends the token's session early (its login session, its client secret).
    pub session: SessionRef,
}

impl Caller {
    /// `user:<id>` or `client:<id>`, as written in the audit log.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.id)
    }

    /// What a tenant transaction checks is still alive ([`crate::db::tenant::begin`]).
    pub fn principal(&self) -> crate::db::tenant::Principal {
        let SessionRef { sid, generation } = self.session;
        crate::db::tenant::Principal { kind: self.kind.as_str(), id: self.id, sid, generation }
    }
}
