//! Configuration: read from the environment only, parsed, then validated.
//!
//! [`load`] turns [`Vars`] into a typed [`Config`] or a list of **all** the
//! [`Problem`]s found. Production is the default; in development the key and
//! transport checks relax, each relaxation logged through
//! [`crate::devmode::DevMode::bypass`]. Secrets come from the environment or a
//! `*_FILE`, never from arguments, and no value read here is ever logged.

pub mod agents;
mod auth;
pub mod database;
pub mod files;
pub mod keys;
pub mod providers;
pub mod runner;
mod secrets;
mod transport;
mod vars;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub use keys::{EncryptionKey, KeyFlaw, SigningKey};
pub use providers::{ClientSecret, Provider};
pub use vars::{EnvVar, VARS, Vars, help_for};

use crate::db::DatabaseSettings;
use crate::devmode::DevMode;
use crate::problem::Problem;

/// Checks `load` performs (environment, signing key, encryption key, transport).
pub const CHECK_COUNT: usize = 4;
const DEFAULT_POOL_SIZE: usize = 16;

/// The one switch between development and production behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Production,
    Development,
}

impl Environment {
    /// The proof needed to relax any check; `None` in production.
    pub fn dev_mode(self) -> Option<DevMode> {
        match self {
            Self::Development => Some(DevMode::new()),
            Self::Production => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    fn parse(raw: Option<&str>) -> Result<Self, ()> {
        match raw {
            None | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(_) => Err(()),
        }
    }

    /// The format to log in before the configuration is validated (errors are reported by `load`).
    pub fn from_vars(vars: &Vars) -> Self {
        Self::parse(vars.get("MOAT_LOG_FORMAT")).unwrap_or(Self::Text)
    }
}

/// Validated configuration. Every field is already typed; secrets redact themselves.
#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    pub database: DatabaseSettings,
    /// The WebSocket hub's LISTEN connection (or poll only).
    pub listen: database::Listen,
    /// `MOAT_METRICS_BIND`: a loopback address serving unauthenticated `/metrics`.
    pub metrics_bind: Option<SocketAddr>,
    pub signing_key: SigningKey,
    /// Keys that still verify tokens during a rotation (never used to sign).
    pub previous_signing_keys: Vec<SigningKey>,
    pub encryption_key: EncryptionKey,
    /// Keys that still open values sealed before a rotation (never used to seal).
    pub previous_encryption_keys: Vec<EncryptionKey>,
    pub bind: SocketAddr,
    /// Present when Moat terminates TLS itself.
    pub tls: Option<crate::tls::ServerTls>,
    pub tls_terminated_upstream: bool,
    /// The origin browsers use (no path).
    pub public_url: url::Url,
    pub log_format: LogFormat,
    pub pool_size: usize,
    /// Whole-request deadline (30 s; tests shorten it).
    pub request_timeout: Duration,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Largest JSON body accepted (1 MiB).
    pub json_body_limit: usize,
    /// Lifetime of an access token (15 min).
    pub access_token_ttl: Duration,
    /// Lifetime of each refresh token; a session ends after `SESSION_MAX_AGE` regardless.
    pub refresh_token_ttl: Duration,
    /// How long an already-rotated refresh token is answered with the current one (10 s).
    pub refresh_reuse_grace: Duration,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// OAuth providers from `MOAT_PROVIDERS_FILE`, by name.
    pub providers: BTreeMap<String, Provider>,
    /// The broker hands out access tokens valid at least this long (60 s).
    pub token_min_validity: Duration,
    /// Deadline of each call to a provider's token endpoint (10 s); the refresh
    /// lock timeout is derived from it (see `integrations::broker`).
    pub provider_timeout: Duration,
    /// Origins besides MOAT_PUBLIC_URL's that may open WebSocket streams.
    pub allowed_origins: Vec<String>,
    /// Uploaded files: where, and how large.
    pub files: files::FilesSettings,
    /// The outbound HTTP policy (`MOAT_EGRESS_ALLOW`).
    pub egress: crate::egress::Egress,
    /// Agents declared in `MOAT_AGENTS_FILE` (besides the built-in `demo`).
    pub agent_names: std::collections::BTreeSet<String>,
    /// How often the purge runs (`MOAT_PURGE_INTERVAL`, 60 s).
    pub purge_interval: Duration,
    /// Most open client connections (`MOAT_MAX_CONNECTIONS`, 10,000).
    pub max_connections: usize,
    /// Time allowed for a request head, and idle keep-alive (`MOAT_HTTP_HEADER_TIMEOUT`, 10 s).
    pub header_timeout: Duration,
    /// Test seam only (never set from the environment): whether the broker takes
    /// its per-integration advisory lock. Tests turn it off to prove the lock matters.
    #[doc(hidden)]
    pub refresh_lock: bool,
}

/// Why `load` refused, with what it could still parse for the database checks.
#[derive(Debug)]
pub struct Rejected {
    pub problems: Vec<Problem>,
    pub environment: Environment,
    pub database: Option<DatabaseSettings>,
}

/// Reads and validates the whole configuration, collecting every problem.
pub fn load(vars: &Vars) -> Result<Config, Box<Rejected>> {
    let mut problems = Vec::new();
    let environment = environment(vars, &mut problems);
    let dev = environment.dev_mode();
    let providers = providers::load(vars, dev, &mut problems);
    unknown_vars(vars, &providers.secret_vars, &mut problems);

    let database = database::database(vars, &mut problems);
    let listen = database::listen(vars, database.as_ref(), &mut problems);
    let signing_key = secrets::signing_key(vars, dev, &mut problems);
    let previous_signing_keys = secrets::previous_signing_keys(vars, dev, &mut problems);
    let encryption_key = secrets::encryption_key(vars, signing_key.as_ref(), dev, &mut problems);
    let previous_encryption_keys = secrets::previous_encryption_keys(vars, dev, &mut problems);
    let auth = auth::auth(vars, dev, &mut problems);
    let transport = transport::transport(vars, dev, &mut problems);
    let log_format = LogFormat::parse(vars.get("MOAT_LOG_FORMAT")).unwrap_or_else(|()| {
        problems.push(
            Problem::new(
                "MOAT_LOG_FORMAT",
                "must be `text` or `json`",
                "Logs must be parseable by whatever collects them.",
            )
            .fix("export MOAT_LOG_FORMAT=json   # or text"),
        );
        LogFormat::Text
    });
    let pool_size = pool_size(vars, &mut problems);
    let purge_interval = duration(
        vars,
        "MOAT_PURGE_INTERVAL",
        "60s",
        (1, 3600),
        "Expired rows are purged this often: too rarely and tables grow between rounds.",
        &mut problems,
    );
    let header_timeout = duration(
        vars,
        "MOAT_HTTP_HEADER_TIMEOUT",
        "10s",
        (1, 300),
        "A client that trickles its headers holds a connection for as long as this allows.",
        &mut problems,
    );
    let max_connections = max_connections(vars, &mut problems);
    let files = files::files(vars, &mut problems);
    let egress = egress(vars, dev, &providers.providers, &mut problems);
    let agent_names = agents::load(vars, false, &mut problems).into_keys().collect();

    // Read before the match below: a problem found inside its arm would be too late to refuse.
    let metrics_bind = metrics_bind(vars, &mut problems);
    let allowed_origins = allowed_origins(vars, &mut problems);
    match (database, listen, signing_key, encryption_key, transport, files, egress) {
        (Some(database), Some(listen), Some(signing_key), Some(encryption_key), Some(t), Some(files), Some(egress))
            if problems.is_empty() =>
        {
            Ok(Config {
                environment,
                database,
                listen,
                metrics_bind,
                signing_key,
                previous_signing_keys,
                encryption_key,
                previous_encryption_keys,
                bind: t.bind,
                tls: t.tls,
                tls_terminated_upstream: t.upstream,
                public_url: t.public_url,
                log_format,
                pool_size,
                request_timeout: Duration::from_secs(30),
                shutdown_grace: Duration::from_secs(20),
                json_body_limit: 1024 * 1024,
                access_token_ttl: auth.access_token_ttl,
                refresh_token_ttl: auth.refresh_token_ttl,
                refresh_reuse_grace: auth.refresh_reuse_grace,
                trusted_proxies: auth.trusted_proxies,
                providers: providers.providers,
                token_min_validity: auth.token_min_validity,
                provider_timeout: auth.provider_timeout,
                refresh_lock: true,
                allowed_origins,
                files,
                egress,
                agent_names,
                purge_interval,
                max_connections,
                header_timeout,
            })
        }
        (database, ..) => Err(Box::new(Rejected { problems, environment, database })),
    }
}

/// The current and previous encryption keys alone, judged as in production
/// (for `moat admin rotate-encryption-key`, which needs nothing else).
pub fn encryption_keys(vars: &Vars) -> Result<(EncryptionKey, Vec<EncryptionKey>), Vec<Problem>> {
    let mut problems = Vec::new();
    let current = secrets::encryption_key(vars, None, None, &mut problems);
    let previous = secrets::previous_encryption_keys(vars, None, &mut problems);
    match current {
        Some(current) if problems.is_empty() => Ok((current, previous)),
        _ => Err(problems),
    }
}

fn allowed_origins(vars: &Vars, problems: &mut Vec<Problem>) -> Vec<String> {
    let Some(raw) = vars.get("MOAT_ALLOWED_ORIGINS") else {
        return Vec::new();
    };
    let mut origins = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match url::Url::parse(item) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() && url.path() == "/" => {
                origins.push(url.origin().ascii_serialization());
            }
            _ => problems.push(
                Problem::new(
                    "MOAT_ALLOWED_ORIGINS",
                    format!("contains {item:?}, which is not an origin (scheme://host[:port])"),
                    "Only exact origins may open WebSocket streams; anything else would let other sites hijack them.",
                )
                .fix("export MOAT_ALLOWED_ORIGINS=https://app.example.com"),
            ),
        }
    }
    origins
}

