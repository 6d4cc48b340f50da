//! Bootstrap without static keys: organizations, users and service clients
//! are created by `moat admin …`, which talks to the database directly.
//!
//! There is no admin API key and no seed data. Every change runs in a tenant
//! transaction (row-level security applies to the CLI too) and writes an
//! audit event with actor `cli`. Passwords and secrets are hashed with
//! argon2id before they reach SQL and are shown to the operator once.

use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::audit::{self, Event};
use crate::db::Pool;
use crate::db::tenant::{self, Lookup};
use crate::identity::password::{self, random_secret};
use crate::identity::{Role, Scopes, normalize_email};
use crate::ids::{ClientId, OrgId, UserId};

mod store;

pub use store::STATEMENTS;

/// Prefix of every client secret, so secret scanners can recognise a leaked one.
pub const CLIENT_SECRET_PREFIX: &str = "moat_cs_";
const ACTOR: &str = "cli";

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the name must be 1 to 200 characters")]
    InvalidName,
    #[error("{0:?} is not an email address")]
    InvalidEmail(String),
    #[error("the password must be {min} to {max} characters", min = password::MIN_LEN, max = password::MAX_LEN)]
    WeakPassword,
    #[error("unknown scope {0:?}; known scopes: {known}", known = known_scopes())]
    UnknownScope(String),
    #[error("a service client needs at least one scope")]
    NoScopes,
    #[error("no organization {0}")]
    OrgNotFound(OrgId),
    #[error("no user with email {0}")]
    UserNotFound(String),
    #[error("no service client {0}")]
    ClientNotFound(String),
    #[error("a user with email {0} already exists")]
    EmailTaken(String),
    #[error("database: {0}")]
    Db(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn known_scopes() -> String {
    crate::identity::Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
}

impl From<crate::db::DbError> for AdminError {
    fn from(e: crate::db::DbError) -> Self {
        match e {
            crate::db::DbError::Unavailable(cause) | crate::db::DbError::Failed(cause) => Self::Db(cause),
        }
    }
}

crate::db::from_db_errors!(AdminError);

impl From<password::HashError> for AdminError {
    fn from(e: password::HashError) -> Self {
        Self::Other(e.into())
    }
}

fn valid_name(name: &str) -> Result<&str, AdminError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(AdminError::InvalidName);
    }
    Ok(name)
}

async fn record(
    tx: &Transaction<'_>,
    org: OrgId,
    event: &'static str,
    subject: impl Into<String>,
) -> Result<(), AdminError> {
    audit::record(tx, &Event::new(Some(org), event, ACTOR).subject(subject)).await?;
    Ok(())
}

pub async fn create_org(pool: &Pool, name: &str) -> Result<OrgId, AdminError> {
    let name = valid_name(name)?;
    let id = OrgId(Uuid::new_v4());
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tenant::set_org(&tx, id).await?;
    store::insert_org(&tx, id, name).await?;
    record(&tx, id, "org_created", name).await?;
    tx.commit().await?;
    Ok(id)
}

/// A random password for `create-user --generate-password` (24 characters).
pub fn generate_password() -> String {
    random_secret(18)
}

pub async fn create_user(
    pool: &Pool,
    org: impl Into<OrgId>,
    email: &str,
    role: Role,
    password: String,
) -> Result<Uuid, AdminError> {
    let org: OrgId = org.into();
    let normalized = normalize_email(email).ok_or_else(|| AdminError::InvalidEmail(email.to_owned()))?;
    let hash = checked_hash(password).await?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    require_org(&tx, org).await?;
    let new =
        store::NewUser { email: email.trim(), normalized: &normalized, role: role.as_str(), password_hash: &hash };
    let id = match store::insert_user(&tx, org, &new).await {
        Ok(id) => id,
        Err(e) if constraint(&e) == Some("users_email_key") => return Err(AdminError::EmailTaken(normalized)),
        Err(e) => return Err(e.into()),
    };
    record(&tx, org, "user_created", &normalized).await?;
    tx.commit().await?;
    Ok(id.0)
}

/// Creates a service client; returns its id and its secret (shown once, stored hashed).
pub async fn create_client(
    pool: &Pool,
    org: impl Into<OrgId>,
    name: &str,
    scopes: &str,
) -> Result<(Uuid, String), AdminError> {
    let org: OrgId = org.into();
    let name = valid_name(name)?;
    let scopes = Scopes::parse(scopes).map_err(AdminError::UnknownScope)?;
    if scopes.is_empty() {
        return Err(AdminError::NoScopes);
    }
    let secret = format!("{CLIENT_SECRET_PREFIX}{}", random_secret(32));
    let hash = password::hash(secret.clone()).await?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    require_org(&tx, org).await?;
    let id = store::insert_client(&tx, org, name, &hash, &scopes.to_vec()).await?;
    record(&tx, org, "client_created", id.to_string()).await?;
    tx.commit().await?;
    Ok((id.0, secret))
}

