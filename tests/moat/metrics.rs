//! `/metrics`: scoped (no anonymous scrape), Prometheus text, requests
//! labelled by route template (never a raw id), runs by status across
//! organizations, and `DEV_BYPASS` at 0 in production.

use moat::identity::Role;

use crate::harness::{Options, spawn_app};

#[tokio::test]
async fn metrics_are_scoped_labelled_by_route_template_and_show_no_dev_bypass_in_production() {
    let app = spawn_app(Options::default()).await;
    assert_eq!(app.http.get(app.url("/metrics")).send().await.unwrap().status(), 401);
    let (_, _, member) = app.signed_in(Role::Member).await;
    assert_eq!(app.get_as(&member, "/metrics").await.status(), 403, "members lack metrics:read");
    let (_, _, admin) = app.signed_in(Role::Admin).await;
    // Traffic with ids in the path: the label must be the template.
    let id = uuid::Uuid::new_v4();
    assert_eq!(app.get_as(&admin, &format!("/v1/runs/{id}")).await.status(), 404);
    let body = serde_json::json!({"title": "m", "agent": "demo"});
    let conv = crate::harness::http::post_json(&app.http, &app.url("/v1/conversations"), Some(&admin), body).await;
    let conv = conv["id"].as_str().unwrap();
    let run = app
        .http
        .post(app.url(&format!("/v1/conversations/{conv}/runs")))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"input": {"steps": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 202);
    let response = app.get_as(&admin, "/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().contains("openmetrics-text"));
    let text = response.text().await.unwrap();
    assert!(text.contains(r#"moat_http_requests_total{route="/v1/runs/{id}",method="GET",status="404"} 1"#), "{text}");
    assert!(!text.contains(&id.to_string()), "a raw id became a label");
    assert!(text.contains(r#"moat_runs{status="queued",error=""} 1"#), "{text}");
    assert!(text.contains("moat_dev_bypass_events 0"), "{text}");
    assert!(text.contains(r#"moat_build_info{version=""#) && text.contains(r#"environment="production"} 1"#), "{text}");
    for name in [
        "moat_http_request_duration_seconds_bucket",
        "moat_db_pool_connections",
        "moat_websockets_open",
        "moat_rate_limited_total",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
}

/// A runner environment whose metrics listen on a free loopback port.
fn runner_env_with_metrics(db: &crate::harness::TestDb) -> (u16, crate::harness::Env) {
    let port = crate::harness::free_port();
    let env = crate::harness::Env::default()
        .set("DATABASE_URL", &db.url(crate::harness::Role::Runner))
        .set("MOAT_METRICS_BIND", &format!("127.0.0.1:{port}"));
    (port, env)
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Scrapes until every `(series, value)` holds (counters are recorded just
/// after the commits a test can observe), for at most 10 s.
async fn scrape_until(url: &str, wanted: &[(&str, f64)]) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = scrape(url).await;
        let holds = |(series, value): &(&str, f64)| {
            text.lines()
                .any(|line| line.strip_prefix(series).and_then(|r| r.strip_prefix(' ')) == Some(&value.to_string()))
        };
        if wanted.iter().all(holds) {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "never reached {wanted:?}:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The value of a sample line `name{labels} value` (or `name value`).
pub(crate) fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        .parse()
        .unwrap()
}

/// The runner (which serves no HTTP) exports claims, queue wait, commands
/// applied with their latency, active runs and queue depth on a loopback-only
/// `MOAT_METRICS_BIND`; `serve` can use one too. Anything but loopback is refused.
#[tokio::test]
async fn runner_and_serve_metrics_on_a_loopback_listener() {
    use crate::harness::http::{admin_in, login_at, post_json, wait_run_status};
    use crate::harness::{Env, TestDb};
    let db = TestDb::migrated().await;
    let serve_port = crate::harness::free_port();
    let env = Env::production(&db).set("MOAT_METRICS_BIND", &format!("127.0.0.1:{serve_port}"));
    let serving = crate::harness::serve(&env).await;
    let (runner_port, runner_env) = runner_env_with_metrics(&db);
    let runner = crate::harness::runner(&runner_env).await;
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    let token = login_at(&http, &serving.url(""), admin.email, &admin.password).await;
    let conv = |title: &str| {
        let body = serde_json::json!({"title": title, "agent": "demo"});
        let (http, token, url) = (http.clone(), token.clone(), serving.url("/v1/conversations"));
        async move { post_json(&http, &url, Some(&token), body).await }
    };
    let start = |conv: String, input: serde_json::Value| {
        let url = serving.url(&format!("/v1/conversations/{conv}/runs"));
        let (http, token) = (http.clone(), token.clone());
        async move { post_json(&http, &url, Some(&token), serde_json::json!({ "input": input })).await }
    };

    // One run asks a question that is answered; another is cancelled.
    let asking = conv("ask").await["id"].as_str().unwrap().to_owned();
    let asking =
        start(asking, serde_json::json!({"steps": 1, "ask": "Proceed?"})).await["id"].as_str().unwrap().to_owned();
    wait_run_status(&http, &serving.url(""), &token, &asking, "waiting_input").await;
    let view = crate::harness::http::get_json(&http, &serving.url(&format!("/v1/runs/{asking}")), &token).await;
    let input = view["pending_input"]["id"].as_str().unwrap().to_owned();
    let answer = serde_json::json!({"value": "yes"});
    post_json(&http, &serving.url(&format!("/v1/inputs/{input}")), Some(&token), answer).await;
    wait_run_status(&http, &serving.url(""), &token, &asking, "succeeded").await;
    let long = conv("long").await["id"].as_str().unwrap().to_owned();
    let long =
        start(long, serde_json::json!({"steps": 10000, "delay_ms": 20})).await["id"].as_str().unwrap().to_owned();
    wait_run_status(&http, &serving.url(""), &token, &long, "running").await;
    let wanted = [("moat_runner_active_runs", 1.0), ("moat_runner_queue_wait_seconds_count", 2.0)];
    let during = scrape_until(&format!("http://127.0.0.1:{runner_port}/metrics"), &wanted).await;
    post_json(&http, &serving.url(&format!("/v1/runs/{long}/cancel")), Some(&token), serde_json::json!({})).await;
    wait_run_status(&http, &serving.url(""), &token, &long, "cancelled").await;
    // A queued run nobody claims shows as queue depth: stop the runner first.
    runner.terminate().await;
    let queued = conv("queued").await["id"].as_str().unwrap().to_owned();
    start(queued, serde_json::json!({})).await;
    let serve_text = scrape(&format!("http://127.0.0.1:{serve_port}/metrics")).await;
    assert!(
        serve_text.contains(r#"moat_http_requests_total{route="/v1/inputs/{id}",method="POST",status="200"} 1"#),
        "{serve_text}"
    );
    assert!(serve_text.contains("moat_dev_bypass_events 0"), "{serve_text}");
    assert_eq!(sample(&serve_text, r#"moat_runs{status="cancelled",error=""}"#), 1.0);
    assert_eq!(sample(&serve_text, "moat_queue_depth"), 1.0);

    // The first runner's own figures, read before it stopped.
    assert_eq!(sample(&during, "moat_runner_claims_total"), 2.0, "{during}");
    assert_eq!(sample(&during, "moat_runner_queue_wait_seconds_count"), 2.0);
    assert_eq!(sample(&during, r#"moat_runner_commands_applied_total{kind="input"}"#), 1.0);
    assert_eq!(sample(&during, r#"moat_runner_command_latency_seconds_count{kind="input"}"#), 1.0);
    assert!(during.contains("moat_runner_claim_duration_seconds_bucket"), "{during}");
    assert!(sample(&during, "moat_db_pool_wait_seconds_count") > 0.0, "{during}");
    assert!(sample(&serve_text, "moat_db_pool_wait_seconds_count") > 0.0, "{serve_text}");
    assert!(during.contains("moat_dev_bypass_events 0"), "{during}");
    assert!(during.contains(r#"environment="production"} 1"#), "{during}");
    assert!(!during.contains("moat_http_requests_total"), "the runner serves no API");
}

/// The cancel's application and latency are recorded when the run ends cancelled.
#[tokio::test]
async fn a_cancel_is_counted_with_its_latency() {
    use crate::harness::http::{admin_in, login_at, post_json, wait_run_status};
    use crate::harness::{Env, TestDb};
    let db = TestDb::migrated().await;
    let serving = crate::harness::serve(&Env::production(&db)).await;
    let (runner_port, runner_env) = runner_env_with_metrics(&db);
    let _runner = crate::harness::runner(&runner_env).await;
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    let token = login_at(&http, &serving.url(""), admin.email, &admin.password).await;
    let body = serde_json::json!({"title": "c", "agent": "demo"});
    let conv = post_json(&http, &serving.url("/v1/conversations"), Some(&token), body).await;
    let url = serving.url(&format!("/v1/conversations/{}/runs", conv["id"].as_str().unwrap()));
    let run =
        post_json(&http, &url, Some(&token), serde_json::json!({"input": {"steps": 10000, "delay_ms": 20}})).await;
    let run = run["id"].as_str().unwrap();
    wait_run_status(&http, &serving.url(""), &token, run, "running").await;
    post_json(&http, &serving.url(&format!("/v1/runs/{run}/cancel")), Some(&token), serde_json::json!({})).await;
    wait_run_status(&http, &serving.url(""), &token, run, "cancelled").await;
    let wanted = [(r#"moat_runner_commands_applied_total{kind="cancel"}"#, 1.0), ("moat_runner_active_runs", 0.0)];
    let text = scrape_until(&format!("http://127.0.0.1:{runner_port}/metrics"), &wanted).await;
    let latency = sample(&text, r#"moat_runner_command_latency_seconds_sum{kind="cancel"}"#);
    assert!(latency > 0.0 && latency < 5.0, "{latency}");
    assert_eq!(sample(&text, "moat_runner_active_runs"), 0.0);
}

#[tokio::test]
async fn a_metrics_listener_off_loopback_and_bad_origins_are_refused() {
    use crate::harness::{Env, TestDb};
    let db = TestDb::migrated().await;
    for bind in ["0.0.0.0:9464", "[::]:9464", "10.0.0.1:9464", "localhost:9464", "9464"] {
        let out = crate::harness::run(&["check"], &Env::production(&db).set("MOAT_METRICS_BIND", bind)).await;
        assert_eq!(out.status.code(), Some(1), "{bind}: {}", out.all_output());
        assert!(out.stderr.contains("MOAT_METRICS_BIND") && out.stderr.contains("127.0.0.1:9464"), "{}", out.stderr);
    }
    // Found while adding the setting above: an invalid origin used to be dropped silently.
    let out = crate::harness::run(&["check"], &Env::production(&db).set("MOAT_ALLOWED_ORIGINS", "not an origin")).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
    assert!(out.stderr.contains("MOAT_ALLOWED_ORIGINS"), "{}", out.stderr);
    let ok = Env::production(&db)
        .set("MOAT_METRICS_BIND", "127.0.0.1:9464")
        .set("MOAT_ALLOWED_ORIGINS", "https://app.example.com");
    let out = crate::harness::run(&["check"], &ok).await;
    assert_eq!(out.status.code(), Some(0), "{}", out.all_output());
}
