//! The auth capability's SQL (`sql/auth/`) as typed functions: rows are
//! decoded here, once. Callers hold the transaction and decide what it
//! means (the rotation rules are in [`super::refresh`]); nothing here logs.

use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::db::DbError;
use crate::ids::{ClientId, OrgId, UserId};

crate::db::statements! { "auth":
    FIND_USER_BY_EMAIL => "find_user_by_email",
    INSERT_FAMILY => "insert_family",
    INSERT_REFRESH_TOKEN => "insert_refresh_token",
    FIND_REFRESH_TOKEN => "find_refresh_token",
    LOCK_FAMILY => "lock_family",
    TAG_FAMILY => "tag_family",
    FIND_FAMILY_BY_TAG => "find_family_by_tag",
    FAMILY_HAS_LIVE_TOKEN => "family_has_live_token",
    USE_REFRESH_TOKEN => "use_refresh_token",
    CURRENT_FAMILY_TOKEN => "current_family_token",
    REVOKE_FAMILY => "revoke_family",
    FIND_CLIENT => "find_client",
    GET_USER => "get_user",
}

/// A refresh family's id (one login session).
pub type FamilyId = Uuid;

/// A user as login needs it.
pub struct LoginUser {
    pub id: UserId,
    pub org: OrgId,
    pub role: String,
    pub password_hash: String,
    pub disabled: bool,
}

/// The user with this normalized email (under a `Lookup::Email` transaction).
pub async fn find_user_by_email(tx: &Transaction<'_>, email: &str) -> Result<Option<LoginUser>, DbError> {
    let statement = tx.prepare_cached(FIND_USER_BY_EMAIL).await?;
    Ok(tx.query_opt(&statement, &[&email]).await?.map(|row| LoginUser {
        id: row.get("id"),
        org: row.get("org_id"),
        role: row.get("role"),
        password_hash: row.get("password_hash"),
        disabled: row.get("disabled"),
    }))
}

/// A service client as the token endpoint needs it.
pub struct Client {
    pub id: ClientId,
    pub org: OrgId,
    pub secret_hash: String,
    pub scopes: Vec<String>,
    pub secret_generation: i32,
    pub disabled: bool,
}

/// The client `id` (under a `Lookup::Client` transaction).
pub async fn find_client(tx: &Transaction<'_>, id: ClientId) -> Result<Option<Client>, DbError> {
    let statement = tx.prepare_cached(FIND_CLIENT).await?;
    Ok(tx.query_opt(&statement, &[&id]).await?.map(|row| Client {
        id: row.get("id"),
        org: row.get("org_id"),
        secret_hash: row.get("secret_hash"),
        scopes: row.get("scopes"),
        secret_generation: row.get("secret_generation"),
        disabled: row.get("disabled"),
    }))
}

/// A user's email and role, for `/v1/me`.
pub async fn get_user(tx: &Transaction<'_>, org: OrgId, id: UserId) -> Result<Option<(String, String)>, DbError> {
    let statement = tx.prepare_cached(GET_USER).await?;
    Ok(tx.query_opt(&statement, &[&id, &org]).await?.map(|row| (row.get("email"), row.get("role"))))
}

/// Starts a family lasting `max_age_secs`; its id and when it expires.
pub async fn insert_family(
    tx: &Transaction<'_>,
    org: OrgId,
    user: UserId,
    max_age_secs: f64,
    tag_hash: &[u8],
) -> Result<(FamilyId, OffsetDateTime), DbError> {
    let statement = tx.prepare_cached(INSERT_FAMILY).await?;
    let row = tx.query_one(&statement, &[&org, &user, &max_age_secs, &tag_hash]).await?;
    Ok((row.get("id"), row.get("expires_at")))
}

/// A refresh token row to insert (its token only as a hash and sealed).
pub struct NewToken<'a> {
    pub id: Uuid,
    pub family: FamilyId,
    pub org: OrgId,
    pub token_hash: &'a [u8],
    pub ttl_secs: f64,
    pub family_expires: OffsetDateTime,
    pub sealed: &'a [u8],
}

pub async fn insert_refresh_token(tx: &Transaction<'_>, token: &NewToken<'_>) -> Result<(), DbError> {
    let statement = tx.prepare_cached(INSERT_REFRESH_TOKEN).await?;
    let NewToken { id, family, org, token_hash, ttl_secs, family_expires, sealed } = token;
    tx.execute(&statement, &[id, family, org, token_hash, ttl_secs, family_expires, sealed]).await?;
    Ok(())
}

