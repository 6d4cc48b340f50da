//! HTTP: an authenticated GET through Moat's whole middleware stack (request
//! id, access log, security headers, JSON errors, panic catcher, timeout, body
//! limit, metrics, bearer guard with JWT verification) versus the same handler
//! on a bare axum router on the same runtime — target overhead ≤ 15 %.
//!
//! The handler is what a typical read does: one round trip to PostgreSQL from
//! the pool. Both servers run in this process, so they share everything but
//! the middleware; load is 16 concurrent keep-alive clients per server,
//! alternated in rounds so that drift on the machine weighs on both alike.

use std::time::{Duration, Instant};

use axum::extract::State;
use moat::AppState;
use moat::auth::{Access, Role};
use moat::http::Routes;

use crate::harness::{Options, spawn_app};
use crate::report::{Report, Target};
use crate::stats::{millis, percentile};

const SECTION: &str = "http";
const CLIENTS: usize = 16;
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 5;

async fn handler(State(state): State<AppState>) -> &'static str {
    let client = state.db.get().await.unwrap();
    client.query_typed_one("SELECT 1", &[]).await.unwrap();
    "1"
}

async fn guarded(state: State<AppState>, _caller: moat::auth::Caller) -> &'static str {
    handler(state).await
}

/// Requests per second and every latency, from `CLIENTS` concurrent clients for `ROUND`.
async fn load(url: &str, token: Option<&str>) -> (f64, Vec<Duration>) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + ROUND;
    let clients = (0..CLIENTS).map(|_| {
        let (http, url, token) = (http.clone(), url.to_owned(), token.map(str::to_owned));
        tokio::spawn(async move {
            let mut times = Vec::new();
            while Instant::now() < deadline {
                let mut request = http.get(&url);
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let started = Instant::now();
                let response = request.send().await.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                response.bytes().await.unwrap();
                times.push(started.elapsed());
            }
            times
        })
    });
    let started = Instant::now();
    let mut all = Vec::new();
    for client in futures_util::future::join_all(clients).await {
        all.extend(client.unwrap());
    }
    (all.len() as f64 / started.elapsed().as_secs_f64(), all)
}

pub async fn run(report: &mut Report) {
    println!("\n# HTTP: the whole middleware stack vs a bare router (same handler)\n");
    let probes = Routes::new().get("/bench/read", Access::Authenticated, guarded);
    let app = spawn_app(Options { extra: Some(probes), ..Options::default() }).await;
    let (_, _, token) = app.signed_in(Role::Admin).await;
    // The bare server: the same state and handler, no layers, no guard.
    let bare = axum::Router::new().route("/bench/read", axum::routing::get(handler)).with_state(app.state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, bare).await.unwrap() });
    let (full_url, bare_url) = (app.url("/bench/read"), format!("http://{bare_addr}/bench/read"));

    load(&full_url, Some(&token)).await; // warm-up
    load(&bare_url, None).await;
    let (mut full_rate, mut bare_rate) = (0.0, 0.0);
    let (mut full_times, mut bare_times) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (rate, times) = load(&full_url, Some(&token)).await;
        full_rate += rate / ROUNDS as f64;
        full_times.extend(times);
        let (rate, times) = load(&bare_url, None).await;
        bare_rate += rate / ROUNDS as f64;
        bare_times.extend(times);
    }
    full_times.sort();
    bare_times.sort();
    let (full_p99, bare_p99) = (percentile(&full_times, 0.99), percentile(&bare_times, 0.99));
    println!("| server | requests/s | p50 | p99 |\n|---|---|---|---|");
    for (name, rate, times) in
        [("bare router (baseline)", bare_rate, &bare_times), ("full stack", full_rate, &full_times)]
    {
        println!(
            "| {name} | {rate:.0} | {:.3} ms | {:.3} ms |",
            millis(percentile(times, 0.5)),
            millis(percentile(times, 0.99))
        );
    }
    // Throughput overhead: how much more time each request costs (bare/full, ≤ 1.15).
    report.versus(
        SECTION,
        "time per request, full stack (1 / throughput)",
        1e6 / full_rate,
        "bare router",
        1e6 / bare_rate,
        "µs",
        Target::RatioAtMost(1.15),
    );
    report.versus(
        SECTION,
        "p99 latency, full stack",
        millis(full_p99),
        "bare router",
        millis(bare_p99),
        "ms",
        Target::RatioAtMost(1.15),
    );
}
