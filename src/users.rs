//! The users of an organization, for its administrators (`users:read`).
//!
//! Users are created and disabled with `moat admin` (see [`crate::admin`]);
//! this module only reads. Another organization's user answers 404, exactly
//! like one that does not exist.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::db::Pool;
use crate::db::tenant;
use crate::http::pagination::{Cursor, Page, Paged};
use crate::http::{ApiError, Routes};
use crate::identity::{Access, Caller, Scope};
use axum::extract::FromRef;

crate::db::statements! { "users":
    LIST_USERS => "list_users",
    GET_USER => "get_user",
}

pub fn routes<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    Pool: FromRef<S>,
{
    Routes::new().get("/v1/users", Access::Scope(Scope::UsersRead), list).get(
        "/v1/users/{id}",
        Access::Scope(Scope::UsersRead),
        get,
    )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list, get))]
pub(crate) struct Api;

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct UserView {
    id: Uuid,
    email: String,
    role: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    disabled: bool,
}

impl From<&Row> for UserView {
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

/// The organization's users, newest first.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(crate::http::openapi::PageQuery),
    responses((status = 200, description = "One page of users", body = Paged<UserView>)))]
async fn list(State(db): State<Pool>, caller: Caller, page: Page) -> Result<Json<Paged<UserView>>, ApiError> {
    let mut client = db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(LIST_USERS).await?;
    let (after_at, after_id) = (page.after.map(|c| c.at()), page.after.map(|c| c.id()));
    let rows = tx.query(&statement, &[&caller.org, &after_at, &after_id, &(page.limit + 1)]).await?;
    tx.commit().await?;
    let users = rows.iter().map(UserView::from).collect();
    Ok(Json(Paged::from_rows(users, &page, |u| Cursor::new(u.created_at, u.id))))
}

/// One user of the organization.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, description = "The user", body = UserView)))]
async fn get(State(db): State<Pool>, caller: Caller, Path(id): Path<String>) -> Result<Json<UserView>, ApiError> {
    // A malformed id is as unknown as a missing one.
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found())?;
    let mut client = db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let statement = tx.prepare_cached(GET_USER).await?;
    let row = tx.query_opt(&statement, &[&id, &caller.org]).await?;
    tx.commit().await?;
    row.as_ref().map(|r| Json(UserView::from(r))).ok_or_else(ApiError::not_found)
}
