//! HTTP: an authenticated GET through Moat's whole middleware stack (request
//! id, access log, security headers, JSON errors, panic catcher, timeout, body
//! limit, metrics, bearer guard with JWT verification) versus the same handler
//! on a bare axum router on the same runtime — target overhead ≤ 15 %.
//!
//! Two handlers, each served both ways from the same state and pool:
//! - *typical read*: what every tenant read does — a pooled connection, a
//!   tenant transaction (organization context + caller-still-active check), one
//!   indexed query, commit. The target applies here.
//! - *minimal*: one `SELECT 1` — the worst case for the ratio, reported with
//!   the absolute overhead per request.
//!
//! The bare router gets the caller the guard would have produced, built once.
//! Load: 16 concurrent keep-alive clients in this process, in seven rounds of
//! a full and a bare run back to back; the pair with the median ratio is the
//! figure (every pair's ratio is printed), so drift and one disturbed round on
//! this shared machine weigh on both alike.

use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use moat::AppState;
use moat::http::Routes;
use moat::identity::{Access, Caller, PrincipalKind, Role};

use crate::harness::{Options, spawn_app};
use crate::report::{Report, Target};
use crate::stats::{millis, percentile};

const SECTION: &str = "http";
const CLIENTS: usize = 16;
const ROUND: Duration = Duration::from_millis(1500);
const ROUNDS: usize = 7;
const LIST: &str = "SELECT id, title FROM conversations WHERE org_id = $1 ORDER BY created_at DESC, id DESC LIMIT 51";

async fn minimal(State(state): State<AppState>) -> &'static str {
    let client = state.db.get().await.unwrap();
    client.query_typed_one("SELECT 1", &[]).await.unwrap();
    "1"
}

async fn minimal_guarded(state: State<AppState>, _caller: Caller) -> &'static str {
    minimal(state).await
}

async fn typical(state: &AppState, caller: &Caller) -> String {
    let mut client = state.db.get().await.unwrap();
    let tx = moat::db::tenant::begin(&mut client, caller.org, caller.principal()).await.unwrap();
    let statement = tx.prepare_cached(LIST).await.unwrap();
    let rows = tx.query(&statement, &[&caller.org]).await.unwrap();
    tx.commit().await.unwrap();
    format!("{{\"items\":{}}}", rows.len())
}

async fn typical_guarded(State(state): State<AppState>, caller: Caller) -> String {
    typical(&state, &caller).await
}

async fn typical_bare(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> String {
    typical(&state, &caller).await
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

/// Alternating rounds of the full and the bare server; reports both ratios.
async fn compare(report: &mut Report, name: &str, full: &str, bare: &str, token: &str, target: Target) {
    load(full, Some(token)).await; // warm-up
    load(bare, None).await;
    // Each round pairs a full and a bare run back to back; the pair with the
    // median ratio is reported, so one disturbed round does not move the figure.
    let mut pairs = Vec::new();
    let (mut full_times, mut bare_times) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (full_rate, times) = load(full, Some(token)).await;
        full_times.extend(times);
        let (bare_rate, times) = load(bare, None).await;
        bare_times.extend(times);
        pairs.push((full_rate, bare_rate));
    }
    pairs.sort_by(|a, b| (b.1 / b.0).total_cmp(&(a.1 / a.0)));
    let ratios: Vec<String> = pairs.iter().map(|(f, b)| format!("{:.2}", b / f)).collect();
    let (full_rate, bare_rate) = pairs[ROUNDS / 2];
    full_times.sort();
    bare_times.sort();
    println!("\n## {name}\n\n| server | requests/s | p50 | p99 |\n|---|---|---|---|");
    for (server, rate, times) in
        [("bare router (baseline)", bare_rate, &bare_times), ("full stack", full_rate, &full_times)]
    {
        let (p50, p99) = (millis(percentile(times, 0.5)), millis(percentile(times, 0.99)));
        println!("| {server} | {rate:.0} | {p50:.3} ms | {p99:.3} ms |");
    }
    println!(
        "\nOverhead: {:.1} µs of wall time per request at {CLIENTS} concurrent clients on this machine \
         (median of {ROUNDS} alternated pairs; every pair's ratio: {}).",
        1e6 / full_rate - 1e6 / bare_rate,
        ratios.join(", ")
    );
    // Time per request = 1 / throughput: the ratio is the throughput overhead.
    report.versus(
        SECTION,
        &format!("{name}: time per request"),
        1e6 / full_rate,
        "bare router",
        1e6 / bare_rate,
        "µs",
        target,
    );
    let (full_p99, bare_p99) = (millis(percentile(&full_times, 0.99)), millis(percentile(&bare_times, 0.99)));
    report.versus(SECTION, &format!("{name}: p99 latency"), full_p99, "bare router", bare_p99, "ms", target);
}

pub async fn run(report: &mut Report) {
    println!("\n# HTTP: the whole middleware stack vs a bare router (same handlers)");
    let probes = Routes::new().get("/bench/minimal", Access::Authenticated, minimal_guarded).get(
        "/bench/typical",
        Access::Scope(moat::identity::Scope::ConversationsRead),
        typical_guarded,
    );
    let app = spawn_app(Options { extra: Some(probes), ..Options::default() }).await;
    let (_, _, token) = app.signed_in(Role::Admin).await;
    // The very caller the guard makes of the token (its login session included,
    // so both servers run the same session check).
    let caller = moat::identity::VerifiedTokens::new(app.state.tokens.clone()).caller(&token).unwrap();
    let bare = axum::Router::new()
        .route("/bench/minimal", axum::routing::get(minimal))
        .route("/bench/typical", axum::routing::get(typical_bare))
        .layer(Extension(caller))
        .with_state(app.state.clone());
    // Served exactly as `moat serve` serves (axum-server, TCP_NODELAY, peer
    // address), so the ratio isolates the middleware.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bare_addr = listener.local_addr().unwrap();
    let server = axum_server::from_tcp(listener).unwrap().acceptor(axum_server::accept::NoDelayAcceptor::new());
    let service = bare.into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { server.serve(service).await.unwrap() });
    let bare_url = |path: &str| format!("http://{bare_addr}{path}");
    compare(
        report,
        "typical read (tenant transaction + one query)",
        &app.url("/bench/typical"),
        &bare_url("/bench/typical"),
        &token,
        Target::RatioAtMost(1.15),
    )
    .await;
    compare(
        report,
        "minimal handler (SELECT 1)",
        &app.url("/bench/minimal"),
        &bare_url("/bench/minimal"),
        &token,
        Target::None,
    )
    .await;
}
