//! Tenant isolation, twice: queries filter by organization, and row-level
//! security confines even a query that forgets to. The RLS context is
//! transaction-local and never survives into the next use of a connection.

use axum::Json;
use axum::extract::State;
use moat::AppState;
use moat::db::tenant;
use moat::http::Routes;
use moat::identity::{Access, Caller, Role};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Env, Options, Role as DbRole, TestApp, TestDb, error_code, spawn_app};

/// A handler that forgets its WHERE clause, reached through the normal request path.
async fn unfiltered(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let mut client = state.db.get().await.unwrap();
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await.unwrap();
    let users = tx.query("SELECT org_id FROM users", &[]).await.unwrap();
    let events = tx.query("SELECT org_id FROM audit_log", &[]).await.unwrap();
    let orgs = tx.query("SELECT id FROM orgs", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let ids = |rows: Vec<tokio_postgres::Row>| rows.iter().map(|r| r.get::<_, Option<Uuid>>(0)).collect::<Vec<_>>();
    Json(json!({ "users": ids(users), "events": ids(events), "orgs": ids(orgs) }))
}

/// What the next user of a pooled connection sees, outside any tenant transaction.
async fn leftover(State(state): State<AppState>) -> Json<Value> {
    let client = state.db.get().await.unwrap();
    let row = client
        .query_typed_one(
            "SELECT current_setting('moat.org_id', true) AS org, (SELECT count(*) FROM users) AS users, pg_backend_pid() AS pid",
            &[],
        )
        .await
        .unwrap();
    Json(
        json!({ "org": row.get::<_, Option<String>>("org"), "users": row.get::<_, i64>("users"), "pid": row.get::<_, i32>("pid") }),
    )
}

async fn probe_app() -> TestApp {
    let db = TestDb::migrated().await;
    // One connection: every request below reuses the same PostgreSQL session.
    let env = Env::production(&db).set("MOAT_DATABASE_POOL_SIZE", "1");
    let probes = Routes::new().get("/test/unfiltered", Access::Authenticated, unfiltered).get(
        "/test/leftover",
        Access::Public,
        leftover,
    );
    spawn_app(Options { env: Some(env), db: Some(db), extra: Some(probes), ..Options::default() }).await
}

#[tokio::test]
async fn an_unfiltered_query_sees_only_the_callers_organization() {
    let app = probe_app().await;
    let (a, _, token_a) = app.signed_in(Role::Member).await;
    let (b, _, _) = app.signed_in(Role::Member).await;
    app.create_user(b, "other@example.com", Role::Admin).await;

    let seen: Value = app.get_as(&token_a, "/test/unfiltered").await.json().await.unwrap();
    for table in ["users", "events", "orgs"] {
        let orgs = seen[table].as_array().unwrap();
        assert!(!orgs.is_empty(), "{table}: the probe saw nothing: {seen}");
        assert!(orgs.iter().all(|o| o == &json!(a)), "{table} leaked another organization: {seen}");
    }
    // Control: the rows of organization B do exist.
    let admin = app._db.admin().await;
    let b_users: i64 = admin.query_one("SELECT count(*) FROM users WHERE org_id = $1", &[&b]).await.unwrap().get(0);
    assert_eq!(b_users, 2);
}

#[tokio::test]
async fn the_tenant_setting_never_survives_into_the_next_checkout() {
    let app = probe_app().await;
    let (_, _, token) = app.signed_in(Role::Member).await;
    let before: Value = app.get("/test/leftover").await.json().await.unwrap();
    let seen: Value = app.get_as(&token, "/test/unfiltered").await.json().await.unwrap();
    assert!(!seen["users"].as_array().unwrap().is_empty());
    let after: Value = app.get("/test/leftover").await.json().await.unwrap();
    assert_eq!(before["pid"], after["pid"], "the probe must reuse the same connection");
    assert!(matches!(after["org"].as_str(), None | Some("")), "moat.org_id leaked: {after}");
    assert_eq!(after["users"], 0, "rows visible without a tenant context: {after}");
}

#[tokio::test]
async fn another_organizations_resource_is_not_found_like_a_missing_one() {
    let app = spawn_app(Options::default()).await;
    let (a, own, token_a) = app.signed_in(Role::Admin).await;
    let (b, _, _) = app.signed_in(Role::Admin).await;
    let (theirs, _) = app.create_user(b, "theirs@example.com", Role::Member).await;

    assert_eq!(app.get_as(&token_a, &format!("/v1/users/{own}")).await.status(), 200);
    let mut bodies = Vec::new();
    for path in [format!("/v1/users/{theirs}"), format!("/v1/users/{}", Uuid::new_v4()), "/v1/users/not-an-id".into()] {
        let response = app.get_as(&token_a, &path).await;
        assert_eq!(response.status(), 404, "{path}");
        bodies.push(crate::harness::http::without_request_id(&response.text().await.unwrap()));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");

    let list: Value = app.get_as(&token_a, "/v1/users").await.json().await.unwrap();
    let emails: Vec<&str> = list["items"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(emails.len(), 1, "{list}");
    let log: Value = app.get_as(&token_a, "/v1/audit-log?limit=200").await.json().await.unwrap();
    assert!(!log["items"].as_array().unwrap().is_empty());
    assert!(!log.to_string().contains("theirs@example.com"), "another org's audit events leaked");
    let _ = a;
}

#[tokio::test]
async fn lists_paginate_with_opaque_cursors_and_cap_the_limit() {
    let app = spawn_app(Options::default()).await;
    let (org, _, token) = app.signed_in(Role::Admin).await;
    for i in 0..5 {
        app.create_user(org, &format!("user{i}@example.com"), Role::Member).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/users?limit=2&cursor={c}"),
            None => "/v1/users?limit=2".into(),
        };
        let page: Value = app.get_as(&token, &path).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|u| u["id"].as_str().unwrap().to_owned()));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (6, 3), "{seen:?}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "a row appeared on two pages");

    // More rows than the cap: limit=1000 returns 200 and a cursor.
    let admin = app._db.admin().await;
    admin
        .execute(
            "INSERT INTO audit_log (org_id, event, actor) SELECT $1, 'test_event', 'test' FROM generate_series(1, 250)",
            &[&org],
        )
        .await
        .unwrap();
    let page: Value = app.get_as(&token, "/v1/audit-log?limit=1000").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 200);
    assert!(page["next_cursor"].is_string());
    let default: Value = app.get_as(&token, "/v1/audit-log").await.json().await.unwrap();
    assert_eq!(default["items"].as_array().unwrap().len(), 50);

    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=-5", "invalid_limit"),
        ("limit=ten", "invalid_limit"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("cursor=eyJ0IjoxfQ", "invalid_cursor"),
    ] {
        let response = app.get_as(&token, &format!("/v1/users?{query}")).await;
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(error_code(response).await, code, "{query}");
    }
}

