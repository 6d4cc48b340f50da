//! Startup refusals, driven through the real binary: each refusal exits 1
//! before any port is opened, names the problem and prints its fix.

use std::net::TcpListener;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::harness::{self, Env, Finished, Role, TestDb, assert_security_headers, run};

/// Runs `moat serve` on an address this test already holds. Had moat tried to
/// bind before its checks, it would fail with "cannot listen" instead.
async fn refused(env: &Env, expect: &[&str]) -> Finished {
    let host = if env.get("MOAT_BIND").is_some_and(|b| b.starts_with("0.0.0.0")) { "0.0.0.0" } else { "127.0.0.1" };
    let held = TcpListener::bind((host, 0)).unwrap();
    let env = env.clone().set("MOAT_BIND", &held.local_addr().unwrap().to_string());
    let out = run(&["serve"], &env).await;
    assert_eq!(out.status.code(), Some(1), "expected a refusal:\n{}", out.all_output());
    for text in expect {
        assert!(out.stderr.contains(text), "missing {text:?} in:\n{}", out.stderr);
    }
    let all = out.all_output();
    assert!(!all.contains("listening") && !all.contains("cannot listen"), "moat reached the listener:\n{all}");
    assert!(out.stderr.contains("why:") && out.stderr.contains("fix:"), "{}", out.stderr);
    out
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[tokio::test]
async fn default_signing_key_is_refused_with_a_working_generate_command() {
    let db = TestDb::migrated().await;
    let env = Env::production(&db).set("MOAT_SIGNING_KEY", "change-me-in-production");
    let out = refused(
        &env,
        &[
            "[MOAT_SIGNING_KEY] is a known default or placeholder value",
            "moat keygen signing",
            "openssl rand -base64 48",
        ],
    )
    .await;
    assert!(out.stderr.contains("1 problem found"), "{}", out.stderr);

    // Both printed commands produce a key the same check accepts.
    let generated = run(&["keygen", "signing"], &Env::default()).await.stdout;
    let openssl = std::process::Command::new("openssl").args(["rand", "-base64", "48"]).output().expect("openssl");
    for key in [generated.trim().to_owned(), String::from_utf8_lossy(&openssl.stdout).trim().to_owned()] {
        let ok = run(&["check"], &env.clone().set("MOAT_SIGNING_KEY", &key)).await;
        assert_eq!(ok.status.code(), Some(0), "{}", ok.all_output());
    }
}

#[tokio::test]
async fn every_key_flaw_is_refused() {
    let db = TestDb::migrated().await;
    let good = Env::production(&db);
    let signing = good.get("MOAT_SIGNING_KEY").unwrap().to_owned();
    let random32 = moat::config::keys::generate_encryption();
    let cases: Vec<(Env, &str)> = vec![
        (good.clone().unset("MOAT_SIGNING_KEY"), "[MOAT_SIGNING_KEY] is missing"),
        (good.clone().set("MOAT_SIGNING_KEY", "not*base64*at*all"), "[MOAT_SIGNING_KEY] is not valid base64"),
        (good.clone().set("MOAT_SIGNING_KEY", &b64(&[9u8; 31].map(|b| b ^ 0x55))), "decodes to 31 bytes"),
        (good.clone().set("MOAT_SIGNING_KEY", &b64(&[b'A'; 48])), "low-entropy"),
        (good.clone().set("MOAT_SIGNING_KEY", &b64(b"correct horse battery staple is my key")), "passphrase"),
        (good.clone().set("MOAT_SIGNING_KEY", "secret"), "known default or placeholder"),
        (
            good.clone().set("MOAT_SIGNING_KEY", "replace-with-output-of-moat-keygen-signing"),
            "known default or placeholder",
        ),
        (good.clone().unset("MOAT_ENCRYPTION_KEY"), "[MOAT_ENCRYPTION_KEY] is missing"),
        (good.clone().set("MOAT_ENCRYPTION_KEY", &b64(&[7u8; 16])), "decodes to 16 bytes; exactly 32"),
        (good.clone().set("MOAT_ENCRYPTION_KEY", &b64(&[0u8; 32])), "low-entropy"),
        (
            good.clone().set("MOAT_ENCRYPTION_KEY", "replace-with-output-of-moat-keygen-encryption"),
            "known default or placeholder",
        ),
        (
            good.clone().set("MOAT_SIGNING_KEY", &random32).set("MOAT_ENCRYPTION_KEY", &random32),
            "is the same as MOAT_SIGNING_KEY",
        ),
        (
            good.clone().set("MOAT_SIGNING_KEY_FILE", "/nonexistent"),
            "is set both directly and through MOAT_SIGNING_KEY_FILE",
        ),
        (
            good.clone().unset("MOAT_SIGNING_KEY").set("MOAT_SIGNING_KEY_FILE", "/nonexistent/key"),
            "names a file Moat cannot read",
        ),
    ];
    for (env, expect) in cases {
        let out = refused(&env, &[expect]).await;
        assert!(!out.all_output().contains(&signing), "a key value was printed");
    }
}

#[tokio::test]
async fn keys_can_come_from_files() {
    let db = TestDb::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let (s, e) = (dir.path().join("signing"), dir.path().join("encryption"));
    std::fs::write(&s, format!("{}\n", moat::config::keys::generate_signing())).unwrap();
    std::fs::write(&e, moat::config::keys::generate_encryption()).unwrap();
    let env = Env::production(&db)
        .unset("MOAT_SIGNING_KEY")
        .unset("MOAT_ENCRYPTION_KEY")
        .set("MOAT_SIGNING_KEY_FILE", s.to_str().unwrap())
        .set("MOAT_ENCRYPTION_KEY_FILE", e.to_str().unwrap());
    let out = run(&["check"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", out.all_output());
}

#[tokio::test]
async fn transport_and_environment_problems_are_refused() {
    let db = TestDb::migrated().await;
    let good = Env::production(&db);
    let cases: Vec<(Env, &str)> = vec![
        (good.clone().set("MOAT_ENV", "staging"), "[MOAT_ENV] must be `production` or `development`"),
        (good.clone().set("MOAT_ENV", "Development"), "[MOAT_ENV]"),
        (good.clone().unset("MOAT_PUBLIC_URL"), "[MOAT_PUBLIC_URL] is not set"),
        (good.clone().set("MOAT_PUBLIC_URL", "http://moat.example.com"), "[MOAT_PUBLIC_URL] is not https"),
        (good.clone().set("MOAT_PUBLIC_URL", "https://moat.example.com/app?x=1"), "must be an origin only"),
        (good.clone().set("MOAT_BIND", "0.0.0.0:0"), "a non-loopback address, but nothing encrypts the traffic"),
        (good.clone().set("MOAT_TLS_CERT", "/etc/hostname"), "[MOAT_TLS_KEY] is not set while its partner is"),
        (
            good.clone().set("MOAT_TLS_TERMINATED_UPSTREAM", "yes"),
            "[MOAT_TLS_TERMINATED_UPSTREAM] must be `true` or `false`",
        ),
        (good.clone().set("MOAT_SIGNNG_KEY", "typo"), "[MOAT_SIGNNG_KEY] is not a variable Moat knows"),
        (good.clone().set("MOAT_LOG_FORMAT", "xml"), "[MOAT_LOG_FORMAT] must be `text` or `json`"),
        (good.clone().set("MOAT_DATABASE_POOL_SIZE", "0"), "[MOAT_DATABASE_POOL_SIZE]"),
        (good.clone().unset("DATABASE_URL"), "[DATABASE_URL] is not set"),
        (good.clone().set("DATABASE_URL", "postgresql://u:pw@host:notaport/db"), "[DATABASE_URL] is invalid"),
    ];
    for (env, expect) in cases {
        refused(&env, &[expect]).await;
    }
    // Unset MOAT_ENV means production: the same missing key is refused, not relaxed.
    let out =
        refused(&good.clone().unset("MOAT_ENV").unset("MOAT_SIGNING_KEY"), &["[MOAT_SIGNING_KEY] is missing"]).await;
    assert!(!out.all_output().contains("DEV_BYPASS"));
}

#[tokio::test]
async fn database_role_and_schema_problems_are_refused() {
    let db = TestDb::migrated().await;
    let good = Env::production(&db);
    refused(
        &good.clone().set("DATABASE_URL", &db.url(Role::Superuser)),
        &["is a superuser", "GRANT moat_runtime TO moat_app"],
    )
    .await;
    refused(&good.clone().set("DATABASE_URL", &db.url(Role::Bypass)), &["has the BYPASSRLS attribute"]).await;
    refused(&good.clone().set("DATABASE_URL", &db.url(Role::Owner)), &["owns Moat's tables", "moat_dev_taint"]).await;
    refused(
        &good.clone().set("DATABASE_URL", "host=/nonexistent-moat-socket user=moat_app dbname=x"),
        &["[database] cannot connect to moat_app@/nonexistent-moat-socket"],
    )
    .await;

    // A migration this binary does not know: the schema is newer than the binary.
    let admin = db.admin().await;
    admin.batch_execute("INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (9999, 'from_the_future', 'now', '1')").await.unwrap();
    refused(&good, &["does not know: V9999__from_the_future", "deploy the newer Moat build"]).await;
    // An edited migration: same version, different checksum.
    admin.batch_execute("DELETE FROM refinery_schema_history WHERE version = 9999; UPDATE refinery_schema_history SET checksum = '42' WHERE version = 1").await.unwrap();
    refused(&good, &["differ from this binary's: V1__foundation"]).await;
}

#[tokio::test]
async fn a_role_outside_moat_runtime_is_told_the_grant() {
    let db = TestDb::migrated().await;
    let admin = db.admin().await;
    let role = format!("moat_outsider_{}", db.name.rsplit('_').next().unwrap());
    let url = db.create_login_role(&role).await;
    refused(
        &Env::production(&db).set("DATABASE_URL", &url),
        &[&format!("role {role} is not a member of moat_runtime"), &format!("GRANT moat_runtime TO {role};")],
    )
    .await;
    admin.batch_execute(&format!("DROP ROLE {role}")).await.unwrap();
}

#[tokio::test]
async fn check_lists_every_failure_at_once() {
    let db = TestDb::migrated().await;
    let env = Env::production(&db)
        .set("MOAT_SIGNING_KEY", "changeme")
        .unset("MOAT_ENCRYPTION_KEY")
        .set("MOAT_PUBLIC_URL", "http://moat.example.com")
        .set("DATABASE_URL", &db.url(Role::Superuser));
    let out = run(&["check"], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
    for expect in [
        "4 problems found",
        "[MOAT_SIGNING_KEY]",
        "[MOAT_ENCRYPTION_KEY] is missing",
        "[MOAT_PUBLIC_URL] is not https",
        "is a superuser",
    ] {
        assert!(out.stderr.contains(expect), "missing {expect:?}:\n{}", out.stderr);
    }
}

/// The "done when", end to end: unmigrated → exactly the schema failure;
/// `moat migrate` (idempotent); then `serve` answers with every header.
#[tokio::test]
async fn unmigrated_database_then_migrate_then_serve() {
    let db = TestDb::empty().await;
    let env = Env::production(&db);
    let out = run(&["check"], &env).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("1 problem found"), "{}", out.stderr);
    let embedded: Vec<String> = moat::db::migrate::embedded().into_iter().map(|(_, name, _)| name).collect();
    let pending = format!("[database schema] {} migration(s) not applied: {}", embedded.len(), embedded.join(", "));
    assert!(out.stderr.contains(&pending), "{}", out.stderr);
    assert!(out.stderr.contains("moat migrate"), "{}", out.stderr);

    let owner = Env::default().set("DATABASE_URL", &db.url(Role::Owner));
    let first = run(&["migrate"], &owner).await;
    assert_eq!(first.status.code(), Some(0), "{}", first.all_output());
    for name in &embedded {
        assert!(first.stdout.contains(&format!("applied {name}")), "{}", first.stdout);
    }
    let again = run(&["migrate"], &owner).await;
    assert_eq!(again.status.code(), Some(0), "{}", again.all_output());
    assert!(again.stdout.contains("up to date") && !again.stdout.contains("applied V1"), "{}", again.stdout);

    let ok = run(&["check"], &env).await;
    assert_eq!(ok.status.code(), Some(0), "{}", ok.all_output());
    assert!(ok.stdout.contains("startup checks passed"));

    let serving = harness::serve(&env).await;
    let response = reqwest::get(serving.url("/healthz")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_security_headers(response.headers(), "healthz after migrate");
    assert_eq!(serving.terminate().await.status.code(), Some(0));
}

#[tokio::test]
async fn concurrent_migrations_apply_once() {
    let db = TestDb::empty().await;
    let owner = Env::default().set("DATABASE_URL", &db.url(Role::Owner));
    let (a, b) = tokio::join!(run(&["migrate"], &owner), run(&["migrate"], &owner));
    assert_eq!((a.status.code(), b.status.code()), (Some(0), Some(0)), "{}\n{}", a.all_output(), b.all_output());
    let applied = [&a, &b].iter().filter(|o| o.stdout.contains("applied V1__foundation")).count();
    assert_eq!(applied, 1, "{}\n{}", a.stdout, b.stdout);
}

#[tokio::test]
async fn migrate_without_database_url_fails_clearly() {
    let out = run(&["migrate"], &Env::default()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("[DATABASE_URL] is not set"), "{}", out.stderr);
}

#[tokio::test]
async fn keygen_prints_keys_in_the_configured_format() {
    for (kind, len) in [("signing", 48), ("encryption", 32)] {
        let out = run(&["keygen", kind], &Env::default()).await;
        assert_eq!(out.status.code(), Some(0));
        let key = out.stdout.trim();
        assert_eq!(out.stdout.lines().count(), 1);
        assert_eq!(moat::config::keys::decode(key).map(|k| k.len()), Some(len));
        assert_ne!(key, run(&["keygen", kind], &Env::default()).await.stdout.trim(), "keys repeat");
    }
    let bad = run(&["keygen", "weak"], &Env::default()).await;
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test]
async fn help_explains_the_environment_each_command_reads() {
    for (command, expect) in [
        (
            "serve",
            vec![
                "MOAT_ENV",
                "DATABASE_URL",
                "MOAT_SIGNING_KEY",
                "MOAT_ENCRYPTION_KEY",
                "MOAT_BIND",
                "MOAT_TLS_CERT",
                "MOAT_TLS_KEY",
                "MOAT_TLS_TERMINATED_UPSTREAM",
                "MOAT_PUBLIC_URL",
                "MOAT_LOG_FORMAT",
            ],
        ),
        ("check", vec!["MOAT_ENV", "DATABASE_URL", "MOAT_SIGNING_KEY", "MOAT_PUBLIC_URL"]),
        ("migrate", vec!["DATABASE_URL", "MOAT_LOG_FORMAT"]),
        ("keygen", vec!["openssl rand -base64"]),
    ] {
        let out = run(&[command, "--help"], &Env::default()).await;
        assert_eq!(out.status.code(), Some(0));
        for var in expect {
            assert!(out.stdout.contains(var), "`moat {command} --help` lacks {var}:\n{}", out.stdout);
        }
    }
}

/// With MOAT_BIND unset, Moat listens on 127.0.0.1:8080 and on no other interface.
#[tokio::test]
async fn default_bind_is_loopback_8080() {
    let db = TestDb::migrated().await;
    let serving = harness::serve(&Env::production(&db).unset("MOAT_BIND")).await;
    assert_eq!(serving.addr.to_string(), "127.0.0.1:8080");
    // /proc/net/tcp lists listening sockets (state 0A) as hex addr:port; 8080 = 1F90.
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let listening: Vec<&str> = tcp
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some("0A"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|a| a.ends_with(":1F90"))
        .collect();
    assert_eq!(listening, vec!["0100007F:1F90"], "listening sockets on port 8080");
    let tcp6 = std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    assert!(
        !tcp6.lines().any(|l| l.split_whitespace().nth(1).is_some_and(|a| a.ends_with(":1F90"))),
        "listening on IPv6 too"
    );
    assert_eq!(reqwest::get("http://127.0.0.1:8080/healthz").await.unwrap().status(), 200);
    assert_eq!(serving.terminate().await.status.code(), Some(0));
}
