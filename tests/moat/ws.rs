//! The WebSocket edge with a real WebSocket client: every refusal is a plain
//! HTTP error before any upgrade; accepted sockets get `ready`, then events in
//! order; commands take the durable path; sessions end the socket.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use moat::identity::{PrincipalKind, Role, Scope};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use uuid::Uuid;

use crate::harness::{self, Env, Options, Role as DbRole, TestApp, TestDb, spawn_app};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct World {
    app: TestApp,
    token: String,
    runner_env: Env,
    /// The API's environment (same keys), for a second instance.
    env: Env,
}

async fn world() -> World {
    let db = TestDb::migrated().await;
    let runner_env = Env::default()
        .set("DATABASE_URL", &db.url(DbRole::Runner))
        .set("MOAT_RUN_LEASE", "2s")
        .set("MOAT_RUN_HEARTBEAT", "500ms")
        .set("MOAT_RUNNER_POLL", "1s");
    let env = Env::production(&db);
    let app = spawn_app(Options { env: Some(env.clone()), db: Some(db), ..Options::default() }).await;
    let (_, _, token) = app.signed_in(Role::Admin).await;
    World { app, token, runner_env, env }
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    app.http.post(app.url(path)).bearer_auth(token).json(&body).send().await.unwrap().json().await.unwrap()
}