pub(crate) fn environment(vars: &Vars, problems: &mut Vec<Problem>) -> Environment {
    match vars.get("MOAT_ENV") {
        None | Some("production") => Environment::Production,
        Some("development") => Environment::Development,
        Some(_) => {
            problems.push(
                Problem::new(
                    "MOAT_ENV",
                    "must be `production` or `development` (the value set is neither)",
                    "It is the only switch between development and production; an unrecognised value is treated as production, the strict side, but must still be fixed.",
                )
                .fix("unset MOAT_ENV   # production, the default")
                .fix("export MOAT_ENV=development   # local development only"),
            );
            Environment::Production
        }
    }
}

pub(crate) fn unknown_vars(vars: &Vars, provider_secrets: &[String], problems: &mut Vec<Problem>) {
    for name in vars.unknown_moat_vars().into_iter().filter(|n| !provider_secrets.iter().any(|s| s == n)) {
        problems.push(
            Problem::new(
                name,
                "is not a variable Moat knows",
                "A misspelt setting is silently ignored otherwise, e.g. a key or TLS path you believe is in force.",
            )
            .fix(format!("unset {name}   # or correct its name; `moat serve --help` lists every variable")),
        );
    }
    for name in vars.not_unicode() {
        if name.starts_with("MOAT_") || name == "DATABASE_URL" {
            problems.push(Problem::new(name.as_str(), "is not valid UTF-8", "Moat cannot read it reliably."));
        }
    }
}

