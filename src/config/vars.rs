//! The environment variables Moat reads: one table, used by `--help`, by the
//! unknown-variable check and (through a test) kept equal to the README's table.

use std::collections::BTreeMap;
use std::ffi::OsString;

/// One documented environment variable.
pub struct EnvVar {
    pub name: &'static str,
    /// The commands that read it.
    pub commands: &'static [&'static str],
    /// Default when unset (`None`: no default).
    pub default: Option<&'static str>,
    /// What it means; the README's configuration table says the same.
    pub doc: &'static str,
}

const SERVE_CHECK: &[&str] = &["serve", "check"];
const ALL: &[&str] = &["serve", "check", "migrate", "admin", "runner"];
const RUNNER: &[&str] = &["runner"];
const SERVE_CHECK_RUNNER: &[&str] = &["serve", "check", "runner"];
const SERVE_CHECK_RUNNER_ADMIN: &[&str] = &["serve", "check", "runner", "admin"];

pub const VARS: &[EnvVar] = &[
    EnvVar {
        name: "MOAT_ENV",
        commands: &["serve", "check", "runner"],
        default: Some("production"),
        doc: "`production` or `development`; anything else is a startup error. The only switch between development and production behaviour.",
    },
    EnvVar {
        name: "DATABASE_URL",
        commands: ALL,
        default: None,
        doc: "PostgreSQL connection string (URL or key=value). `serve`/`check` use the runtime role, `migrate` the owner role. `sslmode=require|verify-full` and `sslrootcert=PATH` are honoured; certificates are always verified.",
    },
    EnvVar {
        name: "DATABASE_URL_FILE",
        commands: ALL,
        default: None,
        doc: "Path of a file holding DATABASE_URL instead (a container secret: the URL holds a password). Set one of the two, not both.",
    },
    EnvVar {
        name: "MOAT_SIGNING_KEY",
        commands: SERVE_CHECK,
        default: None,
        doc: "Base64 (standard or url-safe, padding optional) of at least 32 random bytes; signs every JWT (HS256). Generate with `moat keygen signing`.",
    },
    EnvVar {
        name: "MOAT_SIGNING_KEY_FILE",
        commands: SERVE_CHECK,
        default: None,
        doc: "Path of a file holding MOAT_SIGNING_KEY instead (e.g. a container secret). Set one of the two, not both.",
    },
    EnvVar {
        name: "MOAT_SIGNING_KEYS_PREVIOUS",
        commands: SERVE_CHECK,
        default: None,
        doc: "Comma-separated previous signing keys that still verify tokens during a rotation (never used to sign); each is checked like MOAT_SIGNING_KEY. See docs/security.md.",
    },
    EnvVar {
        name: "MOAT_SIGNING_KEYS_PREVIOUS_FILE",
        commands: SERVE_CHECK,
        default: None,
        doc: "Path of a file holding MOAT_SIGNING_KEYS_PREVIOUS instead.",
    },
    EnvVar {
        name: "MOAT_ENCRYPTION_KEY",
        commands: &["serve", "check", "admin", "runner"],
        default: None,
        doc: "Base64 of exactly 32 random bytes; the AES-256-GCM-SIV key for secrets at rest. Must differ from the signing key. Generate with `moat keygen encryption`.",
    },
    EnvVar {
        name: "MOAT_ENCRYPTION_KEY_FILE",
        commands: &["serve", "check", "admin", "runner"],
        default: None,
        doc: "Path of a file holding MOAT_ENCRYPTION_KEY instead. Set one of the two, not both.",
    },
    EnvVar {
        name: "MOAT_ENCRYPTION_KEYS_PREVIOUS",
        commands: &["serve", "check", "admin", "runner"],
        default: None,
        doc: "Comma-separated previous encryption keys that still open values sealed before a rotation (never used to seal); each is checked like MOAT_ENCRYPTION_KEY. `moat admin rotate-encryption-key` re-encrypts everything under the current key.",
    },
    EnvVar {
        name: "MOAT_ENCRYPTION_KEYS_PREVIOUS_FILE",
        commands: &["serve", "check", "admin", "runner"],
        default: None,
        doc: "Path of a file holding MOAT_ENCRYPTION_KEYS_PREVIOUS instead.",
    },
    EnvVar {
        name: "MOAT_PROVIDERS_FILE",
        commands: &["serve", "check", "runner"],
        default: None,
        doc: "TOML file of OAuth providers for integrations (docs/integrations.md). It names, per provider, the environment variable holding the client secret; never the secret.",
    },
    EnvVar {
        name: "MOAT_TOKEN_MIN_VALIDITY",
        commands: &["serve", "check", "runner"],
        default: Some("60s"),
        doc: "The credential broker returns integration access tokens valid at least this long, refreshing them when needed (0s to 1h).",
    },
    EnvVar {
        name: "MOAT_PROVIDER_TIMEOUT",
        commands: &["serve", "check", "runner"],
        default: Some("10s"),
        doc: "Deadline for each call to a provider's token endpoint (1s to 20s); the per-integration refresh lock waits at most this plus 5 s.",
    },
    EnvVar {
        name: "MOAT_BIND",
        commands: SERVE_CHECK,
        default: Some("127.0.0.1:8080"),
        doc: "Listen address (IP:port). A non-loopback address needs MOAT_TLS_CERT/MOAT_TLS_KEY or MOAT_TLS_TERMINATED_UPSTREAM=true.",
    },
    EnvVar {
        name: "MOAT_TLS_CERT",
        commands: SERVE_CHECK,
        default: None,
        doc: "PEM certificate chain. With MOAT_TLS_KEY, Moat serves HTTPS itself (rustls, TLS 1.2 and 1.3 only).",
    },
    EnvVar { name: "MOAT_TLS_KEY", commands: SERVE_CHECK, default: None, doc: "PEM private key for MOAT_TLS_CERT." },
    EnvVar {
        name: "MOAT_TLS_TERMINATED_UPSTREAM",
        commands: SERVE_CHECK,
        default: Some("false"),
        doc: "`true` declares that a proxy in front of Moat terminates TLS, allowing a non-loopback plain-HTTP bind.",
    },
    EnvVar {
        name: "MOAT_PUBLIC_URL",
        commands: SERVE_CHECK,
        default: None,
        doc: "The origin browsers use, e.g. `https://moat.example.com`. Required and `https` in production.",
    },
    EnvVar {
        name: "MOAT_ACCESS_TOKEN_TTL",
        commands: SERVE_CHECK,
        default: Some("15m"),
        doc: "Lifetime of access tokens (1m to 24h; development mode accepts down to 5s, logged as a DEV_BYPASS), e.g. `15m`.",
    },
    EnvVar {
        name: "MOAT_REFRESH_TOKEN_TTL",
        commands: SERVE_CHECK,
        default: Some("14d"),
        doc: "Lifetime of each refresh token (5m to 90d); every refresh rotates it. A session ends 30 days after login regardless.",
    },
    EnvVar {
        name: "MOAT_REFRESH_REUSE_GRACE",
        commands: SERVE_CHECK,
        default: Some("10s"),
        doc: "How long after a refresh the previous refresh token is answered with the current one instead of being treated as reuse (0s to 120s).",
    },
    EnvVar {
        name: "MOAT_TRUSTED_PROXIES",
        commands: SERVE_CHECK,
        default: None,
        doc: "Comma-separated IPs or CIDR blocks of reverse proxies; only from these peers is `X-Forwarded-For` believed for the client IP (abuse limits, audit log).",
    },
    EnvVar {
        name: "MOAT_ALLOWED_ORIGINS",
        commands: SERVE_CHECK,
        default: None,
        doc: "Comma-separated origins, besides MOAT_PUBLIC_URL's, whose pages may open WebSocket streams (anything else is refused: cross-site WebSocket hijacking).",
    },
    EnvVar {
        name: "MOAT_DATABASE_POOL_SIZE",
        commands: &["serve"],
        default: Some("16"),
        doc: "Maximum number of pooled database connections (1 to 1000).",
    },
    EnvVar { name: "MOAT_LOG_FORMAT", commands: ALL, default: Some("text"), doc: "`text` or `json`." },
    EnvVar {
        name: "MOAT_AGENTS_FILE",
        commands: &["serve", "check", "runner"],
        default: None,
        doc: "TOML file declaring the external agents runs may use (docs/agents.md): command (absolute path), args, the environment variable names passed through (never MOAT_* or DATABASE_URL), working directory, cancel grace. Without it only the built-in `demo` agent exists.",
    },
    EnvVar {
        name: "MOAT_EGRESS_ALLOW",
        commands: &["serve", "check", "runner"],
        default: None,
        doc: "Comma-separated destinations Moat's outbound HTTP may reach: `host`, `*.domain` (subdomains), optionally `:port`, or an IP network `10.0.0.0/8[:port]` (which also allows those private addresses). Empty allows nothing. Link-local and cloud-metadata addresses are always refused; every OAuth provider's token endpoint must be allowed (checked at startup).",
    },
    EnvVar {
        name: "MOAT_FILES_DIR",
        commands: SERVE_CHECK,
        default: Some("moat-files"),
        doc: "Directory for uploaded files (one folder per organization); created with mode 0700 if missing; must be writable and not accessible to other users.",
    },
    EnvVar {
        name: "MOAT_MAX_UPLOAD_BYTES",
        commands: SERVE_CHECK,
        default: Some("26214400"),
        doc: "Largest file upload in bytes (25 MiB by default; at most 10 GiB), enforced while streaming: a larger upload is refused with 413 and leaves nothing on disk.",
    },
    EnvVar {
        name: "MOAT_MAX_CONNECTIONS",
        commands: SERVE_CHECK,
        default: Some("10000"),
        doc: "Most client connections (HTTP and WebSocket) one `serve` instance keeps open (1 to 1000000); beyond it a new connection is closed at once, before any TLS or HTTP, while the open ones keep working.",
    },
    EnvVar {
        name: "MOAT_HTTP_HEADER_TIMEOUT",
        commands: SERVE_CHECK,
        default: Some("10s"),
        doc: "A connection must send a complete request head within this (1s to 300s), counted from when it opened or last finished a response: it bounds slow-header (slowloris) clients and is also the idle timeout of HTTP/1.1 keep-alive and HTTP/2 connections. Behind a proxy that keeps upstream connections open, set it above the proxy's upstream idle timeout (e.g. 75s for nginx's 60s).",
    },
    EnvVar {
        name: "MOAT_PURGE_INTERVAL",
        commands: SERVE_CHECK,
        default: Some("60s"),
        doc: "How often each `serve` instance purges expired and superseded rows (1s to 1h); each purge step runs on one instance at a time (docs/operations.md).",
    },
    EnvVar {
        name: "MOAT_DEV_POSTGRES_BIN",
        commands: &["dev"],
        default: None,
        doc: "`moat dev` only: the directory holding PostgreSQL's `initdb` and `postgres`, when they are not on PATH or in the usual Debian/Homebrew places.",
    },
    EnvVar {
        name: "MOAT_LOG",
        commands: ALL,
        default: Some("info"),
        doc: "Log filter in tracing's EnvFilter syntax, e.g. `info` or `moat=debug,info`.",
    },
    EnvVar {
        name: "MOAT_METRICS_BIND",
        commands: SERVE_CHECK_RUNNER,
        default: None,
        doc: "A loopback address (e.g. `127.0.0.1:9464`) serving Prometheus `GET /metrics` without authentication, for a scraper on the same host; anything else is refused. Without it `serve` still answers `GET /metrics` to a `metrics:read` token and `runner` exports nothing.",
    },
    EnvVar {
        name: "MOAT_DATABASE_POOLER",
        commands: SERVE_CHECK_RUNNER_ADMIN,
        default: Some("none"),
        doc: "What DATABASE_URL goes through. `transaction`: a transaction-mode pooler that does not keep prepared statements (PgBouncer before 1.21) — no statement outlives its transaction; `transaction-prepared`: one that does (PgBouncer >= 1.21 with max_prepared_statements). Both refuse LISTEN through the pooler (set MOAT_LISTEN_DATABASE_URL or MOAT_LISTEN=off). `none`: direct or session mode.",
    },
    EnvVar {
        name: "MOAT_LISTEN_DATABASE_URL",
        commands: SERVE_CHECK_RUNNER,
        default: Some("DATABASE_URL"),
        doc: "Connection string for the dedicated LISTEN connection (the WebSocket hub's in `serve`, the runner's wake-ups), for deployments whose DATABASE_URL goes through a transaction pooler (LISTEN needs a direct connection).",
    },
    EnvVar {
        name: "MOAT_LISTEN",
        commands: SERVE_CHECK_RUNNER,
        default: Some("on"),
        doc: "`on`: wake on NOTIFY; `off`: poll only, for deployments with no direct database connection (the runner polls every MOAT_RUNNER_POLL, the WebSocket hub every 250 ms).",
    },
    EnvVar {
        name: "MOAT_RUNNER_CONCURRENCY",
        commands: RUNNER,
        default: Some("16"),
        doc: "Runs one runner executes at once.",
    },
    EnvVar {
        name: "MOAT_RUNNER_POLL",
        commands: RUNNER,
        default: Some("2s"),
        doc: "Fallback poll for queued runs and unapplied commands (notifications lost during a disconnect are caught up by it).",
    },
    EnvVar {
        name: "MOAT_RUN_LEASE",
        commands: RUNNER,
        default: Some("30s"),
        doc: "A claimed run's lease; a run whose lease expires is ended `failed`/`runner_lost` by any instance.",
    },
    EnvVar {
        name: "MOAT_RUN_HEARTBEAT",
        commands: RUNNER,
        default: Some("10s"),
        doc: "How often a runner renews its leases (at most half of MOAT_RUN_LEASE).",
    },
    EnvVar {
        name: "MOAT_RUN_MAX_DURATION",
        commands: RUNNER,
        default: Some("15m"),
        doc: "A run that takes longer fails with `run_timeout`.",
    },
    EnvVar {
        name: "MOAT_RUN_MAX_OUTPUT_BYTES",
        commands: RUNNER,
        default: Some("5242880"),
        doc: "A run whose message output exceeds this fails with `output_limit_exceeded`.",
    },
    EnvVar {
        name: "MOAT_RUN_MAX_EVENTS",
        commands: RUNNER,
        default: Some("10000"),
        doc: "A run that emits more events fails with `event_limit_exceeded`.",
    },
    EnvVar {
        name: "MOAT_RUNNER_SHUTDOWN_GRACE",
        commands: RUNNER,
        default: Some("20s"),
        doc: "On SIGTERM the runner stops claiming and lets runs finish this long, then hands the rest back to the queue.",
    },
    EnvVar {
        name: "MOAT_TEST_DATABASE_URL",
        commands: &[],
        default: None,
        doc: "Tests only: an admin connection to an existing PostgreSQL server the test suite uses instead of starting its own.",
    },
];