async fn conversation(w: &World) -> String {
    post(&w.app, &w.token, "/v1/conversations", json!({"title": "Chat", "agent": "demo"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn ws_token(app: &TestApp, token: &str, conversation: &str) -> String {
    post(app, token, &format!("/v1/conversations/{conversation}/ws-token"), json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn stream_url(app: &TestApp, conversation: &str, query: &str) -> String {
    format!("ws://{}/v1/conversations/{conversation}/stream?{query}", app.addr)
}

/// Connects; `Err(status)` when refused before the upgrade.
async fn connect(url: &str, origin: Option<&str>) -> Result<Socket, u16> {
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(WsError::Http(response)) => {
            let body = response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            assert!(!body.contains("\"type\""), "a refusal leaked a stream message: {body}");
            Err(response.status().as_u16())
        }
        Err(e) => panic!("unexpected WebSocket error: {e}"),
    }
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message")
            .expect("open")
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Reads events until one of `kind` arrives; returns all events read.
async fn events_until(socket: &mut Socket, kind: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let message = next_json(socket).await;
        if message["type"] == "event" {
            let done = message["kind"] == kind;
            events.push(message);
            if done {
                return events;
            }
        }
    }
}

/// The caller's user id and organization.
async fn get_me(app: &TestApp, token: &str) -> (Uuid, Uuid) {
    let me: Value = app.http.get(app.url("/v1/me")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    (me["id"].as_str().unwrap().parse().unwrap(), me["org"].as_str().unwrap().parse().unwrap())
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn every_refusal_is_an_http_error_before_any_upgrade() {
    let w = world().await;
    let conv = conversation(&w).await;
    let other_conv = conversation(&w).await;
    let good = ws_token(&w.app, &w.token, &conv).await;
    let (_, _, stranger) = w.app.signed_in(Role::Admin).await;
    let foreign_conv = post(&w.app, &stranger, "/v1/conversations", json!({"title": "Theirs", "agent": "demo"})).await
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let foreign_token = ws_token(&w.app, &stranger, &foreign_conv).await;
    let forged = format!("{}x", &good[..good.len() - 1]);
    // Complete, correctly signed ws-token claims for our user, varied one field at a time.
    let me = get_me(&w.app, &w.token).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let signed = |edit: &dyn Fn(&mut moat::runs::ws::WsClaims)| {
        let mut claims = moat::runs::ws::WsClaims {
            iss: w.app.state.tokens.issuer().to_owned(),
            aud: "moat:ws".into(),
            sub: me.0,
            org: me.1,
            conv: conv.parse().unwrap(),
            scope: "conversations:read".into(),
            iat: now,
            exp: now + 30,
            jti: Uuid::new_v4(),
            kind: PrincipalKind::User,
            session_exp: now + 600,
            sid: None,
            secret_gen: None,
        };
        edit(&mut claims);
        w.app.state.tokens.sign(&claims).unwrap()
    };
    // The control: these claims, unedited, connect (so each refusal below is its one edit's doing).
    let control = signed(&|_| {});
    let mut socket = connect(&stream_url(&w.app, &conv, &format!("token={control}")), None).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "ready");
    drop(socket);
    let wrong_audience = signed(&|c| c.aud = "moat:api".into());
    let expired = signed(&|c| (c.iat, c.exp) = (0, 1));
    let session_over = signed(&|c| c.session_exp = now - 1);
    // Our org in the token, another org's conversation in `conv` and the path:
    // only the database's ownership check can refuse this one.
    let foreign_claimed = signed(&|c| c.conv = foreign_conv.parse().unwrap());
    // An access token is not a ws-token either.
    let access_as_ws = w.token.clone();
    let cases = [
        ("no token", stream_url(&w.app, &conv, ""), None, 401),
        ("forged signature", stream_url(&w.app, &conv, &format!("token={forged}")), None, 401),
        ("wrong audience", stream_url(&w.app, &conv, &format!("token={wrong_audience}")), None, 401),
        ("an access token", stream_url(&w.app, &conv, &format!("token={access_as_ws}")), None, 401),
        ("expired", stream_url(&w.app, &conv, &format!("token={expired}")), None, 401),
        ("session over", stream_url(&w.app, &conv, &format!("token={session_over}")), None, 401),
        (
            "conv claims another org's conversation",
            stream_url(&w.app, &foreign_conv, &format!("token={foreign_claimed}")),
            None,
            404,
        ),
        ("malformed after", stream_url(&w.app, &conv, &format!("token={good}&after=x")), None, 400),
        ("negative after", stream_url(&w.app, &conv, &format!("token={good}&after=-1")), None, 400),
        ("token for another conversation", stream_url(&w.app, &other_conv, &format!("token={good}")), None, 404),
        ("another org's conversation", stream_url(&w.app, &foreign_conv, &format!("token={good}")), None, 404),
        ("bad origin", stream_url(&w.app, &conv, &format!("token={good}")), Some("https://evil.example"), 403),
    ];
    for (label, url, origin, status) in cases {
        assert_eq!(connect(&url, origin).await.err(), Some(status), "{label}");
    }
    // A token for someone else's conversation, used on ours: still not ours.
    assert_eq!(connect(&stream_url(&w.app, &conv, &format!("token={foreign_token}")), None).await.err(), Some(404));
    // The good token still works once (none of the refusals consumed it) …
    let mut socket =
        connect(&stream_url(&w.app, &conv, &format!("token={good}")), Some("https://moat.example.com")).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "ready");
    // … and only once: a copied URL is worthless.
    assert_eq!(connect(&stream_url(&w.app, &conv, &format!("token={good}")), None).await.err(), Some(401));
}

#[tokio::test]
async fn a_socket_streams_a_run_and_cancels_through_postgres() {
    let w = world().await;
    let runner = harness::runner(&w.runner_env).await;
    // Two real `moat serve` processes on the same database (same keys): the actor
    // connects to one, the watcher to the other.
    let (a, b) = (harness::serve(&w.env).await, harness::serve(&w.env).await);
    let conv = conversation(&w).await;
    let http = reqwest::Client::new();
    let mint = |base: String| {
        let (http, token, conv) = (http.clone(), w.token.clone(), conv.clone());
        async move {
            let body = harness::http::post_json(
                &http,
                &format!("{base}/v1/conversations/{conv}/ws-token"),
                Some(&token),
                json!({}),
            )
            .await;
            body["token"].as_str().unwrap().to_owned()
        }
    };
    let url =
        |addr: std::net::SocketAddr, token: String| format!("ws://{addr}/v1/conversations/{conv}/stream?token={token}");
    let mut actor = connect(&url(a.addr, mint(a.url("")).await), None).await.unwrap();
    let mut watcher = connect(&url(b.addr, mint(b.url("")).await), None).await.unwrap();
    assert_eq!(next_json(&mut actor).await["type"], "ready");
    assert_eq!(next_json(&mut watcher).await["type"], "ready");
    let run = harness::http::post_json(
        &http,
        &a.url(&format!("/v1/conversations/{conv}/runs")),
        Some(&w.token),
        json!({"input": {"steps": 10000, "delay_ms": 20}}),
    )
    .await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let started = events_until(&mut actor, "message.delta").await;
    assert_eq!(started[0]["kind"], "run.queued");
    actor.send(Message::Text(json!({"type": "cancel", "run_id": run_id, "id": 7}).to_string().into())).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let message = next_json(&mut actor).await;
        if message["type"] == "ack" {
            assert_eq!(message["id"], 7);
            break;
        }
        seen.push(message);
    }
    let watched = events_until(&mut watcher, "run.cancelled").await;
    let all = seqs(&watched);
    assert_eq!(all, (1..=all.len() as i64).collect::<Vec<_>>(), "the watcher saw a gap or a duplicate");
    // A malformed message gets an error; the connection stays.
    actor.send(Message::Text("{\"type\":\"launch\"}".into())).await.unwrap();
    loop {
        let message = next_json(&mut actor).await;
        if message["type"] == "error" {
            assert_eq!(message["code"], "bad_message");
            break;
        }
    }
    // A finished run cannot be cancelled again.
    let command =
        |run: &str, id: i64| Message::Text(json!({"type": "cancel", "run_id": run, "id": id}).to_string().into());
    actor.send(command(&run_id, 8)).await.unwrap();
    let refused = reply(&mut actor).await;
    assert_eq!((refused["id"].as_i64(), refused["code"].as_str()), (Some(8), Some("run_finished")), "{refused}");
    // Cancelling a run of another conversation from this socket is refused.
    let elsewhere = conversation(&w).await;
    let other_run = post(
        &w.app,
        &w.token,
        &format!("/v1/conversations/{elsewhere}/runs"),
        json!({"input": {"steps": 10000, "delay_ms": 20}}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    actor.send(command(&other_run, 9)).await.unwrap();
    let refused = reply(&mut actor).await;
    assert_eq!(
        (refused["id"].as_i64(), refused["code"].as_str()),
        (Some(9), Some("run_not_in_conversation")),
        "{refused}"
    );
    drop(runner);
}

#[tokio::test]
async fn the_socket_closes_when_the_session_expires_and_a_reconnect_misses_nothing() {
    let w = world().await;
    let runner = harness::runner(&w.runner_env).await;
    let conv = conversation(&w).await;
    let me: Value = w.app.get_as(&w.token, "/v1/me").await.json().await.unwrap();
    let (user, org) = (me["id"].as_str().unwrap().parse().unwrap(), me["org"].as_str().unwrap().parse().unwrap());
    let scopes = [Scope::ConversationsRead, Scope::RunsWrite].into_iter().collect();
    let short = w
        .app
        .state
        .tokens
        .mint_access(Duration::from_secs(2), PrincipalKind::User, user, org, &scopes, Default::default())
        .unwrap()
        .access_token;
    let mut socket =
        connect(&stream_url(&w.app, &conv, &format!("token={}", ws_token(&w.app, &short, &conv).await)), None)
            .await
            .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "ready");
    post(&w.app, &w.token, &format!("/v1/conversations/{conv}/runs"), json!({"input": {"steps": 60, "delay_ms": 50}}))
        .await;
    let mut received = Vec::new();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap() {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                if message["type"] == "event" {
                    received.push(message);
                }
            }
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    let close = close.expect("a close frame");
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::Policy, "token_expired"));
    // Reconnect with a fresh token from after the last seen event: every event exactly once.
    let last = received.last().map_or(0, |e| e["seq"].as_i64().unwrap());
    let url = stream_url(&w.app, &conv, &format!("token={}&after={last}", ws_token(&w.app, &w.token, &conv).await));
    let mut again = connect(&url, None).await.unwrap();
    assert_eq!(next_json(&mut again).await["type"], "ready");
    received.extend(events_until(&mut again, "run.succeeded").await);
    let all = seqs(&received);
    assert_eq!(all, (1..=all.len() as i64).collect::<Vec<_>>(), "a gap or a duplicate across the reconnect");
    drop(runner);
}

#[tokio::test]
async fn oversized_binary_and_flooding_sockets_are_closed_with_their_codes() {
    let w = world().await;
    let conv = conversation(&w).await;
    for (message, code) in [
        (Message::Text("x".repeat(70 * 1024).into()), CloseCode::Size),
        (Message::Binary(vec![1, 2, 3].into()), CloseCode::Unsupported),
    ] {
        let mut socket =
            connect(&stream_url(&w.app, &conv, &format!("token={}", ws_token(&w.app, &w.token, &conv).await)), None)
                .await
                .unwrap();
        assert_eq!(next_json(&mut socket).await["type"], "ready");
        socket.send(message).await.unwrap();
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap() {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        };
        assert_eq!(close.map(|f| f.code), Some(code));
    }
    let mut socket =
        connect(&stream_url(&w.app, &conv, &format!("token={}", ws_token(&w.app, &w.token, &conv).await)), None)
            .await
            .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "ready");
    for i in 0..30 {
        if socket.send(Message::Text(json!({"type": "ping", "id": i}).to_string().into())).await.is_err() {
            break;
        }
    }
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Policy));
}

