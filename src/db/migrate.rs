//! The migrations in `migrations/`, embedded in the binary, and how they are applied.
//!
//! Only `moat migrate` changes the schema: `serve` never migrates implicitly; it
//! compares the database's history with the embedded list and refuses on any
//! difference (see [`status`]).

use std::collections::BTreeMap;

use super::{DatabaseSettings, store};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Serializes concurrent `moat migrate` runs (session-level: migrations need a direct connection).
const MIGRATE_LOCK_KEY: i64 = 0x6d6f_6174_6d69_6772; // "moatmigr"

/// The migrations compiled into this binary: `(version, "V{n}__{name}", checksum)`.
pub fn embedded() -> Vec<(i32, String, u64)> {
    embedded::migrations::runner().get_migrations().iter().map(|m| (m.version(), m.to_string(), m.checksum())).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: super::ConnectError },
    #[error("{}", super::describe_error(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Refinery(#[from] refinery::Error),
}

/// Applies every pending migration; returns the names applied (empty: already current).
pub async fn migrate(settings: &DatabaseSettings) -> Result<Vec<String>, MigrateError> {
    let mut client =
        settings.connect().await.map_err(|source| MigrateError::Connect { target: settings.describe(), source })?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK_KEY]).await?;
    let result =
        embedded::migrations::runner().set_abort_divergent(true).set_abort_missing(true).run_async(&mut client).await;
    // The lock also ends with the session; unlocking is for tidiness.
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK_KEY]).await?;
    Ok(result?.applied_migrations().iter().map(ToString::to_string).collect())
}

/// How the database's schema compares with the binary's migrations.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Embedded but not applied.
    pub pending: Vec<String>,
    /// Applied with the same version but a different name or content.
    pub diverged: Vec<String>,
    /// Applied but unknown to this binary (the database is newer).
    pub unknown: Vec<String>,
    /// The history exists but the current role may not read it (not in `moat_runtime`).
    pub unreadable: bool,
}

impl Status {
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.diverged.is_empty() && self.unknown.is_empty() && !self.unreadable
    }
}

/// Compares the history table with the embedded migrations.
pub async fn status(client: &tokio_postgres::Client) -> Result<Status, tokio_postgres::Error> {
    let embedded = embedded();
    let history = client.query_one(store::HISTORY_EXISTS, &[]).await?;
    if !history.get::<_, bool>("exists") {
        let pending = embedded.into_iter().map(|(_, name, _)| name).collect();
        return Ok(Status { pending, ..Status::default() });
    }
    if history.get::<_, Option<bool>>("readable") != Some(true) {
        return Ok(Status { unreadable: true, ..Status::default() });
    }
    let mut applied: BTreeMap<i32, (String, String)> = BTreeMap::new();
    for row in client.query(store::APPLIED_MIGRATIONS, &[]).await? {
        let version: i32 = row.get(0);
        let name: String = row.get(1);
        applied.insert(version, (format!("V{version}__{name}"), row.get(2)));
    }
    let mut status = Status::default();
    for (version, name, checksum) in &embedded {
        match applied.remove(version) {
            None => status.pending.push(name.clone()),
            Some((applied_name, applied_sum)) => {
                if applied_name != *name || applied_sum != checksum.to_string() {
                    status.diverged.push(name.clone());
                }
            }
        }
    }
    status.unknown = applied.into_values().map(|(name, _)| name).collect();
    Ok(status)
}
