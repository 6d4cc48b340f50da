//! Managed PostgreSQL behind Debian's PgBouncer (1.18) in transaction mode:
//! two `serve` and one `runner` process whose `DATABASE_URL` goes through it
//! run the broker's exactly-once refresh and a WebSocket cancel — once with
//! LISTEN on a direct connection, once poll-only (`MOAT_LISTEN=off`). Without
//! `MOAT_DATABASE_POOLER=transaction` the same PgBouncer breaks requests.

use std::time::Duration;

use futures_util::SinkExt as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::http::{admin_in, get_json, login_at, post_json, wait_run_status};
use crate::harness::pgbouncer::PgBouncer;
use crate::harness::provider::{CLIENT_SECRET, FakeProvider};
use crate::harness::ws::{events_until, open};
use crate::harness::{self, Env, Role as DbRole, TestDb};

/// How `serve` and `runner` reach LISTEN in a scenario.
#[derive(Clone, Copy)]
enum Listen {
    /// `MOAT_LISTEN_DATABASE_URL` on a direct connection.
    Direct,
    /// `MOAT_LISTEN=off`.
    Off,
}

fn envs(
    db: &TestDb,
    bouncer: &PgBouncer,
    provider: &FakeProvider,
    dir: &tempfile::TempDir,
    listen: Listen,
) -> (Env, Env) {
    let serve = Env::production(db)
        .set("DATABASE_URL", &bouncer.url(DbRole::App))
        .set("MOAT_DATABASE_POOLER", "transaction")
        .set("MOAT_PROVIDERS_FILE", provider.providers_file(dir.path()).to_str().unwrap())
        .set("MOAT_EGRESS_ALLOW", &provider.egress_allow())
        .set("FAKE_PROVIDER_SECRET", CLIENT_SECRET);
    let runner = Env::default()
        .set("DATABASE_URL", &bouncer.url(DbRole::Runner))
        .set("MOAT_DATABASE_POOLER", "transaction")
        .set("MOAT_RUN_LEASE", "30s")
        .set("MOAT_RUN_HEARTBEAT", "5s")
        .set("MOAT_RUNNER_POLL", "1s");
    match listen {
        Listen::Direct => (
            serve.set("MOAT_LISTEN_DATABASE_URL", &db.url(DbRole::App)),
            runner.set("MOAT_LISTEN_DATABASE_URL", &db.url(DbRole::Runner)),
        ),
        Listen::Off => (serve.set("MOAT_LISTEN", "off"), runner.set("MOAT_LISTEN", "off")),
    }
}