/// `MOAT_METRICS_BIND`: loopback only, since whatever can reach it reads the metrics unauthenticated.
pub(crate) fn metrics_bind(vars: &Vars, problems: &mut Vec<Problem>) -> Option<SocketAddr> {
    let raw = vars.get("MOAT_METRICS_BIND")?;
    match raw.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_loopback() => Some(addr),
        _ => {
            problems.push(
                Problem::new(
                    "MOAT_METRICS_BIND",
                    format!("is {raw:?}, which is not a loopback address and port"),
                    "The metrics listener has no authentication; only processes on this host may reach it (remote scrapers use GET /metrics with a metrics:read token).",
                )
                .fix("export MOAT_METRICS_BIND=127.0.0.1:9464"),
            );
            None
        }
    }
}

pub(crate) fn database_url_problem(what: &str) -> Problem {
    Problem::new(
        "DATABASE_URL",
        what,
        "Moat keeps all state in PostgreSQL; without a connection the schema, role and development-taint checks cannot run either.",
    )
    .fix("export DATABASE_URL='postgresql://moat_app:PASSWORD@HOST:5432/moat?sslmode=verify-full'")
    .fix("see docs/deployment.md for the two database roles")
}

/// `MOAT_EGRESS_ALLOW`, and every configured provider's token endpoint must pass it.
pub(crate) fn egress(
    vars: &Vars,
    dev: Option<DevMode>,
    providers: &BTreeMap<String, Provider>,
    problems: &mut Vec<Problem>,
) -> Option<crate::egress::Egress> {
    let why = "Every outbound request Moat makes must go to a destination the operator allowed.";
    let egress = match crate::egress::Egress::parse(vars.get("MOAT_EGRESS_ALLOW"), dev) {
        Ok(egress) => egress,
        Err(e) => {
            problems.push(
                Problem::new("MOAT_EGRESS_ALLOW", e, why)
                    .fix("export MOAT_EGRESS_ALLOW='oauth2.googleapis.com,*.example.com:443,10.0.0.0/8'"),
            );
            return None;
        }
    };
    for (name, provider) in providers {
        if let Err(refused) = egress.check_url(&provider.token_url) {
            let host = provider.token_url.host_str().unwrap_or("");
            let port = provider.token_url.port_or_known_default().unwrap_or(443);
            problems.push(
                Problem::new(
                    "MOAT_EGRESS_ALLOW",
                    format!("does not allow provider `{name}`'s token endpoint: {refused}"),
                    why,
                )
                .fix(format!("add `{host}:{port}` to MOAT_EGRESS_ALLOW")),
            );
        }
    }
    Some(egress)
}

