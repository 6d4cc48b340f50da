//! PostgreSQL: connection settings, the pool, migrations and the startup checks.
//!
//! Owns how Moat connects (TLS always verified when used), the embedded
//! migrations ([`migrate`]), the database half of the startup checks
//! ([`checks`]), tenant transactions ([`tenant`]), the one classification of
//! database errors ([`DbError`]) and the one `statements!`
//! macro every store registers its SQL with. It never logs a connection string (it may hold a password).

pub mod checks;
mod error;
pub mod listen;
pub mod migrate;
pub mod pool;
pub mod store;
pub mod tenant;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};

pub use error::DbError;
pub use pool::{Client, Pool, Pooler};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before failing.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// A parsed `DATABASE_URL`. `Debug` and [`DatabaseSettings::describe`] never show the password.
#[derive(Clone)]
pub struct DatabaseSettings {
    pg: tokio_postgres::Config,
    /// libpq's `sslrootcert`: trust only these roots instead of the system's.
    ca_file: Option<PathBuf>,
    /// `MOAT_DATABASE_POOLER`: what sits between Moat and the server.
    pooler: Pooler,
}

impl DatabaseSettings {
    /// Parses a URL or key=value connection string. libpq's `sslmode=verify-ca|verify-full`
    /// and `sslrootcert=PATH|system` are accepted (rustls always verifies the certificate and
    /// host name, so every TLS mode is at least `verify-full`).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (rewritten, ca_file) = libpq_compat(raw);
        let mut pg: tokio_postgres::Config = rewritten
            .parse()
            .map_err(|e: tokio_postgres::Error| format!("not a PostgreSQL connection string ({e})"))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("moat");
        }
        if pg.get_hosts().is_empty() {
            return Err("no host given".into());
        }
        Ok(Self { pg, ca_file, pooler: Pooler::None })
    }

    /// The same settings, reached through `pooler`.
    #[must_use]
    pub fn with_pooler(mut self, pooler: Pooler) -> Self {
        self.pooler = pooler;
        self
    }

    pub fn pooler(&self) -> Pooler {
        self.pooler
    }

    /// `user@host:port/dbname`, for messages.
    pub fn describe(&self) -> String {
        let host = match self.pg.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "?".into(),
        };
        let port = self.pg.get_ports().first().copied().unwrap_or(5432);
        let user = self.pg.get_user().unwrap_or("?");
        let db = self.pg.get_dbname().unwrap_or(user);
        format!("{user}@{host}:{port}/{db}")
    }

    /// Whether TLS is mandatory for this connection (`sslmode=require` or stricter).
    pub fn tls_required(&self) -> bool {
        self.pg.get_ssl_mode() == SslMode::Require
    }

    /// Whether the connection may travel unencrypted over a network: TLS not
    /// required and some host is neither a unix socket nor loopback.
    pub fn may_be_plaintext_over_network(&self) -> bool {
        let remote = self.pg.get_hosts().iter().any(|host| match host {
            Host::Unix(_) => false,
            Host::Tcp(name) => {
                name != "localhost" && !name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
        });
        remote && !self.tls_required()
    }

    pub(crate) fn connector(&self) -> Result<MakeRustlsConnect, String> {
        crate::tls::client_config(self.ca_file.as_deref()).map(MakeRustlsConnect::new)
    }

    /// One dedicated connection (checks, migrations, and later LISTEN).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, ConnectError> {
        let connector = self.connector().map_err(ConnectError::Tls)?;
        let (client, connection) = self.pg.connect(connector).await.map_err(ConnectError::Postgres)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "database connection closed with an error");
            }
        });
        Ok(client)
    }

    /// The shared pool used by request handlers.
    pub fn pool(&self, max_size: usize) -> Result<Pool, String> {
        let manager = Manager::from_config(
            self.pg.clone(),
            self.connector()?,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        deadpool_postgres::Pool::builder(manager)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map(|pool| Pool::new(pool, self.pooler))
            .map_err(|e| format!("cannot build the database pool ({e})"))
    }
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseSettings({}, password redacted)", self.describe())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("database TLS setup failed: {0}")]
    Tls(String),
    #[error("{}", describe_error(.0))]
    Postgres(tokio_postgres::Error),
}

/// Warns (once, at startup) for each connection string that lets the
/// connection fall back to plain text over a network.
pub fn warn_if_plaintext(database: &DatabaseSettings, listen: &listen::Listen) {
    let mut urls = vec![("DATABASE_URL", database)];
    if listen.separate {
        urls.push(("MOAT_LISTEN_DATABASE_URL", &listen.database));
    }
    for (name, settings) in urls.into_iter().filter(|(_, s)| s.may_be_plaintext_over_network()) {
        tracing::warn!(
            database = %settings.describe(),
            "{name} lets the database connection fall back to plain text over the network; add sslmode=verify-full (docs/deployment.md)"
        );
    }
}

/// Whether `e` means the connection to PostgreSQL was lost or refused (a
/// restart, a failover, a network cut): answered 503 `unavailable` and
/// retried by clients, not a 500.
pub fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    e.code().is_some_and(|code| {
        let code = code.code();
        // Class 08: connection exception; 57P01-03: shutdown, crash, not accepting yet.
        code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
    })
}

