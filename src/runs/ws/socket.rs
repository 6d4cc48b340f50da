//! One accepted socket: `ready`, replay after `after`, live events in sequence
//! order with no gap and no duplicate, commands, limits, the close when the
//! session that minted the token expires, and the close (1008 `revoked`) as
//! soon as that session is revoked — before any event committed after the
//! revocation is sent (the hub's reads and this socket's own catch-up reads
//! check the session in the same snapshot as the events).

use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt as _;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::hub::{Frame, SessionKey, Watched, read_events};
use super::{SocketSlot, WsClaims};
use crate::identity::{Caller, Scope};
use crate::runs::RunError;
use crate::runs::RunsState;
use crate::runs::commands;

/// Largest text message accepted (larger → close 1009).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Bound on what may wait in the socket's write buffer.
pub const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// Commands per second a socket may send (more → close 1008).
pub const MAX_COMMANDS_PER_SECOND: u32 = 20;
const PING_EVERY: Duration = Duration::from_secs(20);
/// A send that does not complete within this is a stuck consumer (close 1013).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const REPLAY_PAGE: i64 = 500;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Command {
    Cancel { run_id: Uuid, id: Option<Value> },
    Input { input_id: Uuid, value: Value, id: Option<Value> },
    Ping { id: Option<Value> },
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

fn text(value: &Value) -> Message {
    Message::Text(value.to_string().into())
}

struct Connection {
    state: RunsState,
    ws: WebSocket,
    caller: Caller,
    conversation: Uuid,
    /// The last sequence number sent.
    last: i64,
    /// This socket's registration with the hub (revocation).
    watched: Watched,
}

/// The socket's session was revoked: closed, nothing more is sent.
const REVOKED: (u16, &str) = (1008, "revoked");

/// How long a close frame may take to go out (a peer that stopped reading never takes it).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends a close frame, giving up quickly; the socket is dropped either way.
async fn close_with(ws: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(close(code, reason))).await;
}

impl Connection {
    async fn send(&mut self, message: Message) -> Result<(), ()> {
        match tokio::time::timeout(SEND_TIMEOUT, self.ws.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(()),
            Err(_) => {
                close_with(&mut self.ws, 1013, "too_slow").await;
                Err(())
            }
        }
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        close_with(&mut self.ws, code, reason).await;
    }

    /// Closes the socket if its session was revoked; `Err` then.
    async fn alive(&mut self) -> Result<(), ()> {
        if self.watched.revoked.is_cancelled() {
            self.close(REVOKED.0, REVOKED.1).await;
            return Err(());
        }
        Ok(())
    }

    async fn send_frame(&mut self, frame: &Frame) -> Result<(), ()> {
        self.alive().await?;
        self.send(Message::Text(frame.text.clone())).await?;
        self.last = frame.seq;
        Ok(())
    }

    /// Sends live frames in order (queued, one flush); a gap is filled from the table.
    async fn send_batch(&mut self, frames: &[Arc<Frame>]) -> Result<(), ()> {
        self.alive().await?;
        let mut queued = false;
        for frame in frames {
            if frame.seq <= self.last {
                continue; // already sent (replay overlap)
            }
            // A gap (or a lag), or a read whose session check predates this socket: from the table.
            if frame.seq != self.last + 1 || frame.read <= self.watched.since {
                self.flush(queued).await?;
                return self.catch_up().await;
            }
            match tokio::time::timeout(SEND_TIMEOUT, self.ws.feed(Message::Text(frame.text.clone()))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(()),
                Err(_) => {
                    self.close(1013, "too_slow").await;
                    return Err(());
                }
            }
            queued = true;
            self.last = frame.seq;
        }
        self.flush(queued).await
    }

    async fn flush(&mut self, queued: bool) -> Result<(), ()> {
        if !queued {
            return Ok(());
        }
        match tokio::time::timeout(SEND_TIMEOUT, self.ws.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(()),
            Err(_) => {
                self.close(1013, "too_slow").await;
                Err(())
            }
        }
    }