async fn open(w: &World, conv: &str) -> Socket {
    let mut socket =
        connect(&stream_url(&w.app, conv, &format!("token={}", ws_token(&w.app, &w.token, conv).await)), None)
            .await
            .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "ready");
    socket
}

/// The next `ack` or `error` on a socket.
async fn reply(socket: &mut Socket) -> Value {
    loop {
        let message = next_json(socket).await;
        if message["type"] == "ack" || message["type"] == "error" {
            return message;
        }
    }
}

/// Two sockets racing to answer one question: one ack, one `input_already_answered`.
#[tokio::test]
async fn two_sockets_racing_to_answer_one_question() {
    let w = world().await;
    let runner = harness::runner(&w.runner_env).await;
    let conv = conversation(&w).await;
    let (mut a, mut b) = (open(&w, &conv).await, open(&w, &conv).await);
    post(
        &w.app,
        &w.token,
        &format!("/v1/conversations/{conv}/runs"),
        json!({"input": {"steps": 1, "delay_ms": 1, "ask": "Go?"}}),
    )
    .await;
    let asked = events_until(&mut a, "input.requested").await;
    let input = asked.last().unwrap()["data"]["input_id"].as_str().unwrap().to_owned();
    let answer = |value: &str| {
        Message::Text(json!({"type": "input", "input_id": input, "value": value, "id": value}).to_string().into())
    };
    let (ra, rb) = tokio::join!(a.send(answer("from a")), b.send(answer("from b")));
    ra.unwrap();
    rb.unwrap();
    let (x, y) = (reply(&mut a).await, reply(&mut b).await);
    let mut kinds = [x["type"].as_str().unwrap().to_owned(), y["type"].as_str().unwrap().to_owned()];
    kinds.sort();
    assert_eq!(kinds, ["ack", "error"], "{x} {y}");
    let error = if x["type"] == "error" { x } else { y };
    assert_eq!(error["code"], "input_already_answered");
    drop(runner);
}

