//! Runs and runners: real `moat serve` and `moat runner` processes over one
//! PostgreSQL. Commands travel only through the database (rows + NOTIFY).

use std::time::Duration;

use moat::identity::Role;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::http::{admin_in, login_at};
use crate::harness::relay::Relay;
use crate::harness::{self, Env, Options, Role as DbRole, TestApp, TestDb, error_code, spawn_app};

/// A runner environment with short leases, so recovery tests take seconds.
fn runner_env(db: &TestDb) -> Env {
    Env::default()
        .set("DATABASE_URL", &db.url(DbRole::Runner))
        .set("MOAT_RUN_LEASE", "2s")
        .set("MOAT_RUN_HEARTBEAT", "500ms")
        .set("MOAT_RUNNER_POLL", "1s")
}

struct World {
    app: TestApp,
    token: String,
    org: Uuid,
    env: Env,
}

/// An in-process API on a fresh database, signed in as an admin.
async fn world() -> World {
    let db = TestDb::migrated().await;
    let env = runner_env(&db);
    let app = spawn_app(Options { db: Some(db), ..Options::default() }).await;
    let (org, _, token) = app.signed_in(Role::Admin).await;
    World { app, token, org, env }
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> reqwest::Response {
    app.http.post(app.url(path)).bearer_auth(token).json(&body).send().await.unwrap()
}

async fn conversation(w: &World) -> String {
    let response = post(&w.app, &w.token, "/v1/conversations", json!({"title": "Chat", "agent": "demo"})).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn start_run(w: &World, conversation: &str, input: Value) -> String {
    let response =
        post(&w.app, &w.token, &format!("/v1/conversations/{conversation}/runs"), json!({ "input": input })).await;
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["status"], "queued");
    run["id"].as_str().unwrap().to_owned()
}

async fn run_view(w: &World, run: &str) -> Value {
    w.app.get_as(&w.token, &format!("/v1/runs/{run}")).await.json().await.unwrap()
}

/// Polls the run until `done(view)`, at most `within`.
async fn wait_for(w: &World, run: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let view = run_view(w, run).await;
        if done(&view) {
            return view;
        }
        assert!(tokio::time::Instant::now() < deadline, "run never reached the expected state: {view}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn events(w: &World, conversation: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = w
            .app
            .get_as(&w.token, &format!("/v1/conversations/{conversation}/events?after={after}&limit=200"))
            .await
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap().clone();
        if items.is_empty() {
            return all;
        }
        after = page["next_after"].as_i64().unwrap();
        all.extend(items);
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

fn assert_gapless(events: &[Value]) {
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "sequence numbers must be 1..N with no gap");
}

/// A runner process, and a long demo run it is executing (one delta every `delay_ms`).
async fn long_run(w: &World, env: &Env, delay_ms: u64) -> (harness::process::Serving, String, String) {
    let runner = harness::runner(env).await;
    let conv = conversation(w).await;
    let run = start_run(w, &conv, json!({"steps": 10000, "delay_ms": delay_ms})).await;
    wait_for(w, &run, Duration::from_secs(10), |v| v["status"] == "running").await;
    (runner, conv, run)
}

#[tokio::test]
async fn a_demo_run_streams_ordered_gapless_events_and_succeeds() {
    let w = world().await;
    let runner = harness::runner(&w.env).await;
    let conv = conversation(&w).await;
    let secret = "ghp_1234567890abcdefghijABCDEFGHIJ123456";
    let run =
        start_run(&w, &conv, json!({"steps": 3, "delay_ms": 20, "tool": "lookup", "text": format!("token {secret}")}))
            .await;
    let view = wait_for(&w, &run, Duration::from_secs(10), |v| v["status"] == "succeeded").await;
    assert_eq!(view["attempt"], 1);
    let all = events(&w, &conv).await;
    assert_gapless(&all);
    assert_eq!(
        kinds(&all),
        [
            "run.queued",
            "run.started",
            "message.delta",
            "tool.started",
            "tool.completed",
            "message.delta",
            "message.delta",
            "run.succeeded"
        ]
    );
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains(secret) && text.contains("[REDACTED:github_token]"), "the sanitizer did not run: {text}");
    // One active run per conversation: a second concurrent one is refused.
    start_run(&w, &conv, json!({"steps": 50, "delay_ms": 50})).await;
    let second = post(&w.app, &w.token, &format!("/v1/conversations/{conv}/runs"), json!({"input": {}})).await;
    assert_eq!(second.status(), 409);
    assert_eq!(error_code(second).await, "run_in_progress");
    drop(runner);
}

#[tokio::test]
async fn cancel_through_the_api_reaches_a_runner_in_another_process() {
    let w = world().await;
    // A lease long enough that the SIGSTOP below can never let recovery take the run
    // (under a loaded suite the paused window can exceed the module's 2 s lease).
    let (runner, conv, run) = long_run(&w, &w.env.clone().set("MOAT_RUN_LEASE", "30s"), 20).await;
    // Pause it only once `run.started` is committed: stopped inside that transaction it
    // would hold the run's row, the cancel below would wait for it, and the session's
    // idle-in-transaction timeout would end the run's start (seen as a flake).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !events(&w, &conv).await.iter().any(|e| e["kind"] == "message.delta") {
        assert!(tokio::time::Instant::now() < deadline, "the run never started streaming");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Idempotent: with the runner paused, two cancels are both accepted and make one command.
    runner.signal(Signal::SIGSTOP);
    for _ in 0..2 {
        let response = post(&w.app, &w.token, &format!("/v1/runs/{run}/cancel"), json!({})).await;
        assert_eq!(response.status(), 202);
        assert_eq!(response.json::<Value>().await.unwrap()["status"], "cancelling");
    }
    let commands: i64 = w
        .app
        ._db
        .admin()
        .await
        .query_one("SELECT count(*) FROM run_commands WHERE kind = 'cancel'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(commands, 1);
    runner.signal(Signal::SIGCONT);
    wait_for(&w, &run, Duration::from_secs(10), |v| v["status"] == "cancelled").await;
    let all = events(&w, &conv).await;
    assert_gapless(&all);
    assert_eq!(*kinds(&all).last().unwrap(), "run.cancelled");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events(&w, &conv).await.len(), all.len(), "events after the run ended");
    let again = post(&w.app, &w.token, &format!("/v1/runs/{run}/cancel"), json!({})).await;
    assert_eq!(again.status(), 409);
    assert_eq!(error_code(again).await, "run_finished");
    drop(runner);
}

#[tokio::test]
async fn a_queued_run_is_cancelled_on_the_spot() {
    let w = world().await;
    let conv = conversation(&w).await;
    let run = start_run(&w, &conv, json!({})).await;
    let response = post(&w.app, &w.token, &format!("/v1/runs/{run}/cancel"), json!({})).await;
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "cancelled");
    assert_eq!(run_view(&w, &run).await["status"], "cancelled");
    assert_eq!(kinds(&events(&w, &conv).await), ["run.queued", "run.cancelled"]);
}

