//! WebSocket edge benchmark (`cargo bench --bench ws`): the real `moat serve`
//! and `moat runner` binaries (release), real PostgreSQL, tungstenite clients.
//!
//! 1. Connect with all five checks vs a bare WebSocket upgrade on the same
//!    server (an in-process app with a probe route): p50/p99 and connects/s.
//! 2. Resident memory per idle connection at 10,000 connections (`moat serve`
//!    process, VmRSS before and after).
//! 3. Fan-out: events/s delivered with one subscriber on each of 100
//!    conversations, and messages/s with 100 subscribers on one conversation,
//!    each with p99 lag from the runner's commit (the event's `at`) to receipt.

use std::time::{Duration, Instant};

use axum::extract::ws::{Message as ServerMessage, WebSocketUpgrade};
use futures_util::{SinkExt as _, StreamExt as _};
use moat::http::Routes;
use moat::identity::{Access, PrincipalKind, Role};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::harness::http::{admin_in, login_at, post_json};
use crate::harness::{Env, Options, Role as DbRole, TestDb, spawn_app};
use crate::report::{Report, Target};
use crate::stats::{millis, ms, percentile};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn bare(ws: WebSocketUpgrade) -> axum::response::Response {
    ws.on_upgrade(|mut socket| async move {
        let _ = socket.send(ServerMessage::Text("{\"type\":\"ready\"}".into())).await;
        while let Some(Ok(_)) = socket.recv().await {}
    })
}

/// Connects and waits for the first text message (`ready`).
async fn open(url: &str) -> Socket {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    loop {
        if let Some(Ok(Message::Text(_))) = socket.next().await {
            return socket;
        }
    }
}

async fn connect_latency(report: &mut Report) {
    let db = TestDb::migrated().await;
    let env = Env::production(&db);
    let probes = Routes::new().get("/bench/bare-ws", Access::Public, bare);
    let app = spawn_app(Options { env: Some(env), db: Some(db), extra: Some(probes), ..Options::default() }).await;
    let (_, _, token) = app.signed_in(Role::Admin).await;
    let conv =
        post_json(&app.http, &app.url("/v1/conversations"), Some(&token), json!({"title": "b", "agent": "demo"})).await;
    let conv = conv["id"].as_str().unwrap().to_owned();
    let n = 1000;
    let mut tokens = Vec::new();
    for _ in 0..n {
        let body =
            post_json(&app.http, &app.url(&format!("/v1/conversations/{conv}/ws-token")), Some(&token), json!({}))
                .await;
        tokens.push(body["token"].as_str().unwrap().to_owned());
    }
    let bare_url = format!("ws://{}/bench/bare-ws", app.addr);
    let (mut checked, mut plain) = (Vec::new(), Vec::new());
    for token in tokens {
        // Interleaved, closed after each measurement (the per-principal cap stays clear).
        let started = Instant::now();
        let mut socket = open(&format!("ws://{}/v1/conversations/{conv}/stream?token={token}", app.addr)).await;
        checked.push(started.elapsed());
        let _ = socket.close(None).await;
        let started = Instant::now();
        let mut socket = open(&bare_url).await;
        plain.push(started.elapsed());
        let _ = socket.close(None).await;
    }
    checked.sort();
    plain.sort();
    let rate = |v: &[Duration]| v.len() as f64 / v.iter().map(Duration::as_secs_f64).sum::<f64>();
    println!("\n## 1. Connect: five checks vs a bare upgrade ({n} sequential connects each, to the first message)\n");
    println!("| connect | p50 | p99 | connects/s (sequential) |\n|---|---|---|---|");
    println!(
        "| bare WebSocket upgrade (baseline) | {} | {} | {:.0} |",
        ms(percentile(&plain, 0.5)),
        ms(percentile(&plain, 0.99)),
        rate(&plain)
    );
    println!(
        "| `/stream` with all five checks + single-use token | {} | {} | {:.0} |",
        ms(percentile(&checked, 0.5)),
        ms(percentile(&checked, 0.99)),
        rate(&checked)
    );
    let (checked99, plain99) = (millis(percentile(&checked, 0.99)), millis(percentile(&plain, 0.99)));
    report.versus(
        "ws",
        "connect with the five checks, p99",
        checked99,
        "bare upgrade p99",
        plain99,
        "ms",
        Target::AtMost(5.0),
    );
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// CPU seconds the whole machine has used so far (every process, idle excluded).
fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let fields: Vec<f64> =
        stat.lines().next().unwrap().split_whitespace().skip(1).map(|f| f.parse().unwrap()).collect();
    (fields.iter().sum::<f64>() - fields[3] - fields[4]) / 100.0
}