/// Opens a stream over a TCP socket with a tiny receive buffer, so a client
/// that stops reading pushes back on the server after kilobytes, not megabytes.
async fn open_small_buffer(w: &World, conv: &str) -> Socket {
    let url = stream_url(&w.app, conv, &format!("token={}", ws_token(&w.app, &w.token, conv).await));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(w.app.addr).await.unwrap();
    let (mut socket, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "ready");
    socket
}

/// A client that does not read does not hold up one that does, and is itself
/// dropped (1013 `too_slow`) instead of holding memory and its slot forever.
#[tokio::test]
async fn a_slow_consumer_does_not_stall_a_fast_one_and_is_dropped() {
    let w = world().await;
    let runner = harness::runner(
        &w.runner_env.clone().set("MOAT_RUN_MAX_EVENTS", "100000").set("MOAT_RUN_MAX_OUTPUT_BYTES", "100000000"),
    )
    .await;
    let conv = conversation(&w).await;
    let mut slow = open_small_buffer(&w, &conv).await; // not read until the end
    let mut fast = open(&w, &conv).await;
    // ~12 MB of frames: far more than the kernel buffers between a stalled client and the server.
    post(
        &w.app,
        &w.token,
        &format!("/v1/conversations/{conv}/runs"),
        json!({"input": {"steps": 3000, "delay_ms": 0, "text": "x".repeat(4000)}}),
    )
    .await;
    let events = tokio::time::timeout(Duration::from_secs(60), events_until(&mut fast, "run.succeeded"))
        .await
        .expect("the fast consumer was stalled");
    let all = seqs(&events);
    assert_eq!(all, (1..=all.len() as i64).collect::<Vec<_>>());
    // The server gives up on the slow one within its send timeout (10 s): reading
    // now drains what was buffered and then ends, short of the last event.
    tokio::time::sleep(Duration::from_secs(12)).await;
    // Its task has ended and released its slot (without the client reading a byte):
    // beside `fast`, 15 more sockets fit under the per-principal cap.
    let mut more = Vec::new();
    while more.len() < moat::runs::ws::MAX_SOCKETS_PER_PRINCIPAL {
        let url = stream_url(&w.app, &conv, &format!("token={}", ws_token(&w.app, &w.token, &conv).await));
        match connect(&url, None).await {
            Ok(socket) => more.push(socket),
            Err(status) => {
                assert_eq!(status, 429);
                break;
            }
        }
    }
    assert_eq!(more.len(), moat::runs::ws::MAX_SOCKETS_PER_PRINCIPAL - 1, "the slow socket still holds its slot");
    drop(more);
    let mut last_seq = 0;
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    last_seq = message["seq"].as_i64().unwrap_or(last_seq);
                }
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the slow consumer's socket was never dropped");
    assert!(last_seq < *all.last().unwrap(), "the slow consumer got everything: it was never dropped");
    assert!(matches!(ended, None | Some(1013)), "closed with {ended:?}");
    drop(runner);
}

