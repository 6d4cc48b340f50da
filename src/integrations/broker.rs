//! The credential broker: an integration's access token, valid for at least
//! `MOAT_TOKEN_MIN_VALIDITY`, refreshed **exactly once** however many callers
//! on however many instances ask at the same moment.
//!
//! 1. Fast path: one statement, no transaction, no lock — if the stored token
//!    is valid long enough, return it.
//! 2. Otherwise, in a transaction: lock, statement and idle-in-transaction
//!    timeouts, `pg_advisory_xact_lock(lock_key(id))`, then read the row
//!    **again**: if another caller refreshed while this one waited, return that.
//! 3. Else call the provider (deadline shorter than the lock timeout), store
//!    the new access and refresh tokens (keeping the old refresh token only if
//!    the provider sent none), commit — which releases the lock.
//!
//! The PostgreSQL lock is what makes it exactly once across instances. Two
//! per-instance measures keep it cheap: callers of one instance queue for an
//! integration in memory (holding no database connection) so at most one per
//! instance waits in PostgreSQL, and a semaphore bounds how many refreshes
//! (each holding a connection through its provider call) run at once. The
//! refresh itself runs detached from the request, so a client that hangs up
//! or a request timeout cannot cut it off after the provider rotated the
//! token but before the commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Transaction;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use tokio::sync::{OwnedMutexGuard, Semaphore};
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::IntegrationsState;
use super::error::IntegrationError;
use super::provider::ProviderError;
use super::store;
use crate::audit::{self, Event};
use crate::crypto::Sealer;
use crate::db::tenant;
use crate::identity::Caller;

/// After a provider failure, no refresh of that integration for this long.
pub const COOLDOWN: Duration = Duration::from_secs(5);
/// The lock wait exceeds the provider deadline by this much, so a waiter
/// outlasts a holder that is still inside its provider call.
pub const LOCK_MARGIN: Duration = Duration::from_secs(5);
/// A token refreshed this recently is served even if shorter-lived than the
/// minimum validity (a provider issuing short tokens must not be hammered).
const RECENT_REFRESH_SECS: f64 = 10.0;
const LOCK_NAMESPACE: &[u8] = b"moat/integration-refresh/v1:";

/// The advisory-lock key of an integration: the first 8 bytes (big-endian) of
/// SHA-256(`moat/integration-refresh/v1:` ‖ the id's 16 bytes). A collision
/// only makes two integrations' refreshes wait for each other.
pub fn lock_key(id: Uuid) -> i64 {
    let digest = Sha256::new().chain_update(LOCK_NAMESPACE).chain_update(id.as_bytes()).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// The associated data binding a sealed token to its integration and field.
pub fn aad(id: Uuid, field: &str) -> Vec<u8> {
    format!("integrations.{field}:{id}").into_bytes()
}

/// Per-instance coordination (an optimization: correctness rests on the
/// PostgreSQL lock). Listed in docs/caches.md as per-instance.
#[derive(Clone)]
pub struct Broker {
    /// Integration id → the in-memory queue of this instance's callers.
    flights: Arc<Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>>,
    /// Refreshes in flight on this instance (each holds a pooled connection).
    permits: Arc<Semaphore>,
}

impl Broker {
    /// At most half the pool refreshes at once, so the rest keeps serving.
    pub fn new(pool_size: usize) -> Self {
        Self { flights: Arc::default(), permits: Arc::new(Semaphore::new((pool_size / 2).max(1))) }
    }

    async fn enter(&self, id: Uuid) -> Flight {
        let queue = {
            let mut flights = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            flights.entry(id).or_default().clone()
        };
        let turn = queue.lock_owned().await;
        Flight { id, turn: Some(turn), flights: self.flights.clone() }
    }
}

/// This caller's turn for one integration; leaving removes the queue when it is the last.
struct Flight {
    id: Uuid,
    turn: Option<OwnedMutexGuard<()>>,
    flights: Arc<Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        drop(self.turn.take());
        let mut flights = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only the map's own reference left: nobody queues for it any more.
        if flights.get(&self.id).is_some_and(|queue| Arc::strong_count(queue) == 1) {
            flights.remove(&self.id);
        }
    }
}

