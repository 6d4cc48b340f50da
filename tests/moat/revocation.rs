//! Revocation is live: disabling a user or client, logging out and rotating a
//! client secret close the affected principal's open WebSockets on every
//! instance within 2 s (close 1008 `revoked`), no event committed after the
//! revocation reaches them, and their access tokens stop working at once.
//! Two production `serve` processes and a runner; the socket is on one, the
//! revocation on the other (or the `moat admin` command line).

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use moat::identity::Role;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::harness::http::{admin_in, get_json, login_at, post_json};
use crate::harness::process::Serving;
use crate::harness::ws::Socket;
use crate::harness::{self, Env, Role as DbRole, TestDb};

struct Site {
    db: TestDb,
    a: Serving,
    b: Serving,
    _runner: Serving,
    http: reqwest::Client,
    org: uuid::Uuid,
    /// An admin's access token (starts the runs the watchers see).
    admin: String,
}

async fn site(listen_a: &str) -> Site {
    let db = TestDb::migrated().await;
    let env = Env::production(&db);
    let a = harness::serve(&env.clone().set("MOAT_LISTEN", listen_a)).await;
    let b = harness::serve(&env).await;
    let runner = harness::runner(
        &Env::default()
            .set("DATABASE_URL", &db.url(DbRole::Runner))
            .set("MOAT_RUNNER_POLL", "1s")
            .set("MOAT_RUN_HEARTBEAT", "1s")
            .set("MOAT_RUN_LEASE", "4s"),
    )
    .await;
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    let token = login_at(&http, &b.url(""), admin.email, &admin.password).await;
    Site { org: admin.org, db, a, b, _runner: runner, http, admin: token }
}

impl Site {
    /// A member of the organization, signed in (through `b`): `(email, access token, refresh cookie)`.
    async fn member(&self) -> (String, String, String) {
        let email = format!("{}@example.com", uuid::Uuid::new_v4());
        let password = moat::admin::generate_password();
        let pool = moat::db::DatabaseSettings::parse(&self.db.url(DbRole::App)).unwrap().pool(1).unwrap();
        moat::admin::create_user(&pool, self.org, &email, Role::Member, password.clone()).await.unwrap();
        let (token, cookie) = self.sign_in(&email, &password).await;
        (email, token, cookie)
    }

