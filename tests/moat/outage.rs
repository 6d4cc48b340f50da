//! An unavailable database is not evidence that a runner died. PostgreSQL
//! (a private cluster this test may stop) goes away for longer than the run
//! lease: runs under a healthy runner continue and finish; the runs of a
//! runner killed during the outage are recovered one lease after the database
//! returns — not before, and not never.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::http::{admin_in, login_at, post_json};
use crate::harness::pg::Cluster;
use crate::harness::process::Serving;
use crate::harness::{self, Env, Role as DbRole, TestDb};

const LEASE: Duration = Duration::from_secs(4);
const OUTAGE: Duration = Duration::from_secs(7);

struct Site {
    pg: &'static Cluster,
    db: TestDb,
    serving: Serving,
    http: reqwest::Client,
    token: String,
}

impl Site {
    async fn start() -> Self {
        let pg = Cluster::private();
        let db = TestDb::migrated_in(pg).await;
        let serving = harness::serve(&Env::production(&db)).await;
        let http = reqwest::Client::new();
        let admin = admin_in(&db).await;
        let token = login_at(&http, &serving.url(""), admin.email, &admin.password).await;
        Self { pg, db, serving, http, token }
    }

    async fn runner(&self) -> Serving {
        harness::runner(
            &Env::default()
                .set("DATABASE_URL", &self.db.url(DbRole::Runner))
                .set("MOAT_RUN_LEASE", &format!("{}s", LEASE.as_secs()))
                .set("MOAT_RUN_HEARTBEAT", "1s")
                .set("MOAT_RUNNER_POLL", "1s"),
        )
        .await
    }

    /// Starts a demo run of `steps` steps 100 ms apart in a new conversation; returns its id.
    async fn start_run(&self, steps: u32) -> String {
        let base = self.serving.url("");
        let conv = post_json(
            &self.http,
            &format!("{base}/v1/conversations"),
            Some(&self.token),
            json!({"title": "t", "agent": "demo"}),
        )
        .await;
        let run = post_json(
            &self.http,
            &format!("{base}/v1/conversations/{}/runs", conv["id"].as_str().unwrap()),
            Some(&self.token),
            json!({"input": {"steps": steps, "delay_ms": 100}}),
        )
        .await;
        run["id"].as_str().unwrap().to_owned()
    }

