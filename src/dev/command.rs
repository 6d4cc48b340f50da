//! `moat dev`: everything a newcomer needs, in one command and one process.
//!
//! A private PostgreSQL cluster under `.moat/` ([`super::cluster`]),
//! development keys in `.moat/dev.env` (0600, reused), the three database
//! roles the production layout uses (owner, API, runner — so the same
//! row-level security and privilege checks apply), migrations, a demo
//! organization with an admin whose random password is printed once, then the
//! API (with the web app) and a runner in this process on
//! `127.0.0.1:<port>`. Ctrl-C (or SIGTERM) stops Moat, then PostgreSQL.
//! It never listens on anything but loopback, and it refuses to run against
//! a `DATABASE_URL` or in production mode.

use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use tokio_util::sync::CancellationToken;

use super::cluster::{self, Cluster};
use crate::config::{Environment, Vars};
use crate::identity::Role;

/// The demo administrator `moat dev` creates.
pub const ADMIN_EMAIL: &str = "admin@moat.localhost";
const OWNER: &str = "moat_owner";
const APP: &str = "moat_app";
const RUNNER: &str = "moat_runner_app";

/// What `moat dev` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub port: u16,
    pub dir: PathBuf,
    pub reset: bool,
    pub reset_password: bool,
}

impl Options {
    /// Uploaded files live with the rest of the development state.
    fn dir_files(&self) -> String {
        self.dir.join("files").display().to_string()
    }
}

pub async fn main(options: Options, vars: &Vars) -> ExitCode {
    match run(options, vars).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moat dev: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options, vars: &Vars) -> anyhow::Result<()> {
    if options.reset {
        return reset(&options.dir);
    }
    if let Some(name) =
        ["DATABASE_URL", "DATABASE_URL_FILE", "MOAT_LISTEN_DATABASE_URL"].into_iter().find(|n| vars.get(n).is_some())
    {
        bail!(
            "{name} is set, but moat dev runs its own private PostgreSQL under {}.\n\
             Unset it (`env -u {name} moat dev`), or run against your server with \
             `moat migrate`, `moat serve` and `moat runner` (docs/deployment.md).",
            options.dir.display()
        );
    }
    if let Some(env) = vars.get("MOAT_ENV")
        && env != "development"
    {
        bail!("MOAT_ENV={env}: moat dev is development only; unset MOAT_ENV (production is `moat serve`)");
    }
    let Some(bin) = cluster::find_binaries(vars.get("MOAT_DEV_POSTGRES_BIN")) else {
        bail!("{}", cluster::INSTALL_HINT);
    };
    let dev = Environment::Development.dev_mode().context("development mode")?;
    let dir = absolute(&options.dir)?;
    ensure_ours(&dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // As root the cluster runs as `postgres`, which must be able to pass through
    // (not list) this directory; everything inside stays private to its owner.
    let mode = if nix::unistd::Uid::effective().is_root() { 0o711 } else { 0o700 };
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
    let (secrets, created) = DevSecrets::load_or_create(&dir.join("dev.env"))?;
    dev.bypass(
        "startup",
        format!(
            "{} development signing and encryption keys in {} (never use them in production)",
            if created { "generated" } else { "using" },
            dir.join("dev.env").display()
        ),
    );

    // Ctrl-C is ours from here on, so an interrupted start still stops PostgreSQL.
    let stop = CancellationToken::new();
    let signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::app::shutdown_signal().await;
            stop.cancel();
        })
    };
    let result = async {
        let cluster_dir = dir.join("postgres");
        let cluster = tokio::select! {
            started = cluster::start(&bin, &cluster_dir, &secrets.db_password) => started?,
            () = stop.cancelled() => bail!("interrupted while starting PostgreSQL"),
        };
        let result = serve(&options, vars, &cluster, &secrets, stop.clone()).await;
        cluster.stop().await;
        println!("moat dev stopped (PostgreSQL too)");
        result
    }
    .await;
    signal.abort();
    result
}

/// Refuses a directory `moat dev` did not make: `--dir` must not let it
/// change the permissions of, or `--reset` delete, a directory of the user's.
fn ensure_ours(dir: &Path) -> anyhow::Result<()> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Ok(()); // does not exist yet
    };
    if entries.next().is_none() || dir.join("dev.env").is_file() {
        return Ok(());
    }
    bail!("{} is not empty and holds no dev.env: not a moat dev directory; choose another --dir", dir.display())
}

