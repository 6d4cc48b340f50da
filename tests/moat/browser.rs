//! The web app in a real headless Chromium against real `moat serve` and
//! `moat runner` processes on a real PostgreSQL: log in, create a
//! conversation, stream, answer, cancel, survive token expiries, escape agent
//! output, keep the session across a reload, log out.

use std::time::Duration;

use fantoccini::Locator;
use serde_json::json;

use crate::harness::browser::Browser;
use crate::harness::http::{Admin, admin_in};
use crate::harness::{self, Env, Role as DbRole, TestDb};

struct Site {
    base: String,
    admin: Admin,
    serving: harness::process::Serving,
    _runner: harness::process::Serving,
    /// Dropped last: the database outlives the processes using it.
    _db: TestDb,
}

/// A development-mode `moat serve` on a fixed loopback port (its public URL
/// must be the origin the browser sees) and a runner.
async fn site(access_token_ttl: &str) -> Site {
    let db = TestDb::migrated().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let env = Env::production(&db)
        .set("MOAT_ENV", "development")
        .set("MOAT_BIND", &format!("127.0.0.1:{port}"))
        .set("MOAT_PUBLIC_URL", &base)
        .set("MOAT_ACCESS_TOKEN_TTL", access_token_ttl);
    let serving = harness::serve(&env).await;
    let runner_env = Env::default()
        .set("MOAT_ENV", "development")
        .set("DATABASE_URL", &db.url(DbRole::Runner))
        .set("MOAT_RUNNER_POLL", "1s")
        .set("MOAT_RUN_HEARTBEAT", "500ms")
        .set("MOAT_RUN_LEASE", "3s");
    let runner = harness::runner(&runner_env).await;
    let admin = admin_in(&db).await;
    Site { base, admin, serving, _runner: runner, _db: db }
}

async fn log_in(browser: &Browser, site: &Site) {
    log_in_at(browser, &site.base, site.admin.email, &site.admin.password).await;
}

async fn log_in_at(browser: &Browser, base: &str, email: &str, password: &str) {
    browser.client.goto(base).await.unwrap();
    browser.fill("#email", email).await;
    browser.fill("#password", password).await;
    browser.click("#login-submit").await;
    browser.until("the signed-in header", || async { browser.text("#whoami").await.as_deref() == Some(email) }).await;
}

/// Creates a conversation from the list page and opens it; returns its id.
async fn open_new_conversation(browser: &Browser, title: &str) -> String {
    browser.fill("#new-conversation-title", title).await;
    browser.click("#create-conversation").await;
    let link = format!("//ul[@id='conversations']//a[normalize-space(.)='{title}']");
    browser
        .until("the new conversation in the list", || async {
            browser.client.find(Locator::XPath(&link)).await.is_ok()
        })
        .await;
    let href = browser.client.find(Locator::XPath(&link)).await.unwrap().attr("href").await.unwrap().unwrap();
    browser.client.find(Locator::XPath(&link)).await.unwrap().click().await.unwrap();
    browser
        .until("the conversation page", || async {
            browser.text("#conversation-title").await.as_deref() == Some(title)
        })
        .await;
    browser
        .until("a live stream", || async {
            browser.attribute("#connection", "data-state").await.as_deref() == Some("live")
        })
        .await;
    href.rsplit('/').next().unwrap().to_owned()
}

/// Starts a demo run from the form; returns the CSS selector of its section.
async fn start_run(browser: &Browser, steps: u32, delay_ms: u32, text: &str, ask: &str, tool: &str) -> String {
    let before = browser.client.find_all(Locator::Css("#runs section.run")).await.unwrap().len();
    browser.fill("#run-steps", &steps.to_string()).await;
    browser.fill("#run-delay", &delay_ms.to_string()).await;
    browser.fill("#run-text", text).await;
    browser.fill("#run-ask", ask).await;
    browser.fill("#run-tool", tool).await;
    browser.click("#start-run").await;
    browser
        .until("the new run to appear", || async {
            browser.client.find_all(Locator::Css("#runs section.run")).await.unwrap().len() > before
        })
        .await;
    let runs = browser.client.find_all(Locator::Css("#runs section.run")).await.unwrap();
    let id = runs.last().unwrap().attr("data-run-id").await.unwrap().unwrap();
    format!("#runs section.run[data-run-id='{id}']")
}

