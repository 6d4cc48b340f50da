//! Scopes: what a token may do. Every protected route declares one; roles map
//! to fixed scope sets; service clients get an explicit subset.

use std::collections::BTreeSet;
use std::fmt;

macro_rules! scopes {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// One permission carried in a token's `scope` claim.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Scope { $($variant),* }

        impl Scope {
            pub const ALL: &'static [Scope] = &[$(Scope::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Scope::$variant => $name),* }
            }

            pub fn parse(raw: &str) -> Option<Self> {
                match raw { $($name => Some(Scope::$variant),)* _ => None }
            }
        }
    };
}

scopes! {
    ConversationsRead => "conversations:read",
    ConversationsWrite => "conversations:write",
    RunsWrite => "runs:write",
    IntegrationsRead => "integrations:read",
    IntegrationsWrite => "integrations:write",
    IntegrationsUse => "integrations:use",
    FilesRead => "files:read",
    FilesWrite => "files:write",
    MetricsRead => "metrics:read",
    UsersRead => "users:read",
    AuditRead => "audit:read",
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes; serialized space-separated, as in OAuth 2.0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    pub fn intersection(&self, other: &Scopes) -> Scopes {
        Scopes(self.0.intersection(&other.0).copied().collect())
    }

    /// Parses a space-separated list; `Err` names the first unknown scope.
    pub fn parse(raw: &str) -> Result<Self, String> {
        raw.split_whitespace().map(|s| Scope::parse(s).ok_or_else(|| s.to_owned())).collect()
    }

    /// The scope strings, for storing in a `text[]` column.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(|s| s.as_str().to_owned()).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(" "))
    }
}

/// A user's role in their organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Self::Admin),
            "member" => Some(Self::Member),
            _ => None,
        }
    }

    /// The scopes a user of this role gets at login (docs/security.md has the table).
    pub fn scopes(self) -> Scopes {
        match self {
            Self::Admin => Scope::ALL.iter().copied().collect(),
            Self::Member => Scope::ALL
                .iter()
                .copied()
                .filter(|s| !matches!(s, Scope::MetricsRead | Scope::UsersRead | Scope::AuditRead))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let scopes = Scopes::parse("runs:write  conversations:read").unwrap_or_default();
        assert_eq!(scopes.to_string(), "conversations:read runs:write");
        assert_eq!(Scopes::parse("runs:write admin:*"), Err("admin:*".to_owned()));
        assert!(Scopes::parse("").is_ok_and(|s| s.is_empty()));
    }

    #[test]
    fn members_lack_the_administrative_scopes() {
        let member = Role::Member.scopes();
        assert!(member.contains(Scope::ConversationsWrite));
        assert!(!member.contains(Scope::AuditRead) && !member.contains(Scope::UsersRead));
        assert!(Role::Admin.scopes().contains(Scope::AuditRead));
    }
}
