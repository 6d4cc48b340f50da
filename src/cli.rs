//! The `moat` command line: `serve`, `dev`, `runner`, `migrate`, `check`, `keygen`, `probe`, `admin`.
//!
//! Arguments never carry secrets; configuration comes from the environment
//! (`--help` on each command lists what it reads). Exit codes: 0 success,
//! 1 a refused start or failed command, 2 a usage error.

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};

use crate::app::{self, check};
use crate::config::{self, LogFormat, Vars};
use crate::{db, telemetry};

#[derive(Debug, Parser)]
#[command(name = "moat", version, about = "The secure backbone of an AI-agent platform, on PostgreSQL alone.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every startup check, then serve HTTP(S). Refuses to start, before opening any port, if a check fails.
    Serve,
    /// Run everything locally in one process: a private PostgreSQL under .moat/, development keys, migrations,
    /// a demo admin, the API with the web app and a runner, on 127.0.0.1 only. Ctrl-C stops it all.
    Dev {
        /// Loopback port to serve on.
        #[arg(long, default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// Directory for the cluster, keys and logs.
        #[arg(long, default_value = ".moat")]
        dir: std::path::PathBuf,
        /// Remove the directory (database, keys) and exit.
        #[arg(long)]
        reset: bool,
        /// Give the demo admin a new random password (printed once) and start.
        #[arg(long)]
        reset_password: bool,
    },
    /// Apply the migrations embedded in this binary (idempotent). Run it as the schema owner role.
    Migrate,
    /// Run every startup check without serving; exit 1 listing every failure with its fix.
    Check,
    /// Print a fresh random key in exactly the format the configuration expects.
    Keygen {
        #[arg(value_enum)]
        kind: KeyKind,
    },
    /// Execute runs: claim queued runs, run their agents, apply cancel and answer commands. Needs no inbound port.
    Runner,
    /// GET a loopback `http://` URL; exit 0 on a 2xx answer within 5 s, else 1. A health check for
    /// containers without curl, e.g. `moat probe http://127.0.0.1:8080/readyz`.
    Probe {
        /// The URL to probe (loopback only).
        url: String,
    },
    /// Create organizations, users and service clients, straight in the database (no API key exists).
    Admin {
        #[command(subcommand)]
        command: crate::admin_cli::AdminCommand,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyKind {
    /// MOAT_SIGNING_KEY: 48 random bytes, base64.
    Signing,
    /// MOAT_ENCRYPTION_KEY: 32 random bytes, base64.
    Encryption,
}

/// Entry point for the binary.
pub fn main() -> ExitCode {
    let mut command = Cli::command();
    for name in ["serve", "migrate", "check", "admin", "runner"] {
        command = command.mut_subcommand(name, |sub| sub.after_help(config::help_for(name)));
    }
    command = command.mut_subcommand("dev", |sub| {
        sub.after_help(
            "Reads MOAT_DEV_POSTGRES_BIN (where initdb and postgres are, if not found otherwise) and every variable \
             `moat serve` and `moat runner` read, except those it sets itself: MOAT_ENV (development), DATABASE_URL \
             (must be unset), the keys (from .moat/dev.env), MOAT_BIND (127.0.0.1:--port), MOAT_PUBLIC_URL.",
        )
    });
    command = command.mut_subcommand("probe", |sub| sub.after_help("Reads no environment variables."));
    command = command.mut_subcommand("keygen", |sub| {
        sub.after_help(
            "Reads no environment variables. Equivalent: openssl rand -base64 48 (signing) or 32 (encryption).",
        )
    });
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Command::Keygen { kind } = cli.command {
        println!(
            "{}",
            match kind {
                KeyKind::Signing => config::keys::generate_signing(),
                KeyKind::Encryption => config::keys::generate_encryption(),
            }
        );
        return ExitCode::SUCCESS;
    }
    // Every TLS use passes its provider explicitly; this covers third-party defaults.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let vars = Vars::from_process();
    telemetry::init(LogFormat::from_vars(&vars), vars.get("MOAT_LOG"));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("moat: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve => app::serve::main(&vars).await,
            Command::Dev { port, dir, reset, reset_password } => {
                crate::dev::command::main(crate::dev::command::Options { port, dir, reset, reset_password }, &vars)
                    .await
            }
            Command::Check => check_only(&vars).await,
            Command::Migrate => migrate(&vars).await,
            Command::Admin { command } => crate::admin_cli::run(command, &vars).await,
            Command::Runner => app::runner::main(&vars).await,
            Command::Probe { url } => probe(&url).await,
            Command::Keygen { .. } => ExitCode::SUCCESS,
        }
    })
}

async fn check_only(vars: &Vars) -> ExitCode {
    let outcome = check::run(vars).await;
    if outcome.problems.is_empty() {
        print!("{}", outcome.report());
        ExitCode::SUCCESS
    } else {
        eprint!("{}", outcome.report());
        ExitCode::FAILURE
    }
}

/// `moat probe URL`: one GET to a loopback address (never anywhere else: it
/// is a health check, not an HTTP client).
async fn probe(url: &str) -> ExitCode {
    let loopback = url::Url::parse(url).ok().filter(|u| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(name)) => name == "localhost",
                None => false,
            }
    });
    let Some(url) = loopback else {
        eprintln!("moat probe: {url:?} is not an http:// URL on a loopback address");
        return ExitCode::from(2);
    };
    let client = match reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("moat probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("moat probe: answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("moat probe: no answer ({})", if e.is_timeout() { "timed out" } else { "connection failed" });
            ExitCode::FAILURE
        }
    }
}

async fn migrate(vars: &Vars) -> ExitCode {
    let mut problems = Vec::new();
    let Some(settings) = config::database::database(vars, &mut problems) else {
        eprintln!("moat migrate: needs the owner role's connection string");
        for problem in &problems {
            eprintln!("{problem}");
        }
        return ExitCode::FAILURE;
    };
    match db::migrate::migrate(&settings).await {
        Ok(applied) if applied.is_empty() => {
            println!("schema is up to date ({} migrations embedded, none pending)", db::migrate::embedded().len());
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            for name in &applied {
                println!("applied {name}");
            }
            println!("schema is up to date ({} applied now)", applied.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("moat migrate: failed: {e}");
            ExitCode::FAILURE
        }
    }
}