async fn status(browser: &Browser, run: &str) -> Option<String> {
    browser.text_content(&format!("{run} .run-status")).await.map(|s| s.trim().to_owned())
}

async fn wait_status(browser: &Browser, run: &str, wanted: &str) {
    browser
        .until(&format!("run status {wanted}"), || async { status(browser, run).await.as_deref() == Some(wanted) })
        .await;
}

fn expected_text(text: &str, steps: u32) -> String {
    (1..=steps).map(|i| format!("{text} {i}")).collect()
}

#[tokio::test]
async fn the_app_logs_in_streams_answers_cancels_escapes_and_logs_out() {
    let site = site("15m").await;
    let browser = Browser::start().await;
    // The page itself is served under the strict policy.
    let page = reqwest::get(&site.base).await.unwrap();
    assert_eq!(page.headers()["content-security-policy"], moat::web::HTML_CSP);

    // A wrong password is refused with a message.
    browser.client.goto(&site.base).await.unwrap();
    browser.fill("#email", site.admin.email).await;
    browser.fill("#password", "not-the-password").await;
    browser.click("#login-submit").await;
    browser
        .until("a login error", || async { browser.text("#login-error").await.is_some_and(|t| !t.is_empty()) })
        .await;
    // The list pages 20 at a time.
    let http = reqwest::Client::new();
    let token = harness::http::login_at(&http, &site.base, site.admin.email, &site.admin.password).await;
    for i in 0..21 {
        let body = json!({"title": format!("Older {i:02}"), "agent": "demo"});
        harness::http::post_json(&http, &format!("{}/v1/conversations", site.base), Some(&token), body).await;
    }
    log_in(&browser, &site).await;
    let items = || async { browser.client.find_all(Locator::Css("ul#conversations li")).await.unwrap().len() };
    browser.until("the first page", || async { items().await == 20 }).await;
    browser.click("#load-more").await;
    browser.until("the second page", || async { items().await == 21 }).await;
    browser.until("no more pages", || async { !browser.displayed("#load-more").await }).await;
    open_new_conversation(&browser, "Browser chat").await;

    // Agent output is untrusted text: markup in a delta is shown, never parsed.
    let hostile = "<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script>";
    let run = start_run(&browser, 5, 50, hostile, "Proceed?", "lookup").await;
    let question = format!("{run} .question");
    browser.until("the question", || browser.displayed(&question)).await;
    assert_eq!(browser.text_content(&format!("{run} .question-text")).await.as_deref(), Some("Proceed?"));
    assert_eq!(browser.text_content(&format!("{run} .run-text")).await.unwrap(), expected_text(hostile, 5));
    let injected = browser
        .client
        .execute(
            "return [document.querySelectorAll('#runs img, #runs script').length, window.__pwned === undefined];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, json!([0, true]), "agent output was interpreted as markup");
    browser.click(&format!("{run} .approve")).await;
    wait_status(&browser, &run, "succeeded").await;
    let text = browser.text_content(&format!("{run} .run-text")).await.unwrap();
    assert_eq!(text, format!("{}You said: approve", expected_text(hostile, 5)));
    assert!(!browser.displayed(&format!("{run} .cancel-run")).await, "cancel offered on a finished run");
    // Tool events are shown compactly.
    let log = browser.text_content(&format!("{run} .run-log")).await.unwrap();
    assert!(log.contains("lookup"), "no tool line: {log}");

    // Screenshots: desktop, then a 390 px phone width with no horizontal scrolling.
    let wide = browser.screenshot("conversation.png").await;
    browser.client.set_window_size(390, 844).await.unwrap();
    browser.client.execute("document.querySelector(arguments[0]).scrollIntoView();", vec![json!(run)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let narrow = browser.screenshot("conversation-390.png").await;
    assert!(std::fs::metadata(&wide).unwrap().len() > 1000 && std::fs::metadata(&narrow).unwrap().len() > 1000);
    let overflow = browser
        .client
        .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", vec![])
        .await
        .unwrap();
    assert!(overflow.as_i64().unwrap() <= 0, "horizontal scroll at 390 px: {overflow}");
    browser.client.set_window_size(1280, 900).await.unwrap();

    // A long run, cancelled from the page.
    let long = start_run(&browser, 10_000, 100, "tick", "", "").await;
    browser
        .until("deltas of the long run", || async {
            browser.text_content(&format!("{long} .run-text")).await.is_some_and(|t| t.contains("tick 2"))
        })
        .await;
    browser.click(&format!("{long} .cancel-run")).await;
    wait_status(&browser, &long, "cancelled").await;

    // A reload keeps the session (refresh cookie) and replays the history.
    browser.client.refresh().await.unwrap();
    browser
        .until("the session restored", || async { browser.text("#whoami").await.as_deref() == Some(site.admin.email) })
        .await;
    wait_status(&browser, &run, "succeeded").await;
    wait_status(&browser, &long, "cancelled").await;
    assert_eq!(browser.text_content(&format!("{run} .run-text")).await.unwrap(), text, "the replay differs");
    let token_in_storage =
        browser.client.execute("return localStorage.length + sessionStorage.length;", vec![]).await.unwrap();
    assert_eq!(token_in_storage, json!(0), "something was kept in web storage");

    // Log out ends the session: a reload lands on the login form.
    browser.click("#logout").await;
    browser.until("the login form", || browser.displayed("#login-form")).await;
    browser.client.refresh().await.unwrap();
    browser.until("the login form after reload", || browser.displayed("#login-form")).await;
    assert!(!browser.displayed("#whoami").await);
    browser.close().await;
}

/// Access tokens of 5 s: a 15 s run streams across several forced expiries
/// (1008 `token_expired` → refresh → new ws-token → reconnect with `after`),
/// and the assembled text has no gap and no duplicate.
#[tokio::test]
async fn a_run_streams_across_several_token_expiries_without_gap_or_duplicate() {
    let site = site("5s").await;
    let browser = Browser::start().await;
    log_in(&browser, &site).await;
    let conversation = open_new_conversation(&browser, "Expiring").await;
    // Record every change of the connection indicator, with its time.
    browser
        .client
        .execute(
            "window.__states = []; new MutationObserver(() => window.__states.push([performance.now(), \
             document.getElementById('connection').dataset.state])).observe(document.getElementById('connection'), \
             {attributes: true, attributeFilter: ['data-state']});",
            vec![],
        )
        .await
        .unwrap();
    let run = start_run(&browser, 150, 100, "s", "", "").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while status(&browser, &run).await.as_deref() != Some("succeeded") {
        assert!(tokio::time::Instant::now() < deadline, "the run did not finish in the browser");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(browser.text_content(&format!("{run} .run-text")).await.unwrap(), expected_text("s", 150));
    // The expiries really happened: the page minted a ws-token per connection.
    let mints = site.serving.output().matches(&format!("path=/v1/conversations/{conversation}/ws-token")).count();
    assert!(mints >= 3, "only {mints} ws-token mints: the stream never had to reconnect");
    assert_eq!(browser.attribute("#connection", "data-state").await.as_deref(), Some("live"));
    // Each expiry reconnected at once (refresh, mint, connect), not through the
    // backoff, whose shortest wait is 500 ms.
    let states = browser.client.execute("return window.__states;", vec![]).await.unwrap();
    let states: Vec<(f64, String)> = serde_json::from_value(states).unwrap();
    let mut gaps = Vec::new();
    for pair in states.windows(2) {
        if pair[0].1 != "live" && pair[1].1 == "live" {
            gaps.push(pair[1].0 - pair[0].0);
        }
    }
    assert!(gaps.len() >= 2, "fewer than two reconnects observed: {states:?}");
    assert!(gaps.iter().all(|g| *g < 500.0), "a reconnect waited like a backoff: {gaps:?}");

    // The session ends (the user is disabled): the next refresh is refused, the
    // app says "signed out" and stops — no more ws-tokens are minted.
    moat::admin::disable_user(&site.admin.pool, site.admin.email).await.unwrap();
    browser.until("the signed-out notice", || browser.displayed("#signed-out")).await;
    assert!(browser.text("#signed-out").await.unwrap().to_lowercase().contains("signed out"));
    assert!(browser.displayed("#login-form").await);
    let mints = |output: String| output.matches("/ws-token").count();
    let before = mints(site.serving.output());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(mints(site.serving.output()), before, "the app kept reconnecting after the session ended");
    browser.close().await;
}

/// An open conversation page whose session is revoked (the account disabled
/// by an operator) is signed out at once: the socket closes `revoked`, the
/// refresh is refused, the app shows the sign-in screen with its notice.
#[tokio::test]
async fn a_revoked_session_signs_the_app_out() {
    let site = site("15m").await;
    let browser = Browser::start().await;
    log_in(&browser, &site).await;
    open_new_conversation(&browser, "watched").await;
    moat::admin::disable_user(&site.admin.pool, site.admin.email).await.unwrap();
    let started = std::time::Instant::now();
    browser.until("the signed-out notice", || async { browser.displayed("#signed-out").await }).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(browser.displayed("#login-submit").await);
    browser.close().await;
}

/// The README's promise, end to end: `moat dev` from nothing, then in the
/// browser the printed URL and password, a demo run watched and answered,
/// and a long one cancelled.
#[tokio::test]
async fn a_newcomer_uses_moat_dev_from_the_browser() {
    let root = tempfile::Builder::new().prefix("moat-dev-").tempdir_in("/tmp").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let dir = root.path().join(".moat").display().to_string();
    let env = Env::default().set("PATH", &std::env::var("PATH").unwrap_or_default());
    let dev = harness::process::start(&["dev", "--port", &port, "--dir", &dir], &env, "Ctrl-C stops everything").await;
    let output = dev.output();
    let url = output.lines().find_map(|l| l.split("(development mode): ").nth(1)).unwrap().trim().to_owned();
    let password = output.lines().find_map(|l| l.split("with password: ").nth(1)).unwrap().trim().to_owned();
    let browser = Browser::start().await;
    log_in_at(&browser, &url, moat::dev::command::ADMIN_EMAIL, &password).await;
    open_new_conversation(&browser, "First steps").await;
    let run = start_run(&browser, 3, 50, "hello", "Shall I go on?", "").await;
    let answer = format!("{run} .answer-text");
    browser.until("the question", || browser.displayed(&answer)).await;
    browser.fill(&answer, "yes please").await;
    browser.click(&format!("{run} .send-answer")).await;
    wait_status(&browser, &run, "succeeded").await;
    assert_eq!(
        browser.text_content(&format!("{run} .run-text")).await.unwrap(),
        format!("{}You said: yes please", expected_text("hello", 3))
    );
    let long = start_run(&browser, 10_000, 100, "tick", "", "").await;
    wait_status(&browser, &long, "running").await;
    browser.click(&format!("{long} .cancel-run")).await;
    wait_status(&browser, &long, "cancelled").await;
    browser.close().await;
    assert!(dev.stop_with(nix::sys::signal::Signal::SIGINT).await.status.success());
}
