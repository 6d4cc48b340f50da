//! A WebSocket client for tests that drive real `moat serve` processes.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::http::post_json;
use super::process::Serving;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Mints a ws-token on `serving`, opens the conversation's stream (replaying
/// after `after` when given) and waits for `ready`.
pub async fn open(http: &reqwest::Client, serving: &Serving, token: &str, conv: &str, after: Option<i64>) -> Socket {
    let minted =
        post_json(http, &serving.url(&format!("/v1/conversations/{conv}/ws-token")), Some(token), json!({})).await;
    let ws_token = minted["token"].as_str().expect("a ws-token");
    let after = after.map(|a| format!("&after={a}")).unwrap_or_default();
    let url = format!("ws://{}/v1/conversations/{conv}/stream?token={ws_token}{after}", serving.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("the stream opens");
    assert_eq!(next_json(&mut socket).await["type"], "ready");
    socket
}

/// The next JSON message (pings skipped), within 10 s.
pub async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("a message");
        match message.expect("open").expect("a frame") {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Every message up to and including the event of `kind`.
pub async fn events_until(socket: &mut Socket, kind: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let message = next_json(socket).await;
        let done = message["type"] == "event" && message["kind"] == kind;
        seen.push(message);
        if done {
            return seen;
        }
    }
}