/// Everything the broker needs, wherever it runs (`moat serve`, or the runner serving agents).
#[derive(Clone)]
pub struct Deps {
    pub db: crate::db::Pool,
    pub sealer: Arc<Sealer>,
    pub providers: Arc<super::provider::Providers>,
    pub broker: Broker,
    /// Tokens handed out are valid at least this long.
    pub min_validity: Duration,
    pub provider_timeout: Duration,
    /// Test seam: whether the refresh takes the per-integration advisory lock.
    pub refresh_lock: bool,
    /// Where provider latency is recorded.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Deps {
    pub fn from_state(state: &IntegrationsState) -> Self {
        Self {
            db: state.db.clone(),
            sealer: state.sealer.clone(),
            providers: state.providers.clone(),
            broker: state.broker.clone(),
            min_validity: state.config.token_min_validity,
            provider_timeout: state.config.provider_timeout,
            refresh_lock: state.config.refresh_lock,
            metrics: state.metrics.clone(),
        }
    }
}

/// What the broker hands out. `Debug` shows no token.
pub struct Issued {
    pub access_token: String,
    pub expires_at: OffsetDateTime,
    /// Whether this call refreshed the token at the provider (else it was served as stored).
    pub refreshed: bool,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Issued(expires_at={}, redacted)", self.expires_at)
    }
}

fn open_text(sealer: &Sealer, sealed: &[u8], aad: &[u8]) -> Result<String, IntegrationError> {
    let plain = sealer.open(sealed, aad)?;
    String::from_utf8(plain).map_err(|_| IntegrationError::Internal(anyhow::anyhow!("a sealed token is not text")))
}

fn issued(token: String, valid_secs: f64) -> Issued {
    let valid = time::Duration::seconds_f64(valid_secs.clamp(0.0, 1e10));
    Issued { access_token: token, expires_at: OffsetDateTime::now_utc() + valid, refreshed: false }
}

/// The fast path's view of an integration that needs a refresh.
struct Stale {
    refresh_count: i64,
}

/// Step 1: serve a valid token in one statement, or say what the refresh needs to know.
async fn fast(deps: &Deps, caller: &Caller, id: Uuid) -> Result<Result<Issued, Stale>, IntegrationError> {
    let client = deps.db.get().await?;
    let kind = caller.kind.as_str();
    let (sid, generation) = (caller.session.sid, caller.session.generation);
    let params: [(&(dyn ToSql + Sync), Type); 6] = [
        (&caller.org, Type::UUID),
        (&kind, Type::TEXT),
        (&caller.id, Type::UUID),
        (&sid, Type::UUID),
        (&generation, Type::INT4),
        (&id, Type::UUID),
    ];
    let row = client.query_typed_one(store::READ_FAST, &params).await?;
    if !row.get::<_, bool>("caller_active") {
        return Err(IntegrationError::CallerInactive);
    }
    if !row.get::<_, bool>("is_found") {
        return Err(IntegrationError::NotFound);
    }
    if row.get::<_, Option<String>>("int_status").as_deref() != Some("active") {
        return Err(IntegrationError::NeedsReauth);
    }
    let valid_secs: f64 = row.get::<_, Option<f64>>("valid_secs").unwrap_or(0.0);
    let since_refresh: Option<f64> = row.get("since_refresh");
    let recent = valid_secs > 0.0 && since_refresh.is_some_and(|s| s < RECENT_REFRESH_SECS);
    if valid_secs >= deps.min_validity.as_secs_f64() || recent {
        let sealed: Vec<u8> = row.get::<_, Option<Vec<u8>>>("sealed_access").unwrap_or_default();
        return Ok(Ok(issued(open_text(&deps.sealer, &sealed, &aad(id, "access_token"))?, valid_secs)));
    }
    let cooldown = row.get::<_, Option<f64>>("cooldown_secs").unwrap_or(0.0);
    if cooldown > 0.0 {
        // The provider failed moments ago: do not queue on the lock just to hear it again.
        return Err(IntegrationError::ProviderUnavailable { retry_after: cooldown.ceil() as u64 });
    }
    Ok(Err(Stale { refresh_count: row.get::<_, Option<i64>>("refresh_count").unwrap_or(0) }))
}

