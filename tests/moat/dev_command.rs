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

/// Local addresses (hex, as in /proc/net/tcp) listening on `port`, IPv4 and IPv6.
fn tcp_listeners(port: u16) -> Vec<String> {
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state) = (fields.get(1)?, fields.get(3)?);
            (*state == "0A" && local.ends_with(&wanted)).then(|| local.split(':').next().unwrap_or("").to_owned())
        })
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
    let port = crate::harness::free_port();
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
    // Loopback only: every listening TCP socket on the port is 127.0.0.1's
    // (and PostgreSQL has none: it listens on its unix socket only).
    let listeners = tcp_listeners(port);
    assert!(!listeners.is_empty() && listeners.iter().all(|a| a == "0100007F"), "{listeners:?}");
    let postmaster = postgres_processes(&dir).into_iter().next().unwrap();
    assert!(postmaster.contains("listen_addresses= "), "{postmaster}");
    // The database is marked as used by development mode (production refuses it).
    let db_password = std::fs::read_to_string(dir.join("dev.env"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("DEV_DB_PASSWORD=").map(str::to_owned))
        .unwrap();
    let (client, connection) = tokio_postgres::connect(
        &format!("host={} user=moat_owner password={db_password} dbname=moat", dir.join("postgres/run").display()),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let taint: i64 = client.query_one("SELECT count(*) FROM moat_dev_taint", &[]).await.unwrap().get(0);
    assert!(taint >= 1, "the development database is not marked");
    drop(client);
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
        (env().set("MOAT_LISTEN_DATABASE_URL", "postgres://somewhere/db"), "MOAT_LISTEN_DATABASE_URL is set"),
        (env().set("MOAT_ENV", "production"), "moat dev is development only"),
    ];
    for (env, expected) in cases {
        let finished =
            process::run(&["dev", "--dir", &dir, "--port", &crate::harness::free_port().to_string()], &env).await;
        assert_eq!(finished.status.code(), Some(1), "{expected}");
        assert!(finished.stderr.contains(expected), "{expected}: {}", finished.stderr);
        assert!(finished.stderr.contains("brew install") || expected != "apt-get install -y postgresql");
    }
    assert!(!Path::new(&dir).join("postgres").exists(), "a refused start created a cluster");
    // A directory of the user's is neither taken over nor deleted by --dir/--reset.
    let theirs = root.path().join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
    let theirs_arg = theirs.display().to_string();
    for args in [vec!["dev", "--dir", &theirs_arg, "--reset"], vec!["dev", "--dir", &theirs_arg, "--port", "18099"]] {
        let finished = process::run(&args, &env()).await;
        assert_eq!(finished.status.code(), Some(1), "{args:?}");
        assert!(finished.stderr.contains("not a moat dev directory"), "{}", finished.stderr);
    }
    assert_eq!(std::fs::read_to_string(theirs.join("notes.txt")).unwrap(), "mine");
    // Port 0 would make the public URL unusable: a usage error.
    assert_eq!(process::run(&["dev", "--dir", &dir, "--port", "0"], &env()).await.status.code(), Some(2));
}

/// A `.moat` path too long for a unix socket address: the socket goes to a
/// fresh private directory under /tmp (never a TCP port), removed on stop.
#[tokio::test]
async fn a_deep_directory_gets_a_short_private_socket_directory() {
    let root = tempfile::Builder::new().prefix("moat-dev-").tempdir_in("/tmp").unwrap();
    let dir = root.path().join("a-rather-long-directory-name-for-a-project".repeat(2)).join(".moat");
    let port = crate::harness::free_port().to_string();
    let dir_arg = dir.display().to_string();
    let dev = process::start(&["dev", "--port", &port, "--dir", &dir_arg], &env(), "Ctrl-C stops everything").await;
    let postmaster = postgres_processes(&dir).into_iter().next().expect("the private cluster");
    let socket_dir =
        postmaster.split(" -k ").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap().to_owned();
    assert!(socket_dir.starts_with("/tmp/moat-dev-"), "{postmaster}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket_dir).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
    let password = printed_password(&dev.output()).unwrap();
    assert_eq!(login(&format!("http://127.0.0.1:{port}"), &password).await, 200);
    let finished = dev.stop_with(Signal::SIGINT).await;
    assert!(finished.status.success());
    assert!(!Path::new(&socket_dir).exists(), "the temporary socket directory was left behind");
}