/// Everything after the cluster is up; the caller stops the cluster whatever happens.
async fn serve(
    options: &Options,
    vars: &Vars,
    cluster: &Cluster,
    secrets: &DevSecrets,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let prepared = tokio::select! {
        prepared = prepare(options, vars, cluster, secrets) => prepared?,
        () = stop.cancelled() => bail!("interrupted while starting"),
    };
    let (app, runner_config, password) = prepared;
    let addr = app.local_addr()?;
    println!("\nMoat is running (development mode): http://{addr}/");
    match password {
        Some(password) => println!(
            "Log in as {ADMIN_EMAIL} with password: {password}\n(shown once; `moat dev --reset-password` makes a new one)"
        ),
        None => println!(
            "Log in as {ADMIN_EMAIL} with the password printed when it was created (`moat dev --reset-password` makes a new one)"
        ),
    }
    println!("PostgreSQL log: {} · Ctrl-C stops everything\n", cluster.log.display());

    // Either half ending (an error, or Ctrl-C) stops the other.
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let result = app.run_until(stop.clone().cancelled_owned()).await;
            stop.cancel();
            result
        })
    };
    let runner = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let result = crate::runner::run(runner_config, stop.clone().cancelled_owned()).await;
            stop.cancel();
            result
        })
    };
    let (served, ran) = tokio::join!(server, runner);
    served.context("server task")?.context("server")?;
    ran.context("runner task")?.context("runner")?;
    Ok(())
}

/// Roles, schema, configuration, the listener and the demo admin: everything before serving.
async fn prepare(
    options: &Options,
    vars: &Vars,
    cluster: &Cluster,
    secrets: &DevSecrets,
) -> anyhow::Result<(crate::app::App, crate::config::runner::RunnerConfig, Option<String>)> {
    let url = |user: &str, database: &str| cluster.endpoint.url(user, &secrets.db_password, database);
    bootstrap(&url("postgres", "postgres"), &secrets.db_password).await?;
    let owner = crate::db::DatabaseSettings::parse(&url(OWNER, "moat")).map_err(anyhow::Error::msg)?;
    crate::db::migrate::migrate(&owner).await.context("migrating the development database")?;

    let origin = format!("http://127.0.0.1:{}", options.port);
    let mut server_vars = vars
        .clone()
        .with("MOAT_ENV", "development")
        .with("DATABASE_URL", url(APP, "moat"))
        .with("MOAT_SIGNING_KEY", &secrets.signing_key)
        .with("MOAT_ENCRYPTION_KEY", &secrets.encryption_key)
        .with("MOAT_BIND", format!("127.0.0.1:{}", options.port))
        .with("MOAT_PUBLIC_URL", &origin)
        .with("MOAT_FILES_DIR", options.dir_files())
        .without("MOAT_ALLOWED_ORIGINS");
    for name in [
        "MOAT_SIGNING_KEY_FILE",
        "MOAT_ENCRYPTION_KEY_FILE",
        "MOAT_SIGNING_KEYS_PREVIOUS",
        "MOAT_SIGNING_KEYS_PREVIOUS_FILE",
        "MOAT_TLS_CERT",
        "MOAT_TLS_KEY",
        "MOAT_TLS_TERMINATED_UPSTREAM",
    ] {
        server_vars = server_vars.without(name);
    }
    let outcome = crate::app::check::run(&server_vars).await;
    if !outcome.problems.is_empty() {
        bail!("startup checks failed:\n{}", outcome.report());
    }
    let config = outcome.config.context("startup checks produced no configuration")?;
    let runner_config = crate::config::runner::load(&server_vars.clone().with("DATABASE_URL", url(RUNNER, "moat")))
        .map_err(|problems| anyhow::anyhow!("runner configuration: {problems:?}"))?;

    let app = crate::app::App::build(config).await?;
    let password = demo_admin(&app.state().db, options.reset_password).await?;
    Ok((app, runner_config, password))
}

