//! Bootstrap with no static keys: `moat admin …` (the real binary) creates
//! organizations, users and clients straight in the database; what it creates
//! can obtain tokens; every change is audited; secrets are printed once and
//! never stored in clear.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use crate::harness::{Env, Options, Role as DbRole, TestApp, TestDb, run, spawn_app};

/// `moat admin ARGS` with `stdin` piped in; returns (exit code, stdout, stderr).
async fn admin(env: &Env, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(crate::harness::process::MOAT);
    command
        .arg("admin")
        .args(args)
        .env_clear()
        .envs(&env.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn app_and_cli() -> (TestApp, Env) {
    let db = TestDb::migrated().await;
    // The CLI needs only DATABASE_URL, and the runtime role is enough.
    let cli = Env::default().set("DATABASE_URL", &db.url(DbRole::App));
    (spawn_app(Options { db: Some(db), ..Options::default() }).await, cli)
}

fn line_value<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("no {key} in {stdout}"))
}

#[tokio::test]
async fn cli_created_users_and_clients_obtain_tokens() {
    let (app, cli) = app_and_cli().await;
    let (code, org, err) = admin(&cli, &["create-org", "Acme Corp"], "").await;
    assert_eq!(code, 0, "{err}");
    let org = org.trim().to_owned();
    assert!(uuid::Uuid::parse_str(&org).is_ok(), "{org}");

    // A password from stdin (as a script would pipe it).
    let password = "a long enough passphrase";
    let (code, out, err) = admin(
        &cli,
        &["create-user", "--org", &org, "--email", "Ada@Example.com", "--role", "admin"],
        &format!("{password}\n"),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(password) && !err.contains(password), "the CLI echoed the password");
    let body: Value = app.login("ada@example.com", password).await.json().await.unwrap();
    let admin_token = body["access_token"].as_str().unwrap().to_owned();
    let me: Value = app.get_as(&admin_token, "/v1/me").await.json().await.unwrap();
    assert_eq!((me["role"].as_str(), me["org"].as_str()), (Some("admin"), Some(org.as_str())));

    // A generated password is printed once and works.
    let (code, out, _) =
        admin(&cli, &["create-user", "--org", &org, "--email", "bob@example.com", "--generate-password"], "").await;
    assert_eq!(code, 0);
    let generated = out.lines().find_map(|l| l.strip_prefix("password: ")).unwrap();
    assert_eq!(app.login("bob@example.com", generated).await.status(), 200);

    let (code, out, err) =
        admin(&cli, &["create-client", "--org", &org, "--name", "ci", "--scopes", "conversations:read runs:write"], "")
            .await;
    assert_eq!(code, 0, "{err}");
    let (id, secret) = (line_value(&out, "client_id").to_owned(), line_value(&out, "client_secret").to_owned());
    assert!(secret.starts_with("moat_cs_") && secret.len() > 40, "{secret}");
    let form = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
    let token = |form: String| {
        app.http
            .post(app.url("/v1/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    assert_eq!(token(form.clone()).await.unwrap().status(), 200);

    let (code, out, _) = admin(&cli, &["rotate-client-secret", &id], "").await;
    assert_eq!(code, 0);
    let rotated = line_value(&out, "client_secret").to_owned();
    assert_eq!(token(form).await.unwrap().status(), 401, "the old secret still works");
    let form = format!("grant_type=client_credentials&client_id={id}&client_secret={rotated}");
    assert_eq!(token(form.clone()).await.unwrap().status(), 200);

    assert_eq!(admin(&cli, &["disable-client", &id], "").await.0, 0);
    assert_eq!(token(form).await.unwrap().status(), 401);
    assert_eq!(admin(&cli, &["disable-user", "BOB@example.com"], "").await.0, 0);
    assert_eq!(app.login("bob@example.com", generated).await.status(), 401);

    // Every change is in the audit log, by the CLI.
    let log: Value = app.get_as(&admin_token, "/v1/audit-log?limit=200").await.json().await.unwrap();
    let by_cli: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "cli")
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for event in
        ["org_created", "user_created", "client_created", "client_secret_rotated", "client_disabled", "user_disabled"]
    {
        assert!(by_cli.contains(&event), "{event} missing from {by_cli:?}");
    }

    // Nothing secret is stored in clear.
    let dump = app._db.admin().await;
    let text: String = dump
        .query_one(
            "SELECT concat_ws(' ', (SELECT string_agg(u::text, ' ') FROM users u), (SELECT string_agg(c::text, ' ') FROM service_clients c), (SELECT string_agg(a::text, ' ') FROM audit_log a))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for secret in [password, generated, secret.as_str(), rotated.as_str()] {
        assert!(!text.contains(secret), "a secret is stored in clear");
    }
    assert!(text.contains("$argon2id$"), "hashes are argon2id");
}

#[tokio::test]
async fn cli_refuses_bad_input_with_clear_errors() {
    let (_app, cli) = app_and_cli().await;
    let (_, org, _) = admin(&cli, &["create-org", "Acme"], "").await;
    let org = org.trim();
    admin(&cli, &["create-user", "--org", org, "--email", "ada@example.com"], "a long enough passphrase").await;
    let missing_org = uuid::Uuid::new_v4().to_string();
    for (args, stdin, expect) in [
        (vec!["create-user", "--org", org, "--email", "ADA@example.com"], "another long passphrase", "already exists"),
        (vec!["create-user", "--org", org, "--email", "short@example.com"], "short", "must be 12 to 1024"),
        (vec!["create-user", "--org", org, "--email", "not-an-email"], "a long enough passphrase", "is not an email"),
        (
            vec!["create-user", "--org", &missing_org, "--email", "x@example.com"],
            "a long enough passphrase",
            "no organization",
        ),
        (vec!["create-client", "--org", org, "--name", "x", "--scopes", "root"], "", "unknown scope \"root\""),
        (vec!["create-client", "--org", org, "--name", "x", "--scopes", ""], "", "at least one scope"),
        (vec!["create-org", ""], "", "name must be 1 to 200"),
        (vec!["disable-user", "nobody@example.com"], "", "no user with email"),
        (vec!["rotate-client-secret", "not-a-client"], "", "no service client"),
    ] {
        let (code, _, err) = admin(&cli, &args, stdin).await;
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!err.contains("SQLSTATE"), "{args:?} leaked SQL detail: {err}");
    }
    let unmigrated = TestDb::empty().await;
    let (code, _, err) =
        admin(&Env::default().set("DATABASE_URL", &unmigrated.url(DbRole::Owner)), &["create-org", "x"], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("moat migrate"), "{err}");
    let help = run(&["admin", "--help"], &Env::default()).await.stdout;
    assert!(help.contains("DATABASE_URL") && help.contains("create-user"), "{help}");
}