/// An access token for integration `id`, valid at least the minimum validity.
pub async fn access_token(state: &IntegrationsState, caller: &Caller, id: Uuid) -> Result<Issued, IntegrationError> {
    access_token_with(&Deps::from_state(state), caller, id).await
}

/// [`access_token`] with its dependencies spelt out (the runner serves agents through it).
pub async fn access_token_with(deps: &Deps, caller: &Caller, id: Uuid) -> Result<Issued, IntegrationError> {
    if let Ok(issued) = fast(deps, caller, id).await? {
        return Ok(issued);
    }
    // Queue behind this instance's other callers for the integration (no connection held)…
    let flight = deps.broker.enter(id).await;
    // … then look again: one of them may have refreshed it meanwhile.
    let stale = match fast(deps, caller, id).await? {
        Ok(issued) => return Ok(issued),
        Err(stale) => stale,
    };
    let permit = deps.broker.permits.clone().acquire_owned().await.map_err(anyhow::Error::from)?;
    // Detached: the refresh finishes (or rolls back) even if this request is dropped.
    let (deps, caller) = (deps.clone(), caller.clone());
    let refresh = tokio::spawn(async move {
        let result = refresh(&deps, &caller, id, stale.refresh_count).await;
        drop((permit, flight));
        result
    });
    refresh.await.map_err(|e| IntegrationError::Internal(e.into()))?
}

/// Steps 2 and 3: under the integration's lock, re-read, then refresh if still needed.
async fn refresh(deps: &Deps, caller: &Caller, id: Uuid, seen_count: i64) -> Result<Issued, IntegrationError> {
    let min = deps.min_validity.as_secs_f64();
    let mut client = deps.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    if deps.refresh_lock {
        lock(&tx, id, deps.provider_timeout).await?;
    }
    let statement = tx.prepare_cached(store::READ_FOR_REFRESH).await?;
    let row = tx.query_opt(&statement, &[&id, &caller.org]).await?.ok_or(IntegrationError::NotFound)?;
    if row.get::<_, String>("status") != "active" {
        return Err(IntegrationError::NeedsReauth);
    }
    let valid_secs: f64 = row.get("valid_secs");
    let refreshed_meanwhile = row.get::<_, i64>("refresh_count") != seen_count;
    let recent = row.get::<_, Option<f64>>("since_refresh").is_some_and(|s| s < RECENT_REFRESH_SECS);
    if valid_secs >= min || (valid_secs > 0.0 && (refreshed_meanwhile || recent)) {
        // Another caller refreshed while this one waited for the lock.
        let sealed: Vec<u8> = row.get("access_token");
        return Ok(issued(open_text(&deps.sealer, &sealed, &aad(id, "access_token"))?, valid_secs));
    }
    let cooldown: i64 = row.get("cooldown_secs");
    if cooldown > 0 {
        return Err(IntegrationError::ProviderUnavailable { retry_after: u64::try_from(cooldown).unwrap_or(1) });
    }
    let provider_name: String = row.get("provider");
    let Some(sealed_refresh) = row.get::<_, Option<Vec<u8>>>("refresh_token") else {
        // Expired with nothing to refresh it with.
        needs_reauth(&tx, caller, id, &provider_name, "no_refresh_token").await?;
        tx.commit().await?;
        return Err(IntegrationError::NeedsReauth);
    };
    let refresh_token = open_text(&deps.sealer, &sealed_refresh, &aad(id, "refresh_token"))?;
    let Some(provider) = deps.providers.get(&provider_name) else {
        tracing::error!(integration = %id, provider = %provider_name, "the integration's provider is no longer configured");
        return Err(IntegrationError::ProviderUnavailable { retry_after: COOLDOWN.as_secs() });
    };
    let asked = std::time::Instant::now();
    let answer = provider.refresh(&refresh_token).await;
    deps.metrics.provider_latency(&provider_name, asked.elapsed());
    match answer {
        Ok(tokens) => {
            let access = deps.sealer.seal(tokens.access_token.as_bytes(), &aad(id, "access_token"))?;
            // Keep the old refresh token only if the provider did not rotate it (re-sealed with the current key).
            let next_refresh = tokens.refresh_token.as_deref().unwrap_or(&refresh_token);
            let refresh = deps.sealer.seal(next_refresh.as_bytes(), &aad(id, "refresh_token"))?;
            let statement = tx.prepare_cached(store::STORE_REFRESHED).await?;
            let key_id = deps.sealer.key_id();
            tx.execute(&statement, &[&id, &caller.org, &access, &Some(refresh), &key_id, &tokens.expires_in]).await?;
            tx.commit().await?;
            Ok(Issued { refreshed: true, ..issued(tokens.access_token, tokens.expires_in) })
        }
        Err(ProviderError::InvalidGrant) => {
            needs_reauth(&tx, caller, id, &provider_name, "invalid_grant").await?;
            tx.commit().await?;
            Err(IntegrationError::NeedsReauth)
        }
        Err(ProviderError::Refused(refused)) => {
            let event = Event::new(Some(caller.org), "egress_refused", caller.actor())
                .subject(id.to_string())
                .detail(serde_json::json!({ "provider": provider_name, "destination": refused.destination, "reason": refused.reason }));
            audit::record(&tx, &event).await?;
            tx.commit().await?;
            Err(IntegrationError::EgressRefused)
        }
        Err(ProviderError::Unavailable(cause)) => {
            tracing::warn!(integration = %id, provider = %provider_name, %cause, "refresh failed; tokens unchanged, cooling down");
            let statement = tx.prepare_cached(store::SET_COOLDOWN).await?;
            tx.execute(&statement, &[&id, &caller.org, &COOLDOWN.as_secs_f64()]).await?;
            tx.commit().await?;
            Err(IntegrationError::ProviderUnavailable { retry_after: COOLDOWN.as_secs() })
        }
    }
}