/// A presented refresh token's row, locked.
pub struct RefreshToken {
    pub id: Uuid,
    pub family: FamilyId,
    pub org: OrgId,
    pub used: bool,
    pub expired: bool,
    /// Used within the last `grace` seconds.
    pub in_grace: bool,
}

/// The token with this hash, locked (under a `Lookup::Refresh` transaction).
pub async fn find_refresh_token(
    tx: &Transaction<'_>,
    token_hash: &[u8],
    grace_secs: f64,
) -> Result<Option<RefreshToken>, DbError> {
    let statement = tx.prepare_cached(FIND_REFRESH_TOKEN).await?;
    Ok(tx.query_opt(&statement, &[&token_hash, &grace_secs]).await?.map(|row| RefreshToken {
        id: row.get("id"),
        family: row.get("family_id"),
        org: row.get("org_id"),
        used: row.get("used"),
        expired: row.get("expired"),
        in_grace: row.get("in_grace"),
    }))
}

/// A family, locked, with its user's role and state.
pub struct Family {
    pub user: UserId,
    pub expires_at: OffsetDateTime,
    pub tag_hash: Option<Vec<u8>>,
    pub revoked: bool,
    pub expired: bool,
    pub role: String,
    pub user_disabled: bool,
}

impl From<&Row> for Family {
    fn from(row: &Row) -> Self {
        Self {
            user: row.get("user_id"),
            expires_at: row.get("expires_at"),
            tag_hash: row.get("tag_hash"),
            revoked: row.get("revoked"),
            expired: row.get("expired"),
            role: row.get("role"),
            user_disabled: row.get("user_disabled"),
        }
    }
}

/// Locks family `id` (`FOR UPDATE`): concurrent refreshes of one session serialize here.
pub async fn lock_family(tx: &Transaction<'_>, org: OrgId, id: FamilyId) -> Result<Option<Family>, DbError> {
    let statement = tx.prepare_cached(LOCK_FAMILY).await?;
    Ok(tx.query_opt(&statement, &[&id, &org]).await?.as_ref().map(Family::from))
}

pub async fn tag_family(tx: &Transaction<'_>, org: OrgId, id: FamilyId, tag_hash: &[u8]) -> Result<(), DbError> {
    let statement = tx.prepare_cached(TAG_FAMILY).await?;
    tx.execute(&statement, &[&id, &org, &tag_hash]).await?;
    Ok(())
}

/// The family whose tag hashes to `tag_hash` (under a `Lookup::FamilyTag` transaction).
pub async fn find_family_by_tag(tx: &Transaction<'_>, tag_hash: &[u8]) -> Result<Option<(FamilyId, OrgId)>, DbError> {
    let statement = tx.prepare_cached(FIND_FAMILY_BY_TAG).await?;
    Ok(tx.query_opt(&statement, &[&tag_hash]).await?.map(|row| (row.get("id"), row.get("org_id"))))
}

/// Whether the family still has an unused, unexpired token (a live session).
pub async fn family_has_live_token(tx: &Transaction<'_>, org: OrgId, id: FamilyId) -> Result<bool, DbError> {
    let statement = tx.prepare_cached(FAMILY_HAS_LIVE_TOKEN).await?;
    Ok(tx.query_one(&statement, &[&id, &org]).await?.get("live"))
}

pub async fn use_refresh_token(tx: &Transaction<'_>, org: OrgId, id: Uuid) -> Result<(), DbError> {
    let statement = tx.prepare_cached(USE_REFRESH_TOKEN).await?;
    tx.execute(&statement, &[&id, &org]).await?;
    Ok(())
}

/// The family's current token (its row id and sealed bytes), if issued within `grace_secs`.
pub async fn current_family_token(
    tx: &Transaction<'_>,
    org: OrgId,
    family: FamilyId,
    grace_secs: f64,
) -> Result<Option<(Uuid, Vec<u8>)>, DbError> {
    let statement = tx.prepare_cached(CURRENT_FAMILY_TOKEN).await?;
    Ok(tx
        .query_opt(&statement, &[&family, &grace_secs, &org])
        .await?
        .map(|row| (row.get("id"), row.get("sealed_token"))))
}

pub async fn revoke_family(tx: &Transaction<'_>, org: OrgId, id: FamilyId, reason: &str) -> Result<(), DbError> {
    let statement = tx.prepare_cached(REVOKE_FAMILY).await?;
    tx.execute(&statement, &[&id, &org, &reason]).await?;
    Ok(())
}
