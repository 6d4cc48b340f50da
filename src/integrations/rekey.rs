//! `moat admin rotate-encryption-key`: re-encrypts every integration's tokens
//! under the current `MOAT_ENCRYPTION_KEY`, while Moat keeps serving.
//!
//! It walks the organizations one by one (each in its own row-level-security
//! context) and the integrations whose `key_id` is not the current key, in
//! small batches. Each row is re-sealed under its integration's refresh lock
//! (skipped, and retried on the next pass, while a refresh holds it), so a
//! rotation can never overwrite tokens a concurrent refresh just stored. It
//! is resumable: `key_id` records what is done, so an interrupted run simply
//! continues where it stopped.

use std::time::Duration;

use anyhow::Context as _;
use uuid::Uuid;

use super::broker::{aad, lock_key};
use super::store;
use crate::crypto::Sealer;
use crate::db::Pool;
use crate::db::tenant;
use crate::ids::OrgId;

/// One organization's progress, reported after each batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub org: OrgId,
    pub rekeyed: u64,
    pub remaining: i64,
}

/// Re-encrypts every integration not yet under the current key; returns how many.
pub async fn rotate(pool: &Pool, sealer: &Sealer, batch: i64, mut report: impl FnMut(Progress)) -> anyhow::Result<u64> {
    let current = sealer.key_id();
    let orgs: Vec<OrgId> = {
        let client = pool.get().await?;
        client.query_typed(store::ORG_IDS, &[]).await?.iter().map(|r| r.get("id")).collect()
    };
    let mut total = 0;
    for org in orgs {
        loop {
            let Batch { selected, rekeyed, remaining } = rekey_batch(pool, sealer, org, &current, batch).await?;
            if selected == 0 {
                break;
            }
            total += rekeyed;
            report(Progress { org, rekeyed, remaining });
            if rekeyed == 0 {
                // Every row of the batch was being refreshed: let those refreshes finish.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(total)
}

struct Batch {
    selected: usize,
    rekeyed: u64,
    remaining: i64,
}

/// One page of stale ids, each re-sealed in a short transaction of its own (so a
/// batch never accumulates locks, and a refresh never waits long behind it).
async fn rekey_batch(pool: &Pool, sealer: &Sealer, org: OrgId, current: &str, batch: i64) -> anyhow::Result<Batch> {
    let mut client = pool.get().await?;
    let ids: Vec<Uuid> = {
        let tx = client.transaction().await?;
        tenant::set_org(&tx, org).await?;
        let ids = tx.query(store::STALE_IDS, &[&org, &current, &batch]).await?.iter().map(|r| r.get("id")).collect();
        tx.commit().await?;
        ids
    };
    let mut rekeyed = 0;
    for id in &ids {
        let tx = client.transaction().await?;
        tenant::set_org(&tx, org).await?;
        let locked: bool = tx.query_one(store::TRY_LOCK_INTEGRATION, &[&lock_key(*id)]).await?.get("locked");
        if !locked {
            continue; // a refresh is in flight; it re-seals under the current key itself
        }
        let Some(row) = tx.query_opt(store::READ_FOR_REKEY, &[id, &org]).await? else {
            continue;
        };
        if row.get::<_, String>("key_id") == current {
            continue;
        }
        let reseal = |field: &str, sealed: &[u8]| -> anyhow::Result<Vec<u8>> {
            let plain = sealer.open(sealed, &aad(*id, field)).with_context(|| {
                format!("integration {id}: cannot open its {field} (is its key in MOAT_ENCRYPTION_KEYS_PREVIOUS?)")
            })?;
            Ok(sealer.seal(&plain, &aad(*id, field))?)
        };
        let access = reseal("access_token", &row.get::<_, Vec<u8>>("access_token"))?;
        let refresh =
            row.get::<_, Option<Vec<u8>>>("refresh_token").map(|r| reseal("refresh_token", &r)).transpose()?;
        tx.execute(store::STORE_REKEYED, &[id, &org, &access, &refresh, &current]).await?;
        tx.commit().await?;
        rekeyed += 1;
    }
    let remaining: i64 = {
        let tx = client.transaction().await?;
        tenant::set_org(&tx, org).await?;
        let remaining = tx.query_one(store::COUNT_STALE, &[&org, &current]).await?.get("stale");
        tx.commit().await?;
        remaining
    };
    Ok(Batch { selected: ids.len(), rekeyed, remaining })
}
