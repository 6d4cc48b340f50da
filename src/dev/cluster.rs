//! `moat dev`'s private PostgreSQL cluster, under `.moat/postgres`, started
//! from the system's binaries.
//!
//! - As root it runs as the `postgres` OS user (`initdb` refuses root).
//! - Password authentication (SCRAM) even on the local socket; the passwords
//!   live in `.moat/dev.env` (mode 0600).
//! - A unix socket only (no TCP listener at all): in `.moat/postgres/run` when
//!   the path is short enough for a socket address, otherwise in a fresh
//!   private directory under `/tmp` (never a loopback port, which another
//!   local user could take first and collect a password from).
//! - The server runs in its own process group (a terminal's Ctrl-C reaches
//!   `moat dev`, which stops Moat first and PostgreSQL last) and with a
//!   parent-death signal, so even a `moat dev` killed with SIGKILL leaves no
//!   PostgreSQL behind.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, chown};

/// How to install the server binaries, printed when none are found.
pub const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, postgres) were not found. Install them:\n  \
     Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y postgresql\n  \
     macOS:         brew install postgresql@16\n\
     then run `moat dev` again.";

/// Unix socket paths longer than this do not fit `sockaddr_un` (107 bytes, with margin).
const MAX_SOCKET_PATH: usize = 100;
const PORT: u16 = 5432;

/// The directory holding `initdb` and `postgres`: `MOAT_DEV_POSTGRES_BIN`
/// when set (and then only there), else `PATH`, then the usual Debian/Ubuntu
/// and Homebrew locations (highest version first).
pub fn find_binaries(configured: Option<&str>) -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = configured {
        let dir = PathBuf::from(dir);
        return has_both(&dir).then_some(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                // Debian links a wrapper into /usr/bin for some tools; follow it to the real directory.
                let real =
                    std::fs::canonicalize(dir.join("initdb")).ok().and_then(|p| p.parent().map(Path::to_path_buf));
                return Some(real.filter(|d| has_both(d)).unwrap_or(dir));
            }
        }
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    for pattern_dir in ["/usr/lib/postgresql", "/opt/homebrew/opt", "/usr/local/opt"] {
        let Ok(entries) = std::fs::read_dir(pattern_dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if pattern_dir == "/usr/lib/postgresql" || name.starts_with("postgresql") {
                candidates.push(entry.path().join("bin"));
            }
        }
    }
    // "15" < "16", "postgresql@14" < "postgresql@16": compare the numbers in the name.
    candidates.sort_by_key(|dir| {
        let digits: String = dir.to_string_lossy().chars().filter(char::is_ascii_digit).collect();
        digits.parse::<u64>().unwrap_or(0)
    });
    candidates.into_iter().rev().find(|dir| has_both(dir))
}

/// Where the cluster listens: the directory of its unix socket.
#[derive(Debug, Clone)]
pub struct Endpoint(PathBuf);

impl Endpoint {
    /// A key=value connection string for `user`.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        let quote = |value: &str| value.replace('\\', "\\\\").replace('\'', "\\'");
        format!(
            "host='{}' port={PORT} user={user} password='{}' dbname={database} connect_timeout=5",
            quote(&self.0.display().to_string()),
            quote(password)
        )
    }
}

/// A running private cluster; [`Cluster::stop`] shuts it down (dropping it kills it).
pub struct Cluster {
    child: tokio::process::Child,
    pub endpoint: Endpoint,
    pub log: PathBuf,
    /// A socket directory made under /tmp (removed on stop), when `.moat`'s path was too long.
    temporary_socket_dir: Option<PathBuf>,
}

/// The `postgres` OS user when running as root (initdb refuses root).
fn run_as() -> anyhow::Result<Option<User>> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    User::from_name("postgres")?
        .map(Some)
        .context("running as root, but there is no `postgres` OS user to run PostgreSQL as (initdb refuses root)")
}

