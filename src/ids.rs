//! Typed ids: an organization's id cannot be passed where a run's is
//! expected. Each is a UUID underneath — the same bytes in SQL (`ToSql`/
//! `FromSql` transparent), in JSON (serde transparent) and in paths (`FromStr`;
//! [`crate::http::PathId`] answers 404 for one that does not parse). A leaf.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize, postgres_types::ToSql, postgres_types::FromSql,
        )]
        #[serde(transparent)]
        #[postgres(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The nil id: stands for "none known" where the same round trips
            /// must run either way (a login for an unknown email).
            pub const NIL: Self = Self(Uuid::nil());
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    )*};
}

ids! {
    /// An organization (tenant).
    OrgId,
    /// A user.
    UserId,
    /// A service client.
    ClientId,
    /// A conversation.
    ConversationId,
    /// A run.
    RunId,
    /// A question a run asked (`input_requests`).
    InputId,
    /// A command for a run (`run_commands`).
    CommandId,
    /// An OAuth integration.
    IntegrationId,
    /// An uploaded file.
    FileId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_display_and_serialize_as_their_uuid() {
        let uuid = Uuid::new_v4();
        let run: Result<RunId, _> = uuid.to_string().parse();
        assert_eq!(run, Ok(RunId(uuid)));
        let run = RunId(uuid);
        assert_eq!(run.to_string(), uuid.to_string());
        assert_eq!(serde_json::to_value(run).ok(), serde_json::to_value(uuid).ok());
        assert!("not-a-uuid".parse::<RunId>().is_err());
    }
}
