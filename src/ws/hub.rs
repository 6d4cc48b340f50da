//! Per-instance fan-out of conversation events to local WebSocket subscribers.
//!
//! One LISTEN connection per `serve` instance hears `moat_events` (the
//! conversation id of every committed batch). For conversations with local
//! subscribers, the hub reads the new events from the table **once** (one
//! query per organization per wake-up, however many of its conversations
//! woke) and broadcasts them to every subscriber through a bounded channel; a
//! subscriber that falls behind is told so (`Lagged`) and catches up from the
//! table itself. The table stays the truth: this map only says who is
//! listening here (per-instance state, docs/caches.md).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::database::Listen;
use crate::db::Pool;
use crate::db::listen::{self, Notification};
use crate::db::tenant;
use crate::runs::events::CHANNEL_EVENTS;

/// Events a subscriber may fall behind by before it must catch up from the table.
const BUFFER: usize = 256;
/// Events read per conversation and wake-up (more → another read); reading
/// more than a subscriber may lag by would only make it catch up from the table.
const READ_LIMIT: i64 = BUFFER as i64;
/// Conversations read by one query (bounds one read to READ_GROUP × READ_LIMIT rows).
const READ_GROUP: usize = 64;
/// How often poll-only mode (`MOAT_LISTEN=off`) reads every live conversation.
const POLL_ONLY: Duration = Duration::from_millis(250);
pub const READ_EVENTS: &str = include_str!("../../sql/ws/read_events.sql");
pub const READ_NEW_EVENTS: &str = include_str!("../../sql/ws/read_new_events.sql");
pub const MAX_SEQ: &str = include_str!("../../sql/ws/max_seq.sql");

/// One event as the socket sends it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamEvent {
    pub seq: i64,
    pub run_id: Option<Uuid>,
    pub kind: String,
    pub data: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// An event with its `{"type":"event",…}` frame serialized once, shared by every subscriber.
#[derive(Debug, Clone)]
pub struct Frame {
    pub seq: i64,
    pub text: axum::extract::ws::Utf8Bytes,
}

impl From<&StreamEvent> for Frame {
    fn from(event: &StreamEvent) -> Self {
        let mut value = serde_json::json!({ "type": "event" });
        if let (Some(map), Ok(Value::Object(fields))) = (value.as_object_mut(), serde_json::to_value(event)) {
            map.extend(fields);
        }
        Self { seq: event.seq, text: value.to_string().into() }
    }
}

struct Topic {
    org: Uuid,
    sender: broadcast::Sender<Arc<Frame>>,
    /// The last sequence number broadcast.
    last_seq: i64,
}

/// Wake-ups of one organization's conversations waiting for a read.
#[derive(Default)]
struct Pending {
    /// A read is in flight; it takes `dirty` again when it finishes.
    reading: bool,
    dirty: HashSet<Uuid>,
}

#[derive(Default)]
struct State {
    topics: HashMap<Uuid, Topic>,
    orgs: HashMap<Uuid, Pending>,
}

/// The hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    pool: Pool,
    state: Arc<Mutex<State>>,
}

impl Hub {
    pub fn new(pool: Pool) -> Self {
        Self { pool, state: Arc::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wake_all(&self) {
        let conversations: Vec<Uuid> = self.state().topics.keys().copied().collect();
        for conversation in conversations {
            self.wake(conversation);
        }
    }

    /// Poll-only mode: every live conversation is read every [`POLL_ONLY`].
    async fn poll(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(POLL_ONLY);
        let mut prune = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = prune.tick() => self.prune(),
                _ = tick.tick() => self.wake_all(),
            }
        }
    }

    /// Subscribes to live events of `conversation`; returns the receiver and the
    /// sequence number live delivery starts after.
    pub async fn subscribe(
        &self,
        org: Uuid,
        conversation: Uuid,
    ) -> anyhow::Result<(broadcast::Receiver<Arc<Frame>>, i64)> {
        // A topic nobody listens to is not kept current (wake-ups skip it): start it afresh.
        if let Some(topic) = self.state().topics.get(&conversation)
            && topic.sender.receiver_count() > 0
        {
            return Ok((topic.sender.subscribe(), topic.last_seq));
        }
        let current = max_seq(&self.pool, org, conversation).await?;
        let mut state = self.state();
        // Someone may have started a live topic meanwhile: join it rather than replace it.
        let live = state.topics.get(&conversation).is_some_and(|t| t.sender.receiver_count() > 0);
        if !live {
            state.topics.insert(conversation, Topic { org, sender: broadcast::channel(BUFFER).0, last_seq: current });
        }
        let topic = state.topics.get(&conversation).context("topic just inserted")?;
        Ok((topic.sender.subscribe(), topic.last_seq))
    }

    /// Forgets conversations nobody here listens to any more.
    fn prune(&self) {
        let mut state = self.state();
        state.topics.retain(|_, topic| topic.sender.receiver_count() > 0);
        state.orgs.retain(|_, pending| pending.reading || !pending.dirty.is_empty());
    }