    /// A new session of an existing user: `(access token, refresh cookie)`.
    async fn sign_in(&self, email: &str, password: &str) -> (String, String) {
        let response = self
            .http
            .post(self.b.url("/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        let cookie = response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        let token = response.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
        (token, cookie)
    }

    /// A conversation streaming a long demo run, started by the admin on `b`.
    async fn streaming_conversation(&self) -> String {
        let conv = post_json(
            &self.http,
            &self.b.url("/v1/conversations"),
            Some(&self.admin),
            json!({"title": "t", "agent": "demo"}),
        )
        .await;
        let conv = conv["id"].as_str().unwrap().to_owned();
        let run = post_json(
            &self.http,
            &self.b.url(&format!("/v1/conversations/{conv}/runs")),
            Some(&self.admin),
            json!({"input": {"steps": 2000, "delay_ms": 10}}),
        )
        .await;
        assert!(run["id"].is_string(), "{run}");
        conv
    }

    /// The conversation's last committed sequence number (a revocation that committed before this read precedes every later one).
    async fn max_seq(&self, conv: &str) -> i64 {
        let conv: uuid::Uuid = conv.parse().unwrap();
        let row = self
            .db
            .admin()
            .await
            .query_one("SELECT coalesce(max(seq), 0) FROM events WHERE conversation_id = $1", &[&conv])
            .await;
        row.unwrap().get(0)
    }

    /// `moat admin ARGS` as an operator runs it (the runtime role is enough).
    async fn admin_cli(&self, args: &[&str]) -> String {
        let out =
            harness::run(&[&["admin"], args].concat(), &Env::default().set("DATABASE_URL", &self.db.url(DbRole::App)))
                .await;
        assert!(out.status.success(), "{}", out.all_output());
        out.stdout
    }
}

/// Reads the socket until it closes; returns the sequence numbers received and the close frame.
async fn until_closed(socket: &mut Socket, within: Duration) -> (Vec<i64>, Option<(CloseCode, String)>) {
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => panic!("the socket was still open {within:?} later (received up to {:?})", seqs.last()),
            Ok(message) => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "event" {
                    seqs.push(value["seq"].as_i64().unwrap());
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return (seqs, frame.map(|f| (f.code, f.reason.to_string())));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (seqs, None),
        }
    }
}

/// Waits until the socket has received at least one live event (the stream is flowing).
async fn flowing(socket: &mut Socket) -> i64 {
    loop {
        let message = harness::ws::next_json(socket).await;
        if message["type"] == "event" {
            return message["seq"].as_i64().unwrap();
        }
    }
}

/// Asserts the socket is closed `revoked` within 2 s of `revoked_at`, and got
/// no event committed after the revocation (everything after `committed`, the
/// last sequence number committed when the revocation had returned).
async fn assert_revoked(socket: &mut Socket, revoked_at: Instant, committed: i64) {
    let (seqs, close) = until_closed(socket, Duration::from_secs(5)).await;
    let elapsed = revoked_at.elapsed();
    assert!(elapsed < Duration::from_secs(2), "closed {elapsed:?} after the revocation");
    assert_eq!(close, Some((CloseCode::Policy, "revoked".to_owned())));
    let late: Vec<i64> = seqs.iter().copied().filter(|s| *s > committed).collect();
    assert!(late.is_empty(), "events committed after the revocation reached the socket: {late:?}");
}

/// Observation 4 of issue 17: a disabled user's open socket kept streaming
/// until its token's session expired. The socket is on `a`; the disable is
/// `moat admin disable-user`; the run is driven through `b`.
#[tokio::test]
async fn disabling_a_user_closes_their_sockets_on_every_instance_at_once() {
    let site = site("on").await;
    let (email, token, _) = site.member().await;
    let conv = site.streaming_conversation().await;
    let mut on_a = harness::ws::open(&site.http, &site.a, &token, &conv, None).await;
    let mut on_b = harness::ws::open(&site.http, &site.b, &token, &conv, None).await;
    // Another member watching the same conversation is not affected.
    let (_, other, _) = site.member().await;
    let mut bystander = harness::ws::open(&site.http, &site.a, &other, &conv, None).await;
    flowing(&mut on_a).await;
    flowing(&mut on_b).await;

    site.admin_cli(&["disable-user", &email]).await;
    let (revoked_at, committed) = (Instant::now(), site.max_seq(&conv).await);
    assert_revoked(&mut on_a, revoked_at, committed).await;
    assert_revoked(&mut on_b, revoked_at, committed).await;
    // The token is refused everywhere, at once.
    for serving in [&site.a, &site.b] {
        let response = site.http.get(serving.url("/v1/me")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), 401);
    }
    while flowing(&mut bystander).await <= committed {}
}

/// A socket on a quiet conversation (no event to wake the hub) closes too:
/// the revocation's own NOTIFY wakes every instance.
#[tokio::test]
async fn a_revoked_sessions_quiet_socket_closes_too() {
    let site = site("on").await;
    let (email, token, _) = site.member().await;
    let quiet = post_json(
        &site.http,
        &site.b.url("/v1/conversations"),
        Some(&site.admin),
        json!({"title": "q", "agent": "demo"}),
    )
    .await;
    let mut idle = harness::ws::open(&site.http, &site.a, &token, quiet["id"].as_str().unwrap(), None).await;
    site.admin_cli(&["disable-user", &email]).await;
    assert_revoked(&mut idle, Instant::now(), 0).await;
}

