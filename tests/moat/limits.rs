//! Abuse limits live in PostgreSQL: two `moat serve` processes enforce one
//! limit; failures lock out progressively; `X-Forwarded-For` counts only from
//! trusted proxies; expired rows are purged safely by any instance.

use std::time::Duration;

use moat::identity::Role;
use serde_json::{Value, json};

use crate::harness::{self, Env, Options, Role as DbRole, TestDb, error_code, spawn_app};

/// Two `moat serve` processes on one database with one user, `ada@example.com`.
struct Pair {
    _db: TestDb,
    a: harness::process::Serving,
    b: harness::process::Serving,
    password: String,
}

impl Pair {
    async fn start() -> Self {
        let db = TestDb::migrated().await;
        let admin = crate::harness::http::admin_in(&db).await;
        let env = Env::production(&db);
        let (a, b) = (harness::serve(&env).await, harness::serve(&env).await);
        Self { _db: db, a, b, password: admin.password }
    }
}

async fn login(http: &reqwest::Client, base: &str, email: &str, password: &str) -> reqwest::Response {
    http.post(format!("{base}/v1/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers().get("retry-after").expect("Retry-After").to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn two_processes_enforce_one_login_limit() {
    let Pair { _db, a, b, password } = Pair::start().await;
    let bases = [a.url(""), b.url("")];
    let http = reqwest::Client::new();

    // Ten successful logins a minute per email, counted across both processes.
    for i in 0..10 {
        let response = login(&http, &bases[i % 2], "ada@example.com", &password).await;
        assert_eq!(response.status(), 200, "attempt {}", i + 1);
    }
    let limited = login(&http, &bases[0], "ada@example.com", &password).await;
    assert_eq!(limited.status(), 429, "the 11th attempt, on the process that saw only 5");
    assert!((1..=60).contains(&retry_after(&limited)));
    assert_eq!(error_code(limited).await, "rate_limited");
    assert_eq!(login(&http, &bases[1], "ada@example.com", &password).await.status(), 429);

    // Another email is not affected.
    assert_eq!(login(&http, &bases[1], "someone@example.com", "wrong password").await.status(), 401);
    for serving in [a, b] {
        let log = serving.terminate().await.all_output();
        assert!(!log.contains(&password), "a password reached the log");
    }
}

#[tokio::test]
async fn consecutive_failures_lock_out_progressively_even_the_right_password() {
    let Pair { _db, a, b, password } = Pair::start().await;
    let bases = [a.url(""), b.url("")];
    let http = reqwest::Client::new();

    for i in 0..5 {
        assert_eq!(login(&http, &bases[i % 2], "ada@example.com", "guess").await.status(), 401, "failure {}", i + 1);
    }
    let locked = login(&http, &bases[1], "ada@example.com", &password).await;
    assert_eq!(locked.status(), 429, "locked after 5 failures, even with the right password");
    let first = retry_after(&locked);
    assert_eq!(first, 1);

    tokio::time::sleep(Duration::from_millis(1100 * first)).await;
    assert_eq!(login(&http, &bases[0], "ada@example.com", "guess").await.status(), 401);
    let locked = login(&http, &bases[1], "ada@example.com", &password).await;
    assert_eq!(locked.status(), 429);
    assert_eq!(retry_after(&locked), 2, "the lockout doubles with each further failure");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(login(&http, &bases[0], "ada@example.com", &password).await.status(), 200, "after the lockout");
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let db = TestDb::migrated().await;
    let trusted = Env::production(&db).set("MOAT_TRUSTED_PROXIES", "127.0.0.1/32, ::1");
    let app = spawn_app(Options { env: Some(trusted), db: Some(db), ..Options::default() }).await;
    let org = app.create_org("Acme").await;
    let (_, password) = app.create_user(org, "ada@example.com", Role::Admin).await;
    let attempt = |ip: &'static str, email: String| {
        app.http
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.1, {ip}"))
            .json(&json!({ "email": email, "password": "wrong" }))
            .send()
    };
    // 30 attempts a minute per client IP: the proxy's client 203.0.113.7 hits it …
    for i in 0..30 {
        assert_eq!(attempt("203.0.113.7", format!("u{i}@example.com")).await.unwrap().status(), 401);
    }
    assert_eq!(attempt("203.0.113.7", "u99@example.com".into()).await.unwrap().status(), 429);
    // … another client behind the same proxy does not.
    assert_eq!(attempt("203.0.113.8", "u98@example.com".into()).await.unwrap().status(), 401);

    let body: Value = app.login("ada@example.com", &password).await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let log: Value = app.get_as(token, "/v1/audit-log?limit=1").await.json().await.unwrap();
    assert_eq!(log["items"][0]["event"], "login_succeeded");
    assert_eq!(log["items"][0]["ip"], "127.0.0.1", "no X-Forwarded-For: the peer");
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app(Options::default()).await;
    let org = app.create_org("Acme").await;
    let (_, password) = app.create_user(org, "ada@example.com", Role::Admin).await;
    // Spoofing a new address on every attempt does not escape the per-IP limit.
    for i in 0..30 {
        let response = app
            .http
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&json!({ "email": format!("u{i}@example.com"), "password": "wrong" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let response = app
        .http
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", "203.0.113.200")
        .json(&json!({ "email": "ada@example.com", "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
}

#[tokio::test]
async fn expired_rows_are_purged_by_one_instance_at_a_time() {
    let app = spawn_app(Options::default()).await;
    let (org, user, _) = app.signed_in(Role::Member).await;
    let admin = app._db.admin().await;
    admin
        .batch_execute(&format!(
            "INSERT INTO rate_limits (bucket, window_start, window_secs, hits, expires_at) VALUES
                ('test:expired', now() - interval '2 hours', 60, 1, now() - interval '1 hour'),
                ('test:live', now(), 60, 1, now() + interval '1 hour');
             INSERT INTO refresh_families (id, org_id, user_id, expires_at) VALUES
                ('00000000-0000-4000-8000-000000000001', '{org}', '{user}', now() - interval '1 minute');
             INSERT INTO refresh_tokens (family_id, org_id, token_hash, expires_at) VALUES
                ('00000000-0000-4000-8000-000000000001', '{org}', sha256('expired'), now() - interval '1 minute');
             INSERT INTO oauth_states (state_hash, org_id, created_by, provider, account, binding_hash, code_verifier, expires_at)
                VALUES (sha256('old'), '{org}', 'user:{user}', 'p', 'a', sha256('b'), 'x', now() - interval '1 minute'),
                       (sha256('new'), '{org}', 'user:{user}', 'p', 'a', sha256('c'), 'x', now() + interval '5 minutes');"
        ))
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let admin = &admin;
        async move { admin.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };

    // While another instance runs a step (holds its lock), this one skips that step only.
    let mut holder = app._db.admin().await;
    let tx = holder.transaction().await.unwrap();
    tx.execute("SELECT pg_advisory_xact_lock(1836020080, 1)", &[]).await.unwrap();
    let round = moat::maintenance::purge_once(&app.state.db).await;
    assert!(round.succeeded(), "{round:?}");
    assert_eq!(count("SELECT count(*) FROM rate_limits WHERE bucket LIKE 'test:%'").await, 2, "skipped, not purged");
    assert_eq!(count("SELECT count(*) FROM oauth_states").await, 1, "the other steps ran");
    tx.rollback().await.unwrap();

    let round = moat::maintenance::purge_once(&app.state.db).await;
    assert!(round.succeeded() && round.total() >= 1, "{round:?}");
    assert_eq!(
        count("SELECT count(*) FROM rate_limits WHERE bucket LIKE 'test:%'").await,
        1,
        "only the live row stays"
    );
    assert_eq!(count("SELECT count(*) FROM refresh_families WHERE expires_at < now()").await, 0);
    assert_eq!(count("SELECT count(*) FROM refresh_tokens WHERE expires_at < now()").await, 0);
    assert!(count("SELECT count(*) FROM refresh_families").await >= 1, "the live session survives");
    assert_eq!(count("SELECT count(*) FROM oauth_states").await, 1, "only the live connect flow stays");
}

/// Concurrent guesses cannot slip past the lockout: each attempt counts from the moment it starts.
#[tokio::test]
async fn concurrent_guesses_get_no_more_tries_than_sequential_ones() {
    let app = spawn_app(Options::default()).await;
    let org = app.create_org("Acme").await;
    app.create_user(org, "ada@example.com", Role::Member).await;
    let guesses = (0..12).map(|i| app.login("ada@example.com", if i % 2 == 0 { "guess-a" } else { "guess-b" }));
    let statuses: Vec<u16> =
        futures_util::future::join_all(guesses).await.iter().map(|r| r.status().as_u16()).collect();
    let tried = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((tried, refused), (5, 7), "{statuses:?}");
}

/// SECURITY DEFINER hardening: a caller's temporary table cannot stand in for
/// the purge functions' tables (that would run the caller's trigger as the owner).
#[tokio::test]
async fn the_purge_functions_cannot_be_hijacked_with_temporary_tables() {
    let db = TestDb::migrated().await;
    let (client, connection) =
        db.url(DbRole::App).parse::<tokio_postgres::Config>().unwrap().connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let tables = ["rate_limits", "refresh_families", "refresh_tokens", "oauth_states", "ws_tokens_used", "audit_log"];
    let mut sql = String::from(
        "CREATE FUNCTION pg_temp.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             EXECUTE 'ALTER TABLE public.audit_log NO FORCE ROW LEVEL SECURITY';
             EXECUTE 'GRANT DELETE ON public.audit_log TO moat_runtime';
             RETURN OLD;
         END $$;",
    );
    for table in tables {
        sql.push_str(&format!(
            "CREATE TEMP TABLE {table} (id text, bucket text, state_hash text, jti text, org_id uuid, sealed_token bytea,
                                        used_at timestamptz, created_at timestamptz, revoked_at timestamptz,
                                        at timestamptz, expires_at timestamptz);
             CREATE TRIGGER escalate BEFORE DELETE OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION pg_temp.escalate();
             GRANT ALL ON {table} TO PUBLIC;
             INSERT INTO {table} VALUES ('x', 'x', 'x', 'x', NULL, 'x', now() - interval '1 day', now() - interval '1 day',
                                         now() - interval '2 days', now() - interval '100 days', now() - interval '1 hour');"
        ));
    }
    client.batch_execute(&sql).await.unwrap();
    for (name, statement) in moat::maintenance::steps() {
        let purged = client.query_one(statement, &[&10i32]).await;
        assert!(purged.is_ok(), "{name}: {purged:?}");
    }
    client.query_one("SELECT moat_purge_expired(10)", &[]).await.unwrap();
    for table in tables {
        let left: i64 = client.query_one(&format!("SELECT count(*) FROM pg_temp.{table}"), &[]).await.unwrap().get(0);
        assert_eq!(left, 1, "the purge touched the caller's temporary table {table}");
    }
    let admin = db.admin().await;
    let row = admin
        .query_one(
            "SELECT relforcerowsecurity, has_table_privilege('moat_runtime', 'public.audit_log', 'DELETE')
             FROM pg_class WHERE oid = 'public.audit_log'::regclass",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, bool>(0), row.get::<_, bool>(1)), (true, false), "the owner's rights were borrowed");
}

/// An app behind a trusted proxy (the test's loopback peer), with `ada@example.com`.
async fn behind_proxy() -> (crate::harness::TestApp, String) {
    let db = TestDb::migrated().await;
    let trusted = Env::production(&db).set("MOAT_TRUSTED_PROXIES", "127.0.0.1/32, ::1");
    let app = spawn_app(Options { env: Some(trusted), db: Some(db), ..Options::default() }).await;
    let org = app.create_org("Acme").await;
    let (_, password) = app.create_user(org, "ada@example.com", Role::Admin).await;
    (app, password)
}

async fn login_from(app: &crate::harness::TestApp, ip: &str, email: &str, password: &str) -> u16 {
    let response = app
        .http
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// Observation 5 of issue 17: 25 failed logins for an account from address A
/// locked its owner out everywhere. Now A is locked out of that account;
/// the owner, from an address with no failures, signs in.
#[tokio::test]
async fn guessing_from_one_address_cannot_lock_the_owner_out_from_another() {
    let (app, password) = behind_proxy().await;
    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(login_from(&app, "198.51.100.66", "ada@example.com", "guess").await);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 20, "{statuses:?}");
    assert_eq!(login_from(&app, "198.51.100.66", "ada@example.com", &password).await, 429, "A stays locked out");
    assert_eq!(login_from(&app, "203.0.113.10", "ada@example.com", &password).await, 200, "the owner, elsewhere");
    // A's lockout is for that account only.
    assert_eq!(login_from(&app, "198.51.100.66", "someone@example.com", "guess").await, 401);
}

/// Observation 6 of issue 17: every guessed email added a row even once the
/// guessing address was over its limit. Now the address is counted first.
#[tokio::test]
async fn an_address_over_its_limit_adds_no_rows_for_the_accounts_it_guesses() {
    let (app, _) = behind_proxy().await;
    let admin = app._db.admin().await;
    let rows = || async { admin.query_one("SELECT count(*) FROM rate_limits", &[]).await.unwrap().get::<_, i64>(0) };
    for i in 0..30 {
        assert_eq!(login_from(&app, "198.51.100.7", &format!("guess{i}@example.com"), "x").await, 401);
    }
    let at_limit = rows().await;
    assert_eq!(at_limit, 1 + 30 * 2, "the address, and a pair and an account bucket per allowed attempt");
    for i in 30..300 {
        assert_eq!(login_from(&app, "198.51.100.7", &format!("guess{i}@example.com"), "x").await, 429);
    }
    assert_eq!(rows().await, at_limit, "refused attempts added rows");
}

/// The per-account ceiling bounds distributed guessing (many addresses, a
/// few tries each), and an address's own lockout does not count against it.
/// Reaching it does refuse the owner too — the documented trade-off.
#[tokio::test]
async fn the_account_ceiling_bounds_distributed_guessing() {
    let (app, password) = behind_proxy().await;
    // One address hammering while locked out: refused by its own lockout, not counted on the account.
    for _ in 0..100 {
        login_from(&app, "198.51.100.1", "ada@example.com", "guess").await;
    }
    assert_eq!(login_from(&app, "203.0.113.1", "ada@example.com", &password).await, 200);
    let admin = app._db.admin().await;
    let ceiling_hits = || async {
        admin
            .query_one("SELECT coalesce(max(hits), 0) FROM rate_limits WHERE bucket LIKE 'login_account:%'", &[])
            .await
            .unwrap()
            .get::<_, i32>(0)
    };
    assert_eq!(ceiling_hits().await, 6, "five guesses and one success counted on the account");
    // Forty more addresses, five guesses each: the account's 200 an hour.
    for batch in 0..8 {
        let guesses = (0..5).flat_map(|a| (0..5).map(move |_| format!("192.0.2.{}", batch * 5 + a + 2)));
        let guesses: Vec<String> = guesses.collect();
        futures_util::future::join_all(guesses.iter().map(|ip| login_from(&app, ip, "ada@example.com", "guess"))).await;
    }
    assert!(ceiling_hits().await >= 200, "{}", ceiling_hits().await);
    assert_eq!(login_from(&app, "203.0.113.99", "ada@example.com", &password).await, 429, "the ceiling holds");
    // The owner trying again and again meanwhile is not counted as failing from
    // their own address: once the ceiling's hour is over, they sign in at once.
    for _ in 0..6 {
        assert_eq!(login_from(&app, "203.0.113.99", "ada@example.com", &password).await, 429);
    }
    admin.batch_execute("DELETE FROM rate_limits WHERE bucket LIKE 'login_account:%'").await.unwrap();
    assert_eq!(login_from(&app, "203.0.113.99", "ada@example.com", &password).await, 200, "locked out of own address");
}
