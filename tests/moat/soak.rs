//! The soak suite: two production `serve` and two `runner` processes on one
//! PostgreSQL, `MOAT_SOAK_CLIENTS` WebSocket clients (default 100) watching
//! conversations on both instances, and continuous runs — plain, answered,
//! cancelled — plus broker calls, for `MOAT_SOAK_SECS` (default 15). The
//! fault variant also SIGKILLs a runner, restarts a `serve`, makes the
//! provider slow and then failing, and restarts PostgreSQL, mid-load.
//!
//! Clients behave like real ones: they retry on the other instance when one
//! is gone, and sockets reconnect with `after` = the last sequence they saw.
//! The invariants (docs/reliability.md) are checked at the end.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use moat::identity::Role;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::http::{admin_in, login_at};
use crate::harness::pg::Cluster as PgCluster;
use crate::harness::provider::{CLIENT_SECRET, Failure, FakeProvider};
use crate::harness::{self, Env, Role as DbRole, TestDb};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const WATCHERS_PER_CONVERSATION: usize = 5;
const SOCKETS_PER_USER: usize = 20;
const INTEGRATIONS: usize = 10;
/// How long a client keeps retrying one request (covers a PostgreSQL restart).
const PATIENCE: Duration = Duration::from_secs(30);

/// The two `serve` instances' current base URLs (a restart changes one).
struct Bases(RwLock<[String; 2]>);

impl Bases {
    fn get(&self, i: usize) -> String {
        self.0.read().unwrap()[i % 2].clone()
    }
}

struct Client {
    bases: Arc<Bases>,
    http: reqwest::Client,
    token: String,
}

impl Client {
    /// Sends to instance `i`, then alternates instances on connection errors and
    /// 503s (an instance restarting, PostgreSQL restarting) until `PATIENCE`.
    /// Returns the first other answer; a 500 is a failure of the test (and
    /// broker answers are all returned, to be counted).
    async fn send(&self, i: usize, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let deadline = Instant::now() + PATIENCE;
        let mut attempt = 0;
        loop {
            let url = format!("{}{path}", self.bases.get(i + attempt));
            let mut request = self.http.request(method.clone(), url).bearer_auth(&self.token);
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) if response.status() != 503 || path.ends_with("/access-token") => {
                    let status = response.status().as_u16();
                    let body = response.json().await.unwrap_or(Value::Null);
                    assert_ne!(status, 500, "{method} {path}: {body}");
                    return (status, body);
                }
                _ => {}
            }
            assert!(Instant::now() < deadline, "{method} {path} kept failing for {PATIENCE:?}");
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn post(&self, i: usize, path: &str, body: Value) -> (u16, Value) {
        self.send(i, reqwest::Method::POST, path, Some(&body)).await
    }

