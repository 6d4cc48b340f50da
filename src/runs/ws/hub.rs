//! Per-instance fan-out of conversation events to local WebSocket subscribers,
//! and live revocation of those subscribers.
//!
//! One LISTEN connection per `serve` instance hears `moat_events` (the
//! conversation id of every committed batch) and `moat_revocations` (the
//! organization of every revoked session, V9). For conversations with local
//! subscribers, the hub reads the new events from the table **once** (one
//! query per organization per wake-up, however many of its conversations
//! woke) and broadcasts them to every subscriber through a bounded channel; a
//! subscriber that falls behind is told so (`Lagged`) and catches up from the
//! table itself. The table stays the truth: these maps only say who is
//! listening here (per-instance state, docs/caches.md).
//!
//! **Revocation.** Every socket registers its session ([`SessionKey`]) with
//! the hub. The statement that reads new events also answers, in the same
//! snapshot, which of the listening sessions are no longer alive
//! (`moat_session_active`): a socket whose session was revoked before an
//! event committed is cancelled before that event is broadcast, so it never
//! receives it. A revocation wakes its organization (every socket's session
//! is checked even with no new event), and so do a LISTEN reconnect, polling
//! while LISTEN is down, and a slow timer ([`RECHECK`]).

use crate::ids::OrgId;
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
use crate::identity::{Caller, PrincipalKind};
use crate::runs::events::{CHANNEL_EVENTS, CHANNEL_REVOCATIONS};

/// Events a subscriber may fall behind by before it must catch up from the table.
const BUFFER: usize = 256;
/// Events read per conversation and wake-up (more → another read); reading
/// more than a subscriber may lag by would only make it catch up from the table.
const READ_LIMIT: i64 = BUFFER as i64;
/// Conversations read by one query (bounds one read to READ_GROUP × READ_LIMIT rows).
const READ_GROUP: usize = 64;
/// How often poll-only mode (`MOAT_LISTEN=off`) reads every live conversation.
const POLL_ONLY: Duration = Duration::from_millis(250);
/// How often every open socket's session is checked whatever NOTIFY said
/// (the fallback; a revocation normally arrives as a notification in milliseconds).
pub const RECHECK: Duration = Duration::from_secs(30);
use crate::runs::store::{MAX_SEQ, READ_EVENTS, READ_NEW_EVENTS};

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
    /// The hub read that produced it (0: a socket's own catch-up). A socket
    /// registered after that read's session check was taken was not checked
    /// by it, so it fills such frames from the table instead ([`Watched::since`]).
    pub read: u64,
}

impl From<&StreamEvent> for Frame {
    fn from(event: &StreamEvent) -> Self {
        let mut value = serde_json::json!({ "type": "event" });
        if let (Some(map), Ok(Value::Object(fields))) = (value.as_object_mut(), serde_json::to_value(event)) {
            map.extend(fields);
        }
        Self { seq: event.seq, text: value.to_string().into(), read: 0 }
    }
}

struct Topic {
    org: OrgId,
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
    /// Check every socket's session of the organization, events or not (a revocation).
    check: bool,
}

/// What a socket's session is, as `moat_session_active` checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub kind: PrincipalKind,
    pub principal: Uuid,
    pub sid: Option<Uuid>,
    pub generation: Option<i32>,
}

impl SessionKey {
    pub fn of(caller: &Caller) -> Self {
        Self { kind: caller.kind, principal: caller.id, sid: caller.session.sid, generation: caller.session.generation }
    }
}

/// One open socket as the revocation check sees it.
struct Watcher {
    conversation: Uuid,
    session: SessionKey,
    revoked: CancellationToken,
}

#[derive(Default)]
struct State {
    topics: HashMap<Uuid, Topic>,
    orgs: HashMap<OrgId, Pending>,
    /// Open sockets by organization, then by a per-instance socket number.
    watchers: HashMap<OrgId, HashMap<u64, Watcher>>,
    next_watcher: u64,
    /// Numbers the hub reads' session checks (see [`Frame::read`]).
    reads: u64,
}

