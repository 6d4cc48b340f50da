//! The single flag: development relaxes checks loudly (`DEV_BYPASS`), marks the
//! database, and production never says the word and refuses a marked database.

use crate::harness::{self, Env, TestDb, assert_security_headers, run};

fn development(db: &TestDb) -> Env {
    Env::production(db)
        .set("MOAT_ENV", "development")
        .unset("MOAT_SIGNING_KEY")
        .unset("MOAT_ENCRYPTION_KEY")
        .unset("MOAT_PUBLIC_URL")
}

#[tokio::test]
async fn development_relaxes_loudly_and_marks_the_database() {
    let db = TestDb::migrated().await;
    let serving = harness::serve(&development(&db)).await;
    let client = reqwest::Client::new();
    for path in ["/healthz", "/missing"] {
        let response = client.get(serving.url(path)).send().await.unwrap();
        assert_eq!(response.headers().get("x-moat-dev-mode").map(|v| v.to_str().unwrap()), Some("1"), "{path}");
        assert!(response.headers().get("strict-transport-security").is_some(), "{path}");
    }
    let log = serving.terminate().await.all_output();
    for expect in [
        "DEV_BYPASS startup: MOAT_SIGNING_KEY is missing; using an ephemeral key",
        "DEV_BYPASS startup: MOAT_ENCRYPTION_KEY is missing; using an ephemeral key",
        "DEV_BYPASS startup: MOAT_PUBLIC_URL is not set; assuming http://127.0.0.1:0",
    ] {
        assert!(log.contains(expect), "missing {expect:?} in:\n{log}");
    }
    for line in log.lines().filter(|l| l.contains("DEV_BYPASS")) {
        assert!(line.contains(" WARN "), "a bypass not logged at WARN: {line}");
    }

    // Production now refuses this database, and says why.
    let out = run(&["check"], &Env::production(&db)).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
    assert!(out.stderr.contains("this database was used by a development-mode Moat"), "{}", out.stderr);
    assert!(out.stderr.contains("create a fresh database"), "{}", out.stderr);
    assert!(!out.all_output().contains("DEV_BYPASS"));
}

#[tokio::test]
async fn development_uses_weak_keys_it_is_given_and_says_so() {
    let db = TestDb::migrated().await;
    let weak = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [b'A'; 48]);
    let env = development(&db)
        .set("MOAT_SIGNING_KEY", &weak)
        .set("MOAT_ENCRYPTION_KEY", "replace-with-output-of-moat-keygen-encryption")
        .set("MOAT_BIND", "0.0.0.0:0")
        .set("MOAT_PUBLIC_URL", "http://localhost:8080");
    let out = run(&["check"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", out.all_output());
    for expect in [
        "DEV_BYPASS startup: MOAT_SIGNING_KEY is visibly low-entropy (1 distinct byte values; random keys have about 30); using it anyway",
        "DEV_BYPASS startup: MOAT_ENCRYPTION_KEY is a known default or placeholder value; using an ephemeral key",
        "DEV_BYPASS startup: MOAT_BIND is 0.0.0.0:0, a non-loopback address",
        "DEV_BYPASS startup: MOAT_PUBLIC_URL is not https",
    ] {
        assert!(out.stdout.contains(expect), "missing {expect:?} in:\n{}", out.stdout);
    }
}

#[tokio::test]
async fn development_still_refuses_an_over_privileged_role() {
    let db = TestDb::migrated().await;
    let env = development(&db).set("DATABASE_URL", &db.url(crate::harness::Role::Superuser));
    let out = run(&["check"], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
    assert!(out.stderr.contains("is a superuser"));
}

#[tokio::test]
async fn development_bypass_lines_survive_a_strict_log_filter_and_json() {
    let db = TestDb::migrated().await;
    let out = run(&["check"], &development(&db).set("MOAT_LOG", "error").set("MOAT_LOG_FORMAT", "json")).await;
    assert_eq!(out.status.code(), Some(0), "{}", out.all_output());
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("DEV_BYPASS"))
        .unwrap_or_else(|| panic!("no bypass line:\n{}", out.stdout));
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["level"], "WARN");
    assert!(event["message"].as_str().unwrap().starts_with("DEV_BYPASS startup: "), "{line}");
}

/// A production run's entire log never contains the bypass prefix, and no
/// response carries the development header.
#[tokio::test]
async fn production_log_never_contains_dev_bypass() {
    let db = TestDb::migrated().await;
    let serving = harness::serve(&Env::production(&db)).await;
    let client = reqwest::Client::new();
    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/nowhere", 404)] {
        let response = client.get(serving.url(path)).send().await.unwrap();
        assert_eq!(response.status(), status);
        assert_security_headers(response.headers(), path);
    }
    let finished = serving.terminate().await;
    let log = finished.all_output();
    assert!(log.contains("moat listening on") && log.contains("path=/nowhere"), "log not captured:\n{log}");
    assert!(!log.contains("DEV_BYPASS"), "production logged a bypass:\n{log}");
}
