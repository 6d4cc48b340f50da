//! The soak suite: two production `serve` and two `runner` processes on one
//! PostgreSQL, `MOAT_SOAK_CLIENTS` WebSocket clients (default 100) watching
//! conversations on both instances, and continuous runs — plain, answered,
//! cancelled — plus broker calls, for `MOAT_SOAK_SECS` (default 15; CI runs
//! the default, a longer run is one variable away). Then the invariants:
//! every run terminal, none failed, every conversation's events gapless and
//! every socket saw exactly them, every command applied, one provider
//! refresh per expired integration, and no `DEV_BYPASS` anywhere — in the
//! logs or in any process's `/metrics`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use moat::auth::Role;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::http::{admin_in, get_json, login_at, post_json, wait_run_status};
use crate::harness::process::Serving;
use crate::harness::provider::{CLIENT_SECRET, FakeProvider};
use crate::harness::{self, Env, Role as DbRole, TestDb};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const WATCHERS_PER_CONVERSATION: usize = 5;
const SOCKETS_PER_USER: usize = 20;
const INTEGRATIONS: usize = 10;

struct Cluster {
    serves: [Serving; 2],
    runners: Vec<(Serving, u16)>,
    token: String,
    http: reqwest::Client,
}

impl Cluster {
    fn serve(&self, i: usize) -> &Serving {
        &self.serves[i % 2]
    }
}

/// Every conversation's final sequence number, once the workload is over.
type Targets = Option<Arc<HashMap<String, i64>>>;

/// A socket on `conv` that records every event's sequence number until it has
/// seen the conversation's last one (known once `targets` is set).
async fn watch_conversation(
    mut socket: harness::ws::Socket,
    conv: String,
    mut targets: watch::Receiver<Targets>,
) -> Vec<i64> {
    let mut seqs: Vec<i64> = Vec::new();
    loop {
        let target = targets.borrow().as_ref().map(|t| t.get(&conv).copied().unwrap_or(0));
        if let Some(target) = target
            && seqs.last().copied().unwrap_or(0) >= target
        {
            return seqs;
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
                Some(Ok(_)) => {}
                other => panic!("a watcher's socket ended early: {other:?}"),
            },
        }
    }
}

/// One conversation's workload until `deadline`: plain runs, answered
/// questions, cancels — each step through either instance.
async fn actor(cluster: Arc<Cluster>, conv: String, deadline: Instant) -> usize {
    let (http, token) = (&cluster.http, cluster.token.as_str());
    let mut runs = 0;
    while Instant::now() < deadline {
        let (here, there) = (cluster.serve(runs), cluster.serve(runs + 1));
        let input = match runs % 3 {
            0 => json!({"steps": 5, "delay_ms": 10}),
            1 => json!({"steps": 2, "delay_ms": 10, "ask": "Proceed?"}),
            _ => json!({"steps": 2000, "delay_ms": 10}),
        };
        let url = here.url(&format!("/v1/conversations/{conv}/runs"));
        let run = post_json(http, &url, Some(token), json!({ "input": input })).await;
        let run = run["id"].as_str().unwrap_or_else(|| panic!("a run was refused: {run}")).to_owned();
        match runs % 3 {
            0 => wait_run_status(http, &there.url(""), token, &run, "succeeded").await,
            1 => {
                wait_run_status(http, &there.url(""), token, &run, "waiting_input").await;
                let view = get_json(http, &there.url(&format!("/v1/runs/{run}")), token).await;
                let input = view["pending_input"]["id"].as_str().unwrap().to_owned();
                let answer = json!({"value": "yes"});
                post_json(http, &here.url(&format!("/v1/inputs/{input}")), Some(token), answer).await;
                wait_run_status(http, &here.url(""), token, &run, "succeeded").await;
            }
            _ => {
                wait_run_status(http, &here.url(""), token, &run, "running").await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                post_json(http, &there.url(&format!("/v1/runs/{run}/cancel")), Some(token), json!({})).await;
                wait_run_status(http, &here.url(""), token, &run, "cancelled").await;
            }
        }
        runs += 1;
    }
    runs
}