/// Whether `e`, anywhere in its cause chain, means the database could not be
/// reached: a lost or refused connection ([`connection_lost`]) or no pooled
/// connection (the pool could not connect in time). Worth waiting for; not a
/// verdict on the work that failed.
pub fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<tokio_postgres::Error>().is_some_and(connection_lost)
            || cause.downcast_ref::<deadpool_postgres::PoolError>().is_some()
    })
}

/// A database error for operators: the server's message and SQLSTATE, or the
/// client-side cause chain (tokio-postgres' own `Display` says only "db error").
pub fn describe_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}

/// Rewrites libpq-only TLS parameters into what tokio-postgres understands.
fn libpq_compat(raw: &str) -> (String, Option<PathBuf>) {
    let mut ca_file = None;
    let mut rewrite = |key: &str, value: &str| -> Option<(String, String)> {
        match (key, value) {
            ("sslrootcert", "system") => None,
            ("sslrootcert", path) => {
                ca_file = Some(PathBuf::from(path));
                None
            }
            ("sslmode", "verify-ca" | "verify-full") => Some((key.into(), "require".into())),
            ("sslmode", "allow") => Some((key.into(), "prefer".into())),
            _ => Some((key.into(), value.into())),
        }
    };
    let raw = raw.trim();
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        let Some((base, query)) = raw.split_once('?') else {
            return (raw.to_owned(), None);
        };
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if let Some((k, v)) = rewrite(&k, &v) {
                out.append_pair(&k, &v);
            }
        }
        let query = out.finish();
        let joined = if query.is_empty() { base.to_owned() } else { format!("{base}?{query}") };
        return (joined, ca_file);
    }
    if raw.contains('\'') {
        // Quoted key=value strings are passed through untouched.
        return (raw.to_owned(), None);
    }
    let parts: Vec<String> = raw
        .split_whitespace()
        .filter_map(|part| match part.split_once('=') {
            Some((k, v)) => rewrite(k, v).map(|(k, v)| format!("{k}={v}")),
            None => Some(part.to_owned()),
        })
        .collect();
    (parts.join(" "), ca_file)
}

/// One macro for every store: `statements! { "runs": GET_RUN => "get_run", …; "runner": … }`
/// defines a constant per file of `sql/<dir>/<file>.sql` and `STATEMENTS`, the
/// registry (`"<dir>/<file>"`, SQL) that one test prepares as the runtime role
/// and checks against every file under `sql/`.
macro_rules! statements {
    ($($dir:literal: $($name:ident => $file:literal),* $(,)?);+ $(;)?) => {
        $($(
            pub const $name: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/", $dir, "/", $file, ".sql"));
        )*)+
        /// Every statement of this store, by name, for the test that prepares them all.
        pub const STATEMENTS: &[(&str, &str)] = &[$($((concat!($dir, "/", $file), $name)),*),+];
    };
}
pub(crate) use statements;

/// `From<tokio_postgres::Error>` and `From<PoolError>` for error types that
/// have `From<DbError>`: the driver's errors reach them only through
/// [`DbError`]'s one classification, so `?` works on both.
macro_rules! from_db_errors {
    ($($t:ty),* $(,)?) => {$(
        impl From<tokio_postgres::Error> for $t {
            fn from(e: tokio_postgres::Error) -> Self {
                Self::from($crate::db::DbError::from(e))
            }
        }

        impl From<deadpool_postgres::PoolError> for $t {
            fn from(e: deadpool_postgres::PoolError) -> Self {
                Self::from($crate::db::DbError::from(e))
            }
        }
    )*};
}
pub(crate) use from_db_errors;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_modes_become_verified_tls() {
        let s = DatabaseSettings::parse(
            "postgresql://u:pw@db.example.com/moat?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        )
        .map_err(|e| e.to_string());
        let s = s.as_ref().map(|s| (s.tls_required(), s.ca_file.clone()));
        assert_eq!(s, Ok((true, Some(PathBuf::from("/etc/ca.pem")))));
        let kv = DatabaseSettings::parse("host=db user=u sslmode=verify-ca sslrootcert=system")
            .map(|s| (s.tls_required(), s.ca_file));
        assert_eq!(kv, Ok((true, None)));
    }

    #[test]
    fn describe_and_debug_hide_the_password() {
        let s = DatabaseSettings::parse("postgresql://moat_app:hunter2secret@db:6543/moat").ok();
        let shown = format!("{s:?} {}", s.as_ref().map(DatabaseSettings::describe).unwrap_or_default());
        assert!(!shown.contains("hunter2secret"), "{shown}");
        assert!(shown.contains("moat_app@db:6543/moat"), "{shown}");
    }

    #[test]
    fn garbage_is_refused_without_echoing_it() {
        let e = DatabaseSettings::parse("postgresql://u:topsecret@db:notaport/x").err().unwrap_or_default();
        assert!(!e.is_empty());
        assert!(!e.contains("topsecret"), "{e}");
    }
}