/// A command for a PostgreSQL binary: as `postgres` when root, with a
/// parent-death signal when `setpriv` exists, in its own process group.
fn command(bin: &Path, user: Option<&User>, death_signal: bool) -> std::process::Command {
    let setpriv = Path::new("/usr/bin/setpriv");
    let mut command = if setpriv.is_file() {
        let mut c = std::process::Command::new(setpriv);
        if let Some(user) = user {
            c.arg(format!("--reuid={}", user.uid)).arg(format!("--regid={}", user.gid)).arg("--init-groups");
        }
        if death_signal {
            c.args(["--pdeathsig", "INT"]);
        }
        c.arg("--").arg(bin);
        c
    } else {
        let mut c = std::process::Command::new(bin);
        if let Some(user) = user {
            c.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        c
    };
    command.process_group(0);
    command
}

fn private_dir(path: &Path, owner: Option<&User>) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    if let Some(user) = owner {
        chown(path, Some(user.uid), Some(user.gid)).with_context(|| format!("cannot chown {}", path.display()))?;
    }
    Ok(())
}

/// Creates the cluster in `root` (`root/data`) on first use, starts it and
/// waits until it accepts connections. `superuser_password` is set by
/// `initdb` and must be the same on every later start.
pub async fn start(bin: &Path, root: &Path, superuser_password: &str) -> anyhow::Result<Cluster> {
    let user = run_as()?;
    private_dir(root, user.as_ref())?;
    let data = root.join("data");
    if !data.join("PG_VERSION").is_file() {
        // A half-made data directory from an interrupted first run is useless.
        let _ = std::fs::remove_dir_all(&data);
        let pwfile = root.join("initdb-password");
        std::fs::write(&pwfile, format!("{superuser_password}\n"))?;
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))?;
        if let Some(user) = &user {
            chown(&pwfile, Some(user.uid), Some(user.gid))?;
        }
        let output = command(&bin.join("initdb"), user.as_ref(), false)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output();
        let _ = std::fs::remove_file(&pwfile);
        let output = output.context("cannot run initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&output.stderr).trim(),
                if user.is_some() {
                    format!(
                        "\n(the `postgres` OS user must be able to reach {}; run moat dev from a directory it can traverse)",
                        root.display()
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    let mut socket_dir = root.join("run");
    let mut temporary_socket_dir = None;
    if socket_dir.join(format!(".s.PGSQL.{PORT}")).as_os_str().len() <= MAX_SOCKET_PATH {
        private_dir(&socket_dir, user.as_ref())?;
    } else {
        socket_dir = short_private_dir(user.as_ref())?;
        temporary_socket_dir = Some(socket_dir.clone());
    }
    let endpoint = Endpoint(socket_dir.clone());
    let log = root.join("postgres.log");
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600))?;
    let mut postgres = command(&bin.join("postgres"), user.as_ref(), true);
    postgres.arg("-D").arg(&data).arg("-k").arg(&socket_dir);
    postgres.args(["-c", "listen_addresses=", "-p", &PORT.to_string()]);
    postgres.stdin(Stdio::null()).stdout(log_file.try_clone()?).stderr(log_file);
    let mut postgres = tokio::process::Command::from(postgres);
    // Spawned from a runtime worker thread (which lives as long as the runtime):
    // the parent-death signal follows the spawning thread, not the process.
    let child = postgres.kill_on_drop(true).spawn().context("cannot start postgres")?;
    let mut cluster = Cluster { child, endpoint, log, temporary_socket_dir };
    cluster.wait_ready(superuser_password).await?;
    Ok(cluster)
}

/// A new directory `/tmp/moat-dev-<random>`, mode 0700 (created, never reused).
fn short_private_dir(owner: Option<&User>) -> anyhow::Result<PathBuf> {
    for _ in 0..10 {
        let name = format!("/tmp/moat-dev-{:016x}", rand::random::<u64>());
        let path = PathBuf::from(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                if let Some(user) = owner {
                    chown(&path, Some(user.uid), Some(user.gid))?;
                }
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).context("cannot create a socket directory under /tmp"),
        }
    }
    bail!("cannot create a socket directory under /tmp")
}

impl Cluster {
    async fn wait_ready(&mut self, password: &str) -> anyhow::Result<()> {
        let url = self.endpoint.url("postgres", password, "postgres");
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait()? {
                bail!("postgres exited ({status}) while starting; see {}", self.log.display());
            }
            if let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                drop(client);
                drop(connection);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("postgres did not accept connections within 30 s; see {}", self.log.display())
    }

    /// The process id of the postmaster (for tests and diagnostics).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fast shutdown (SIGINT: active sessions end, data is flushed), then waits.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
            }
        }
        if let Some(dir) = &self.temporary_socket_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