/// Replaces a client's secret; the old one stops working at once. Returns the new one.
pub async fn rotate_client_secret(pool: &Pool, client_id: &str) -> Result<String, AdminError> {
    let secret = format!("{CLIENT_SECRET_PREFIX}{}", random_secret(32));
    let hash = password::hash(secret.clone()).await?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let (id, org) = client_org(&tx, client_id).await?;
    store::rotate_client_secret(&tx, org, id, &hash).await?;
    record(&tx, org, "client_secret_rotated", id.to_string()).await?;
    tx.commit().await?;
    Ok(secret)
}

pub async fn disable_client(pool: &Pool, client_id: &str) -> Result<(), AdminError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let (id, org) = client_org(&tx, client_id).await?;
    store::disable_client(&tx, org, id).await?;
    record(&tx, org, "client_disabled", id.to_string()).await?;
    tx.commit().await?;
    Ok(())
}

/// Disables a user and ends every session they have.
pub async fn disable_user(pool: &Pool, email: &str) -> Result<(), AdminError> {
    let normalized = normalize_email(email).ok_or_else(|| AdminError::InvalidEmail(email.to_owned()))?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let (id, org) = user_org(&tx, &normalized).await?;
    store::disable_user(&tx, org, id).await?;
    store::revoke_user_families(&tx, org, id).await?;
    record(&tx, org, "user_disabled", &normalized).await?;
    tx.commit().await?;
    Ok(())
}

/// Whether a user with this email exists (in any organization).
pub async fn user_exists(pool: &Pool, email: &str) -> Result<bool, AdminError> {
    let normalized = normalize_email(email).ok_or_else(|| AdminError::InvalidEmail(email.to_owned()))?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tenant::set_lookup(&tx, Lookup::Email(&normalized)).await?;
    let found = store::find_user_org(&tx, &normalized).await?.is_some();
    tx.commit().await?;
    Ok(found)
}

/// Replaces a user's password (stored hashed) and ends every session they have.
pub async fn set_password(pool: &Pool, email: &str, new_password: String) -> Result<(), AdminError> {
    let normalized = normalize_email(email).ok_or_else(|| AdminError::InvalidEmail(email.to_owned()))?;
    let hash = checked_hash(new_password).await?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let (id, org) = user_org(&tx, &normalized).await?;
    store::set_password(&tx, org, id, &hash).await?;
    store::revoke_user_families(&tx, org, id).await?;
    record(&tx, org, "user_password_reset", &normalized).await?;
    tx.commit().await?;
    Ok(())
}

/// Checks a new password's length, then hashes it (argon2id).
async fn checked_hash(password: String) -> Result<String, AdminError> {
    if !(password::MIN_LEN..=password::MAX_LEN).contains(&password.chars().count()) {
        return Err(AdminError::WeakPassword);
    }
    Ok(password::hash(password).await?)
}

/// The user with this normalized email and their organization, whose tenant
/// context the transaction then runs in.
async fn user_org(tx: &Transaction<'_>, normalized: &str) -> Result<(UserId, OrgId), AdminError> {
    tenant::set_lookup(tx, Lookup::Email(normalized)).await?;
    let (id, org) =
        store::find_user_org(tx, normalized).await?.ok_or(AdminError::UserNotFound(normalized.to_owned()))?;
    tenant::set_org(tx, org).await?;
    Ok((id, org))
}

async fn require_org(tx: &Transaction<'_>, org: OrgId) -> Result<(), AdminError> {
    tenant::set_org(tx, org).await?;
    if store::org_exists(tx, org).await? { Ok(()) } else { Err(AdminError::OrgNotFound(org)) }
}

async fn client_org(tx: &Transaction<'_>, client_id: &str) -> Result<(ClientId, OrgId), AdminError> {
    let not_found = || AdminError::ClientNotFound(client_id.to_owned());
    let id: ClientId = client_id.trim().parse().map_err(|_| not_found())?;
    tenant::set_lookup(tx, Lookup::Client(id.0)).await?;
    let org = store::find_client_org(tx, id).await?.ok_or_else(not_found)?;
    tenant::set_org(tx, org).await?;
    Ok((id, org))
}

fn constraint(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().and_then(|db| db.constraint())
}