/// Broker calls on the expired integrations, alternating instances, until `deadline`.
async fn broker_calls(cluster: Arc<Cluster>, ids: Vec<String>, deadline: Instant) -> usize {
    let mut calls = 0;
    while Instant::now() < deadline {
        let id = &ids[calls % ids.len()];
        let url = cluster.serve(calls).url(&format!("/v1/integrations/{id}/access-token"));
        let response = cluster.http.post(url).bearer_auth(&cluster.token).send().await.unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        calls += 1;
    }
    calls
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.admin().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
#[ignore = "load: run alone by .ci/run (MOAT_SOAK_SECS, MOAT_SOAK_CLIENTS)"]
async fn soak_two_instances_two_runners_many_sockets() {
    let seconds = setting("MOAT_SOAK_SECS", 15);
    let clients = usize::try_from(setting("MOAT_SOAK_CLIENTS", 100)).unwrap();
    let conversations = clients.div_ceil(WATCHERS_PER_CONVERSATION);

    let db = TestDb::migrated().await;
    let provider = FakeProvider::start().await;
    provider.set_latency(Duration::from_millis(50));
    let dir = tempfile::tempdir().unwrap();
    let env = Env::production(&db)
        .set("MOAT_PROVIDERS_FILE", provider.providers_file(dir.path()).to_str().unwrap())
        .set("MOAT_EGRESS_ALLOW", &provider.egress_allow())
        .set("FAKE_PROVIDER_SECRET", CLIENT_SECRET);
    let serves = [harness::serve(&env).await, harness::serve(&env).await];
    let mut runners = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let runner_env = Env::default()
            .set("DATABASE_URL", &db.url(DbRole::Runner))
            .set("MOAT_RUNNER_CONCURRENCY", "32")
            .set("MOAT_METRICS_BIND", &format!("127.0.0.1:{port}"));
        runners.push((harness::runner(&runner_env).await, port));
    }
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    let token = login_at(&http, &serves[0].url(""), admin.email, &admin.password).await;
    let cluster = Arc::new(Cluster { serves, runners, token, http });

    let mut convs = Vec::new();
    for i in 0..conversations {
        let body = json!({"title": format!("soak {i}"), "agent": "demo"});
        let conv =
            post_json(&cluster.http, &cluster.serve(i).url("/v1/conversations"), Some(&cluster.token), body).await;
        convs.push(conv["id"].as_str().unwrap().to_owned());
    }
    let mut ids = Vec::new();
    for i in 0..INTEGRATIONS {
        let import = json!({"provider": "fake", "account": format!("soak-{i}"), "access_token": "stale",
            "refresh_token": provider.issue_refresh_token(), "expires_in": 0});
        let created =
            post_json(&cluster.http, &cluster.serve(0).url("/v1/integrations"), Some(&cluster.token), import).await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }

    // Watchers are members of the organization, 20 sockets each (10 per instance,
    // under the per-user cap), so a few hundred sockets need only a few logins.
    let mut watcher_tokens = Vec::new();
    for u in 0..clients.div_ceil(SOCKETS_PER_USER) {
        let email = format!("watcher{u}@example.com");
        let password = moat::admin::generate_password();
        moat::admin::create_user(&admin.pool, admin.org, &email, Role::Member, password.clone()).await.unwrap();
        watcher_tokens.push(login_at(&cluster.http, &cluster.serve(0).url(""), &email, &password).await);
    }
    let (targets, targets_rx) = watch::channel::<Targets>(None);
    let mut watchers = Vec::new();
    for k in 0..clients {
        let (i, token) = (k % conversations, &watcher_tokens[k / SOCKETS_PER_USER]);
        let socket = harness::ws::open(&cluster.http, cluster.serve(k), token, &convs[i], Some(0)).await;
        watchers.push((i, tokio::spawn(watch_conversation(socket, convs[i].clone(), targets_rx.clone()))));
    }

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let actors: Vec<_> =
        convs.iter().map(|conv| tokio::spawn(actor(cluster.clone(), conv.clone(), deadline))).collect();
    let broker = tokio::spawn(broker_calls(cluster.clone(), ids.clone(), deadline));
    let mut runs = 0;
    for actor in actors {
        runs += actor.await.unwrap();
    }
    let calls = broker.await.unwrap();

    // Every run ended; none failed; every command was applied.
    assert_eq!(count(&db, "SELECT count(*) FROM runs").await, i64::try_from(runs).unwrap());
    assert_eq!(count(&db, "SELECT count(*) FROM runs WHERE status NOT IN ('succeeded', 'cancelled')").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM run_commands WHERE applied_at IS NULL").await, 0, "unapplied commands");
    // Every conversation's events are 1..N; every socket saw exactly them, once, in order.
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
    // Each socket now reads until its conversation's last event (or fails after 20 s).
    targets.send(Some(Arc::new(totals.clone()))).unwrap();
    for (i, watcher) in watchers {
        let seqs = watcher.await.unwrap();
        let expected: Vec<i64> = (1..=totals[&convs[i]]).collect();
        assert_eq!(seqs, expected, "a socket on conversation {i} missed, repeated or reordered events");
    }
    // One refresh per expired integration, however many calls on both instances.
    assert!(calls > INTEGRATIONS, "{calls}");
    assert_eq!(provider.refreshes(), u64::try_from(INTEGRATIONS).unwrap());

    // A production scrape of every process reads DEV_BYPASS 0; no log mentions it.
    let mut claims = 0.0;
    for (_, port) in &cluster.runners {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
        assert!(text.contains("moat_dev_bypass_events 0"), "{text}");
        claims += crate::metrics::sample(&text, "moat_runner_claims_total");
    }
    assert_eq!(claims, runs as f64, "every run was claimed exactly once");
    for serving in &cluster.serves {
        let text = cluster.http.get(serving.url("/metrics")).bearer_auth(&cluster.token).send().await.unwrap();
        let text = text.text().await.unwrap();
        assert!(text.contains("moat_dev_bypass_events 0"), "{text}");
        assert!(text.contains(r#"moat_build_info{version="#) && text.contains(r#"environment="production"} 1"#));
    }
    let cluster = Arc::into_inner(cluster).expect("every task is done");
    let processes = cluster.serves.into_iter().chain(cluster.runners.into_iter().map(|(runner, _)| runner));
    for process in processes {
        let log = process.terminate().await.all_output();
        assert!(!log.contains("DEV_BYPASS"), "a production log mentions DEV_BYPASS:\n{log}");
        assert!(!log.contains("panicked"), "{log}");
    }
    eprintln!("soak: {seconds} s, {clients} sockets, {runs} runs, {calls} broker calls");
}
