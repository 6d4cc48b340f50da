//! Tenant transactions: the row-level-security context of every query.
//!
//! Every tenant table's policies read `moat.org_id`, which is set here and
//! only here, transaction-locally (`set_config(…, true)`), so it ends with the
//! transaction and never reaches the next checkout of a pooled connection. A
//! query that forgets its `org_id` filter still sees one organization only.
//! Before authentication there is no organization; [`Lookup`] scopes a
//! transaction to the rows matching one presented key instead.

use deadpool_postgres::Transaction;

use super::Client;
use uuid::Uuid;

use crate::ids::OrgId;

use super::store;

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The token's user or client was disabled or deleted since it was issued.
    #[error("the caller is disabled or no longer exists")]
    Inactive,
    #[error(transparent)]
    Db(#[from] super::DbError),
}

super::from_db_errors!(TenantError);

/// A pre-authentication key: the rows it matches, and only those, become visible.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// A normalized login email.
    Email(&'a str),
    /// A service client id.
    Client(Uuid),
    /// The SHA-256 of a presented refresh token.
    Refresh(&'a [u8; 32]),
    /// The SHA-256 of a presented OAuth `state` (connect callback).
    State(&'a [u8; 32]),
    /// The SHA-256 of the family tag a presented refresh token begins with (its row may be gone).
    FamilyTag(&'a [u8; 32]),
}

/// Who a tenant transaction runs as: what [`begin`] checks is still alive.
#[derive(Debug, Clone, Copy)]
pub struct Principal {
    /// `user` or `client`.
    pub kind: &'static str,
    pub id: Uuid,
    /// A user's login session (refresh family), if the token names one.
    pub sid: Option<Uuid>,
    /// A service client's secret generation, if the token names one.
    pub generation: Option<i32>,
}

/// Starts a transaction in `org` as `principal`, after checking its session
/// is still alive (principal enabled, login session or client secret not revoked).
pub async fn begin<'a>(
    client: &'a mut Client,
    org: OrgId,
    principal: Principal,
) -> Result<Transaction<'a>, TenantError> {
    let tx = client.transaction().await?;
    let statement = tx.prepare_cached(store::BEGIN_TENANT).await?;
    let Principal { kind, id, sid, generation } = principal;
    let row = tx.query_one(&statement, &[&org, &kind, &id, &sid, &generation]).await?;
    if !row.get::<_, bool>("active") {
        return Err(TenantError::Inactive);
    }
    Ok(tx)
}

/// Sets the organization for the rest of `tx` (after a lookup found it, or for admin commands).
pub async fn set_org(tx: &Transaction<'_>, org: OrgId) -> Result<(), tokio_postgres::Error> {
    set_local(tx, "moat.org_id", &org.to_string()).await
}

/// Makes the rows matching `lookup` visible for the rest of `tx`.
pub async fn set_lookup(tx: &Transaction<'_>, lookup: Lookup<'_>) -> Result<(), tokio_postgres::Error> {
    match lookup {
        Lookup::Email(email) => set_local(tx, "moat.lookup_email", email).await,
        Lookup::Client(id) => set_local(tx, "moat.lookup_client", &id.to_string()).await,
        Lookup::Refresh(hash) => set_local(tx, "moat.lookup_refresh", &hex(hash)).await,
        Lookup::State(hash) => set_local(tx, "moat.lookup_state", &hex(hash)).await,
        Lookup::FamilyTag(tag) => set_local(tx, "moat.lookup_family_tag", &hex(tag)).await,
    }
}

async fn set_local(tx: &Transaction<'_>, name: &str, value: &str) -> Result<(), tokio_postgres::Error> {
    let statement = tx.prepare_cached(store::SET_LOCAL).await?;
    tx.query_one(&statement, &[&name, &value]).await.map(|_| ())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