/// A duration variable like `15m`, `900s` or `14d`, within `range` seconds (inclusive), or its default.
pub(crate) fn duration(
    vars: &Vars,
    name: &str,
    default: &str,
    range: (u64, u64),
    why: &str,
    problems: &mut Vec<Problem>,
) -> Duration {
    let fallback = humantime::parse_duration(default).unwrap_or_default();
    let Some(raw) = vars.get(name) else {
        return fallback;
    };
    match humantime::parse_duration(raw) {
        Ok(d) if (range.0..=range.1).contains(&d.as_secs()) => d,
        _ => {
            problems.push(
                Problem::new(
                    name,
                    format!("must be a duration from {}s to {}s, e.g. `{default}`", range.0, range.1),
                    why,
                )
                .fix(format!("export {name}={default}   # the default")),
            );
            fallback
        }
    }
}

const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

fn max_connections(vars: &Vars, problems: &mut Vec<Problem>) -> usize {
    match vars.get("MOAT_MAX_CONNECTIONS").map(str::parse::<usize>) {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(Ok(n)) if (1..=1_000_000).contains(&n) => n,
        Some(_) => {
            problems.push(
                Problem::new(
                    "MOAT_MAX_CONNECTIONS",
                    "must be a whole number from 1 to 1000000",
                    "It bounds the connections (and so the memory and file descriptors) clients can hold on one instance.",
                )
                .fix(format!("export MOAT_MAX_CONNECTIONS={DEFAULT_MAX_CONNECTIONS}")),
            );
            DEFAULT_MAX_CONNECTIONS
        }
    }
}

fn pool_size(vars: &Vars, problems: &mut Vec<Problem>) -> usize {
    match vars.get("MOAT_DATABASE_POOL_SIZE").map(str::parse::<usize>) {
        None => DEFAULT_POOL_SIZE,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            problems.push(
                Problem::new(
                    "MOAT_DATABASE_POOL_SIZE",
                    "must be a whole number from 1 to 1000",
                    "It bounds how many connections Moat opens to PostgreSQL.",
                )
                .fix(format!("export MOAT_DATABASE_POOL_SIZE={DEFAULT_POOL_SIZE}")),
            );
            DEFAULT_POOL_SIZE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", "host=/tmp user=moat_app dbname=moat".to_owned()),
            ("MOAT_SIGNING_KEY", keys::generate_signing()),
            ("MOAT_ENCRYPTION_KEY", keys::generate_encryption()),
            ("MOAT_PUBLIC_URL", "https://moat.example.com".to_owned()),
            ("MOAT_FILES_DIR", std::env::temp_dir().join("moat-unit-test-files").display().to_string()),
        ]
    }

    fn load_pairs(pairs: &[(&str, String)]) -> Result<Config, Box<Rejected>> {
        load(&Vars::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str()))))
    }

    #[test]
    fn defaults_are_production_on_loopback() {
        let config = load_pairs(&valid()).map_err(|r| r.problems);
        let config = config.as_ref().map(|c| (c.environment, c.bind.to_string(), c.tls.is_none(), c.pool_size));
        assert_eq!(config, Ok((Environment::Production, "127.0.0.1:8080".to_owned(), true, 16)));
        assert!(Environment::Production.dev_mode().is_none());
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let mut pairs = valid();
        pairs.retain(|(k, _)| *k != "MOAT_ENCRYPTION_KEY");
        pairs.push(("MOAT_SIGNING_KEY", "changeme".into()));
        pairs.push(("MOAT_BIND", "192.0.2.10:80".into()));
        pairs.push(("MOAT_LOG_FORMAT", "yaml".into()));
        let subjects: Vec<String> = match load_pairs(&pairs) {
            Ok(_) => Vec::new(),
            Err(rejected) => rejected.problems.into_iter().map(|p| p.subject).collect(),
        };
        assert_eq!(subjects, ["MOAT_SIGNING_KEY", "MOAT_ENCRYPTION_KEY", "MOAT_BIND", "MOAT_LOG_FORMAT"]);
    }
}