async fn scenario(listen: Listen) {
    let db = TestDb::migrated().await;
    // Two server connections per user for up to 2 × 16 pooled clients: consecutive
    // transactions of one client land on different server connections.
    let bouncer = PgBouncer::start(&db, 2).await;
    let provider = FakeProvider::start().await;
    provider.set_latency(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let (serve_env, runner_env) = envs(&db, &bouncer, &provider, &dir, listen);
    let (a, b) = (harness::serve(&serve_env).await, harness::serve(&serve_env).await);
    let runner = harness::runner(&runner_env).await;
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    let token = login_at(&http, &a.url(""), admin.email, &admin.password).await;

    // The broker: 50 callers on two processes, one expired integration → one refresh.
    crate::integrations::fifty_callers_one_refresh(&http, [a.url(""), b.url("")], &token, &provider).await;

    // A run watched on `b` and cancelled over a WebSocket on `a`.
    let conv = post_json(&http, &a.url("/v1/conversations"), Some(&token), json!({"title": "t", "agent": "demo"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut actor = open(&http, &a, &token, &conv, None).await;
    let mut watcher = open(&http, &b, &token, &conv, None).await;
    let run = post_json(
        &http,
        &a.url(&format!("/v1/conversations/{conv}/runs")),
        Some(&token),
        json!({"input": {"steps": 10000, "delay_ms": 20}}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    events_until(&mut watcher, "message.delta").await;
    actor.send(Message::Text(json!({"type": "cancel", "run_id": run, "id": 1}).to_string().into())).await.unwrap();
    let actor_events = events_until(&mut actor, "run.cancelled").await;
    assert!(actor_events.iter().any(|m| m["type"] == "ack" && m["id"] == 1), "{actor_events:?}");
    events_until(&mut watcher, "run.cancelled").await;
    wait_run_status(&http, &a.url(""), &token, &run, "cancelled").await;
    let events = get_json(&http, &b.url(&format!("/v1/conversations/{conv}/events?limit=200")), &token).await;
    let seqs: Vec<i64> = events["items"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gapless events through the pooler");

    // The pooler really carried both kinds of traffic, and nothing failed on the way.
    let log = bouncer.log();
    for user in ["user=moat_app", "user=moat_runner_app"] {
        assert!(log.contains(user), "no {user} login in PgBouncer's log:\n{log}");
    }
    for process in [a, b, runner] {
        let output = process.terminate().await.all_output();
        for bad in ["prepared statement", "ERROR", "panicked"] {
            assert!(!output.contains(bad), "{bad} in a process log:\n{output}");
        }
    }
}

#[tokio::test]
async fn through_pgbouncer_in_transaction_mode_with_listen_direct() {
    scenario(Listen::Direct).await;
}

#[tokio::test]
async fn through_pgbouncer_in_transaction_mode_poll_only() {
    scenario(Listen::Off).await;
}

/// The control: the same PgBouncer without `MOAT_DATABASE_POOLER=transaction`
/// breaks requests (cached statements meet other server connections) — the
/// setting is what makes the scenarios above pass.
#[tokio::test]
async fn without_the_pooler_setting_requests_fail() {
    let db = TestDb::migrated().await;
    let bouncer = PgBouncer::start(&db, 2).await;
    let env = Env::production(&db)
        .set("DATABASE_URL", &bouncer.url(DbRole::App))
        .set("MOAT_LISTEN_DATABASE_URL", &db.url(DbRole::App));
    let serving = harness::serve(&env).await;
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    let mut failures = 0;
    let token = login_at(&http, &serving.url(""), admin.email, &admin.password).await;
    for _ in 0..10 {
        let reads = (0..50).map(|_| {
            let request = http.get(serving.url("/v1/conversations")).bearer_auth(&token);
            async move { request.send().await.unwrap().status() }
        });
        failures += futures_util::future::join_all(reads).await.iter().filter(|s| s.is_server_error()).count();
        if failures > 0 {
            break;
        }
    }
    assert!(failures > 0, "every request succeeded: the pooler setting would be pointless");
    let output = serving.terminate().await.all_output();
    assert!(output.contains("prepared statement"), "{output}");
}

/// LISTEN through a transaction pooler would silently lose wake-ups: refused at startup.
#[tokio::test]
async fn listen_through_a_transaction_pooler_is_refused() {
    let db = TestDb::migrated().await;
    let env = Env::production(&db).set("MOAT_DATABASE_POOLER", "transaction");
    let out = harness::run(&["check"], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
    assert!(out.stderr.contains("MOAT_LISTEN_DATABASE_URL"), "{}", out.stderr);
    assert!(out.stderr.contains("export MOAT_LISTEN=off"), "{}", out.stderr);
    let runner = Env::default().set("DATABASE_URL", &db.url(DbRole::Runner)).set("MOAT_DATABASE_POOLER", "transaction");
    let out = harness::run(&["runner"], &runner).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
    assert!(out.stderr.contains("MOAT_LISTEN_DATABASE_URL"), "{}", out.stderr);
    let out = harness::run(&["check"], &Env::production(&db).set("MOAT_DATABASE_POOLER", "session")).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("must be `none`, `transaction` or `transaction-prepared`"), "{}", out.stderr);
    // A pooler that keeps prepared statements still cannot carry LISTEN.
    let out = harness::run(&["check"], &Env::production(&db).set("MOAT_DATABASE_POOLER", "transaction-prepared")).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
    assert!(out.stderr.contains("MOAT_LISTEN_DATABASE_URL"), "{}", out.stderr);
    // Both escapes are accepted.
    for env in [
        Env::production(&db).set("MOAT_DATABASE_POOLER", "transaction").set("MOAT_LISTEN", "off"),
        Env::production(&db)
            .set("MOAT_DATABASE_POOLER", "transaction")
            .set("MOAT_LISTEN_DATABASE_URL", &db.url(DbRole::App)),
    ] {
        let out = harness::run(&["check"], &env).await;
        assert_eq!(out.status.code(), Some(0), "{}", out.all_output());
    }
}

/// A `MOAT_LISTEN_DATABASE_URL` that does not connect is refused at startup
/// (else live events would silently wait for the fallback poll).
#[tokio::test]
async fn an_unreachable_listen_url_is_refused() {
    let db = TestDb::migrated().await;
    let closed = harness::free_port();
    let env = Env::production(&db).set("MOAT_LISTEN_DATABASE_URL", &db.url_via(DbRole::App, closed));
    let out = harness::run(&["check"], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
    assert!(out.stderr.contains("[MOAT_LISTEN_DATABASE_URL] cannot connect"), "{}", out.stderr);
    let runner = Env::default()
        .set("DATABASE_URL", &db.url(DbRole::Runner))
        .set("MOAT_LISTEN_DATABASE_URL", &db.url_via(DbRole::Runner, closed));
    let out = harness::run(&["runner"], &runner).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
    assert!(out.stderr.contains("MOAT_LISTEN_DATABASE_URL"), "{}", out.stderr);
}

/// While the hub's LISTEN connection is down, open streams keep receiving
/// events (the hub polls until LISTEN is back).
#[tokio::test]
async fn streams_keep_flowing_while_listen_is_down() {
    let db = TestDb::migrated().await;
    let relay = crate::harness::relay::Relay::start(db.upstream()).await;
    let env = Env::production(&db).set("MOAT_LISTEN_DATABASE_URL", &db.url_via(DbRole::App, relay.port));
    let serving = harness::serve(&env).await;
    let _runner = harness::runner(&Env::default().set("DATABASE_URL", &db.url(DbRole::Runner))).await;
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    let token = login_at(&http, &serving.url(""), admin.email, &admin.password).await;
    let body = json!({"title": "t", "agent": "demo"});
    let conv = post_json(&http, &serving.url("/v1/conversations"), Some(&token), body).await;
    let conv = conv["id"].as_str().unwrap().to_owned();
    let mut socket = open(&http, &serving, &token, &conv, None).await;

    relay.down();
    let admin_db = db.admin().await;
    let sql = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
               WHERE application_name = 'moat-listen' AND usename = 'moat_app'";
    admin_db.execute(sql, &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = serving.url(&format!("/v1/conversations/{conv}/runs"));
    post_json(&http, &url, Some(&token), json!({"input": {"steps": 3, "delay_ms": 10}})).await;
    let seen = events_until(&mut socket, "run.succeeded").await;
    assert!(seen.iter().any(|m| m["kind"] == "run.started"), "{seen:?}");
    relay.up();
    assert!(serving.output().contains("LISTEN connection"), "{}", serving.output());
}

/// Pooler mode relies on tokio-postgres never preparing its own type-lookup
/// statements, which it does only for non-built-in types (see db/pool.rs).
#[test]
fn the_schema_uses_built_in_types_only() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap() {
        let path = entry.unwrap().path();
        let sql = std::fs::read_to_string(&path).unwrap().to_uppercase();
        for forbidden in ["CREATE TYPE", "CREATE DOMAIN", "CREATE EXTENSION"] {
            assert!(!sql.contains(forbidden), "{} has {forbidden}: pooler mode would break", path.display());
        }
    }
}
