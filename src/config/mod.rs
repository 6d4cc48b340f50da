//! Configuration: read from the environment only, parsed, then validated.
//!
//! [`load`] turns [`Vars`] into a typed [`Config`] or a list of **all** the
//! [`Problem`]s found. Production is the default; in development the key and
//! transport checks relax, each relaxation logged through
//! [`crate::dev::DevMode::bypass`]. Secrets come from the environment or a
//! `*_FILE`, never from arguments, and no value read here is ever logged.

pub mod keys;
mod vars;

use std::net::SocketAddr;
use std::time::Duration;

pub use keys::{EncryptionKey, KeyFlaw, SigningKey};
pub use vars::{EnvVar, VARS, Vars, help_for};

use crate::check::Problem;
use crate::db::DatabaseSettings;
use crate::dev::DevMode;

/// Checks `load` performs (environment, signing key, encryption key, transport).
pub const CHECK_COUNT: usize = 4;
const DEFAULT_BIND: &str = "127.0.0.1:8080";
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
    pub signing_key: SigningKey,
    pub encryption_key: EncryptionKey,
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
    unknown_vars(vars, &mut problems);

    let database = match vars.get("DATABASE_URL") {
        None => {
            problems.push(database_url_problem("is not set"));
            None
        }
        Some(raw) => DatabaseSettings::parse(raw)
            .map_err(|e| problems.push(database_url_problem(&format!("is invalid: {e}"))))
            .ok(),
    };
    let signing_key = signing_key(vars, dev, &mut problems);
    let encryption_key = encryption_key(vars, signing_key.as_ref(), dev, &mut problems);
    let transport = transport(vars, dev, &mut problems);
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

    match (database, signing_key, encryption_key, transport) {
        (Some(database), Some(signing_key), Some(encryption_key), Some(t)) if problems.is_empty() => Ok(Config {
            environment,
            database,
            signing_key,
            encryption_key,
            bind: t.bind,
            tls: t.tls,
            tls_terminated_upstream: t.upstream,
            public_url: t.public_url,
            log_format,
            pool_size,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
            json_body_limit: 1024 * 1024,
        }),
        (database, ..) => Err(Box::new(Rejected { problems, environment, database })),
    }
}

