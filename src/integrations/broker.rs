//! The credential broker: an integration's access token, valid for at least
//! `MOAT_TOKEN_MIN_VALIDITY`, refreshed **exactly once** however many callers
//! on however many instances ask at the same moment.
//!
//! 1. Fast path: one statement, no transaction, no lock — if the stored token
//!    is valid long enough, return it.
//! 2. Otherwise, in a transaction: `lock_timeout` = provider timeout + 5 s,
//!    `pg_advisory_xact_lock(lock_key(id))`, then read the row **again**: if
//!    another caller refreshed while this one waited, return that token.
//! 3. Else call the provider (deadline shorter than the lock timeout), store
//!    the new access and refresh tokens (keeping the old refresh token only if
//!    the provider sent none), commit — which releases the lock.
//!
//! The lock is transaction-scoped: it ends exactly when the refresh does,
//! including when the holder's process or connection dies (PostgreSQL rolls
//! the transaction back). There is no TTL to guess and no session state, so
//! it also works behind PgBouncer in transaction mode.

use std::time::Duration;

use deadpool_postgres::{Object, Transaction};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::error::IntegrationError;
use super::provider::ProviderError;
use super::store;
use crate::AppState;
use crate::audit::{self, Event};
use crate::auth::Caller;
use crate::crypto::Sealer;
use crate::db::tenant;

/// After a provider failure, no refresh of that integration for this long.
pub const COOLDOWN: Duration = Duration::from_secs(5);
/// The lock wait exceeds the provider deadline by this much, so a waiter
/// outlasts a holder that is still inside its provider call.
pub const LOCK_MARGIN: Duration = Duration::from_secs(5);
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

/// What the broker hands out. `Debug` shows no token.
pub struct Issued {
    pub access_token: String,
    pub expires_at: OffsetDateTime,
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
    Issued { access_token: token, expires_at: OffsetDateTime::now_utc() + valid }
}

/// An access token for integration `id`, valid at least the minimum validity.
pub async fn access_token(state: &AppState, caller: &Caller, id: Uuid) -> Result<Issued, IntegrationError> {
    let min = state.config.token_min_validity.as_secs_f64();
    let mut client = state.db.get().await?;
    let statement = client.prepare_cached(store::READ_FAST).await?;
    let row = client.query_one(&statement, &[&caller.org, &caller.kind.as_str(), &caller.id, &id]).await?;
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
    if valid_secs >= min {
        let sealed: Vec<u8> = row.get::<_, Option<Vec<u8>>>("sealed_access").unwrap_or_default();
        return Ok(issued(open_text(&state.sealer, &sealed, &aad(id, "access_token"))?, valid_secs));
    }
    refresh(state, &mut client, caller, id).await
}

/// Steps 2 and 3: under the integration's lock, re-read, then refresh if still needed.
async fn refresh(state: &AppState, client: &mut Object, caller: &Caller, id: Uuid) -> Result<Issued, IntegrationError> {
    let min = state.config.token_min_validity.as_secs_f64();
    let tx = tenant::begin(client, caller).await?;
    if state.config.refresh_lock {
        lock(&tx, id, state.config.provider_timeout + LOCK_MARGIN).await?;
    }
    let statement = tx.prepare_cached(store::READ_FOR_REFRESH).await?;
    let row = tx.query_opt(&statement, &[&id, &caller.org]).await?.ok_or(IntegrationError::NotFound)?;
    if row.get::<_, String>("status") != "active" {
        return Err(IntegrationError::NeedsReauth);
    }
    let valid_secs: f64 = row.get("valid_secs");
    if valid_secs >= min {
        // Another caller refreshed while this one waited for the lock.
        let sealed: Vec<u8> = row.get("access_token");
        return Ok(issued(open_text(&state.sealer, &sealed, &aad(id, "access_token"))?, valid_secs));
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
    let refresh_token = open_text(&state.sealer, &sealed_refresh, &aad(id, "refresh_token"))?;
    let Some(provider) = state.providers.get(&provider_name) else {
        tracing::error!(integration = %id, provider = %provider_name, "the integration's provider is no longer configured");
        return Err(IntegrationError::ProviderUnavailable { retry_after: COOLDOWN.as_secs() });
    };
    match provider.refresh(&refresh_token).await {
        Ok(tokens) => {
            let access = state.sealer.seal(tokens.access_token.as_bytes(), &aad(id, "access_token"))?;
            // Keep the old refresh token only if the provider did not rotate it (re-sealed with the current key).
            let next_refresh = tokens.refresh_token.as_deref().unwrap_or(&refresh_token);
            let refresh = state.sealer.seal(next_refresh.as_bytes(), &aad(id, "refresh_token"))?;
            let statement = tx.prepare_cached(store::STORE_REFRESHED).await?;
            let key_id = state.sealer.key_id();
            tx.execute(&statement, &[&id, &caller.org, &access, &Some(refresh), &key_id, &tokens.expires_in]).await?;
            tx.commit().await?;
            Ok(issued(tokens.access_token, tokens.expires_in))
        }
        Err(ProviderError::InvalidGrant) => {
            needs_reauth(&tx, caller, id, &provider_name, "invalid_grant").await?;
            tx.commit().await?;
            Err(IntegrationError::NeedsReauth)
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

/// Waits for the integration's refresh lock, at most `wait`.
pub async fn lock(tx: &Transaction<'_>, id: Uuid, wait: Duration) -> Result<(), IntegrationError> {
    let statement = tx.prepare_cached(store::SET_LOCK_TIMEOUT).await?;
    tx.query_one(&statement, &[&format!("{}ms", wait.as_millis())]).await?;
    let statement = tx.prepare_cached(store::LOCK_INTEGRATION).await?;
    match tx.query_one(&statement, &[&lock_key(id)]).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
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
}
