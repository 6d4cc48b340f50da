//! Runs benchmark (`cargo bench --bench runs`): the real `moat runner` binary,
//! the app in-process, real PostgreSQL. Each figure sits next to a baseline
//! measured in the same run:
//!
//! 1. Cancel latency with 1,000 concurrently running demo runs: from the cancel's
//!    commit (HTTP 202 received) to the runner's `run.cancelled` commit (its
//!    NOTIFY received) — baseline: a bare NOTIFY → LISTEN round trip.
//! 2. Events per second from runners into the table, with their NOTIFYs —
//!    baseline: a bare single-row INSERT loop.
//! 3. Claim throughput (runs claimed and finished per second) — baseline: the
//!    same bare INSERT loop.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use moat::identity::Role;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::harness::{Env, Options, Role as DbRole, TestApp, TestDb, spawn_app};
use crate::report::{Report, Target};
use crate::stats::{millis, ms, percentile};

async fn listener(db: &TestDb, channel: &'static str) -> mpsc::UnboundedReceiver<(String, String)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let settings = moat::db::DatabaseSettings::parse(&db.url(DbRole::App)).unwrap();
    let listener = moat::db::listen::listen(&settings, &[channel], tx).await.unwrap();
    // Keep the connection for the whole process.
    std::mem::forget(listener);
    rx
}