    /// Sends every stored event after `self.last`, from the table (with its own session check).
    async fn catch_up(&mut self) -> Result<(), ()> {
        let session = SessionKey::of(&self.caller);
        loop {
            let (org, conversation, last) = (self.caller.org, self.conversation, self.last);
            let page = read_events(&self.state.db, org, conversation, last, REPLAY_PAGE, session)
                .await
                .map_err(|e| tracing::warn!(error = %format!("{e:#}"), "stream catch-up failed"))?;
            let Some(page) = page else {
                self.watched.revoked.cancel();
                self.close(REVOKED.0, REVOKED.1).await;
                return Err(());
            };
            let full = page.len() as i64 == REPLAY_PAGE;
            for event in &page {
                self.send_frame(&Frame::from(event)).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn command(&mut self, raw: &str) -> Result<(), ()> {
        self.alive().await?;
        let reply = match serde_json::from_str::<Command>(raw) {
            Err(_) => {
                json!({ "type": "error", "id": Value::Null, "code": "bad_message", "message": "not a command this protocol knows" })
            }
            Ok(Command::Ping { id }) => json!({ "type": "ack", "id": id }),
            Ok(Command::Cancel { run_id, id }) => {
                let result = if self.caller.scopes.contains(Scope::RunsWrite) {
                    commands::cancel(&self.state.db, &self.caller, run_id, Some(self.conversation)).await.map(|_| ())
                } else {
                    Err(RunError::Forbidden)
                };
                reply(id, result)
            }
            Ok(Command::Input { input_id, value, id }) => {
                let result = if self.caller.scopes.contains(Scope::RunsWrite) {
                    commands::answer(&self.state.db, &self.caller, input_id, value, Some(self.conversation)).await
                } else {
                    Err(RunError::Forbidden)
                };
                reply(id, result)
            }
        };
        self.send(text(&reply)).await
    }
}

fn reply(id: Option<Value>, result: Result<(), RunError>) -> Value {
    match result {
        Ok(()) => json!({ "type": "ack", "id": id }),
        Err(e) => {
            let (code, message) = e.code_and_message();
            json!({ "type": "error", "id": id, "code": code, "message": message })
        }
    }
}

/// Runs one accepted socket to its end, and never past the session that
/// minted its token (plus the time a close frame may take): whatever the
/// socket is doing then — replaying, or stuck writing to a peer that stopped
/// reading — it is dropped.
pub(super) async fn serve(
    state: RunsState,
    ws: WebSocket,
    caller: Caller,
    claims: WsClaims,
    after: Option<i64>,
    slot: SocketSlot,
) {
    let session_end = OffsetDateTime::from_unix_timestamp(claims.session_exp).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let remaining = Duration::try_from(session_end - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO);
    let deadline = remaining + SEND_TIMEOUT + CLOSE_TIMEOUT;
    let _ = tokio::time::timeout(deadline, run(state, ws, caller, claims, after, slot)).await;
}

async fn run(state: RunsState, ws: WebSocket, caller: Caller, claims: WsClaims, after: Option<i64>, _slot: SocketSlot) {
    let conversation = claims.conv;
    let session_end = OffsetDateTime::from_unix_timestamp(claims.session_exp).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let until_expiry = (session_end - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
    let expiry = tokio::time::sleep(Duration::try_from(until_expiry).unwrap_or(Duration::ZERO));
    tokio::pin!(expiry);

    // Subscribe before replaying, so nothing committed in between is missed.
    let (mut live, live_from) = match state.hub.subscribe(caller.org, conversation).await {
        Ok(subscription) => subscription,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot subscribe to the conversation");
            let mut ws = ws;
            close_with(&mut ws, 1011, "internal_error").await;
            return;
        }
    };
    // Registered before the first read of the table, so no revocation can fall between.
    let watched = state.hub.watch(caller.org, conversation, SessionKey::of(&caller));
    let mut connection = Connection { state, ws, caller, conversation, last: after.unwrap_or(live_from), watched };
    let ready = json!({
        "type": "ready",
        "conversation_id": conversation,
        "session_expires_at": session_end.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    });
    if connection.send(text(&ready)).await.is_err() || connection.catch_up().await.is_err() {
        return;
    }

    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut awaiting_pong = false;
    let (mut window_start, mut commands_in_window) = (tokio::time::Instant::now(), 0u32);
    let revoked = connection.watched.revoked.clone();
    let shutdown = connection.state.shutdown.clone();
    loop {
        tokio::select! {
            biased;
            () = revoked.cancelled() => {
                connection.close(REVOKED.0, REVOKED.1).await;
                return;
            }
            () = shutdown.cancelled() => {
                connection.close(1001, "shutting_down").await;
                return;
            }
            () = &mut expiry => {
                connection.close(1008, "token_expired").await;
                return;
            }
            _ = ping.tick() => {
                if awaiting_pong {
                    return; // dead peer
                }
                awaiting_pong = true;
                if connection.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            received = live.recv() => match received {
                Ok(event) => {
                    // Take every frame already waiting, then write them with one flush.
                    let mut batch = vec![event];
                    while batch.len() < 64 {
                        match live.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    if connection.send_batch(&batch).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Fell behind the bounded buffer: catch up from the table.
                    if connection.catch_up().await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            message = connection.ws.recv() => match message {
                Some(Ok(Message::Text(raw))) => {
                    if window_start.elapsed() >= Duration::from_secs(1) {
                        (window_start, commands_in_window) = (tokio::time::Instant::now(), 0);
                    }
                    commands_in_window += 1;
                    if commands_in_window > MAX_COMMANDS_PER_SECOND {
                        connection.close(1008, "rate_limited").await;
                        return;
                    }
                    if connection.command(raw.as_str()).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    connection.close(1003, "binary_not_accepted").await;
                    return;
                }
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(Message::Close(_))) | None => return,
                Some(Err(e)) => {
                    let too_big = e.to_string().to_lowercase().contains("too long") || e.to_string().contains("Space limit");
                    if too_big {
                        connection.close(1009, "message_too_big").await;
                    }
                    return;
                }
            },
        }
    }
}