    /// The run's view, retrying while the service answers 503 (PostgreSQL coming back).
    async fn view(&self, run: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let response = self
                .http
                .get(self.serving.url(&format!("/v1/runs/{run}")))
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                return response.json().await.unwrap();
            }
            assert!(Instant::now() < deadline, "GET /v1/runs/{run} kept answering {}", response.status());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_status(&self, run: &str, done: impl Fn(&str) -> bool, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let view = self.view(run).await;
            if done(view["status"].as_str().unwrap_or("")) {
                return view;
            }
            assert!(Instant::now() < deadline, "run {run} stuck at {view}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops PostgreSQL for [`OUTAGE`] (fast shutdown: every session is cut), then starts it again.
    async fn outage(&self, during: impl std::future::Future<Output = ()>) -> Instant {
        self.pg.stop_server().await;
        let (_, ()) = tokio::join!(tokio::time::sleep(OUTAGE), during);
        self.pg.start_server().await;
        Instant::now()
    }
}

/// Observation 7 of issue 17: three runs under a healthy runner, PostgreSQL
/// stopped for longer than the lease: all three ended `runner_lost`. Now they
/// continue and succeed, with every event in order.
#[tokio::test]
async fn runs_outlive_a_database_outage_longer_than_their_lease() {
    let site = Site::start().await;
    let runner = site.runner().await;
    let runs: Vec<String> = futures_util::future::join_all((0..3).map(|_| site.start_run(150))).await;
    for run in &runs {
        site.wait_status(run, |s| s == "running", Duration::from_secs(10)).await;
    }
    site.outage(async {}).await;
    for run in &runs {
        let view = site.wait_status(run, |s| s != "running" && s != "queued", Duration::from_secs(60)).await;
        assert_eq!(view["status"], "succeeded", "{view}");
    }
    // Every event of every run, once, in order.
    let rows =
        site.db.admin().await.query("SELECT conversation_id, max(seq), count(*) FROM events GROUP BY 1", &[]).await;
    for row in rows.unwrap() {
        assert_eq!(row.get::<_, i64>(1), row.get::<_, i64>(2), "a gap in the events");
        assert_eq!(row.get::<_, i64>(2), 1 + 1 + 150 + 1, "queued, started, 150 steps, succeeded");
    }
    let log = runner.terminate().await.all_output();
    assert!(log.contains("the database is unreachable; retrying"), "{log}");
    assert!(!log.contains("lease lost"), "{log}");
}

/// A runner killed while the database is down: its runs are recovered as
/// `runner_lost` one lease of database availability after it returns.
#[tokio::test]
async fn a_runner_killed_during_an_outage_loses_its_runs_one_lease_after_the_database_returns() {
    let site = Site::start().await;
    let runner = site.runner().await;
    let runs: Vec<String> = futures_util::future::join_all((0..2).map(|_| site.start_run(600))).await;
    for run in &runs {
        site.wait_status(run, |s| s == "running", Duration::from_secs(10)).await;
    }
    let back = site.outage(runner.kill()).await;
    for run in &runs {
        let view = site.wait_status(run, |s| s == "failed", LEASE + Duration::from_secs(10)).await;
        assert_eq!(view["error_code"], "runner_lost", "{view}");
    }
    let recovered_after = back.elapsed();
    // Not at once (the expired wall-clock lease is not believed), and about one lease later.
    assert!(recovered_after >= LEASE - Duration::from_millis(1500), "recovered {recovered_after:?} after the return");
    assert!(recovered_after <= LEASE + Duration::from_secs(5), "recovered {recovered_after:?} after the return");
}

/// A run that asks its question while the database is down asks it once the
/// database is back (not `agent_error`), and an answer then completes it.
#[tokio::test]
async fn a_question_asked_during_an_outage_is_asked_when_the_database_returns() {
    let site = Site::start().await;
    let _runner = site.runner().await;
    let base = site.serving.url("");
    let conv = post_json(
        &site.http,
        &format!("{base}/v1/conversations"),
        Some(&site.token),
        json!({"title": "q", "agent": "demo"}),
    )
    .await;
    let conv = conv["id"].as_str().unwrap().to_owned();
    let run = post_json(
        &site.http,
        &format!("{base}/v1/conversations/{conv}/runs"),
        Some(&site.token),
        json!({"input": {"steps": 20, "delay_ms": 100, "ask": "Go on?"}}),
    )
    .await;
    let run = run["id"].as_str().unwrap().to_owned();
    site.wait_status(&run, |s| s == "running", Duration::from_secs(10)).await;
    // The question comes ~2 s in: the database goes away before it.
    site.outage(async {}).await;
    let view = site.wait_status(&run, |s| s != "running", Duration::from_secs(30)).await;
    assert_eq!(view["status"], "waiting_input", "{view}");
    let input = view["pending_input"]["id"].as_str().unwrap().to_owned();
    let answered =
        post_json(&site.http, &format!("{base}/v1/inputs/{input}"), Some(&site.token), json!({"value": "yes"})).await;
    assert_eq!(answered["status"], "answered", "{answered}");
    let view = site.wait_status(&run, |s| s != "waiting_input" && s != "running", Duration::from_secs(30)).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    let questions: i64 =
        site.db.admin().await.query_one("SELECT count(*) FROM input_requests", &[]).await.unwrap().get(0);
    assert_eq!(questions, 1, "the question was asked more than once");
}

/// The clock is the runtime role's to advance, not to abuse: whatever it
/// asks (a negative tick, no outage threshold), a lease moves no further
/// than the real gap allows.
#[tokio::test]
async fn the_runtime_role_cannot_push_leases_with_the_clock() {
    let db = TestDb::migrated().await;
    let admin = db.admin().await;
    let org = admin_in(&db).await.org;
    admin
        .batch_execute(&format!(
            "INSERT INTO conversations (id, org_id, title, agent, created_by) VALUES (gen_random_uuid(), '{org}', 't', 'demo', 'cli');
             INSERT INTO runs (id, conversation_id, org_id, status, input, created_by, runner_id, lease_epoch, lease_expires_at, lease_secs)
             SELECT gen_random_uuid(), id, org_id, 'running', '{{}}', 'cli', 'r', 1, now() + interval '30 seconds', 30 FROM conversations;
             UPDATE moat_clock SET seen_at = clock_timestamp();"
        ))
        .await
        .unwrap();
    let (runtime, connection) =
        db.url(DbRole::App).parse::<tokio_postgres::Config>().unwrap().connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let lease = || async {
        let row = admin.query_one("SELECT extract(epoch FROM lease_expires_at - now())::float8 FROM runs", &[]).await;
        row.unwrap().get::<_, f64>(0)
    };
    // No gap: nothing to give back, whatever the arguments.
    runtime.query_one("SELECT moat_advance_clock(-1e9, 0)", &[]).await.unwrap();
    assert!(lease().await <= 31.0, "{}", lease().await);
    // A real 10 s gap: at most that, plus a whole lease after an outage.
    admin.batch_execute("UPDATE moat_clock SET seen_at = clock_timestamp() - interval '10 seconds'").await.unwrap();
    runtime.query_one("SELECT moat_advance_clock(-1e9, 0)", &[]).await.unwrap();
    let pushed = lease().await;
    assert!(pushed <= 41.0, "a lease was pushed {pushed} s ahead");
    // And it may not judge leases itself any more (only through the clock).
    let direct = runtime.query("SELECT * FROM moat_fail_stale_runs(10)", &[]).await;
    assert!(direct.is_err(), "the runtime role can still fail leases without the clock");
}
