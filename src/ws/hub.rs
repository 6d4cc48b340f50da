//! Per-instance fan-out of conversation events to local WebSocket subscribers.
//!
//! One LISTEN connection per `serve` instance hears `moat_events` (the
//! conversation id of every committed batch). For a conversation with local
//! subscribers, the hub reads the new events from the table **once** and
//! broadcasts them to every subscriber through a bounded channel; a
//! subscriber that falls behind is told so (`Lagged`) and catches up from the
//! table itself. The table stays the truth: this map only says who is
//! listening here (per-instance state, docs/caches.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::listen::{self, Notification};
use crate::db::{DatabaseSettings, tenant};
use crate::runs::events::CHANNEL_EVENTS;

/// Events a subscriber may fall behind by before it must catch up from the table.
const BUFFER: usize = 256;
pub const READ_EVENTS: &str = include_str!("../../sql/ws/read_events.sql");
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
    /// A read of new events is in flight; `dirty`: another wake-up came meanwhile.
    reading: bool,
    dirty: bool,
}

/// The hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    pool: Pool,
    topics: Arc<Mutex<HashMap<Uuid, Topic>>>,
}

impl Hub {
    pub fn new(pool: Pool) -> Self {
        Self { pool, topics: Arc::default() }
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Topic>> {
        self.topics.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Subscribes to live events of `conversation`; returns the receiver and the
    /// sequence number live delivery starts after.
    pub async fn subscribe(
        &self,
        org: Uuid,
        conversation: Uuid,
    ) -> anyhow::Result<(broadcast::Receiver<Arc<Frame>>, i64)> {
        if let Some(topic) = self.topics().get(&conversation) {
            return Ok((topic.sender.subscribe(), topic.last_seq));
        }
        let current = max_seq(&self.pool, org, conversation).await?;
        let mut topics = self.topics();
        let topic = topics.entry(conversation).or_insert_with(|| Topic {
            org,
            sender: broadcast::channel(BUFFER).0,
            last_seq: current,
            reading: false,
            dirty: false,
        });
        Ok((topic.sender.subscribe(), topic.last_seq))
    }

    /// Forgets conversations nobody here listens to any more.
    fn prune(&self) {
        self.topics().retain(|_, topic| topic.sender.receiver_count() > 0);
    }

    /// A wake-up for `conversation`: reads its new events once and broadcasts
    /// them. Conversations are read concurrently; wake-ups for one that is
    /// already being read are coalesced into one more read.
    fn wake(&self, conversation: Uuid) {
        {
            let mut topics = self.topics();
            let Some(topic) = topics.get_mut(&conversation) else { return };
            if topic.sender.receiver_count() == 0 {
                return;
            }
            if topic.reading {
                topic.dirty = true;
                return;
            }
            topic.reading = true;
        }
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                hub.read_and_broadcast(conversation).await;
                let mut topics = hub.topics();
                let Some(topic) = topics.get_mut(&conversation) else { return };
                if topic.dirty {
                    topic.dirty = false;
                } else {
                    topic.reading = false;
                    return;
                }
            }
        });
    }

    async fn read_and_broadcast(&self, conversation: Uuid) {
        let (org, after) = match self.topics().get(&conversation) {
            Some(topic) => (topic.org, topic.last_seq),
            None => return,
        };
        let events = match read_events(&self.pool, org, conversation, after, 1000).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "reading new events failed; subscribers catch up on the next wake-up");
                return;
            }
        };
        let frames: Vec<Arc<Frame>> = events.iter().map(|e| Arc::new(Frame::from(e))).collect();
        let mut topics = self.topics();
        let Some(topic) = topics.get_mut(&conversation) else { return };
        for frame in frames {
            if frame.seq > topic.last_seq {
                topic.last_seq = frame.seq;
                let _ = topic.sender.send(frame);
            }
        }
    }

    /// Keeps the LISTEN connection up and dispatches wake-ups, until `stop`.
    pub async fn run(self, settings: DatabaseSettings, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let (tx, mut rx) = mpsc::unbounded_channel::<Notification>();
            match listen::listen(&settings, &[CHANNEL_EVENTS], tx).await {
                Ok(listener) => {
                    backoff = Duration::from_millis(200);
                    // Anything committed while the connection was down.
                    let conversations: Vec<Uuid> = self.topics().keys().copied().collect();
                    for conversation in conversations {
                        self.wake(conversation);
                    }
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
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
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
    Ok(rows
        .iter()
        .map(|r| StreamEvent {
            seq: r.get("seq"),
            run_id: r.get("run_id"),
            kind: r.get("kind"),
            data: r.get("data"),
            at: r.get("at"),
        })
        .collect())
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
