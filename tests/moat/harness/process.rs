//! Driving the real `moat` binary as a child process, with a clean environment.

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::pg::{Role, TestDb};

pub const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// The environment for one `moat` run. Starts from nothing: the test's own
/// environment (which may hold MOAT_TEST_DATABASE_URL) never leaks in.
#[derive(Debug, Clone, Default)]
pub struct Env(pub BTreeMap<String, String>);

impl Env {
    /// A complete, valid production configuration against `db` as the runtime role.
    pub fn production(db: &TestDb) -> Self {
        Self::default()
            .set("MOAT_ENV", "production")
            .set("DATABASE_URL", &db.url(Role::App))
            .set("MOAT_SIGNING_KEY", &moat::config::keys::generate_signing())
            .set("MOAT_ENCRYPTION_KEY", &moat::config::keys::generate_encryption())
            .set("MOAT_PUBLIC_URL", "https://moat.example.com")
            .set("MOAT_BIND", "127.0.0.1:0")
            .set("MOAT_FILES_DIR", &files_dir().display().to_string())
    }

    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.0.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn unset(mut self, name: &str) -> Self {
        self.0.remove(name);
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// As `moat::config::Vars`, for in-process use.
    pub fn vars(&self) -> moat::config::Vars {
        moat::config::Vars::from_pairs(self.0.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// What a finished run printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `moat ARGS` to completion (bounded to 60 s).
pub async fn run(args: &[&str], env: &Env) -> Finished {
    let child = command(args, env).spawn().expect("spawn moat");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("moat did not finish within 60 s")
        .expect("wait for moat");
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A fresh, private uploads directory for one test's Moat.
pub fn files_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("moat-test-files").join(uuid::Uuid::new_v4().to_string())
}

fn command(args: &[&str], env: &Env) -> Command {
    let mut command = Command::new(MOAT);
    // Relative defaults (e.g. MOAT_FILES_DIR) land in /tmp, never in the repository.
    command
        .current_dir(std::env::temp_dir())
        .args(args)
        .env_clear()
        .envs(&env.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// A running `moat serve`.
pub struct Serving {
    child: Child,
    pub addr: std::net::SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

/// Starts `moat serve` and waits until it logs its listening address.
pub async fn serve(env: &Env) -> Serving {
    let mut child = command(&["serve"], env).spawn().expect("spawn moat serve");
    let stdout = collect(child.stdout.take().expect("stdout"));
    let stderr = collect(child.stderr.take().expect("stderr"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let addr = {
            let out = stdout.lock().expect("lock");
            out.lines()
                .find_map(|line| line.split("moat listening on ").nth(1))
                // The address ends at the first character no address has (text or JSON logs).
                .and_then(|rest| rest.split(|c: char| !(c.is_ascii_hexdigit() || ".:[]".contains(c))).next())
                .and_then(|a| a.parse().ok())
        };
        if let Some(addr) = addr {
            return Serving { child, addr, stdout, stderr };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "moat serve exited ({status}) before listening:\n{}\n{}",
                stdout.lock().expect("lock"),
                stderr.lock().expect("lock")
            );
        }
        assert!(tokio::time::Instant::now() < deadline, "moat serve did not start listening within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `moat runner` and waits until it logs that it started.
pub async fn runner(env: &Env) -> Serving {
    start(&["runner"], env, "runner started").await
}

/// Starts `moat <args>` and waits (30 s at most) until its output contains `ready`.
pub async fn start(args: &[&str], env: &Env, ready: &str) -> Serving {
    let mut child = command(args, env).spawn().expect("spawn moat");
    let stdout = collect(child.stdout.take().expect("stdout"));
    let stderr = collect(child.stderr.take().expect("stderr"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let printed = format!("{}{}", stdout.lock().expect("lock"), stderr.lock().expect("lock"));
        if printed.contains(ready) {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            return Serving { child, addr, stdout, stderr };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("moat {args:?} exited ({status}):\n{printed}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "moat {args:?} did not print {ready:?} within 30 s:\n{printed}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Serving {
    /// Sends a signal (SIGSTOP, SIGCONT…) without waiting.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("signal");
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout.lock().expect("lock"), self.stderr.lock().expect("lock"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> i32 {
        self.child.id().and_then(|id| i32::try_from(id).ok()).expect("pid")
    }

    /// SIGKILL: the process dies mid-whatever, as in a crash.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns everything printed.
    pub async fn terminate(self) -> Finished {
        self.stop_with(nix::sys::signal::Signal::SIGTERM).await
    }

    /// Sends `signal` and waits (bounded) for the exit; returns everything printed.
    pub async fn stop_with(mut self, signal: nix::sys::signal::Signal) -> Finished {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("signal");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("moat did not exit within 30 s of the signal")
            .expect("wait");
        // Give the readers a moment to drain the pipes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stdout = self.stdout.lock().expect("lock").clone();
        let stderr = self.stderr.lock().expect("lock").clone();
        Finished { status, stdout, stderr }
    }
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<String>> {
    let buffer = Arc::new(Mutex::new(String::new()));
    let sink = buffer.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut out = sink.lock().expect("lock");
            out.push_str(&line);
            out.push('\n');
        }
    });
    buffer
}