#[tokio::test]
async fn the_token_can_ride_as_a_subprotocol_and_sockets_are_capped_per_principal() {
    let w = world().await;
    let conv = conversation(&w).await;
    let token = ws_token(&w.app, &w.token, &conv).await;
    let mut request = stream_url(&w.app, &conv, "").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", format!("moat.v1, moat.token.{token}").parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), "moat.v1");
    assert_eq!(next_json(&mut socket).await["type"], "ready");
    // A browser offering `moat.v1` with the token in the query: the server must select it.
    let query = format!("token={}", ws_token(&w.app, &w.token, &conv).await);
    let mut request = stream_url(&w.app, &conv, &query).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "moat.v1".parse().unwrap());
    let (mut browser_like, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), "moat.v1");
    assert_eq!(next_json(&mut browser_like).await["type"], "ready");
    let mut sockets = vec![socket, browser_like];
    for _ in 2..moat::runs::ws::MAX_SOCKETS_PER_PRINCIPAL {
        sockets.push(open(&w, &conv).await);
    }
    let refused =
        connect(&stream_url(&w.app, &conv, &format!("token={}", ws_token(&w.app, &w.token, &conv).await)), None).await;
    assert_eq!(refused.err(), Some(429));
}

/// Development mode relaxes startup checks, never stream authentication.
#[tokio::test]
async fn development_mode_refuses_a_tokenless_stream_too() {
    let db = TestDb::migrated().await;
    let env = Env::production(&db).set("MOAT_ENV", "development");
    let app = spawn_app(Options { env: Some(env), db: Some(db), ..Options::default() }).await;
    let (_, _, token) = app.signed_in(Role::Admin).await;
    let conv = post(&app, &token, "/v1/conversations", json!({"title": "t", "agent": "demo"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(connect(&stream_url(&app, &conv, ""), None).await.err(), Some(401));
}

/// The hub reads the conversations of one organization together: several
/// conversations streaming at once (and another organization's alongside)
/// each get exactly their own events, in order, none of another's.
#[tokio::test]
async fn concurrent_conversations_each_get_exactly_their_own_events() {
    let w = world().await;
    let runner = harness::runner(&w.runner_env.clone().set("MOAT_RUN_MAX_EVENTS", "100000")).await;
    let (_, _, stranger) = w.app.signed_in(Role::Admin).await;
    let stranger_conv = post(&w.app, &stranger, "/v1/conversations", json!({"title": "Theirs", "agent": "demo"})).await
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut streams = Vec::new();
    for i in 0..4 {
        let conv = conversation(&w).await;
        let socket = open(&w, &conv).await;
        streams.push((w.token.clone(), conv, socket, format!("ours-{i}")));
    }
    let token = ws_token(&w.app, &stranger, &stranger_conv).await;
    let mut socket = connect(&stream_url(&w.app, &stranger_conv, &format!("token={token}")), None).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "ready");
    streams.push((stranger.clone(), stranger_conv, socket, "theirs".into()));
    for (token, conv, _, text) in &streams {
        post(
            &w.app,
            token,
            &format!("/v1/conversations/{conv}/runs"),
            json!({"input": {"steps": 300, "delay_ms": 0, "burst": 2, "text": text}}),
        )
        .await;
    }
    for (_, conv, mut socket, text) in streams {
        let events = tokio::time::timeout(Duration::from_secs(30), events_until(&mut socket, "run.succeeded"))
            .await
            .expect("every stream completes");
        assert_eq!(seqs(&events), (1..=603).collect::<Vec<_>>(), "conversation {conv}");
        for event in events.iter().filter(|e| e["kind"] == "message.delta") {
            assert!(event["data"]["text"].as_str().unwrap().starts_with(&format!("{text} ")), "{event}");
        }
    }
    drop(runner);
}

/// A socket opened without `after` starts at the present, even when this
/// instance kept an idle topic for the conversation from an earlier socket.
#[tokio::test]
async fn a_socket_without_after_gets_no_history_even_after_an_earlier_socket() {
    let w = world().await;
    let runner = harness::runner(&w.runner_env).await;
    let conv = conversation(&w).await;
    drop(open(&w, &conv).await);
    let first = post(
        &w.app,
        &w.token,
        &format!("/v1/conversations/{conv}/runs"),
        json!({"input": {"steps": 3, "delay_ms": 0}}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    harness::http::wait_run_status(&w.app.http, &w.app.url(""), &w.token, &first, "succeeded").await;
    let mut fresh = open(&w, &conv).await;
    post(&w.app, &w.token, &format!("/v1/conversations/{conv}/runs"), json!({"input": {"steps": 2, "delay_ms": 0}}))
        .await;
    let events = events_until(&mut fresh, "run.succeeded").await;
    assert!(events.iter().all(|e| e["run_id"] != first.as_str()), "history was replayed to a socket without after");
    assert_eq!(events.len(), 5, "{events:?}");
    drop(runner);
}

/// The one shutdown signal reaches WebSocket tasks: graceful shutdown closes
/// open sockets with 1001 `shutting_down` (a client reconnects to another
/// instance) instead of leaving them to be cut without a close frame when
/// the process exits.
#[tokio::test]
async fn shutdown_closes_open_sockets_with_going_away() {
    let w = world().await;
    let conv = conversation(&w).await;
    let mut socket = open(&w, &conv).await;
    // An acknowledged ping: the socket is past its catch-up, in its main loop.
    socket.send(Message::Text(json!({"type": "ping", "id": 1}).to_string().into())).await.unwrap();
    assert_eq!(reply(&mut socket).await["type"], "ack");
    let stopping = tokio::spawn(w.app.stop());
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("closed within 5 s") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::Away, "shutting_down"));
    stopping.await.unwrap().unwrap();
}
