//! The users capability's SQL (`sql/users/`) as typed functions: rows are
//! decoded here, once, into [`User`].

use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use tokio_postgres::Row;

use crate::db::DbError;
use crate::http::pagination::Page;
use crate::ids::{OrgId, UserId};

crate::db::statements! { "users":
    LIST_USERS => "list_users",
    GET_USER => "get_user",
}

/// A user as an administrator sees it (never its password hash).
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub role: String,
    pub created_at: OffsetDateTime,
    pub disabled: bool,
}

impl From<&Row> for User {
    fn from(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            email: row.get("email"),
            role: row.get("role"),
            created_at: row.get("created_at"),
            disabled: row.get::<_, Option<OffsetDateTime>>("disabled_at").is_some(),
        }
    }
}

/// One page of `org`'s users, newest first (one more than the page's limit: the caller cuts it).
pub async fn list_users(tx: &Transaction<'_>, org: OrgId, page: &Page) -> Result<Vec<User>, DbError> {
    let statement = tx.prepare_cached(LIST_USERS).await?;
    let (after_at, after_id) = (page.after.map(|c| c.at()), page.after.map(|c| c.id()));
    let rows = tx.query(&statement, &[&org, &after_at, &after_id, &(page.limit + 1)]).await?;
    Ok(rows.iter().map(User::from).collect())
}

/// `org`'s user `id`, if there is one.
pub async fn get_user(tx: &Transaction<'_>, org: OrgId, id: UserId) -> Result<Option<User>, DbError> {
    let statement = tx.prepare_cached(GET_USER).await?;
    Ok(tx.query_opt(&statement, &[&id, &org]).await?.as_ref().map(User::from))
}
