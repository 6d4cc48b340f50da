//! `moat dev` — the README's first command — as a newcomer runs it: from an
//! empty directory to a private PostgreSQL, a demo admin, the web app and a
//! runner on loopback; Ctrl-C stops everything, PostgreSQL included.

use std::path::Path;

use nix::sys::signal::Signal;
use serde_json::json;

use crate::harness::process::{self, Env};

fn env() -> Env {
    Env::default().set("PATH", &std::env::var("PATH").unwrap_or_default())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// PostgreSQL processes whose command line mentions `dir`.
fn postgres_processes(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| cmdline.contains("postgres") && cmdline.contains(&needle))
        .collect()
}

fn printed_password(output: &str) -> Option<String> {
    output.lines().find_map(|l| l.split("with password: ").nth(1)).map(|p| p.trim().to_owned())
}

async fn login(base: &str, password: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": moat::dev::command::ADMIN_EMAIL, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn moat_dev_starts_from_nothing_serves_the_app_and_stops_cleanly_on_sigint() {
    let root = tempfile::Builder::new().prefix("moat-dev-").tempdir_in("/tmp").unwrap();
    let dir = root.path().join(".moat");
    let port = free_port();
    let (port_arg, dir_arg) = (port.to_string(), dir.display().to_string());
    let args = ["dev", "--port", &port_arg, "--dir", &dir_arg];
    let base = format!("http://127.0.0.1:{port}");

    let dev = process::start(&args, &env(), "Ctrl-C stops everything").await;
    let output = dev.output();
    assert!(output.contains(&format!("Moat is running (development mode): {base}/")), "{output}");
    assert!(output.contains("DEV_BYPASS startup: generated development signing and encryption keys"), "{output}");
    let password = printed_password(&output).expect("a password printed on first start");
    // Keys are private to the user; the password is stored only hashed.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join("dev.env")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(!std::fs::read_to_string(dir.join("dev.env")).unwrap().contains(&password));
    // Loopback only.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    // The app, and the API with the printed login; a run executes (the runner is in the process).
    let page = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-security-policy"], moat::web::HTML_CSP);
    assert!(page.text().await.unwrap().contains("/assets/app.js"));
    assert_eq!(login(&base, &password).await, 200);
    let http = reqwest::Client::new();
    let token = crate::harness::http::login_at(&http, &base, moat::dev::command::ADMIN_EMAIL, &password).await;
    let conv = crate::harness::http::post_json(
        &http,
        &format!("{base}/v1/conversations"),
        Some(&token),
        json!({"title": "hello", "agent": "demo"}),
    )
    .await;
    let conv = conv["id"].as_str().unwrap().to_owned();
    let run = crate::harness::http::post_json(
        &http,
        &format!("{base}/v1/conversations/{conv}/runs"),
        Some(&token),
        json!({"input": {"steps": 2, "delay_ms": 1}}),
    )
    .await;
    let run = run["id"].as_str().unwrap().to_owned();
    crate::harness::http::wait_run_status(&http, &base, &token, &run, "succeeded").await;
    assert_eq!(postgres_processes(&dir).len(), 1, "one postmaster for the private cluster");

    // Ctrl-C: Moat stops, then PostgreSQL; nothing is left running.
    let finished = dev.stop_with(Signal::SIGINT).await;
    assert!(finished.status.success(), "{}{}", finished.stdout, finished.stderr);
    assert!(finished.stdout.contains("moat dev stopped (PostgreSQL too)"));
    assert!(postgres_processes(&dir).is_empty(), "PostgreSQL left behind: {:?}", postgres_processes(&dir));

    // Second start: same keys and data, no new password printed; the old one still works.
    let dev = process::start(&args, &env(), "Ctrl-C stops everything").await;
    assert!(printed_password(&dev.output()).is_none(), "{}", dev.output());
    assert!(dev.output().contains("DEV_BYPASS startup: using development signing and encryption keys"));
    assert_eq!(login(&base, &password).await, 200);
    dev.stop_with(Signal::SIGINT).await;

    // --reset-password: a new one works, the old one no longer does.
    let reset_args = ["dev", "--port", &port_arg, "--dir", &dir_arg, "--reset-password"];
    let dev = process::start(&reset_args, &env(), "Ctrl-C stops everything").await;
    let new_password = printed_password(&dev.output()).expect("a new password");
    assert_ne!(new_password, password);
    assert_eq!(login(&base, &new_password).await, 200);
    assert_eq!(login(&base, &password).await, 401);
    // SIGKILL (no chance to clean up): PostgreSQL still goes, by its parent-death signal.
    dev.kill().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !postgres_processes(&dir).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "PostgreSQL outlived a killed moat dev");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // --reset wipes the directory.
    let reset = process::run(&["dev", "--dir", &dir_arg, "--reset"], &env()).await;
    assert!(reset.status.success(), "{}{}", reset.stdout, reset.stderr);
    assert!(!dir.exists());
}

#[tokio::test]
async fn moat_dev_refuses_what_it_must_not_touch_and_names_the_install_command() {
    let root = tempfile::Builder::new().prefix("moat-dev-").tempdir_in("/tmp").unwrap();
    let dir = root.path().join(".moat").display().to_string();
    let empty = root.path().join("no-postgres-here");
    std::fs::create_dir_all(&empty).unwrap();

    let cases = [
        (env().set("MOAT_DEV_POSTGRES_BIN", &empty.display().to_string()), "apt-get install -y postgresql"),
        (env().set("DATABASE_URL", "postgres://somewhere/db"), "DATABASE_URL is set"),
        (env().set("MOAT_ENV", "production"), "moat dev is development only"),
    ];
    for (env, expected) in cases {
        let finished = process::run(&["dev", "--dir", &dir, "--port", &free_port().to_string()], &env).await;
        assert_eq!(finished.status.code(), Some(1), "{expected}");
        assert!(finished.stderr.contains(expected), "{expected}: {}", finished.stderr);
        assert!(finished.stderr.contains("brew install") || expected != "apt-get install -y postgresql");
    }
    assert!(!Path::new(&dir).join("postgres").exists(), "a refused start created a cluster");
}
