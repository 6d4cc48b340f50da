//! Credential-broker benchmark (`cargo bench --bench broker`): real PostgreSQL,
//! the real app on a real socket, the fake OAuth provider from the tests.
//!
//! 1. A cached broker call versus an authenticated route doing only `SELECT 1`
//!    on the same server: p50/p99 and their ratio (target ≤ 1.3×).
//! 2. 100 concurrent callers on one expired integration: provider refreshes and
//!    the time until all hold a token.
//! 3. 1,000 integrations expiring together: refreshes per second.
//!
//! Figures are ratios against baselines measured in the same run; see
//! docs/performance.md.

use std::time::{Duration, Instant};

use axum::extract::State;
use moat::AppState;
use moat::http::Routes;
use moat::identity::{Access, Role};
use serde_json::{Value, json};

use crate::harness::provider::{CLIENT_SECRET, FakeProvider};
use crate::harness::{Env, Options, TestApp, TestDb, spawn_app};
use crate::report::{Report, Target};
use crate::stats::{millis, ms, percentile};

const SAMPLES: usize = 5000;
const WARMUP: usize = 300;

/// The baseline: authenticated (same guard as the broker), then one `SELECT 1`.
async fn select_one(State(state): State<AppState>, _caller: moat::identity::Caller) -> &'static str {
    let client = state.db.get().await.unwrap();
    // The same protocol as the broker's fast path: one unnamed statement, one round trip.
    client.query_typed_one("SELECT 1", &[]).await.unwrap();
    "1"
}

async fn app(provider: &FakeProvider, dir: &tempfile::TempDir) -> TestApp {
    let db = TestDb::migrated().await;
    let env = Env::production(&db)
        .set("MOAT_PROVIDERS_FILE", provider.providers_file(dir.path()).to_str().unwrap())
        .set("MOAT_EGRESS_ALLOW", &provider.egress_allow())
        .set("FAKE_PROVIDER_SECRET", CLIENT_SECRET)
        .set("MOAT_DATABASE_POOL_SIZE", "32");
    let probes = Routes::new().get("/bench/select-one", Access::Authenticated, select_one);
    spawn_app(Options { env: Some(env), db: Some(db), extra: Some(probes), ..Options::default() }).await
}