async fn notify_round_trip(db: &TestDb) -> (Duration, Duration) {
    let mut rx = listener(db, "bench_ping").await;
    let settings = moat::db::DatabaseSettings::parse(&db.url(DbRole::App)).unwrap();
    let client = settings.connect().await.unwrap();
    let mut times = Vec::new();
    for i in 0..500 {
        let started = Instant::now();
        client.execute("SELECT pg_notify('bench_ping', $1)", &[&i.to_string()]).await.unwrap();
        rx.recv().await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

async fn insert_loop(db: &TestDb) -> f64 {
    let settings = moat::db::DatabaseSettings::parse(&db.url(DbRole::Owner)).unwrap();
    let client = settings.connect().await.unwrap();
    client.batch_execute("CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, data jsonb)").await.unwrap();
    let statement = client.prepare("INSERT INTO bench_rows (data) VALUES ($1)").await.unwrap();
    let started = Instant::now();
    let n = 3000;
    for i in 0..n {
        client.execute(&statement, &[&json!({"i": i})]).await.unwrap();
    }
    f64::from(n) / started.elapsed().as_secs_f64()
}

struct Setup {
    app: TestApp,
    token: String,
    runner_env: Env,
    db_url: String,
}

async fn setup() -> Setup {
    let db = TestDb::migrated().await;
    let db_url = db.url(DbRole::Runner);
    let runner_env = Env::default().set("DATABASE_URL", &db_url);
    let app = spawn_app(Options { db: Some(db), env: None, ..Options::default() }).await;
    let (_, _, token) = app.signed_in(Role::Admin).await;
    Setup { app, token, runner_env, db_url }
}

async fn start(s: &Setup, input: Value) -> (String, String) {
    let conv: Value = s
        .app
        .http
        .post(s.app.url("/v1/conversations"))
        .bearer_auth(&s.token)
        .json(&json!({"title": "bench", "agent": "demo"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conv = conv["id"].as_str().unwrap().to_owned();
    let run: Value = s
        .app
        .http
        .post(s.app.url(&format!("/v1/conversations/{conv}/runs")))
        .bearer_auth(&s.token)
        .json(&json!({ "input": input }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (conv, run["id"].as_str().unwrap().to_owned())
}

async fn count(s: &Setup, sql: &str) -> i64 {
    s.app._db.admin().await.query_one(sql, &[]).await.unwrap().get(0)
}

async fn cancel_latency(report: &mut Report) {
    let s = setup().await;
    let runner = crate::harness::runner(&s.runner_env.clone().set("MOAT_RUNNER_CONCURRENCY", "1000")).await;
    let mut runs = Vec::new();
    for _ in 0..1000 {
        runs.push(start(&s, json!({"steps": 100000, "delay_ms": 1000})).await);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&s, "SELECT count(*) FROM runs WHERE status = 'running'").await < 1000 {
        assert!(Instant::now() < deadline, "the runner did not start 1,000 runs");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (p50_base, p99_base) = notify_round_trip(&s.app._db).await;
    let mut events = listener(&s.app._db, "moat_events").await;
    let mut times = Vec::new();
    for (conv, run) in runs.iter().take(200) {
        let response =
            s.app.http.post(s.app.url(&format!("/v1/runs/{run}/cancel"))).bearer_auth(&s.token).send().await.unwrap();
        assert_eq!(response.status(), 202);
        let committed = Instant::now();
        // The runner's final append notifies its conversation; drain other conversations' notifications.
        loop {
            let (_, payload) = events.recv().await.unwrap();
            if &payload == conv {
                let status: String = s
                    .app
                    ._db
                    .admin()
                    .await
                    .query_one("SELECT status FROM runs WHERE id = $1::text::uuid", &[run])
                    .await
                    .unwrap()
                    .get(0);
                if status == "cancelled" {
                    break;
                }
            }
        }
        times.push(committed.elapsed());
    }
    times.sort();
    println!("\n## 1. Cancel latency with 1,000 concurrently running demo runs (200 cancels)\n");
    println!("| path | p50 | p99 |\n|---|---|---|");
    println!("| bare `NOTIFY` → `LISTEN` round trip (baseline) | {} | {} |", ms(p50_base), ms(p99_base));
    println!(
        "| cancel committed → `run.cancelled` committed by the runner | {} | {} |",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
    let section = "commands";
    let name = "cancel committed → run.cancelled committed by the runner (1,000 running), p99";
    let (p99, base) = (millis(percentile(&times, 0.99)), millis(p99_base));
    report.versus(section, name, p99, "NOTIFY → LISTEN round trip p99", base, "ms", Target::AtMost(10.0));
    ws_commands(&s, &runs[200..400], (p50_base, p99_base), report).await;
    drop(runner);
}

/// Opens `conv`'s stream on the in-process app (replaying from `after`).
async fn socket(s: &Setup, conv: &str, after: Option<i64>) -> crate::harness::ws::Socket {
    let url = s.app.url(&format!("/v1/conversations/{conv}/ws-token"));
    let minted: Value = s.app.http.post(url).bearer_auth(&s.token).send().await.unwrap().json().await.unwrap();
    let token = minted["token"].as_str().unwrap();
    let after = after.map(|a| format!("&after={a}")).unwrap_or_default();
    let url = format!("ws://{}/v1/conversations/{conv}/stream?token={token}{after}", s.app.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(crate::harness::ws::next_json(&mut socket).await["type"], "ready");
    socket
}

/// Reads until an event of `kind` arrives; returns it.
async fn event(socket: &mut crate::harness::ws::Socket, kind: &str) -> Value {
    loop {
        let message = crate::harness::ws::next_json(socket).await;
        if message["type"] == "event" && message["kind"] == kind {
            return message;
        }
    }
}

/// Commands over the WebSocket edge while the runner holds the other runs:
/// cancel (sent → `run.cancelled` received on the same socket) and the
/// input round trip (answer sent → `input.answered` received).
async fn ws_commands(s: &Setup, runs: &[(String, String)], base: (Duration, Duration), report: &mut Report) {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let mut cancels = Vec::new();
    for (i, (conv, run)) in runs.iter().enumerate() {
        let mut socket = socket(s, conv, None).await;
        let command = json!({"type": "cancel", "run_id": run, "id": i}).to_string();
        let sent = Instant::now();
        socket.send(Message::Text(command.into())).await.unwrap();
        event(&mut socket, "run.cancelled").await;
        cancels.push(sent.elapsed());
    }
    cancels.sort();
    let mut answers = Vec::new();
    for i in 0..100 {
        let (conv, _) = start(s, json!({"steps": 0, "ask": "Proceed?"})).await;
        let mut socket = socket(s, &conv, Some(0)).await;
        let asked = event(&mut socket, "input.requested").await;
        let input = asked["data"]["input_id"].as_str().unwrap().to_owned();
        let command = json!({"type": "input", "input_id": input, "value": "yes", "id": i}).to_string();
        let sent = Instant::now();
        socket.send(Message::Text(command.into())).await.unwrap();
        event(&mut socket, "input.answered").await;
        answers.push(sent.elapsed());
    }
    answers.sort();
    println!("\n## 1b. Commands over the WebSocket edge (same 1,000-run load)\n");
    println!("| path | p50 | p99 |\n|---|---|---|");
    println!("| bare `NOTIFY` → `LISTEN` round trip (baseline) | {} | {} |", ms(base.0), ms(base.1));
    for (name, times) in [
        ("cancel sent on the socket → `run.cancelled` received on it (200)", &cancels),
        ("answer sent on the socket → `input.answered` received on it (100)", &answers),
    ] {
        println!("| {name} | {} | {} |", ms(percentile(times, 0.5)), ms(percentile(times, 0.99)));
    }
    let baseline = millis(base.1);
    let p99 = millis(percentile(&cancels, 0.99));
    let name = "WebSocket cancel → run.cancelled on the socket (1,000 running), p99";
    report.versus("commands", name, p99, "NOTIFY → LISTEN round trip p99", baseline, "ms", Target::AtMost(10.0));
    let p99 = millis(percentile(&answers, 0.99));
    let name = "WebSocket answer → input.answered on the socket, p99";
    report.versus("commands", name, p99, "NOTIFY → LISTEN round trip p99", baseline, "ms", Target::None);
}

async fn event_throughput(baseline: f64, report: &mut Report) {
    let s = setup().await;
    let runner = crate::harness::runner(
        &s.runner_env.clone().set("MOAT_RUNNER_CONCURRENCY", "50").set("MOAT_RUN_MAX_EVENTS", "100000"),
    )
    .await;
    let started = Instant::now();
    let mut runs = Vec::new();
    for _ in 0..50 {
        runs.push(start(&s, json!({"steps": 2000, "delay_ms": 0})).await);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while count(&s, "SELECT count(*) FROM runs WHERE status = 'succeeded'").await < 50 {
        assert!(Instant::now() < deadline, "runs did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let events = count(&s, "SELECT count(*) FROM events").await;
    let rate = events as f64 / elapsed.as_secs_f64();
    println!("\n## 2. Events from runners into the table (50 runs × 2,000 deltas, one runner)\n");
    println!("| writer | events/s | vs baseline |\n|---|---|---|");
    println!("| bare single-row `INSERT` loop, one connection (baseline) | {baseline:.0} | 1.00× |");
    println!(
        "| runner: batched appends (≤ 64 events / 20 ms, 1 NOTIFY per batch) | {rate:.0} | {:.2}× |",
        rate / baseline
    );
    report.versus("runs", "events appended by a runner", rate, "single-row INSERT loop", baseline, "/s", Target::None);
    drop(runner);
}

async fn claim_throughput(baseline: f64, report: &mut Report) {
    let s = setup().await;
    let n = 2000;
    for _ in 0..n {
        start(&s, json!({"steps": 0, "delay_ms": 0})).await;
    }
    let started = Instant::now();
    let runner = crate::harness::runner(&s.runner_env.clone().set("MOAT_RUNNER_CONCURRENCY", "64")).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while count(&s, "SELECT count(*) FROM runs WHERE status = 'succeeded'").await < n {
        assert!(Instant::now() < deadline, "runs did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!("\n## 3. Claim throughput ({n} queued zero-step runs, one runner, concurrency 64)\n");
    println!("| what | per second | vs baseline |\n|---|---|---|");
    println!("| bare single-row `INSERT` loop (baseline) | {baseline:.0} | 1.00× |");
    println!("| runs claimed, started, finished (4 transactions each) | {rate:.0} | {:.2}× |", rate / baseline);
    report.versus("runs", "runs claimed and finished", rate, "single-row INSERT loop", baseline, "/s", Target::None);
    drop(runner);
}

pub async fn run(report: &mut crate::report::Report) {
    {
        println!("# Runs benchmark");
        let db = TestDb::migrated().await;
        let baseline = insert_loop(&db).await;
        cancel_latency(report).await;
        event_throughput(baseline, report).await;
        claim_throughput(baseline, report).await;
    }
}