/// A socket's registration with the hub; cancelled when its session is
/// revoked, removed when dropped.
pub struct Watched {
    hub: Hub,
    org: OrgId,
    id: u64,
    pub revoked: CancellationToken,
    /// Hub reads numbered up to this one took their session check before this
    /// socket registered: their frames are not delivered as such (the socket
    /// reads those events itself, with its own check).
    pub since: u64,
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut state = self.hub.state();
        if let Some(watchers) = state.watchers.get_mut(&self.org) {
            watchers.remove(&self.id);
            if watchers.is_empty() {
                state.watchers.remove(&self.org);
            }
        }
    }
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

    /// Reads every live conversation and checks every socket's session.
    fn wake_all(&self) {
        let orgs: HashSet<OrgId> = {
            let state = self.state();
            state.topics.values().map(|t| t.org).chain(state.watchers.keys().copied()).collect()
        };
        for org in orgs {
            self.wake_org(org);
        }
    }

    /// A revocation in `org` (or a re-check): reads its live conversations and
    /// checks every one of its sockets' sessions.
    pub fn wake_org(&self, org: OrgId) {
        let conversations: Vec<Uuid> = {
            let state = self.state();
            state.topics.iter().filter(|(_, t)| t.org == org).map(|(c, _)| *c).collect()
        };
        self.enqueue(org, conversations, true);
    }

    /// Poll-only mode: every live conversation is read, and every session checked, every [`POLL_ONLY`].
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

    /// Registers an open socket's session: its `revoked` token is cancelled as
    /// soon as the hub learns the session ended.
    pub fn watch(&self, org: OrgId, conversation: Uuid, session: SessionKey) -> Watched {
        let revoked = CancellationToken::new();
        let mut state = self.state();
        state.next_watcher += 1;
        let (id, since) = (state.next_watcher, state.reads);
        let watcher = Watcher { conversation, session, revoked: revoked.clone() };
        state.watchers.entry(org).or_default().insert(id, watcher);
        Watched { hub: self.clone(), org, id, revoked, since }
    }

    /// Numbers a read and returns the distinct sessions of `org`'s sockets on
    /// `conversations` (all of them with `None`) that its check covers.
    fn sessions(&self, org: OrgId, conversations: Option<&[Uuid]>) -> (u64, Vec<SessionKey>) {
        let mut state = self.state();
        state.reads += 1;
        let read = state.reads;
        let Some(watchers) = state.watchers.get(&org) else { return (read, Vec::new()) };
        let listening = |w: &&Watcher| conversations.is_none_or(|c| c.contains(&w.conversation));
        let distinct: HashSet<SessionKey> = watchers.values().filter(listening).map(|w| w.session).collect();
        (read, distinct.into_iter().collect())
    }

    /// Cancels every socket of `org` whose session is in `dead`.
    fn revoke(&self, org: OrgId, dead: &[SessionKey]) {
        if dead.is_empty() {
            return;
        }
        let state = self.state();
        for watcher in state.watchers.get(&org).into_iter().flat_map(HashMap::values) {
            if dead.contains(&watcher.session) {
                watcher.revoked.cancel();
            }
        }
    }

    /// Subscribes to live events of `conversation`; returns the receiver and the
    /// sequence number live delivery starts after.
    pub async fn subscribe(
        &self,
        org: OrgId,
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
        state.orgs.retain(|_, pending| pending.reading || !pending.dirty.is_empty() || pending.check);
    }

    /// A wake-up for `conversation`. Its new events are read once and
    /// broadcast. Reads are per organization: every conversation of one
    /// organization woken while a read is in flight is read together by the
    /// next one (one query, whatever the number of conversations);
    /// organizations are read concurrently.
    fn wake(&self, conversation: Uuid) {
        let org = {
            let state = self.state();
            let Some(topic) = state.topics.get(&conversation) else { return };
            if topic.sender.receiver_count() == 0 {
                return;
            }
            topic.org
        };
        self.enqueue(org, [conversation], false);
    }

    /// Marks `conversations` of `org` for reading (and, with `check`, every
    /// session of the organization for checking); starts the organization's
    /// read loop unless one is running.
    fn enqueue(&self, org: OrgId, conversations: impl IntoIterator<Item = Uuid>, check: bool) {
        {
            let mut state = self.state();
            let pending = state.orgs.entry(org).or_default();
            pending.dirty.extend(conversations);
            pending.check |= check;
            if pending.reading || (pending.dirty.is_empty() && !pending.check) {
                return;
            }
            pending.reading = true;
        }
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                let (conversations, check) = {
                    let mut state = hub.state();
                    let Some(pending) = state.orgs.get_mut(&org) else { return };
                    if pending.dirty.is_empty() && !pending.check {
                        pending.reading = false;
                        return;
                    }
                    (std::mem::take(&mut pending.dirty), std::mem::take(&mut pending.check))
                };
                if hub.read_and_broadcast(org, &conversations, check).await.is_err() {
                    // Keep the wake-ups (a run's last event must still arrive) and retry shortly.
                    if let Some(pending) = hub.state().orgs.get_mut(&org) {
                        pending.dirty.extend(conversations);
                        pending.check |= check;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
    }

    /// Reads and broadcasts the new events of `conversations` (of `org`), at
    /// most [`READ_GROUP`] conversations per query so one read stays bounded;
    /// each read also checks the sessions of the sockets it would deliver to,
    /// and those revoked are cancelled before the broadcast. With `check`,
    /// every socket of the organization is checked, events or not.
    async fn read_and_broadcast(&self, org: OrgId, conversations: &HashSet<Uuid>, check: bool) -> Result<(), ()> {
        let listened: Vec<(Uuid, i64)> = {
            let state = self.state();
            conversations.iter().filter_map(|c| state.topics.get(c).map(|t| (*c, t.last_seq))).collect()
        };
        let mut checked_all = false;
        for group in listened.chunks(READ_GROUP) {
            let (ids, after): (Vec<Uuid>, Vec<i64>) = group.iter().copied().unzip();
            let (read, sessions) = if check && !checked_all {
                checked_all = true;
                self.sessions(org, None)
            } else {
                self.sessions(org, Some(&ids))
            };
            match read_new_events(&self.pool, org, &ids, &after, &sessions).await {
                Ok((events, dead)) => {
                    self.revoke(org, &dead);
                    self.broadcast(org, &events, read);
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "reading new events failed; retrying");
                    return Err(());
                }
            }
        }
        if check && !checked_all {
            let (_, sessions) = self.sessions(org, None);
            if !sessions.is_empty() {
                match read_new_events(&self.pool, org, &[], &[], &sessions).await {
                    Ok((_, dead)) => self.revoke(org, &dead),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "checking sessions failed; retrying");
                        return Err(());
                    }
                }
            }
        }
        Ok(())
    }

    fn broadcast(&self, org: OrgId, events: &[(Uuid, StreamEvent)], read: u64) {
        let mut per_conversation: HashMap<Uuid, Vec<Arc<Frame>>> = HashMap::new();
        for (conversation, event) in events {
            let frame = Frame { read, ..Frame::from(event) };
            per_conversation.entry(*conversation).or_default().push(Arc::new(frame));
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
            match listen::listen(&settings, &[CHANNEL_EVENTS, CHANNEL_REVOCATIONS], tx).await {
                Ok(listener) => {
                    tracing::info!("event LISTEN connection up");
                    backoff = Duration::from_millis(200);
                    // Anything committed while the connection was down, revocations included.
                    self.wake_all();
                    let mut closed = listener.closed;
                    let mut prune = tokio::time::interval(Duration::from_secs(30));
                    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            _ = &mut closed => break,
                            _ = prune.tick() => self.prune(),
                            _ = recheck.tick() => self.wake_all(),
                            notification = rx.recv() => match notification {
                                Some((channel, payload)) => {
                                    let Ok(id) = Uuid::parse_str(&payload) else { continue };
                                    if channel == CHANNEL_REVOCATIONS {
                                        self.wake_org(OrgId(id));
                                    } else {
                                        self.wake(id);
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

/// A socket's catch-up: events of `conversation` after `after`, in order (at
/// most `limit`) — or `None` if its `session` is no longer alive (checked in
/// the same snapshot as the read).
pub async fn read_events(
    pool: &Pool,
    org: OrgId,
    conversation: Uuid,
    after: i64,
    limit: i64,
    session: SessionKey,
) -> anyhow::Result<Option<Vec<StreamEvent>>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tenant::set_org(&tx, org).await?;
    let statement = tx.prepare_cached(READ_EVENTS).await?;
    let kind = session.kind.as_str();
    let rows = tx
        .query(
            &statement,
            &[&conversation, &org, &after, &limit, &kind, &session.principal, &session.sid, &session.generation],
        )
        .await?;
    tx.commit().await?;
    if !rows.first().is_some_and(|r| r.get::<_, bool>("alive")) {
        return Ok(None);
    }
    Ok(Some(rows.iter().filter(|r| r.get::<_, Option<i64>>("seq").is_some()).map(event).collect()))
}

/// The new events of several conversations of `org` (each after its own
/// sequence number), and which of `sessions` are no longer alive — one
/// statement, one snapshot.
async fn read_new_events(
    pool: &Pool,
    org: OrgId,
    conversations: &[Uuid],
    after: &[i64],
    sessions: &[SessionKey],
) -> anyhow::Result<(Vec<(Uuid, StreamEvent)>, Vec<SessionKey>)> {
    let kinds: Vec<&str> = sessions.iter().map(|s| s.kind.as_str()).collect();
    let principals: Vec<Uuid> = sessions.iter().map(|s| s.principal).collect();
    let sids: Vec<Option<Uuid>> = sessions.iter().map(|s| s.sid).collect();
    let generations: Vec<Option<i32>> = sessions.iter().map(|s| s.generation).collect();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tenant::set_org(&tx, org).await?;
    let statement = tx.prepare_cached(READ_NEW_EVENTS).await?;
    let rows = tx
        .query(&statement, &[&conversations, &after, &org, &READ_LIMIT, &kinds, &principals, &sids, &generations])
        .await?;
    tx.commit().await?;
    let revoked: Vec<i32> = rows.first().map(|r| r.get("revoked")).unwrap_or_default();
    let dead = revoked
        .iter()
        .filter_map(|i| usize::try_from(*i).ok().and_then(|i| i.checked_sub(1)))
        .filter_map(|i| sessions.get(i).copied())
        .collect();
    let events = rows
        .iter()
        .filter(|r| r.get::<_, Option<i64>>("seq").is_some())
        .filter_map(|r| Some((r.get::<_, Option<Uuid>>("conversation_id")?, event(r))))
        .collect();
    Ok((events, dead))
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

async fn max_seq(pool: &Pool, org: OrgId, conversation: Uuid) -> anyhow::Result<i64> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tenant::set_org(&tx, org).await?;
    let statement = tx.prepare_cached(MAX_SEQ).await?;
    let seq: i64 = tx.query_one(&statement, &[&conversation, &org]).await?.get("seq");
    tx.commit().await?;
    Ok(seq)
}