/// The audit log is append-only for the runtime role, and the CLI's events are in it.
#[tokio::test]
async fn the_runtime_role_cannot_rewrite_the_audit_log() {
    let db = TestDb::migrated().await;
    let app_url = db.url(DbRole::App);
    let app = spawn_app(Options { db: Some(db), ..Options::default() }).await;
    let (org, _, token) = app.signed_in(Role::Admin).await;
    let log: Value = app.get_as(&token, "/v1/audit-log").await.json().await.unwrap();
    let events: Vec<&str> = log["items"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    for expected in ["org_created", "user_created", "login_succeeded"] {
        assert!(events.contains(&expected), "{expected} missing from {events:?}");
    }

    let (client, connection) =
        app_url.parse::<tokio_postgres::Config>().unwrap().connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(&format!("SELECT set_config('moat.org_id', '{org}', false)")).await.unwrap();
    let visible: i64 = client.query_one("SELECT count(*) FROM audit_log", &[]).await.unwrap().get(0);
    assert!(visible >= 3, "the runtime role can read its organization's events");
    for sql in ["UPDATE audit_log SET event = 'nothing_happened'", "DELETE FROM audit_log", "TRUNCATE audit_log"] {
        let error = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(error.as_db_error().map(|e| e.code().code()), Some("42501"), "{sql}: {error:?}");
    }
}