async fn memory_per_connection(report: &mut Report) {
    let db = TestDb::migrated().await;
    let env = Env::production(&db);
    let serving = crate::harness::serve(&env).await;
    let admin = admin_in(&db).await;
    let http = reqwest::Client::new();
    let token = login_at(&http, &serving.url(""), admin.email, &admin.password).await;
    let conv =
        post_json(&http, &serving.url("/v1/conversations"), Some(&token), json!({"title": "idle", "agent": "demo"}))
            .await;
    let conv: Uuid = conv["id"].as_str().unwrap().parse().unwrap();
    // 10,000 sockets need many principals (16 sockets each): service clients, tokens signed locally.
    let keys = moat::identity::TokenKeys::new(
        moat::config::SigningKey::parse(env.get("MOAT_SIGNING_KEY").unwrap()).unwrap(),
        Vec::new(),
        "https://moat.example.com".into(),
    );
    let n = 10_000;
    let principals = n / moat::runs::ws::MAX_SOCKETS_PER_PRINCIPAL + 1;
    let mut clients = Vec::new();
    for i in 0..principals {
        let (id, _) = moat::admin::create_client(&admin.pool, admin.org, &format!("idle-{i}"), "conversations:read")
            .await
            .unwrap();
        clients.push(id);
    }
    // Warm up allocations with one socket, then measure.
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let ws_token = |client: Uuid| {
        let claims = moat::runs::ws::WsClaims {
            iss: "https://moat.example.com".into(),
            aud: "moat:ws".into(),
            sub: client,
            org: admin.org,
            conv,
            scope: "conversations:read".into(),
            iat: now,
            exp: now + 600,
            jti: Uuid::new_v4(),
            kind: PrincipalKind::Client,
            session_exp: now + 3600,
            sid: None,
            secret_gen: None,
        };
        keys.sign(&claims).unwrap()
    };
    let url = |token: String| format!("ws://{}/v1/conversations/{conv}/stream?token={token}", serving.addr);
    let mut sockets = vec![open(&url(ws_token(clients[0]))).await];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = crate::harness::rss_kib(serving.pid());
    for i in 1..n {
        sockets.push(open(&url(ws_token(clients[i / moat::runs::ws::MAX_SOCKETS_PER_PRINCIPAL]))).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = crate::harness::rss_kib(serving.pid());
    let per = (after.saturating_sub(before)) as f64 / (n - 1) as f64;
    println!("\n## 2. Resident memory per idle connection (`moat serve`, {n} open sockets)\n");
    println!("| VmRSS with 1 socket | with {n} | per connection |\n|---|---|---|");
    println!("| {before} KiB | {after} KiB | **{per:.1} KiB** |");
    report.figure("ws", &format!("resident memory per idle connection at {n}"), per, "KiB", Target::AtMost(32.0));
    drop(sockets);
    serving.terminate().await;
}

/// Reads events until `total` arrived on `socket`; returns the lags (receipt − commit).
async fn drain(mut socket: Socket, total: usize) -> Vec<Duration> {
    let mut lags = Vec::with_capacity(total);
    while lags.len() < total {
        match tokio::time::timeout(Duration::from_secs(60), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                // Cheap client side (the load generator shares the machine): no full JSON parse.
                if text.starts_with("{\"type\":\"event\"") || text.contains("\"type\":\"event\"") {
                    let at = text.split("\"at\":\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap();
                    let at = OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
                    let lag = OffsetDateTime::now_utc() - at;
                    lags.push(Duration::try_from(lag).unwrap_or(Duration::ZERO));
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("subscriber ended early after {} events: {other:?}", lags.len()),
        }
    }
    lags
}

/// How each run produces its events: `steps` × `burst` deltas, a burst every `delay_ms`.
#[derive(Clone, Copy)]
struct Load {
    steps: usize,
    burst: usize,
    delay_ms: u64,
}

async fn fan_out(conversations: usize, subscribers_each: usize, load: Load) -> (f64, Duration, usize) {
    let db = TestDb::migrated().await;
    let env = Env::production(&db);
    let serving = crate::harness::serve(&env).await;
    let runner_env = Env::default()
        .set("DATABASE_URL", &db.url(DbRole::Runner))
        .set("MOAT_RUNNER_CONCURRENCY", "128")
        .set("MOAT_RUN_MAX_EVENTS", "1000000");
    let runner = crate::harness::runner(&runner_env).await;
    let admin = admin_in(&db).await;
    let http = reqwest::Client::new();
    let token = login_at(&http, &serving.url(""), admin.email, &admin.password).await;
    let mut sockets = Vec::new();
    let mut convs = Vec::new();
    let (client_id, _) = moat::admin::create_client(&admin.pool, admin.org, "fan", "conversations:read").await.unwrap();
    let keys = moat::identity::TokenKeys::new(
        moat::config::SigningKey::parse(env.get("MOAT_SIGNING_KEY").unwrap()).unwrap(),
        Vec::new(),
        "https://moat.example.com".into(),
    );
    let mut principals = vec![client_id];
    for c in 0..conversations {
        let conv =
            post_json(&http, &serving.url("/v1/conversations"), Some(&token), json!({"title": "f", "agent": "demo"}))
                .await;
        let conv: Uuid = conv["id"].as_str().unwrap().parse().unwrap();
        for s in 0..subscribers_each {
            let k = c * subscribers_each + s;
            if k / moat::runs::ws::MAX_SOCKETS_PER_PRINCIPAL >= principals.len() {
                principals.push(
                    moat::admin::create_client(&admin.pool, admin.org, &format!("fan-{k}"), "conversations:read")
                        .await
                        .unwrap()
                        .0,
                );
            }
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let claims = moat::runs::ws::WsClaims {
                iss: "https://moat.example.com".into(),
                aud: "moat:ws".into(),
                sub: principals[k / moat::runs::ws::MAX_SOCKETS_PER_PRINCIPAL],
                org: admin.org,
                conv,
                scope: "conversations:read".into(),
                iat: now,
                exp: now + 600,
                jti: Uuid::new_v4(),
                kind: PrincipalKind::Client,
                session_exp: now + 3600,
                sid: None,
                secret_gen: None,
            };
            let token = keys.sign(&claims).unwrap();
            sockets.push(open(&format!("ws://{}/v1/conversations/{conv}/stream?token={token}", serving.addr)).await);
        }
        convs.push(conv);
    }
    // Each run: run.queued + run.started + steps × burst deltas + run.succeeded.
    let per_conversation = load.steps * load.burst + 3;
    let drains: Vec<_> = sockets.into_iter().map(|s| tokio::spawn(drain(s, per_conversation))).collect();
    let started = Instant::now();
    let cpu = |p: &str| cpu_seconds(p);
    let (serve_pid, runner_pid) = (serving.pid().to_string(), runner.pid().to_string());
    let before = (cpu(&serve_pid), cpu(&runner_pid), cpu("self"), machine_cpu_seconds());
    for conv in &convs {
        post_json(
            &http,
            &serving.url(&format!("/v1/conversations/{conv}/runs")),
            Some(&token),
            json!({"input": {"steps": load.steps, "burst": load.burst, "delay_ms": load.delay_ms}}),
        )
        .await;
    }
    let mut lags = Vec::new();
    for d in drains {
        lags.extend(d.await.unwrap());
    }
    let elapsed = started.elapsed();
    let after = (cpu(&serve_pid), cpu(&runner_pid), cpu("self"), machine_cpu_seconds());
    let machine = after.3 - before.3;
    println!(
        "cpu over {:.2} s: serve {:.2} s, runner {:.2} s, bench client {:.2} s, rest (postgres…) {:.2} s",
        elapsed.as_secs_f64(),
        after.0 - before.0,
        after.1 - before.1,
        after.2 - before.2,
        machine - (after.0 - before.0) - (after.1 - before.1) - (after.2 - before.2)
    );
    lags.sort();
    let delivered = lags.len();
    drop(runner);
    serving.terminate().await;
    (delivered as f64 / elapsed.as_secs_f64(), percentile(&lags, 0.99), delivered)
}

pub async fn run(report: &mut crate::report::Report) {
    {
        println!("# WebSocket edge benchmark");
        if std::env::var("BENCH_ONLY").as_deref() != Ok("fanout") {
            connect_latency(report).await;
            memory_per_connection(report).await;
        }
        println!("\n## 3. Fan-out from runner commits to WebSocket clients\n");
        println!(
            "Saturated: runs emit as fast as they can (throughput; lag is then queueing). \
             Paced: runs emit at a rate that meets the throughput target (lag at that load).\n"
        );
        println!(
            "| shape | load | messages delivered | per second | p99 lag (commit → receipt) |\n|---|---|---|---|---|"
        );
        let shapes = [
            ("100 conversations × 1 subscriber (events/s)", 100, 1, 1000, Load { steps: 200, burst: 5, delay_ms: 10 }),
            (
                "1 conversation × 100 subscribers (messages/s)",
                1,
                100,
                5000,
                Load { steps: 1000, burst: 4, delay_ms: 1 },
            ),
        ];
        for (name, conversations, subscribers, saturated_steps, paced) in shapes {
            let saturated = Load { steps: saturated_steps, burst: 1, delay_ms: 0 };
            for (label, load) in [("saturated", saturated), ("paced", paced)] {
                let (rate, p99, n) = fan_out(conversations, subscribers, load).await;
                let load = if load.delay_ms == 0 {
                    "as fast as possible".to_string()
                } else {
                    format!("{label}: {} per {} ms per run", load.burst, load.delay_ms)
                };
                println!("| {name} | {load} | {n} | {rate:.0} | {} |", ms(p99));
                let (rate_target, lag_target) = match (label, subscribers) {
                    ("paced", 1) => (Target::AtLeast(20_000.0), Target::AtMost(50.0)),
                    ("paced", _) => (Target::AtLeast(100_000.0), Target::AtMost(50.0)),
                    _ => (Target::None, Target::None),
                };
                report.figure("events", &format!("{name}, {label}: delivered"), rate, "/s", rate_target);
                report.figure(
                    "events",
                    &format!("{name}, {label}: p99 lag commit → receipt"),
                    millis(p99),
                    "ms",
                    lag_target,
                );
            }
        }
    }
}
