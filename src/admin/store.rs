//! The admin commands' SQL (`sql/admin/`) as typed functions. Each runs in
//! the caller's transaction, whose tenant context the caller has set.

use deadpool_postgres::Transaction;

use crate::db::DbError;
use crate::ids::{ClientId, OrgId, UserId};

crate::db::statements! { "admin":
    INSERT_ORG => "insert_org",
    ORG_EXISTS => "org_exists",
    INSERT_USER => "insert_user",
    INSERT_CLIENT => "insert_client",
    FIND_USER_ORG => "find_user_org",
    FIND_CLIENT_ORG => "find_client_org",
    ROTATE_CLIENT_SECRET => "rotate_client_secret",
    DISABLE_USER => "disable_user",
    REVOKE_USER_FAMILIES => "revoke_user_families",
    DISABLE_CLIENT => "disable_client",
    SET_PASSWORD => "set_password",
}

pub async fn insert_org(tx: &Transaction<'_>, id: OrgId, name: &str) -> Result<(), DbError> {
    tx.execute(INSERT_ORG, &[&id, &name]).await?;
    Ok(())
}

pub async fn org_exists(tx: &Transaction<'_>, id: OrgId) -> Result<bool, DbError> {
    Ok(tx.query_one(ORG_EXISTS, &[&id]).await?.get("exists"))
}

/// A new user's row. `Err` keeps the driver's error: a taken email is a
/// constraint the caller maps (`users_email_key`).
pub struct NewUser<'a> {
    pub email: &'a str,
    pub normalized: &'a str,
    pub role: &'a str,
    pub password_hash: &'a str,
}

pub async fn insert_user(
    tx: &Transaction<'_>,
    org: OrgId,
    user: &NewUser<'_>,
) -> Result<UserId, tokio_postgres::Error> {
    let NewUser { email, normalized, role, password_hash } = user;
    Ok(tx.query_one(INSERT_USER, &[&org, email, normalized, role, password_hash]).await?.get("id"))
}

pub async fn insert_client(
    tx: &Transaction<'_>,
    org: OrgId,
    name: &str,
    secret_hash: &str,
    scopes: &[String],
) -> Result<ClientId, DbError> {
    Ok(tx.query_one(INSERT_CLIENT, &[&org, &name, &secret_hash, &scopes]).await?.get("id"))
}

/// The user with this normalized email and their organization (under a `Lookup::Email` transaction).
pub async fn find_user_org(tx: &Transaction<'_>, normalized: &str) -> Result<Option<(UserId, OrgId)>, DbError> {
    Ok(tx.query_opt(FIND_USER_ORG, &[&normalized]).await?.map(|row| (row.get("id"), row.get("org_id"))))
}

/// The client's organization (under a `Lookup::Client` transaction).
pub async fn find_client_org(tx: &Transaction<'_>, id: ClientId) -> Result<Option<OrgId>, DbError> {
    Ok(tx.query_opt(FIND_CLIENT_ORG, &[&id]).await?.map(|row| row.get("org_id")))
}

pub async fn rotate_client_secret(
    tx: &Transaction<'_>,
    org: OrgId,
    id: ClientId,
    secret_hash: &str,
) -> Result<(), DbError> {
    tx.execute(ROTATE_CLIENT_SECRET, &[&id, &org, &secret_hash]).await?;
    Ok(())
}

pub async fn disable_client(tx: &Transaction<'_>, org: OrgId, id: ClientId) -> Result<(), DbError> {
    tx.execute(DISABLE_CLIENT, &[&id, &org]).await?;
    Ok(())
}

pub async fn disable_user(tx: &Transaction<'_>, org: OrgId, id: UserId) -> Result<(), DbError> {
    tx.execute(DISABLE_USER, &[&id, &org]).await?;
    Ok(())
}

/// Ends every login session of the user.
pub async fn revoke_user_families(tx: &Transaction<'_>, org: OrgId, id: UserId) -> Result<(), DbError> {
    tx.execute(REVOKE_USER_FAMILIES, &[&id, &org]).await?;
    Ok(())
}

pub async fn set_password(tx: &Transaction<'_>, org: OrgId, id: UserId, password_hash: &str) -> Result<(), DbError> {
    tx.execute(SET_PASSWORD, &[&id, &org, &password_hash]).await?;
    Ok(())
}