fn environment(vars: &Vars, problems: &mut Vec<Problem>) -> Environment {
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

fn unknown_vars(vars: &Vars, problems: &mut Vec<Problem>) {
    for name in vars.unknown_moat_vars() {
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

fn database_url_problem(what: &str) -> Problem {
    Problem::new(
        "DATABASE_URL",
        what,
        "Moat keeps all state in PostgreSQL; without a connection the schema, role and development-taint checks cannot run either.",
    )
    .fix("export DATABASE_URL='postgresql://moat_app:PASSWORD@HOST:5432/moat?sslmode=verify-full'")
    .fix("see docs/deployment.md for the two database roles")
}

/// Reads a secret from `NAME` or the file named by `NAME_FILE` (only one may be set).
/// `Err` means a problem was recorded; `Ok(None)` that neither is set.
fn secret(vars: &Vars, name: &str, problems: &mut Vec<Problem>) -> Result<Option<String>, ()> {
    let file_var = format!("{name}_FILE");
    match (vars.get(name), vars.get(&file_var)) {
        (Some(_), Some(_)) => {
            problems.push(
                Problem::new(
                    name,
                    format!("is set both directly and through {file_var}"),
                    "Moat will not guess which of two keys you meant.",
                )
                .fix(format!("unset {name}   # or unset {file_var}")),
            );
            Err(())
        }
        (Some(value), None) => Ok(Some(value.to_owned())),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(content) => Ok(Some(content.trim().to_owned()).filter(|c| !c.is_empty())),
            Err(e) => {
                problems.push(
                    Problem::new(
                        file_var.as_str(),
                        format!("names a file Moat cannot read ({})", e.kind()),
                        "The key it should hold is unavailable.",
                    )
                    .fix(format!("check that {file_var} points at a readable file")),
                );
                Err(())
            }
        },
        (None, None) => Ok(None),
    }
}

fn signing_key(vars: &Vars, dev: Option<DevMode>, problems: &mut Vec<Problem>) -> Option<SigningKey> {
    let (flaw, usable) = match secret(vars, "MOAT_SIGNING_KEY", problems).ok()? {
        None => (KeyFlaw::Missing, None),
        Some(raw) => match SigningKey::parse(&raw) {
            Ok(key) => return Some(key),
            Err(rejected) => rejected,
        },
    };
    relax_key("MOAT_SIGNING_KEY", flaw, usable, SigningKey::ephemeral, dev, problems)
}

fn encryption_key(
    vars: &Vars,
    signing: Option<&SigningKey>,
    dev: Option<DevMode>,
    problems: &mut Vec<Problem>,
) -> Option<EncryptionKey> {
    let (flaw, usable) = match secret(vars, "MOAT_ENCRYPTION_KEY", problems).ok()? {
        None => (KeyFlaw::Missing, None),
        Some(raw) => match EncryptionKey::parse(&raw, signing) {
            Ok(key) => return Some(key),
            Err(rejected) => rejected,
        },
    };
    relax_key("MOAT_ENCRYPTION_KEY", flaw, usable, EncryptionKey::ephemeral, dev, problems)
}

/// In development a flawed key is used anyway (or replaced by an ephemeral one), loudly;
/// in production it is a problem with its fix.
fn relax_key<K>(
    name: &str,
    flaw: KeyFlaw,
    usable: Option<K>,
    ephemeral: fn() -> K,
    dev: Option<DevMode>,
    problems: &mut Vec<Problem>,
) -> Option<K> {
    if let Some(dev) = dev {
        return Some(match usable {
            Some(key) => {
                dev.bypass("startup", format!("{name} {flaw}; using it anyway"));
                key
            }
            None => {
                dev.bypass("startup", format!("{name} {flaw}; using an ephemeral key"));
                ephemeral()
            }
        });
    }
    problems.push(key_problem(name, &flaw));
    None
}

fn key_problem(name: &str, flaw: &KeyFlaw) -> Problem {
    let (why, kind, bytes) = if name == "MOAT_SIGNING_KEY" {
        (
            "Every access and WebSocket token is signed with this key: whoever knows or guesses it can forge a token for any user, organization and scope.",
            "signing",
            keys::SIGNING_KEY_GENERATED_BYTES,
        )
    } else if *flaw == KeyFlaw::SameAsSigningKey {
        (
            "One leaked key would then both forge tokens and decrypt every stored credential; each key must be independent.",
            "encryption",
            keys::ENCRYPTION_KEY_BYTES,
        )
    } else {
        (
            "OAuth tokens and other secrets are encrypted at rest with this key: without a strong key of its own, a database leak exposes every integration credential.",
            "encryption",
            keys::ENCRYPTION_KEY_BYTES,
        )
    };
    Problem::new(name, flaw.to_string(), why)
        .fix(format!("export {name}=\"$(moat keygen {kind})\""))
        .fix(format!("or: export {name}=\"$(openssl rand -base64 {bytes})\""))
}

struct Transport {
    bind: SocketAddr,
    tls: Option<crate::tls::ServerTls>,
    upstream: bool,
    public_url: url::Url,
}

fn transport(vars: &Vars, dev: Option<DevMode>, problems: &mut Vec<Problem>) -> Option<Transport> {
    let before = problems.len();
    let bind = vars.get("MOAT_BIND").unwrap_or(DEFAULT_BIND).parse::<SocketAddr>().map_err(|_| {
        problems.push(
            Problem::new(
                "MOAT_BIND",
                "is not an IP:port address",
                "Moat must know exactly which interface it listens on.",
            )
            .fix(format!("export MOAT_BIND={DEFAULT_BIND}   # loopback, the default")),
        )
    });
    let upstream = match vars.get("MOAT_TLS_TERMINATED_UPSTREAM") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            problems.push(
                Problem::new(
                    "MOAT_TLS_TERMINATED_UPSTREAM",
                    "must be `true` or `false`",
                    "It decides whether plain HTTP may leave this host.",
                )
                .fix("export MOAT_TLS_TERMINATED_UPSTREAM=true   # only when a proxy in front terminates TLS"),
            );
            false
        }
    };
    let tls = match (vars.get("MOAT_TLS_CERT"), vars.get("MOAT_TLS_KEY")) {
        (None, None) => None,
        (Some(cert), Some(key)) => crate::tls::server_config(cert.as_ref(), key.as_ref())
            .map_err(|e| {
                problems.push(
                    Problem::new(
                        "MOAT_TLS_CERT",
                        format!("cannot be used: {e}"),
                        "Moat cannot serve HTTPS without a matching certificate and key.",
                    )
                    .fix("point MOAT_TLS_CERT and MOAT_TLS_KEY at a PEM certificate chain and its PEM private key"),
                )
            })
            .ok(),
        (cert, _) => {
            let missing = if cert.is_none() { "MOAT_TLS_CERT" } else { "MOAT_TLS_KEY" };
            problems.push(
                Problem::new(
                    missing,
                    "is not set while its partner is",
                    "HTTPS needs both a certificate and its private key.",
                )
                .fix("set both MOAT_TLS_CERT and MOAT_TLS_KEY, or neither"),
            );
            None
        }
    };
    let public_url = public_url(vars, bind.as_ref().ok(), dev, problems);
    if let Ok(addr) = bind
        && !addr.ip().is_loopback()
        && tls.is_none()
        && !upstream
    {
        let what = format!("is {addr}, a non-loopback address, but nothing encrypts the traffic");
        match dev {
            Some(dev) => dev.bypass("startup", format!("MOAT_BIND {what}; serving plain HTTP")),
            None => problems.push(
                Problem::new("MOAT_BIND", what, "Tokens and credentials would cross the network in plain text.")
                    .fix("export MOAT_TLS_CERT=/path/fullchain.pem MOAT_TLS_KEY=/path/key.pem   # Moat terminates TLS")
                    .fix("export MOAT_TLS_TERMINATED_UPSTREAM=true   # a proxy in front terminates TLS")
                    .fix(format!("export MOAT_BIND={DEFAULT_BIND}   # or listen on loopback only")),
            ),
        }
    }
    match (bind, public_url) {
        (Ok(bind), Some(public_url)) if problems.len() == before => Some(Transport { bind, tls, upstream, public_url }),
        _ => None,
    }
}