    /// A wake-up for `conversation`. Its new events are read once and
    /// broadcast. Reads are per organization: every conversation of one
    /// organization woken while a read is in flight is read together by the
    /// next one (one query, whatever the number of conversations);
    /// organizations are read concurrently.
    fn wake(&self, conversation: Uuid) {
        let org = {
            let mut state = self.state();
            let Some(topic) = state.topics.get(&conversation) else { return };
            if topic.sender.receiver_count() == 0 {
                return;
            }
            let org = topic.org;
            let pending = state.orgs.entry(org).or_default();
            pending.dirty.insert(conversation);
            if pending.reading {
                return;
            }
            pending.reading = true;
            org
        };
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                let conversations = {
                    let mut state = hub.state();
                    let Some(pending) = state.orgs.get_mut(&org) else { return };
                    if pending.dirty.is_empty() {
                        pending.reading = false;
                        return;
                    }
                    std::mem::take(&mut pending.dirty)
                };
                if hub.read_and_broadcast(org, &conversations).await.is_err() {
                    // Keep the wake-ups (a run's last event must still arrive) and retry shortly.
                    if let Some(pending) = hub.state().orgs.get_mut(&org) {
                        pending.dirty.extend(conversations);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
    }

    /// Reads and broadcasts the new events of `conversations` (of `org`), at
    /// most [`READ_GROUP`] conversations per query so one read stays bounded.
    async fn read_and_broadcast(&self, org: Uuid, conversations: &HashSet<Uuid>) -> Result<(), ()> {
        let listened: Vec<(Uuid, i64)> = {
            let state = self.state();
            conversations.iter().filter_map(|c| state.topics.get(c).map(|t| (*c, t.last_seq))).collect()
        };
        for group in listened.chunks(READ_GROUP) {
            let (ids, after): (Vec<Uuid>, Vec<i64>) = group.iter().copied().unzip();
            match read_new_events(&self.pool, org, &ids, &after).await {
                Ok(events) => self.broadcast(org, &events),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "reading new events failed; retrying");
                    return Err(());
                }
            }
        }
        Ok(())
    }

    fn broadcast(&self, org: Uuid, events: &[(Uuid, StreamEvent)]) {
        let mut per_conversation: HashMap<Uuid, Vec<Arc<Frame>>> = HashMap::new();
        for (conversation, event) in events {
            per_conversation.entry(*conversation).or_default().push(Arc::new(Frame::from(event)));
        }
        let mut state = self.state();
        let mut more = Vec::new();
        for (conversation, frames) in per_conversation {
            if frames.len() as i64 == READ_LIMIT {
                more.push(conversation); // there may be more: read again
            }
            let Some(topic) = state.topics.get_mut(&conversation) else { continue };
            for frame in frames {
                if frame.seq > topic.last_seq {
                    topic.last_seq = frame.seq;
                    let _ = topic.sender.send(frame);
                }
            }
        }
        if let Some(pending) = state.orgs.get_mut(&org) {
            pending.dirty.extend(more);
        }
    }

    /// Keeps the LISTEN connection up and dispatches wake-ups (or, with
    /// `MOAT_LISTEN=off`, polls every live conversation), until `stop`.
    pub async fn run(self, listen: Listen, stop: CancellationToken) {
        if !listen.enabled {
            return self.poll(stop).await;
        }
        let settings = listen.database;
        let mut backoff = Duration::from_millis(200);
        loop {
            let (tx, mut rx) = mpsc::unbounded_channel::<Notification>();
            match listen::listen(&settings, &[CHANNEL_EVENTS], tx).await {
                Ok(listener) => {
                    tracing::info!("event LISTEN connection up");
                    backoff = Duration::from_millis(200);
                    // Anything committed while the connection was down.
                    self.wake_all();
                    let mut closed = listener.closed;
                    let mut prune = tokio::time::interval(Duration::from_secs(30));
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            _ = &mut closed => break,
                            _ = prune.tick() => self.prune(),
                            notification = rx.recv() => match notification {
                                Some((_, payload)) => {
                                    if let Ok(conversation) = Uuid::parse_str(&payload) {
                                        self.wake(conversation);
                                    }
                                }
                                None => break,
                            },
                        }
                    }
                    tracing::warn!("event LISTEN connection lost; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "event LISTEN connection failed; retrying"),
            }
            // While LISTEN is down, live conversations are polled: events keep flowing, only later.
            let retry = tokio::time::Instant::now() + backoff;
            while tokio::time::Instant::now() < retry {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(POLL_ONLY.min(retry - tokio::time::Instant::now())) => {}
                }
                self.wake_all();
                self.prune();
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Events of `conversation` after `after`, in order (at most `limit`).
pub async fn read_events(
    pool: &Pool,
    org: Uuid,
    conversation: Uuid,
    after: i64,
    limit: i64,
) -> anyhow::Result<Vec<StreamEvent>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tenant::set_org(&tx, org).await?;
    let statement = tx.prepare_cached(READ_EVENTS).await?;
    let rows = tx.query(&statement, &[&conversation, &org, &after, &limit]).await?;
    tx.commit().await?;
    Ok(rows.iter().map(event).collect())
}

/// The new events of several conversations of `org` (each after its own sequence number).
async fn read_new_events(
    pool: &Pool,
    org: Uuid,
    conversations: &[Uuid],
    after: &[i64],
) -> anyhow::Result<Vec<(Uuid, StreamEvent)>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tenant::set_org(&tx, org).await?;
    let statement = tx.prepare_cached(READ_NEW_EVENTS).await?;
    let rows = tx.query(&statement, &[&conversations, &after, &org, &READ_LIMIT]).await?;
    tx.commit().await?;
    Ok(rows.iter().map(|r| (r.get("conversation_id"), event(r))).collect())
}

fn event(r: &tokio_postgres::Row) -> StreamEvent {
    StreamEvent {
        seq: r.get("seq"),
        run_id: r.get("run_id"),
        kind: r.get("kind"),
        data: r.get("data"),
        at: r.get("at"),
    }
}

async fn max_seq(pool: &Pool, org: Uuid, conversation: Uuid) -> anyhow::Result<i64> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tenant::set_org(&tx, org).await?;
    let statement = tx.prepare_cached(MAX_SEQ).await?;
    let seq: i64 = tx.query_one(&statement, &[&conversation, &org]).await?.get("seq");
    tx.commit().await?;
    Ok(seq)
}
