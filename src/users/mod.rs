//! The users of an organization, for its administrators (`users:read`).
//!
//! Users are created and disabled with `moat admin` (see [`crate::admin`]);
//! this module only reads. Another organization's user answers 404, exactly
//! like one that does not exist.

mod store;

use axum::Json;
use axum::extract::{FromRef, State};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::Pool;
use crate::db::tenant;
use crate::http::pagination::{Cursor, Page, Paged};
use crate::http::{ApiError, PathId, Routes};
use crate::identity::{Access, Caller, Scope};
use crate::ids::UserId;
pub use store::STATEMENTS;

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

impl From<store::User> for UserView {
    fn from(user: store::User) -> Self {
        let store::User { id, email, role, created_at, disabled } = user;
        Self { id: id.0, email, role, created_at, disabled }
    }
}

/// The organization's users, newest first.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(crate::http::openapi::PageQuery),
    responses((status = 200, description = "One page of users", body = Paged<UserView>)))]
async fn list(State(db): State<Pool>, caller: Caller, page: Page) -> Result<Json<Paged<UserView>>, ApiError> {
    let mut client = db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let users = store::list_users(&tx, caller.org, &page).await?;
    tx.commit().await?;
    let users = users.into_iter().map(UserView::from).collect();
    Ok(Json(Paged::from_rows(users, &page, |u| Cursor::new(u.created_at, u.id))))
}

/// One user of the organization.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, description = "The user", body = UserView)))]
async fn get(State(db): State<Pool>, caller: Caller, PathId(id): PathId<UserId>) -> Result<Json<UserView>, ApiError> {
    let mut client = db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let user = store::get_user(&tx, caller.org, id).await?;
    tx.commit().await?;
    user.map(|u| Json(UserView::from(u))).ok_or_else(ApiError::not_found)
}