/// Roles and database, idempotently; passwords follow `dev.env` every start.
async fn bootstrap(superuser_url: &str, password: &str) -> anyhow::Result<()> {
    let (client, connection) =
        tokio_postgres::connect(superuser_url, tokio_postgres::NoTls).await.context("connecting as postgres")?;
    let connection = tokio::spawn(connection);
    // The verifier, not the password, goes to the server (nothing to leak into its log).
    let literal = postgres_protocol::password::scram_sha_256(password.as_bytes()).replace('\'', "''");
    let statements = [
        format!("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER}') THEN CREATE ROLE {OWNER} LOGIN; END IF; END $$"),
        format!("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP}') THEN CREATE ROLE {APP} LOGIN; END IF; END $$"),
        format!("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{RUNNER}') THEN CREATE ROLE {RUNNER} LOGIN; END IF; END $$"),
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'moat_runtime') THEN CREATE ROLE moat_runtime NOLOGIN; END IF; END $$".to_owned(),
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'moat_runner') THEN CREATE ROLE moat_runner NOLOGIN; END IF; END $$".to_owned(),
        format!("ALTER ROLE {OWNER} PASSWORD '{literal}'"),
        format!("ALTER ROLE {APP} PASSWORD '{literal}'"),
        format!("ALTER ROLE {RUNNER} PASSWORD '{literal}'"),
        format!("GRANT moat_runtime TO {APP}, {RUNNER}"),
        format!("GRANT moat_runner TO {RUNNER}"),
    ];
    for statement in &statements {
        client.batch_execute(statement).await.context("creating the development roles")?;
    }
    let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = 'moat'", &[]).await?.is_some();
    if !exists {
        client.batch_execute(&format!("CREATE DATABASE moat OWNER {OWNER}")).await?;
    }
    drop(client);
    let _ = connection.await;
    Ok(())
}

/// Creates the demo organization and admin on first use; returns a password
/// to print when one was made now.
async fn demo_admin(pool: &crate::db::Pool, reset_password: bool) -> anyhow::Result<Option<String>> {
    if !crate::admin::user_exists(pool, ADMIN_EMAIL).await? {
        let org = crate::admin::create_org(pool, "Demo").await?;
        let password = crate::admin::generate_password();
        crate::admin::create_user(pool, org, ADMIN_EMAIL, Role::Admin, password.clone()).await?;
        return Ok(Some(password));
    }
    if reset_password {
        let password = crate::admin::generate_password();
        crate::admin::set_password(pool, ADMIN_EMAIL, password.clone()).await?;
        return Ok(Some(password));
    }
    Ok(None)
}

/// `moat dev --reset`: removes the directory (refused while its cluster runs).
fn reset(dir: &Path) -> anyhow::Result<()> {
    ensure_ours(dir)?;
    let pid_file = dir.join("postgres").join("data").join("postmaster.pid");
    if let Ok(text) = std::fs::read_to_string(&pid_file)
        && let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok())
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
    {
        bail!("a moat dev is still running on {} (PostgreSQL pid {pid}); stop it first", dir.display());
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => println!("removed {}; the next `moat dev` starts from nothing", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!("nothing to remove at {}", dir.display()),
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
    Ok(())
}

fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    Ok(if dir.is_absolute() { dir.to_path_buf() } else { std::env::current_dir()?.join(dir) })
}

/// The development secrets in `.moat/dev.env` (`NAME=value` lines, mode 0600).
struct DevSecrets {
    signing_key: String,
    encryption_key: String,
    /// Every role of the private cluster uses it (SCRAM, loopback or a 0700 socket directory).
    db_password: String,
}

impl std::fmt::Debug for DevSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevSecrets(..)")
    }
}

impl DevSecrets {
    fn load_or_create(path: &Path) -> anyhow::Result<(Self, bool)> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                // Whatever happened to it since, the file is private again.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                let values: BTreeMap<&str, &str> =
                    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim(), v.trim())).collect();
                let get = |name: &str| {
                    values
                        .get(name)
                        .map(|v| (*v).to_owned())
                        .with_context(|| format!("{} has no {name}; `moat dev --reset` starts over", path.display()))
                };
                let secrets = Self {
                    signing_key: get("MOAT_SIGNING_KEY")?,
                    encryption_key: get("MOAT_ENCRYPTION_KEY")?,
                    db_password: get("DEV_DB_PASSWORD")?,
                };
                Ok((secrets, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secrets = Self {
                    signing_key: crate::config::keys::generate_signing(),
                    encryption_key: crate::config::keys::generate_encryption(),
                    db_password: crate::admin::generate_password(),
                };
                let text = format!(
                    "# moat dev: development-only secrets (never use them in production)\n\
                     MOAT_SIGNING_KEY={}\nMOAT_ENCRYPTION_KEY={}\nDEV_DB_PASSWORD={}\n",
                    secrets.signing_key, secrets.encryption_key, secrets.db_password
                );
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                std::io::Write::write_all(&mut file, text.as_bytes())?;
                Ok((secrets, true))
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}
