//! The purge, tested the way it runs: a production `moat serve` process (the
//! runtime role, every tenant table under FORCE ROW LEVEL SECURITY), rows made
//! through the API and aged in the database, and the real scheduler
//! (`MOAT_PURGE_INTERVAL=1s`) — never a hand call as the owner.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::http::{admin_in, login_at};
use crate::harness::{self, Env, TestDb};

/// A production `moat serve` purging every second, with its metrics on a loopback port.
async fn serve_purging(db: &TestDb) -> (harness::process::Serving, String) {
    let port = harness::free_port();
    let env =
        Env::production(db).set("MOAT_PURGE_INTERVAL", "1s").set("MOAT_METRICS_BIND", &format!("127.0.0.1:{port}"));
    (harness::serve(&env).await, format!("http://127.0.0.1:{port}/metrics"))
}

/// The value of one series (`name{labels}` exactly) in a scrape, if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Scrapes until `holds` is true of the text (20 s at most).
async fn scrape_until(url: &str, what: &str, holds: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(url).await;
        if holds(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never: {what}\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.admin().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// A refresh through the API with the cookie `token`; returns the next token.
async fn refresh(http: &reqwest::Client, base: &str, token: &str) -> reqwest::Response {
    http.post(format!("{base}/v1/auth/refresh"))
        .header("cookie", format!("__Host-moat_refresh={token}"))
        .send()
        .await
        .unwrap()
}

/// `POST /v1/auth/login` as the organization's admin (a new session each time).
async fn sign_in(http: &reqwest::Client, base: &str, admin: &crate::harness::http::Admin) -> reqwest::Response {
    let body = json!({"email": admin.email, "password": admin.password});
    http.post(format!("{base}/v1/auth/login")).json(&body).send().await.unwrap()
}

fn refresh_cookie(response: &reqwest::Response) -> String {
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1;
    value.to_owned()
}

/// Observation 1 of issue 17: after one refresh, the purge failed every
/// minute, forever (the UPDATE clearing sealed copies produced rows its own
/// SELECT policy hid). Now every step purges what it should, as the runtime
/// role, on aged rows, through the real scheduler — and no step fails.
#[tokio::test]
async fn the_scheduled_purge_removes_what_it_should_as_the_runtime_role() {
    let db = TestDb::migrated().await;
    let (serving, metrics) = serve_purging(&db).await;
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    let base = serving.url("");
    // A session refreshed once: a superseded token and a current one (with its sealed copy).
    let login = sign_in(&http, &base, &admin).await;
    let access = login.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let first = refresh_cookie(&sign_in(&http, &base, &admin).await);
    let rotated = refresh(&http, &base, &first).await;
    assert_eq!(rotated.status(), 200);
    let current = refresh_cookie(&rotated);
    // A used ws-token, a pending connect flow, rate-limit buckets, an anonymous audit event.
    let conv = http
        .post(format!("{base}/v1/conversations"))
        .bearer_auth(&access)
        .json(&json!({"title": "t", "agent": "demo"}))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let conv = conv["id"].as_str().unwrap().to_owned();
    harness::ws::open(&http, &serving, &access, &conv, None).await;
    let failed = http
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": "nobody@example.com", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 401);
    let sql = |s: &str| s.to_owned();
    let admin_db = db.admin().await;
    admin_db
        .batch_execute(&sql(&format!(
            "INSERT INTO oauth_states (state_hash, org_id, created_by, provider, account, binding_hash, code_verifier, expires_at)
                VALUES (sha256('old'), '{org}', 'cli', 'p', 'a', sha256('b'), 'x', now() - interval '1 minute'),
                       (sha256('new'), '{org}', 'cli', 'p', 'a', sha256('c'), 'x', now() + interval '5 minutes');
             INSERT INTO rate_limits (bucket, window_start, window_secs, hits, expires_at)
                VALUES ('test:live', now(), 60, 1, now() + interval '1 hour');",
            org = admin.org
        )))
        .await
        .unwrap();
    // A token issued before family tags existed (V8), superseded long ago: kept, so its reuse is still detected.
    admin_db
        .batch_execute(
            "INSERT INTO refresh_tokens (family_id, org_id, token_hash, expires_at, used_at, tagged)
             SELECT id, org_id, sha256('pre-v8'), now() + interval '1 day', now() - interval '1 hour', false
             FROM refresh_families LIMIT 1",
        )
        .await
        .unwrap();
    let rate_limits_before = count(&db, "SELECT count(*) FROM rate_limits").await;
    assert!(rate_limits_before >= 3, "login buckets and the live test bucket");
    // Age everything the way time would: three minutes for the refresh tokens
    // (past the 120 s grace ceiling), expiry for the rest, 91 days for the audit event.
    admin_db
        .batch_execute(
            "UPDATE refresh_tokens SET created_at = created_at - interval '3 minutes',
                                      used_at = used_at - interval '3 minutes';
             UPDATE ws_tokens_used SET expires_at = now() - interval '1 second';
             UPDATE rate_limits SET expires_at = now() - interval '1 second' WHERE bucket <> 'test:live';
             UPDATE audit_log SET at = now() - interval '91 days' WHERE org_id IS NULL;",
        )
        .await
        .unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM refresh_tokens WHERE used_at IS NOT NULL AND tagged").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM refresh_tokens WHERE sealed_token IS NOT NULL").await, 2);

    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let text = scrape_until(&metrics, "a purge round after the rows aged", |text| {
        metric(text, "moat_purge_last_success_timestamp_seconds").is_some_and(|t| t > started + 1.0)
    })
    .await;
    // Superseded token gone (but the untagged pre-V8 one); the current token stays, without its sealed copy.
    assert_eq!(count(&db, "SELECT count(*) FROM refresh_tokens WHERE used_at IS NOT NULL AND tagged").await, 0);
    assert_eq!(
        count(&db, "SELECT count(*) FROM refresh_tokens WHERE NOT tagged").await,
        1,
        "a pre-V8 token was purged"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM refresh_tokens WHERE sealed_token IS NOT NULL").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM refresh_tokens WHERE used_at IS NULL").await, 2, "two live sessions");
    assert_eq!(count(&db, "SELECT count(*) FROM ws_tokens_used").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM oauth_states").await, 1, "only the live connect flow stays");
    assert_eq!(count(&db, "SELECT count(*) FROM rate_limits").await, 1, "only the live bucket stays");
    assert_eq!(count(&db, "SELECT count(*) FROM audit_log WHERE org_id IS NULL").await, 0);
    assert!(count(&db, "SELECT count(*) FROM audit_log WHERE org_id IS NOT NULL").await > 0, "org events stay");
    for step in ["refresh_tokens", "refresh_tokens_sealed", "ws_tokens_used", "oauth_states", "rate_limits"] {
        let purged = metric(&text, &format!("moat_purge_rows_total{{step=\"{step}\"}}")).unwrap_or(0.0);
        assert!(purged >= 1.0, "{step}: {purged}\n{text}");
        assert_eq!(metric(&text, &format!("moat_purge_failures_total{{step=\"{step}\"}}")), Some(0.0), "{text}");
    }
    // The session still works after its sealed copy and the superseded token are gone.
    assert_eq!(refresh(&http, &base, &current).await.status(), 200);
    let log = serving.terminate().await.all_output();
    assert!(!log.contains("purge step failed"), "{log}");
}