fn public_url(
    vars: &Vars,
    bind: Option<&SocketAddr>,
    dev: Option<DevMode>,
    problems: &mut Vec<Problem>,
) -> Option<url::Url> {
    let fix = "export MOAT_PUBLIC_URL=https://moat.example.com   # the origin your users' browsers use";
    let why = "Browsers must reach Moat over HTTPS; WebSocket origin checks and links are built from this URL.";
    let Some(raw) = vars.get("MOAT_PUBLIC_URL") else {
        let Some(dev) = dev else {
            problems.push(Problem::new("MOAT_PUBLIC_URL", "is not set", why).fix(fix));
            return None;
        };
        let assumed = format!("http://{}", bind.map_or_else(|| DEFAULT_BIND.to_owned(), ToString::to_string));
        dev.bypass("startup", format!("MOAT_PUBLIC_URL is not set; assuming {assumed}"));
        return url::Url::parse(&assumed).ok();
    };
    let url = match url::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
        _ => {
            problems.push(Problem::new("MOAT_PUBLIC_URL", "is not an http(s) URL with a host", why).fix(fix));
            return None;
        }
    };
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        problems.push(
            Problem::new("MOAT_PUBLIC_URL", "must be an origin only (scheme, host, optional port)", why).fix(fix),
        );
        return None;
    }
    if url.scheme() != "https" {
        match dev {
            Some(dev) => dev.bypass("startup", "MOAT_PUBLIC_URL is not https; browsers will send tokens in plain text"),
            None => {
                problems.push(Problem::new("MOAT_PUBLIC_URL", "is not https", why).fix(fix));
                return None;
            }
        }
    }
    Some(url)
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