#[tokio::test]
async fn two_racing_answers_through_two_processes_one_wins() {
    let db = TestDb::migrated().await;
    let admin = admin_in(&db).await;
    let serve_env = Env::production(&db);
    let (a, b) = (harness::serve(&serve_env).await, harness::serve(&serve_env).await);
    let runner = harness::runner(&runner_env(&db)).await;
    let http = reqwest::Client::new();
    let token = login_at(&http, &a.url(""), admin.email, &admin.password).await;

    let call = |base: String, path: String, body: Value| {
        let (http, token) = (http.clone(), token.clone());
        async move { http.post(format!("{base}{path}")).bearer_auth(token).json(&body).send().await.unwrap() }
    };
    let conv: Value =
        call(a.url(""), "/v1/conversations".into(), json!({"title": "t", "agent": "demo"})).await.json().await.unwrap();
    let conv = conv["id"].as_str().unwrap().to_owned();
    let run: Value = call(
        a.url(""),
        format!("/v1/conversations/{conv}/runs"),
        json!({"input": {"steps": 1, "delay_ms": 1, "ask": "Proceed?"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    let run = run["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let input = loop {
        let view: Value =
            http.get(b.url(&format!("/v1/runs/{run}"))).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        if view["status"] == "waiting_input" {
            break view["pending_input"]["id"].as_str().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "never waited for input: {view}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let (first, second) = tokio::join!(
        call(a.url(""), format!("/v1/inputs/{input}"), json!({"value": "yes from A"})),
        call(b.url(""), format!("/v1/inputs/{input}"), json!({"value": "no from B"})),
    );
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "exactly one answer wins");
    let winner = if first.status() == 200 { "yes from A" } else { "no from B" };
    let loser = if first.status() == 200 { second } else { first };
    assert_eq!(error_code(loser).await, "input_already_answered");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view: Value =
            http.get(a.url(&format!("/v1/runs/{run}"))).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        if view["status"] == "succeeded" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "run did not resume: {view}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let page: Value = http
        .get(a.url(&format!("/v1/conversations/{conv}/events?limit=200")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = page.to_string();
    assert!(text.contains(&format!("You said: {winner}")), "{text}");
    assert_eq!(text.matches("input.answered").count(), 1, "{text}");
    drop((a, b, runner));
}

#[tokio::test]
async fn a_killed_runner_fails_its_run_as_runner_lost() {
    let w = world().await;
    let (runner, conv, run) = long_run(&w, &w.env, 50).await;
    runner.kill().await;
    // Lease 2 s, recovery every 2 s (the API process recovers it; no runner is left).
    let view = wait_for(&w, &run, Duration::from_secs(10), |v| v["status"] == "failed").await;
    assert_eq!(view["error_code"], "runner_lost");
    let all = events(&w, &conv).await;
    assert_gapless(&all);
    let last = all.last().unwrap();
    assert_eq!((last["kind"].as_str(), last["data"]["error"].as_str()), (Some("run.failed"), Some("runner_lost")));
}

/// A runner stopped (SIGSTOP) past its lease, then resumed, writes nothing more:
/// every write of it is fenced by the lease epoch the recovery bumped.
#[tokio::test]
async fn a_stalled_runner_writes_nothing_after_recovery() {
    let w = world().await;
    let (runner, conv, run) = long_run(&w, &w.env, 20).await;
    runner.signal(Signal::SIGSTOP);
    let view = wait_for(&w, &run, Duration::from_secs(10), |v| v["status"] == "failed").await;
    assert_eq!(view["error_code"], "runner_lost");
    let at_recovery = events(&w, &conv).await;
    runner.signal(Signal::SIGCONT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = events(&w, &conv).await;
    assert_eq!(
        after.len(),
        at_recovery.len(),
        "the stalled runner wrote after recovery: {:?}",
        &after[at_recovery.len()..]
    );
    assert_eq!(run_view(&w, &run).await["status"], "failed");
}

/// A command committed while the runner's LISTEN connection is down (its NOTIFY
/// is lost) is still applied: the runner catches up when it reconnects. The
/// poll is set to a minute, so only the reconnect catch-up can deliver it.
#[tokio::test]
async fn a_command_issued_while_listen_is_down_is_still_applied() {
    let db = TestDb::migrated().await;
    let relay = Relay::start(db.upstream()).await;
    let env = runner_env(&db)
        .set("MOAT_RUNNER_POLL", "60s")
        .set("MOAT_LISTEN_DATABASE_URL", &db.url_via(DbRole::App, relay.port));
    let app = spawn_app(Options { db: Some(db), ..Options::default() }).await;
    let (org, _, token) = app.signed_in(Role::Admin).await;
    let w = World { app, token, org, env };
    let (runner, _conv, run) = long_run(&w, &w.env, 20).await;

    relay.down();
    let admin = w.app._db.admin().await;
    admin
        .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'moat-listen'", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post(&w.app, &w.token, &format!("/v1/runs/{run}/cancel"), json!({})).await.status(), 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(run_view(&w, &run).await["status"], "running", "nothing could have delivered the command yet");

    relay.up();
    wait_for(&w, &run, Duration::from_secs(10), |v| v["status"] == "cancelled").await;
    assert!(runner.output().contains("LISTEN connection lost"), "{}", runner.output());
    let _ = w.org;
}

/// Sequence numbers stay gapless and in commit order under concurrent writers,
/// and a reader never later finds an event at or below one it has seen.
#[tokio::test]
async fn events_are_gapless_and_ordered_under_concurrent_writers() {
    use moat::runs::events::{Kind, NewEvent, append};
    let w = world().await;
    let conv: Uuid = conversation(&w).await.parse().unwrap();
    let pool = w.app.state.db.clone();
    let org = w.org;
    let writers = (0..8).map(|writer| {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..25 {
                let mut client = pool.get().await.unwrap();
                let tx = client.transaction().await.unwrap();
                moat::db::tenant::set_org(&tx, org.into()).await.unwrap();
                let batch: Vec<NewEvent> =
                    (0..3).map(|k| NewEvent::new(Kind::MessageDelta, json!({"w": writer, "i": i, "k": k}))).collect();
                append(&tx, conv, None, None, &batch, 0).await.unwrap();
                if i % 5 == 4 {
                    tx.rollback().await.unwrap(); // a rolled-back append must leave no gap
                } else {
                    tx.commit().await.unwrap();
                }
            }
        })
    });
    let reader = {
        let (http, url, token) =
            (w.app.http.clone(), w.app.url(&format!("/v1/conversations/{conv}/events")), w.token.clone());
        tokio::spawn(async move {
            let (mut seen, mut all) = (0i64, Vec::new());
            for _ in 0..200 {
                let page: Value = http
                    .get(format!("{url}?after={seen}&limit=200"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                for event in page["items"].as_array().unwrap() {
                    let seq = event["seq"].as_i64().unwrap();
                    assert_eq!(seq, seen + 1, "the reader found a gap or a late, lower sequence number");
                    seen = seq;
                    all.push(seq);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            all
        })
    };
    for writer in writers {
        writer.await.unwrap();
    }
    let read = reader.await.unwrap();
    let all = events(&w, &conv.to_string()).await;
    assert_eq!(all.len(), 8 * 20 * 3, "committed batches only");
    assert_gapless(&all);
    assert!(read.len() <= all.len());
}

#[tokio::test]
async fn another_organizations_conversation_run_and_input_are_not_found() {
    let w = world().await;
    let runner = harness::runner(&w.env).await;
    let conv = conversation(&w).await;
    let run = start_run(&w, &conv, json!({"steps": 1, "delay_ms": 1, "ask": "Proceed?"})).await;
    let view = wait_for(&w, &run, Duration::from_secs(10), |v| v["status"] == "waiting_input").await;
    let input = view["pending_input"]["id"].as_str().unwrap().to_owned();
    let (_, _, other) = w.app.signed_in(Role::Admin).await;
    for (method, path, body) in [
        ("GET", format!("/v1/conversations/{conv}"), None),
        ("GET", format!("/v1/conversations/{conv}/events"), None),
        ("GET", format!("/v1/runs/{run}"), None),
        ("POST", format!("/v1/runs/{run}/cancel"), Some(json!({}))),
        ("POST", format!("/v1/conversations/{conv}/runs"), Some(json!({"input": {}}))),
        ("POST", format!("/v1/inputs/{input}"), Some(json!({"value": "hijacked"}))),
    ] {
        let request = match method {
            "GET" => w.app.http.get(w.app.url(&path)),
            _ => w.app.http.post(w.app.url(&path)).json(&body.unwrap()),
        };
        let response = request.bearer_auth(&other).send().await.unwrap();
        assert_eq!(response.status(), 404, "{method} {path}");
    }
    let list: Value = w.app.get_as(&other, "/v1/conversations").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    // The real owner's answer still works: nothing was consumed by the attempt.
    assert_eq!(post(&w.app, &w.token, &format!("/v1/inputs/{input}"), json!({"value": "ok"})).await.status(), 200);
    wait_for(&w, &run, Duration::from_secs(10), |v| v["status"] == "succeeded").await;
    drop(runner);
}

#[tokio::test]
async fn per_run_bounds_fail_runs_with_clear_codes() {
    let w = world().await;
    let env = w
        .env
        .clone()
        .set("MOAT_RUN_MAX_EVENTS", "10")
        .set("MOAT_RUN_MAX_OUTPUT_BYTES", "2000")
        .set("MOAT_RUN_MAX_DURATION", "1s");
    let runner = harness::runner(&env).await;
    for (input, code) in [
        (json!({"steps": 20, "delay_ms": 1}), "event_limit_exceeded"),
        (json!({"steps": 2, "delay_ms": 1, "text": "x".repeat(3000)}), "output_limit_exceeded"),
        (json!({"steps": 5, "delay_ms": 500}), "run_timeout"),
        (json!({"steps": 1, "delay_ms": 1, "fail": true}), "demo_failure"),
        (json!({"unexpected": true}), "invalid_input"),
    ] {
        let conv = conversation(&w).await;
        let run = start_run(&w, &conv, input).await;
        let view = wait_for(&w, &run, Duration::from_secs(10), |v| v["status"] == "failed").await;
        assert_eq!(view["error_code"], code);
        let all = events(&w, &conv).await;
        assert_gapless(&all);
        assert_eq!(all.last().unwrap()["data"]["error"], code);
    }
    drop(runner);
}

/// SIGTERM: the runner stops claiming, and a run that outlasts the grace is
/// handed back to the queue, where another runner completes it.
#[tokio::test]
async fn shutdown_hands_unfinished_runs_back() {
    let w = world().await;
    let first = harness::runner(&w.env.clone().set("MOAT_RUNNER_SHUTDOWN_GRACE", "0s")).await;
    let conv = conversation(&w).await;
    let run = start_run(&w, &conv, json!({"steps": 40, "delay_ms": 50})).await;
    wait_for(&w, &run, Duration::from_secs(10), |v| v["status"] == "running").await;
    let finished = first.terminate().await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all_output());
    assert_eq!(run_view(&w, &run).await["status"], "queued");
    let second = harness::runner(&w.env).await;
    let view = wait_for(&w, &run, Duration::from_secs(15), |v| v["status"] == "succeeded").await;
    assert_eq!(view["attempt"], 2);
    let all = events(&w, &conv).await;
    assert_gapless(&all);
    assert!(all.iter().any(|e| e["kind"] == "run.queued" && e["data"]["reason"] == "runner_shutdown"));
    drop(second);
}

/// `MOAT_LISTEN=off` (deployments without a direct connection): runs are claimed
/// and commands applied by the poll alone.
#[tokio::test]
async fn poll_only_runners_still_claim_and_apply_commands() {
    let w = world().await;
    let runner = harness::runner(&w.env.clone().set("MOAT_LISTEN", "off")).await;
    let conv = conversation(&w).await;
    let run = start_run(&w, &conv, json!({"steps": 10000, "delay_ms": 20})).await;
    wait_for(&w, &run, Duration::from_secs(10), |v| v["status"] == "running").await;
    assert_eq!(post(&w.app, &w.token, &format!("/v1/runs/{run}/cancel"), json!({})).await.status(), 202);
    wait_for(&w, &run, Duration::from_secs(5), |v| v["status"] == "cancelled").await;
    assert!(!runner.output().contains("LISTEN connection up"), "a poll-only runner must not listen");
}

/// Claiming runs across organizations is the runners' role alone: the API's
/// role cannot, and a runner started with it refuses to start.
#[tokio::test]
async fn only_the_runner_role_can_claim_runs() {
    let db = TestDb::migrated().await;
    let (client, connection) =
        db.url(DbRole::App).parse::<tokio_postgres::Config>().unwrap().connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for sql in ["SELECT * FROM moat_claim_runs('x', 10, 30)", "SELECT * FROM moat_pending_commands('x')"] {
        let error = client.query(sql, &[]).await.expect_err(sql);
        assert_eq!(error.as_db_error().map(|e| e.code().code()), Some("42501"), "{sql}: {error:?}");
    }
    let out = harness::run(&["runner"], &runner_env(&db).set("DATABASE_URL", &db.url(DbRole::App))).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
    assert!(
        out.stderr.contains("is not a member of moat_runner") && out.stderr.contains("GRANT moat_runner TO"),
        "{}",
        out.stderr
    );
}

/// A forged NOTIFY (any role can send one) cannot cancel a run: the runner acts
/// only on a command row it reads back.
#[tokio::test]
async fn a_forged_notification_cancels_nothing() {
    let w = world().await;
    let (runner, _conv, run) = long_run(&w, &w.env, 20).await;
    let admin = w.app._db.admin().await;
    admin
        .execute("SELECT pg_notify('moat_commands', $1)", &[&format!("{run}:{}:cancel", Uuid::new_v4())])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(run_view(&w, &run).await["status"], "running");
    drop(runner);
}

/// The fence is the epoch, not just the status: a stalled runner whose run was
/// re-claimed by someone else (same run, new epoch, running) writes nothing.
#[tokio::test]
async fn a_stalled_runner_cannot_write_into_a_reclaimed_run() {
    let w = world().await;
    let (runner, conv, run) = long_run(&w, &w.env, 20).await;
    runner.signal(Signal::SIGSTOP);
    let admin = w.app._db.admin().await;
    // Another claim of the same run: a new epoch, running, with a long lease.
    let run_id: Uuid = run.parse().unwrap();
    admin
        .execute(
            "UPDATE runs SET lease_epoch = lease_epoch + 1, lease_expires_at = now() + interval '1 hour', runner_id = 'other' WHERE id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    let before = events(&w, &conv).await.len();
    tokio::time::sleep(Duration::from_secs(6)).await; // past the runner's idle-in-transaction bound
    runner.signal(Signal::SIGCONT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(events(&w, &conv).await.len(), before, "the old holder wrote into the re-claimed run");
    assert_eq!(run_view(&w, &run).await["status"], "running");
    drop(runner);
}

/// A question asked by a run that was handed back no longer stands.
#[tokio::test]
async fn a_waiting_run_handed_back_expires_its_question() {
    let w = world().await;
    let first = harness::runner(&w.env.clone().set("MOAT_RUNNER_SHUTDOWN_GRACE", "0s")).await;
    let conv = conversation(&w).await;
    let run = start_run(&w, &conv, json!({"steps": 1, "delay_ms": 1, "ask": "Proceed?"})).await;
    let view = wait_for(&w, &run, Duration::from_secs(10), |v| v["status"] == "waiting_input").await;
    let input = view["pending_input"]["id"].as_str().unwrap().to_owned();
    first.terminate().await;
    let response = post(&w.app, &w.token, &format!("/v1/inputs/{input}"), json!({"value": "late"})).await;
    assert_eq!(response.status(), 409);
    assert_eq!(error_code(response).await, "input_expired");
}

/// Found by schemathesis: a NUL character (which jsonb refuses) in a run's input
/// or an answer was a 500. Now a 422 with a clear code, and nothing is stored.
#[tokio::test]
async fn nul_characters_in_inputs_and_answers_are_refused() {
    let w = world().await;
    let conv = conversation(&w).await;
    let response =
        post(&w.app, &w.token, &format!("/v1/conversations/{conv}/runs"), json!({"input": {"x\u{0}": "a"}})).await;
    assert_eq!(response.status(), 422);
    assert_eq!(error_code(response).await, "invalid_request");
    let response =
        post(&w.app, &w.token, &format!("/v1/conversations/{conv}/runs"), json!({"input": {"x": ["a\u{0}"]}})).await;
    assert_eq!(response.status(), 422);
    assert_eq!(events(&w, &conv).await.len(), 0, "nothing was stored");
    let response = post(&w.app, &w.token, &format!("/v1/inputs/{}", Uuid::new_v4()), json!({"value": "\u{0}"})).await;
    assert_eq!(response.status(), 422);
}