/// Takes the integration's refresh lock, waiting at most `provider_timeout` + [`LOCK_MARGIN`].
/// The transaction may then spend `provider_timeout` in a provider call; if its
/// client vanishes, PostgreSQL ends the session (and the lock) soon after.
pub async fn lock(tx: &Transaction<'_>, id: Uuid, provider_timeout: Duration) -> Result<(), IntegrationError> {
    let wait = provider_timeout + LOCK_MARGIN;
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let statement = tx.prepare_cached(store::SET_LOCK_TIMEOUT).await?;
    tx.query_one(&statement, &[&ms(wait), &ms(wait + Duration::from_secs(1)), &ms(wait)]).await?;
    let statement = tx.prepare_cached(store::LOCK_INTEGRATION).await?;
    match tx.query_one(&statement, &[&lock_key(id)]).await {
        Ok(_) => Ok(()),
        Err(e)
            if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
                || e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) =>
        {
            Err(IntegrationError::RefreshBusy)
        }
        Err(e) => Err(e.into()),
    }
}

async fn needs_reauth(
    tx: &Transaction<'_>,
    caller: &Caller,
    id: Uuid,
    provider: &str,
    reason: &str,
) -> Result<(), IntegrationError> {
    let statement = tx.prepare_cached(store::MARK_NEEDS_REAUTH).await?;
    tx.execute(&statement, &[&id, &caller.org]).await?;
    let event = Event::new(Some(caller.org), "integration_needs_reauth", caller.actor())
        .subject(id.to_string())
        .detail(serde_json::json!({ "provider": provider, "reason": reason }));
    audit::record(tx, &event).await?;
    tracing::warn!(integration = %id, %provider, reason, "integration needs to be connected again");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        let a = Uuid::from_u128(1);
        assert_eq!(lock_key(a), lock_key(a));
        assert_ne!(lock_key(a), lock_key(Uuid::from_u128(2)));
        // The documented derivation, spelled out.
        let digest = Sha256::digest([b"moat/integration-refresh/v1:".as_slice(), a.as_bytes()].concat());
        assert_eq!(lock_key(a), i64::from_be_bytes(digest[..8].try_into().unwrap_or_default()));
    }

    #[tokio::test]
    async fn flights_queue_callers_and_clean_up() {
        let broker = Broker::new(4);
        let id = Uuid::from_u128(7);
        let first = broker.enter(id).await;
        let waiting = tokio::spawn({
            let broker = broker.clone();
            async move { broker.enter(id).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a second caller of the same integration must wait its turn");
        drop(first);
        let second = waiting.await.ok();
        assert!(second.is_some());
        drop(second);
        assert!(broker.flights.lock().map(|f| f.is_empty()).unwrap_or(false), "the queue must be removed");
    }
}