/// One failing step does not roll back the others, is counted every round,
/// and is logged once when it starts failing and once when it recovers.
#[tokio::test]
async fn a_failing_purge_step_spares_the_others_and_is_logged_once_per_streak() {
    let db = TestDb::migrated().await;
    let admin_db = db.admin().await;
    admin_db.batch_execute("REVOKE EXECUTE ON FUNCTION moat_purge_ws_tokens(integer) FROM moat_runtime").await.unwrap();
    let (serving, metrics) = serve_purging(&db).await;
    let org = admin_in(&db).await.org;
    admin_db
        .batch_execute(&format!(
            "INSERT INTO rate_limits (bucket, window_start, window_secs, hits, expires_at)
                VALUES ('test:expired', now() - interval '2 hours', 60, 1, now() - interval '1 hour');
             INSERT INTO ws_tokens_used (jti, org_id, expires_at) VALUES (gen_random_uuid(), '{org}', now() - interval '1 hour');"
        ))
        .await
        .unwrap();
    let text = scrape_until(&metrics, "three failures of the ws_tokens_used step", |text| {
        metric(text, r#"moat_purge_failures_total{step="ws_tokens_used"}"#).is_some_and(|n| n >= 3.0)
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM rate_limits WHERE bucket = 'test:expired'").await, 0, "others purged");
    assert_eq!(count(&db, "SELECT count(*) FROM ws_tokens_used").await, 1);
    assert_eq!(metric(&text, "moat_purge_last_success_timestamp_seconds"), Some(0.0), "no round fully succeeded");
    assert_eq!(serving.output().matches("purge step failed").count(), 1, "{}", serving.output());

    admin_db.batch_execute("GRANT EXECUTE ON FUNCTION moat_purge_ws_tokens(integer) TO moat_runtime").await.unwrap();
    scrape_until(&metrics, "a fully successful round", |text| {
        metric(text, "moat_purge_last_success_timestamp_seconds").is_some_and(|t| t > 0.0)
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM ws_tokens_used").await, 0);
    let log = serving.terminate().await.all_output();
    assert_eq!(log.matches("purge step failed").count(), 1, "{log}");
    assert_eq!(log.matches("purge step recovered").count(), 1, "{log}");
}

/// Reuse detection survives the purge of superseded tokens: an earlier token
/// of a session, whose row is gone, still names its family and revokes it;
/// however often a session refreshes, it keeps at most two rows.
#[tokio::test]
async fn superseded_refresh_tokens_are_purged_and_their_reuse_still_revokes_the_session() {
    let db = TestDb::migrated().await;
    let (serving, metrics) = serve_purging(&db).await;
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    let base = serving.url("");
    let first = refresh_cookie(&sign_in(&http, &base, &admin).await);
    let mut current = first.clone();
    for _ in 0..20 {
        let response = refresh(&http, &base, &current).await;
        assert_eq!(response.status(), 200);
        current = refresh_cookie(&response);
    }
    assert_eq!(count(&db, "SELECT count(*) FROM refresh_tokens").await, 21);
    db.admin()
        .await
        .batch_execute("UPDATE refresh_tokens SET used_at = used_at - interval '3 minutes', created_at = created_at - interval '3 minutes'")
        .await
        .unwrap();
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    scrape_until(&metrics, "a purge round", |text| {
        metric(text, "moat_purge_last_success_timestamp_seconds").is_some_and(|t| t > started + 1.0)
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM refresh_tokens").await, 1, "only the current token stays");

    // The very first token of the session comes back (stolen long ago): the session is revoked.
    assert_eq!(refresh(&http, &base, &first).await.status(), 401);
    assert_eq!(refresh(&http, &base, &current).await.status(), 401, "the session must be over");
    let reason: String =
        db.admin().await.query_one("SELECT revoked_reason FROM refresh_families", &[]).await.unwrap().get(0);
    assert_eq!(reason, "reuse");
    let token = login_at(&http, &base, admin.email, &admin.password).await;
    let log = http.get(format!("{base}/v1/audit-log")).bearer_auth(&token).send().await.unwrap();
    let log: serde_json::Value = log.json().await.unwrap();
    assert!(log["items"].as_array().unwrap().iter().any(|e| e["event"] == "refresh_reuse_detected"), "{log}");
    // Garbage with a plausible shape, and a well-formed token of no family, change nothing.
    let forged = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 48])
    };
    assert_eq!(refresh(&http, &base, &forged).await.status(), 401);
    serving.terminate().await;
}