    async fn get(&self, i: usize, path: &str) -> Value {
        let (status, body) = self.send(i, reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Polls the run until `done` holds for its view.
    async fn wait_run(&self, i: usize, run: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE * 2;
        loop {
            let view = self.get(i, &format!("/v1/runs/{run}")).await;
            if done(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "run {run} stuck at {view}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn terminal(view: &Value) -> bool {
    matches!(view["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
}

/// Starts a run; if an earlier attempt's answer was lost and it already
/// exists (409 `run_in_progress`), finds it in the conversation's events.
async fn start_run(client: &Client, i: usize, conv: &str, input: Value) -> String {
    let (status, body) = client.post(i, &format!("/v1/conversations/{conv}/runs"), json!({ "input": input })).await;
    if status == 202 {
        return body["id"].as_str().unwrap().to_owned();
    }
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("run_in_progress")), "{body}");
    let events = client.get(i, &format!("/v1/conversations/{conv}/events?limit=200")).await;
    let mut after = 0;
    let mut last_queued = None;
    let mut page = events;
    loop {
        for event in page["items"].as_array().unwrap() {
            if event["kind"] == "run.queued" {
                last_queued = event["run_id"].as_str().map(str::to_owned);
            }
        }
        let next = page["next_after"].as_i64().unwrap();
        if next == after {
            return last_queued.expect("a queued run");
        }
        after = next;
        page = client.get(i, &format!("/v1/conversations/{conv}/events?after={after}&limit=200")).await;
    }
}

/// One conversation's workload until `deadline`; returns each run's final view.
async fn actor(client: Arc<Client>, conv: String, deadline: Instant) -> Vec<Value> {
    let mut finished = Vec::new();
    let mut n = 0;
    while Instant::now() < deadline {
        let (here, there) = (n, n + 1);
        let input = match n % 3 {
            0 => json!({"steps": 5, "delay_ms": 10}),
            1 => json!({"steps": 2, "delay_ms": 10, "ask": "Proceed?"}),
            _ => json!({"steps": 2000, "delay_ms": 10}),
        };
        let run = start_run(&client, here, &conv, input).await;
        if n % 3 == 1 {
            let view = client.wait_run(there, &run, |v| v["status"] == "waiting_input" || terminal(v)).await;
            if let Some(input) = view["pending_input"]["id"].as_str() {
                let (status, body) = client.post(here, &format!("/v1/inputs/{input}"), json!({"value": "yes"})).await;
                assert!(status == 200 || status == 409, "answer: {status} {body}");
            }
        } else if n % 3 == 2 {
            client.wait_run(here, &run, |v| v["status"] != "queued").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (status, body) = client.post(there, &format!("/v1/runs/{run}/cancel"), json!({})).await;
            assert!(status == 202 || status == 409, "cancel: {status} {body}");
        }
        finished.push(client.wait_run(here, &run, terminal).await);
        n += 1;
    }
    finished
}

/// Every conversation's final sequence number, once the workload is over.
type Targets = Option<Arc<HashMap<String, i64>>>;

/// A client that watches `conv` from the start, reconnects (on any live
/// instance, with `after`) whenever its socket ends, and returns every
/// sequence number it received once it has seen the conversation's last one.
async fn watcher(
    client: Arc<Client>,
    k: usize,
    conv: String,
    mut targets: watch::Receiver<Targets>,
) -> (Vec<i64>, usize) {
    let (mut seqs, mut reconnects): (Vec<i64>, usize) = (Vec::new(), 0);
    'connect: loop {
        let after = seqs.last().copied().unwrap_or(0);
        let Some(mut socket) = open(&client, k + reconnects, &conv, after).await else {
            reconnects += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        loop {
            let target = targets.borrow().as_ref().map(|t| t.get(&conv).copied().unwrap_or(0));
            if target.is_some_and(|target| after_of(&seqs) >= target) {
                return (seqs, reconnects);
            }
            tokio::select! {
                _ = targets.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(20)), if target.is_some() => {
                    panic!("a socket on {conv} stopped at {:?} of {target:?}", seqs.last());
                }
                message = socket.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        let value: Value = serde_json::from_str(&text).unwrap();
                        if value["type"] == "event" {
                            seqs.push(value["seq"].as_i64().unwrap());
                        }
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        reconnects += 1;
                        continue 'connect;
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }
}

fn after_of(seqs: &[i64]) -> i64 {
    seqs.last().copied().unwrap_or(0)
}

/// Mints a ws-token and opens the stream on instance `i`; `None` if either fails.
async fn open(client: &Client, i: usize, conv: &str, after: i64) -> Option<harness::ws::Socket> {
    let base = client.bases.get(i);
    let minted = client.http.post(format!("{base}/v1/conversations/{conv}/ws-token")).bearer_auth(&client.token);
    let minted = minted.send().await.ok()?;
    assert_ne!(minted.status(), 500, "ws-token answered 500");
    let minted: Value = minted.json().await.ok()?;
    let token = minted["token"].as_str()?;
    let url = format!("{}/v1/conversations/{conv}/stream?token={token}&after={after}", base.replacen("http", "ws", 1));
    let (mut socket, _) = match tokio_tungstenite::connect_async(url).await {
        Ok(connected) => connected,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_ne!(response.status(), 500, "the stream answered 500");
            return None;
        }
        Err(_) => return None,
    };
    let ready = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.ok()??.ok()?;
    matches!(ready, Message::Text(ref text) if text.contains("\"ready\"")).then_some(socket)
}

/// Broker calls on `ids`, alternating instances, until `stop`; counts answers by status.
async fn broker_calls(
    client: Arc<Client>,
    ids: Arc<RwLock<Vec<String>>>,
    stop: watch::Receiver<bool>,
) -> HashMap<String, usize> {
    let mut answers = HashMap::new();
    let mut n = 0;
    while !*stop.borrow() {
        let id = {
            let ids = ids.read().unwrap();
            ids[n % ids.len()].clone()
        };
        let (status, body) = client.post(n, &format!("/v1/integrations/{id}/access-token"), json!({})).await;
        let code = body["error"]["code"].as_str().unwrap_or("ok");
        *answers.entry(format!("{status} {code}")).or_default() += 1;
        n += 1;
    }
    answers
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.admin().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// Imports `n` integrations whose access tokens have already expired.
async fn import_expired(client: &Client, provider: &FakeProvider, label: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let import = json!({"provider": "fake", "account": format!("{label}-{i}"), "access_token": "stale",
            "refresh_token": provider.issue_refresh_token(), "expires_in": 0});
        let (status, created) = client.post(0, "/v1/integrations", import).await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    ids
}

async fn scrape_dev_bypass(url: &str, token: Option<&str>) -> String {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let text = request.send().await.unwrap().text().await.unwrap();
    assert!(text.contains("moat_dev_bypass_events 0"), "{text}");
    text
}

/// The purge succeeded, on every `serve` instance, in a round that started
/// after this call; then no purged table holds a row its purge would have
/// removed then. Returns the rows each instance's purge counted, by step.
async fn bounded_tables(db: &TestDb, serves: &[harness::process::Serving], token: &str) -> Vec<(String, f64)> {
    let admin = db.admin().await;
    let checked_at: f64 = admin.query_one("SELECT extract(epoch FROM now())::float8", &[]).await.unwrap().get(0);
    let mut purged: HashMap<String, f64> = HashMap::new();
    for serving in serves {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = reqwest::Client::new()
                .get(serving.url("/metrics"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let value = |series: &str| crate::maintenance::metric(&text, series);
            if value("moat_purge_last_success_timestamp_seconds").is_some_and(|t| t > checked_at + 1.0) {
                for (step, _) in moat::maintenance::steps() {
                    let rows = value(&format!("moat_purge_rows_total{{step=\"{step}\"}}")).unwrap_or(0.0);
                    *purged.entry((*step).to_owned()).or_default() += rows;
                }
                break;
            }
            assert!(Instant::now() < deadline, "no purge round succeeded on {}:\n{text}", serving.url(""));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let at = format!("to_timestamp({checked_at})");
    for (table, stale) in [
        ("rate_limits", format!("expires_at < {at}")),
        ("ws_tokens_used", format!("expires_at < {at}")),
        ("oauth_states", format!("expires_at < {at}")),
        ("refresh_tokens", format!("expires_at < {at} OR used_at < {at} - interval '120 seconds'")),
        ("refresh_families", format!("expires_at < {at} OR revoked_at < {at} - interval '1 day'")),
        ("audit_log", format!("org_id IS NULL AND at < {at} - interval '90 days'")),
    ] {
        let left: i64 =
            admin.query_one(&format!("SELECT count(*) FROM {table} WHERE {stale}"), &[]).await.unwrap().get(0);
        assert_eq!(left, 0, "{table} kept {left} rows its purge should have removed");
    }
    let mut purged: Vec<(String, f64)> = purged.into_iter().filter(|(_, n)| *n > 0.0).collect();
    purged.sort_by(|a, b| a.0.cmp(&b.0));
    purged
}

/// The whole soak; with `faults`, the fault schedule runs during the load.
async fn soak(faults: bool) {
    let seconds = setting("MOAT_SOAK_SECS", if faults { 40 } else { 15 });
    assert!(!faults || seconds >= 30, "the fault schedule needs MOAT_SOAK_SECS >= 30");
    let clients = usize::try_from(setting("MOAT_SOAK_CLIENTS", 100)).unwrap();
    let conversations = clients.div_ceil(WATCHERS_PER_CONVERSATION);

    let pg: &'static PgCluster = if faults { PgCluster::private() } else { harness::pg::cluster() };
    let db = TestDb::migrated_in(pg).await;
    let provider = FakeProvider::start().await;
    provider.set_latency(Duration::from_millis(50));
    let dir = tempfile::tempdir().unwrap();
    let env = Env::production(&db)
        .set("MOAT_PROVIDERS_FILE", provider.providers_file(dir.path()).to_str().unwrap())
        .set("MOAT_EGRESS_ALLOW", &provider.egress_allow())
        .set("FAKE_PROVIDER_SECRET", CLIENT_SECRET)
        .set("MOAT_PURGE_INTERVAL", "2s");
    let mut serves = vec![harness::serve(&env).await, harness::serve(&env).await];
    let runner_env = |port: u16| {
        Env::default()
            .set("DATABASE_URL", &db.url(DbRole::Runner))
            .set("MOAT_RUNNER_CONCURRENCY", "32")
            .set("MOAT_RUN_LEASE", "4s")
            .set("MOAT_RUN_HEARTBEAT", "1s")
            .set("MOAT_RUNNER_POLL", "1s")
            .set("MOAT_METRICS_BIND", &format!("127.0.0.1:{port}"))
    };
    let mut runners = Vec::new();
    for _ in 0..2 {
        let port = harness::free_port();
        runners.push((harness::runner(&runner_env(port)).await, port));
    }
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    let token = login_at(&http, &serves[0].url(""), admin.email, &admin.password).await;
    let bases = Arc::new(Bases(RwLock::new([serves[0].url(""), serves[1].url("")])));
    let client = Arc::new(Client { bases: bases.clone(), http: http.clone(), token });

    let mut convs = Vec::new();
    for i in 0..conversations {
        let (_, conv) =
            client.post(i, "/v1/conversations", json!({"title": format!("soak {i}"), "agent": "demo"})).await;
        convs.push(conv["id"].as_str().unwrap().to_owned());
    }
    let ids = Arc::new(RwLock::new(import_expired(&client, &provider, "soak", INTEGRATIONS).await));
    let mut expired = INTEGRATIONS;

    // The steady instance (never restarted): its memory before any socket, for the end.
    let baseline_kib = harness::rss_kib(serves[1].pid());
    // Watchers: organization members, 20 sockets each (under the per-user cap).
    let (targets, targets_rx) = watch::channel::<Targets>(None);
    let mut watchers = Vec::new();
    for k in 0..clients {
        if k % SOCKETS_PER_USER == 0 {
            let email = format!("watcher{}@example.com", k / SOCKETS_PER_USER);
            let password = moat::admin::generate_password();
            moat::admin::create_user(&admin.pool, admin.org, &email, Role::Member, password.clone()).await.unwrap();
            let token = login_at(&http, &bases.get(0), &email, &password).await;
            watchers.push(Arc::new(Client { bases: bases.clone(), http: http.clone(), token }));
        }
    }
    let watchers: Vec<_> = (0..clients)
        .map(|k| {
            let (i, client) = (k % conversations, watchers[k / SOCKETS_PER_USER].clone());
            (i, tokio::spawn(watcher(client, k, convs[i].clone(), targets_rx.clone())))
        })
        .collect();

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let actors: Vec<_> = convs.iter().map(|conv| tokio::spawn(actor(client.clone(), conv.clone(), deadline))).collect();
    let (stop_broker, stop_broker_rx) = watch::channel(false);
    let broker = tokio::spawn(broker_calls(client.clone(), ids.clone(), stop_broker_rx));

    let mut killed_runner = None;
    if faults {
        let at = |secs: u64| tokio::time::sleep_until((started + Duration::from_secs(secs)).into());
        // A runner dies without warning: its runs end runner_lost, the other runner carries on.
        at(5).await;
        let (runner, port) = runners.remove(0);
        killed_runner = Some(runner.stop_with(Signal::SIGKILL).await);
        let port_b = harness::free_port();
        let _ = port;
        runners.push((harness::runner(&runner_env(port_b)).await, port_b));
        // A serve restarts (graceful): its sockets reconnect elsewhere or to it, missing nothing.
        at(10).await;
        let old = serves.remove(0);
        assert_eq!(old.terminate().await.status.code(), Some(0));
        let new = harness::serve(&env).await;
        bases.0.write().unwrap()[0] = new.url("");
        serves.insert(0, new);
        // The provider is slow (callers wait, still one refresh each), then fails (502, cooldown).
        at(14).await;
        provider.set_latency(Duration::from_secs(2));
        let slow = import_expired(&client, &provider, "slow", 5).await;
        ids.write().unwrap().extend(slow);
        expired += 5;
        at(19).await;
        provider.set_failure(Some(Failure::ServerError));
        let failing = import_expired(&client, &provider, "failing", 5).await;
        ids.write().unwrap().extend(failing);
        expired += 5;
        at(23).await;
        provider.set_failure(None);
        provider.set_latency(Duration::from_millis(50));
        // PostgreSQL restarts: readiness drops and recovers; everything reconnects.
        at(26).await;
        pg.stop_server().await;
        let ready = http.get(format!("{}/readyz", bases.get(0))).send().await.unwrap().status();
        assert_eq!(ready, 503, "readyz while PostgreSQL is down");
        tokio::time::sleep(Duration::from_secs(2)).await;
        pg.start_server().await;
        let back = Instant::now();
        while http.get(format!("{}/readyz", bases.get(0))).send().await.unwrap().status() != 200 {
            assert!(back.elapsed() < Duration::from_secs(10), "readyz did not recover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let mut views = Vec::new();
    for actor in actors {
        views.extend(actor.await.unwrap());
    }
    // The broker keeps calling until every integration (including those that
    // met the failing provider and its 5 s cooldown) has been refreshed.
    let refreshed = Instant::now();
    while provider.refreshes() < u64::try_from(expired).unwrap() {
        assert!(refreshed.elapsed() < Duration::from_secs(20), "{} of {expired} refreshed", provider.refreshes());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_broker.send(true).unwrap();
    let answers = broker.await.unwrap();

    // Every run ended: succeeded, cancelled, or failed because its runner was killed.
    let runs = views.len();
    assert_eq!(count(&db, "SELECT count(*) FROM runs").await, i64::try_from(runs).unwrap());
    assert_eq!(
        count(&db, "SELECT count(*) FROM runs WHERE status NOT IN ('succeeded', 'cancelled', 'failed')").await,
        0
    );
    let lost = views.iter().filter(|v| v["status"] == "failed").count();
    for view in views.iter().filter(|v| v["status"] == "failed") {
        assert_eq!(view["error_code"], "runner_lost", "{view}");
    }
    if faults {
        assert!((1..=32).contains(&lost), "the killed runner held {lost} runs");
    } else {
        assert_eq!(lost, 0);
    }
    // Every command was applied, or its run ended without needing it.
    let unapplied = "SELECT count(*) FROM run_commands c JOIN runs r ON r.id = c.run_id \
                     WHERE c.applied_at IS NULL AND NOT (r.status = 'failed' OR (c.kind = 'cancel' AND r.status = 'succeeded'))";
    assert_eq!(count(&db, unapplied).await, 0, "unapplied commands");
    // Every conversation's events are 1..N; every socket saw exactly them.
    let rows =
        db.admin().await.query("SELECT conversation_id::text, max(seq), count(*) FROM events GROUP BY 1", &[]).await;
    let totals: HashMap<String, i64> = rows
        .unwrap()
        .iter()
        .map(|row| {
            assert_eq!(row.get::<_, i64>(1), row.get::<_, i64>(2), "a gap in {}", row.get::<_, String>(0));
            (row.get(0), row.get(1))
        })
        .collect();
    targets.send(Some(Arc::new(totals.clone()))).unwrap();
    let mut reconnects = 0;
    for (i, watcher) in watchers {
        let (seqs, again) = watcher.await.unwrap();
        reconnects += again;
        let expected: Vec<i64> = (1..=totals[&convs[i]]).collect();
        assert_eq!(seqs, expected, "a socket on conversation {i} missed, repeated or reordered events");
    }
    if faults {
        assert!(reconnects >= clients / 2, "the serve restart should have made sockets reconnect ({reconnects})");
        // LISTEN came back after the PostgreSQL restart on the processes that lived through it.
        let ups = serves[1].output().matches("event LISTEN connection up").count();
        assert!(ups >= 2, "the hub's LISTEN was not re-established ({ups}):\n{}", serves[1].output());
        let ups = runners[1].0.output().matches("LISTEN connection up").count();
        assert!(ups >= 2, "the runner's LISTEN was not re-established ({ups})");
    }
    // Every socket is closed now: the steady instance's memory goes back near its baseline.
    let settled = Instant::now();
    let limit = baseline_kib + baseline_kib / 2 + 16 * 1024;
    while harness::rss_kib(serves[1].pid()) > limit {
        assert!(
            settled.elapsed() < Duration::from_secs(10),
            "memory stayed at {} KiB (baseline {baseline_kib} KiB)",
            harness::rss_kib(serves[1].pid())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after_kib = harness::rss_kib(serves[1].pid());
    // Exactly one refresh per expired integration, whatever happened meanwhile.
    assert_eq!(provider.refreshes(), u64::try_from(expired).unwrap());

    // A production scrape of every process reads DEV_BYPASS 0; no log mentions it.
    for (_, port) in &runners {
        scrape_dev_bypass(&format!("http://127.0.0.1:{port}/metrics"), None).await;
    }
    for serving in &serves {
        scrape_dev_bypass(&serving.url("/metrics"), Some(&client.token)).await;
    }
    // The purge ran and kept every purged table within its bound (docs/operations.md).
    let purged = bounded_tables(&db, &serves, &client.token).await;
    let mut logs: Vec<String> = killed_runner.into_iter().map(|f| f.all_output()).collect();
    for process in serves.into_iter().chain(runners.into_iter().map(|(runner, _)| runner)) {
        logs.push(process.terminate().await.all_output());
    }
    for log in logs {
        assert!(!log.contains("DEV_BYPASS"), "a production log mentions DEV_BYPASS:\n{log}");
        assert!(!log.contains("panicked"), "{log}");
    }
    eprintln!(
        "soak{}: {seconds} s, {clients} sockets ({reconnects} reconnects), {runs} runs ({lost} runner_lost), broker answers {answers:?}, steady serve RSS {baseline_kib} KiB before the sockets, {after_kib} KiB after, rows purged {purged:?}",
        if faults { " with faults" } else { "" }
    );
}

#[tokio::test]
#[ignore = "load: run alone by .ci/run (MOAT_SOAK_SECS, MOAT_SOAK_CLIENTS)"]
async fn soak_two_instances_two_runners_many_sockets() {
    soak(false).await;
}

#[tokio::test]
#[ignore = "load and faults: run alone by .ci/run (MOAT_SOAK_SECS, MOAT_SOAK_CLIENTS)"]
async fn soak_with_faults() {
    soak(true).await;
}