async fn import(app: &TestApp, token: &str, account: &str, refresh: Option<String>, expires_in: u64) -> String {
    let body: Value = app
        .http
        .post(app.url("/v1/integrations"))
        .bearer_auth(token)
        .json(&json!({"provider": "fake", "account": account, "access_token": "seed-access", "refresh_token": refresh, "expires_in": expires_in}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn timed(request: reqwest::RequestBuilder) -> Duration {
    let started = Instant::now();
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.bytes().await.unwrap();
    started.elapsed()
}

async fn cached_versus_select_one(report: &mut Report) {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app(&provider, &dir).await;
    let (org, user, token) = app.signed_in(Role::Admin).await;
    let id = import(&app, &token, "cached", Some(provider.issue_refresh_token()), 86_400).await;
    where_the_time_goes(&app, org, user, id.parse().unwrap()).await;
    let http = reqwest::Client::new();
    let broker = || http.post(app.url(&format!("/v1/integrations/{id}/access-token"))).bearer_auth(&token);
    let baseline = || http.get(app.url("/bench/select-one")).bearer_auth(&token);
    let (mut b, mut s) = (Vec::new(), Vec::new());
    for i in 0..(WARMUP + SAMPLES) {
        // Interleaved, so drift on the machine weighs on both alike.
        let (x, y) = (timed(broker()).await, timed(baseline()).await);
        if i >= WARMUP {
            b.push(x);
            s.push(y);
        }
    }
    b.sort();
    s.sort();
    assert_eq!(provider.refresh_attempts(), 0, "the cached path must not refresh");
    let (bp50, bp99, sp50, sp99) =
        (percentile(&b, 0.5), percentile(&b, 0.99), percentile(&s, 0.5), percentile(&s, 0.99));
    println!(
        "\n## 1. Cached broker call vs authenticated SELECT 1 ({SAMPLES} sequential requests each, interleaved)\n"
    );
    println!("| route | p50 | p99 |\n|---|---|---|");
    println!("| `GET /bench/select-one` (baseline) | {} | {} |", ms(sp50), ms(sp99));
    println!("| `POST /v1/integrations/{{id}}/access-token` (cached) | {} | {} |", ms(bp50), ms(bp99));
    println!(
        "| **ratio** | **{:.2}×** | **{:.2}×** |",
        bp50.as_secs_f64() / sp50.as_secs_f64(),
        bp99.as_secs_f64() / sp99.as_secs_f64()
    );
    let base = "authenticated SELECT 1";
    report.versus(
        "broker",
        "cached access token, p50",
        millis(bp50),
        base,
        millis(sp50),
        "ms",
        Target::RatioAtMost(1.3),
    );
    report.versus(
        "broker",
        "cached access token, p99",
        millis(bp99),
        base,
        millis(sp99),
        "ms",
        Target::RatioAtMost(1.3),
    );
}

/// The broker's one statement vs `SELECT 1`, straight through the pool (no
/// HTTP): how much of the broker's extra time is PostgreSQL's.
async fn where_the_time_goes(app: &TestApp, org: uuid::Uuid, user: uuid::Uuid, id: uuid::Uuid) {
    use tokio_postgres::types::{ToSql, Type};
    let read = include_str!("../../sql/integrations/read_fast.sql");
    let (kind, sid, generation): (&str, Option<uuid::Uuid>, Option<i32>) = ("user", None, None);
    let params: [(&(dyn ToSql + Sync), Type); 6] = [
        (&org, Type::UUID),
        (&kind, Type::TEXT),
        (&user, Type::UUID),
        (&sid, Type::UUID),
        (&generation, Type::INT4),
        (&id, Type::UUID),
    ];
    let client = app.state.db.get().await.unwrap();
    let (mut statement, mut select) = (Vec::new(), Vec::new());
    for i in 0..(WARMUP + SAMPLES) {
        let started = Instant::now();
        client.query_typed_one(read, &params).await.unwrap();
        let x = started.elapsed();
        let started = Instant::now();
        client.query_typed_one("SELECT 1", &[]).await.unwrap();
        if i >= WARMUP {
            statement.push(x);
            select.push(started.elapsed());
        }
    }
    statement.sort();
    select.sort();
    println!("\n## Where the broker's time goes: its statement vs SELECT 1, straight through the pool\n");
    println!("| statement | p50 | p99 |\n|---|---|---|");
    println!("| `SELECT 1` | {} | {} |", ms(percentile(&select, 0.5)), ms(percentile(&select, 0.99)));
    println!(
        "| `moat_integration_read(…)` | {} | {} |",
        ms(percentile(&statement, 0.5)),
        ms(percentile(&statement, 0.99))
    );
}

async fn stampede(latency_ms: u64, report: &mut Report) {
    let provider = FakeProvider::start().await;
    provider.set_latency(Duration::from_millis(latency_ms));
    let dir = tempfile::tempdir().unwrap();
    let app = app(&provider, &dir).await;
    let (_, _, token) = app.signed_in(Role::Admin).await;
    let id = import(&app, &token, "stampede", Some(provider.issue_refresh_token()), 0).await;
    let http = reqwest::Client::new();
    let url = app.url(&format!("/v1/integrations/{id}/access-token"));
    let started = Instant::now();
    let calls = (0..100).map(|_| timed(http.post(&url).bearer_auth(&token)));
    let mut times = futures_util::future::join_all(calls).await;
    let all = started.elapsed();
    times.sort();
    println!(
        "| {latency_ms} ms | {} | {} | {} | {} |",
        provider.refreshes(),
        ms(percentile(&times, 0.5)),
        ms(all),
        ms(Duration::from_millis(latency_ms)),
    );
    let name = format!("100 callers, one expired integration, provider {latency_ms} ms: refreshes");
    report.figure("broker", &name, provider.refreshes() as f64, "", Target::AtMost(1.0));
    let name = format!("100 callers, provider {latency_ms} ms: until all hold a token");
    let wait = millis(all);
    if latency_ms == 0 {
        report.figure("broker", &name, wait, "ms", Target::None);
    } else {
        report.versus("broker", &name, wait, "provider latency", latency_ms as f64, "ms", Target::None);
    }
}

async fn mass_expiry(report: &mut Report) {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app(&provider, &dir).await;
    let (_, _, token) = app.signed_in(Role::Admin).await;
    let mut ids = Vec::new();
    for i in 0..1000 {
        ids.push(import(&app, &token, &format!("a{i}"), Some(provider.issue_refresh_token()), 0).await);
    }
    let http = reqwest::Client::new();
    let started = Instant::now();
    let calls = ids.iter().map(|id| {
        let request = http.post(app.url(&format!("/v1/integrations/{id}/access-token"))).bearer_auth(&token);
        timed(request)
    });
    // 32 in flight at a time, as many agents would.
    let stream = futures_util::stream::iter(calls);
    let _: Vec<Duration> =
        futures_util::StreamExt::collect(futures_util::StreamExt::buffer_unordered(stream, 32)).await;
    let elapsed = started.elapsed();
    assert_eq!(provider.refreshes(), 1000);
    println!("\n## 3. 1,000 integrations expiring together (32 callers in flight)\n");
    println!("| refreshes at the provider | wall time | refreshes per second |\n|---|---|---|");
    println!("| {} | {} | {:.0} |", provider.refreshes(), ms(elapsed), 1000.0 / elapsed.as_secs_f64());
    report.figure(
        "broker",
        "1,000 integrations expiring together: refreshes",
        1000.0 / elapsed.as_secs_f64(),
        "/s",
        Target::None,
    );
}

pub async fn run(report: &mut crate::report::Report) {
    {
        println!("# Credential broker benchmark");
        cached_versus_select_one(report).await;
        println!("\n## 2. 100 concurrent callers on one expired integration\n");
        println!(
            "| provider latency | refreshes at the provider | p50 per caller | until all hold a token | provider latency alone |"
        );
        println!("|---|---|---|---|---|");
        for latency in [0, 50, 200] {
            stampede(latency, report).await;
        }
        mass_expiry(report).await;
    }
}