/// `--help` text listing the variables a command reads.
pub fn help_for(command: &str) -> String {
    let mut out = String::from("Environment variables:\n");
    for var in VARS.iter().filter(|v| v.commands.contains(&command)) {
        let default = var.default.map(|d| format!(" [default: {d}]")).unwrap_or_default();
        out.push_str(&format!("  {}{default}\n      {}\n", var.name, var.doc));
    }
    out.push_str("\nSecrets are read only from the environment or *_FILE files, never from arguments.\n");
    out
}

/// A snapshot of the environment (injectable, so tests need not touch process state).
#[derive(Debug, Clone, Default)]
pub struct Vars {
    values: BTreeMap<String, String>,
    not_unicode: Vec<String>,
}

impl Vars {
    pub fn from_process() -> Self {
        Self::from_os(std::env::vars_os())
    }

    pub fn from_os(pairs: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let mut vars = Self::default();
        for (name, value) in pairs {
            let Ok(name) = name.into_string() else {
                continue;
            };
            match value.into_string() {
                Ok(value) => {
                    vars.values.insert(name, value);
                }
                Err(_) => vars.not_unicode.push(name),
            }
        }
        vars
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let values = pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        Self { values, not_unicode: Vec::new() }
    }

    /// The same snapshot with `name` set to `value` (for commands that configure others, like `moat dev`).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.values.insert(name.to_owned(), value.into());
        self
    }

    /// The same snapshot without `name`.
    pub fn without(mut self, name: &str) -> Self {
        self.values.remove(name);
        self
    }

    /// The value, with surrounding whitespace removed; empty counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// `MOAT_*` names that no [`EnvVar`] documents (likely typos of real settings).
    pub fn unknown_moat_vars(&self) -> Vec<&str> {
        self.values
            .keys()
            .map(String::as_str)
            .chain(self.not_unicode.iter().map(String::as_str))
            .filter(|name| name.starts_with("MOAT_") && !VARS.iter().any(|v| v.name == *name))
            .collect()
    }

    /// Documented variables whose value is not valid UTF-8.
    pub fn not_unicode(&self) -> &[String] {
        &self.not_unicode
    }
}