/// Logging out on `b` ends that session: its socket on `a` closes, its access
/// token stops working; the same user's other session is untouched.
#[tokio::test]
async fn logging_out_closes_that_sessions_sockets_and_only_those() {
    let site = site("on").await;
    let email = "twice@example.com";
    let password = moat::admin::generate_password();
    let pool = moat::db::DatabaseSettings::parse(&site.db.url(DbRole::App)).unwrap().pool(1).unwrap();
    moat::admin::create_user(&pool, site.org, email, Role::Member, password.clone()).await.unwrap();
    let (token, cookie) = site.sign_in(email, &password).await;
    let (other_token, _) = site.sign_in(email, &password).await; // another device
    let conv = site.streaming_conversation().await;
    let mut socket = harness::ws::open(&site.http, &site.a, &token, &conv, None).await;
    let mut other = harness::ws::open(&site.http, &site.a, &other_token, &conv, None).await;
    flowing(&mut socket).await;

    let logout = site.http.post(site.b.url("/v1/auth/logout")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(logout.status(), 204);
    let (revoked_at, committed) = (Instant::now(), site.max_seq(&conv).await);
    assert_revoked(&mut socket, revoked_at, committed).await;
    let response = site.http.get(site.a.url("/v1/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 401, "the logged-out session's access token still works");
    // The other session goes on: its socket streams past the logout, its token works.
    while flowing(&mut other).await <= committed {}
    assert_eq!(get_json(&site.http, &site.a.url("/v1/me"), &other_token).await["kind"], "user");
}

/// A client's secret rotated (or the client disabled) on the command line:
/// sockets opened with tokens minted under the old secret close, and those
/// tokens stop working; a token minted after the rotation works.
#[tokio::test]
async fn rotating_or_disabling_a_client_closes_its_sockets() {
    let site = site("on").await;
    let out = site
        .admin_cli(&[
            "create-client",
            "--org",
            &site.org.to_string(),
            "--name",
            "bot",
            "--scopes",
            "conversations:read",
        ])
        .await;
    let value = |key: &str| out.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap().to_owned();
    let (id, secret) = (value("client_id"), value("client_secret"));
    let token_for = |secret: String| {
        let (http, url, id) = (site.http.clone(), site.b.url("/v1/oauth/token"), id.clone());
        async move {
            let form = [("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &secret)];
            let body: Value = http.post(url).form(&form).send().await.unwrap().json().await.unwrap();
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    let old = token_for(secret).await;
    let conv = site.streaming_conversation().await;
    let mut socket = harness::ws::open(&site.http, &site.a, &old, &conv, None).await;
    flowing(&mut socket).await;

    let rotated = site.admin_cli(&["rotate-client-secret", &id]).await;
    let (revoked_at, committed) = (Instant::now(), site.max_seq(&conv).await);
    assert_revoked(&mut socket, revoked_at, committed).await;
    let response = site.http.get(site.a.url("/v1/me")).bearer_auth(&old).send().await.unwrap();
    assert_eq!(response.status(), 401, "a token minted with the old secret still works");

    let new_secret = rotated.lines().find_map(|l| l.strip_prefix("client_secret=")).unwrap().to_owned();
    let new = token_for(new_secret).await;
    assert_eq!(site.http.get(site.a.url("/v1/me")).bearer_auth(&new).send().await.unwrap().status(), 200);
    let mut socket = harness::ws::open(&site.http, &site.a, &new, &conv, None).await;
    flowing(&mut socket).await;
    site.admin_cli(&["disable-client", &id]).await;
    let (revoked_at, committed) = (Instant::now(), site.max_seq(&conv).await);
    assert_revoked(&mut socket, revoked_at, committed).await;
}

/// Without LISTEN (`MOAT_LISTEN=off` on the socket's instance) the hub's poll
/// still closes a revoked session's socket within 2 s.
#[tokio::test]
async fn revocation_reaches_a_polling_instance_too() {
    let site = site("off").await;
    let (email, token, _) = site.member().await;
    let conv = site.streaming_conversation().await;
    let mut socket = harness::ws::open(&site.http, &site.a, &token, &conv, None).await;
    flowing(&mut socket).await;
    site.admin_cli(&["disable-user", &email]).await;
    let (revoked_at, committed) = (Instant::now(), site.max_seq(&conv).await);
    assert_revoked(&mut socket, revoked_at, committed).await;
}
