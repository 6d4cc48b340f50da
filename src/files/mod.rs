//! Each organization's shared files: upload (streamed, bounded, atomic),
//! list, metadata, download (as an attachment), delete, and the sweep of
//! orphans a crash can leave on disk.
//!
//! Two independent locks on traversal: the uploader's name is cleaned and
//! kept as metadata only ([`name`]), and the bytes live under the file's id
//! in a path verified before every open ([`disk`]).

pub mod disk;
pub mod name;
mod store;

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRef, FromRequest as _, Multipart, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::tenant;
use crate::http::pagination::{Cursor, Page, Paged};
use crate::http::{ApiError, PathId, Routes};
use crate::identity::{Access, Caller, Scope};
use crate::ids::{FileId, OrgId};
use disk::DiskError;

/// What the files API needs.
#[derive(Clone)]
pub struct FilesState {
    pub config: std::sync::Arc<crate::config::Config>,
    pub db: crate::db::Pool,
    /// Uploaded files' bytes (`MOAT_FILES_DIR`).
    pub disk: disk::Disk,
}

pub use store::STATEMENTS;

/// Content types kept as declared; anything else is stored and served as
/// `application/octet-stream` (with `nosniff` and as an attachment either way).
const KEPT_TYPES: &[&str] = &[
    "text/plain",
    "text/csv",
    "application/json",
    "application/pdf",
    "application/zip",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
];

#[derive(utoipa::OpenApi)]
#[openapi(paths(upload, list, get, content, delete))]
pub(crate) struct Api;

/// The multipart form of an upload.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the form `upload` streams by hand
struct UploadForm {
    /// The file; its name is sanitized, its bytes stored under a new id.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

pub fn routes<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    FilesState: FromRef<S>,
{
    Routes::new()
        .post_streaming("/v1/files", Access::Scope(Scope::FilesWrite), upload)
        .get("/v1/files", Access::Scope(Scope::FilesRead), list)
        .get("/v1/files/{id}", Access::Scope(Scope::FilesRead), get)
        .get("/v1/files/{id}/content", Access::Scope(Scope::FilesRead), content)
        .delete("/v1/files/{id}", Access::Scope(Scope::FilesWrite), delete)
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not found")]
    NotFound,
    #[error("invalid file name: {0}")]
    InvalidName(#[from] name::NameError),
    #[error("invalid upload: {0}")]
    InvalidUpload(&'static str),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<crate::db::DbError> for FileError {
    fn from(e: crate::db::DbError) -> Self {
        Self::Api(e.into())
    }
}

crate::db::from_db_errors!(FileError);

impl From<tenant::TenantError> for FileError {
    fn from(e: tenant::TenantError) -> Self {
        Self::Api(e.into())
    }
}

impl IntoResponse for FileError {
    fn into_response(self) -> Response {
        match self {
            Self::NotFound => ApiError::not_found(),
            Self::InvalidName(e) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_filename", e.to_string()),
            Self::InvalidUpload(why) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_upload", why),
            Self::Disk(DiskError::TooLarge(max)) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "file_too_large",
                format!("files may be at most {max} bytes"),
            ),
            Self::Disk(e @ DiskError::Escape(_)) => {
                // Someone tampered with the storage folder: refuse, say nothing about paths.
                tracing::error!(error = %e, "file storage refused a path");
                ApiError::not_found()
            }
            Self::Disk(DiskError::Io(e)) => ApiError::internal(&e),
            Self::Api(e) => e,
        }
        .into_response()
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct FileView {
    id: Uuid,
    name: String,
    size: i64,
    sha256: String,
    content_type: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<store::StoredFile> for FileView {
    fn from(file: store::StoredFile) -> Self {
        let store::StoredFile { id, name, size, sha256, content_type, created_at } = file;
        Self { id: id.0, name, size, sha256, content_type, created_at }
    }
}

/// Multipart framing allowed on top of the file's bytes (boundaries, part headers).
const FRAMING_BYTES: u64 = 64 * 1024;

/// `POST /v1/files`, multipart with one field `file`.
/// Uploads one file (`multipart/form-data`, field `file`).
#[utoipa::path(post, path = "/v1/files", tag = "files",
    request_body(content = UploadForm, content_type = "multipart/form-data"), responses(
    (status = 201, description = "Stored", body = FileView),
    (status = 400, description = "`invalid_filename` or `invalid_upload`", body = crate::http::openapi::ErrorBody),
    (status = 413, description = "Larger than MOAT_MAX_UPLOAD_BYTES", body = crate::http::openapi::ErrorBody),
))]
async fn upload(State(state): State<FilesState>, caller: Caller, request: Request) -> Result<Response, FileError> {
    // The whole body is bounded before the multipart parser sees it: without
    // this, a body with no boundary would be buffered by the parser unbounded.
    let max = state.config.files.max_upload_bytes;
    let (parts, body) = request.into_parts();
    let limit = usize::try_from(max + FRAMING_BYTES).unwrap_or(usize::MAX);
    let body = Body::new(http_body_util::Limited::new(body, limit));
    let mut form = Multipart::from_request(Request::from_parts(parts, body), &state)
        .await
        .map_err(|_| FileError::InvalidUpload("a multipart/form-data body with one field named `file`"))?;
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            FileError::Disk(DiskError::TooLarge(max))
        } else {
            FileError::InvalidUpload("a multipart/form-data body with one field named `file`")
        }
    };
    let mut field = form.next_field().await.map_err(bad)?.ok_or(FileError::InvalidUpload("no `file` field"))?;
    if field.name() != Some("file") {
        return Err(FileError::InvalidUpload("the field must be named `file`"));
    }
    let name = name::clean(field.file_name().ok_or(FileError::InvalidUpload("the `file` field has no filename"))?)?;
    let declared = field.content_type().map(|t| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let content_type =
        declared.filter(|t| KEPT_TYPES.contains(&t.as_str())).unwrap_or_else(|| "application/octet-stream".into());
    let mut upload = state.disk.begin(caller.org, max).await?;
    while let Some(chunk) = field.chunk().await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            FileError::Disk(DiskError::TooLarge(max))
        } else {
            FileError::InvalidUpload("the upload was cut short or malformed")
        }
    })? {
        upload.write(&chunk).await?;
    }
    drop(field);
    if form.next_field().await.map_err(bad)?.is_some() {
        return Err(FileError::InvalidUpload("only one field, `file`, is accepted"));
    }
    let id = FileId(Uuid::new_v4());
    let (size, sha256) = state.disk.commit(caller.org, id, upload).await?;
    // The file is durably in place; now the row. (A crash in between leaves an
    // orphan file, which the sweep removes; never a row without its file.)
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    let inserted = async {
        let mut client = state.db.get().await?;
        let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
        let actor = caller.actor();
        let new =
            store::NewFile { id, name: &name, size, sha256: &sha256, content_type: &content_type, created_by: &actor };
        let file = store::insert_file(&tx, caller.org, &new).await?;
        tx.commit().await?;
        Ok::<_, FileError>(FileView::from(file))
    }
    .await;
    match inserted {
        Ok(view) => Ok((StatusCode::CREATED, Json(view)).into_response()),
        Err(e) => {
            let _ = state.disk.remove(caller.org, id).await;
            Err(e)
        }
    }
}

/// The organization's files, newest first.
#[utoipa::path(get, path = "/v1/files", tag = "files", params(crate::http::openapi::PageQuery),
    responses((status = 200, description = "One page of files", body = Paged<FileView>)))]
async fn list(State(state): State<FilesState>, caller: Caller, page: Page) -> Result<Json<Paged<FileView>>, FileError> {
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let files = store::list_files(&tx, caller.org, &page).await?;
    tx.commit().await?;
    let items = files.into_iter().map(FileView::from).collect();
    Ok(Json(Paged::from_rows(items, &page, |f| Cursor::new(f.created_at, f.id))))
}

async fn find(state: &FilesState, caller: &Caller, id: FileId) -> Result<FileView, FileError> {
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let file = store::get_file(&tx, caller.org, id).await?;
    tx.commit().await?;
    file.map(FileView::from).ok_or(FileError::NotFound)
}

/// One file's metadata.
#[utoipa::path(get, path = "/v1/files/{id}", tag = "files", params(("id" = Uuid, Path, description = "File id")),
    responses((status = 200, description = "The file's metadata", body = FileView)))]
async fn get(
    State(state): State<FilesState>,
    caller: Caller,
    PathId(id): PathId<FileId>,
) -> Result<Json<FileView>, FileError> {
    Ok(Json(find(&state, &caller, id).await?))
}

/// `GET /v1/files/{id}/content`: always an attachment, never rendered.
/// The file's bytes, as an attachment (`nosniff`; only inert types keep their content type).
#[utoipa::path(get, path = "/v1/files/{id}/content", tag = "files", params(("id" = Uuid, Path, description = "File id")),
    responses((status = 200, description = "The bytes: `application/octet-stream`, or the stored type when it is inert (plain text, CSV, JSON, PDF, ZIP, PNG, JPEG, GIF, WebP)", content_type = "*/*")))]
async fn content(
    State(state): State<FilesState>,
    caller: Caller,
    PathId(id): PathId<FileId>,
) -> Result<Response, FileError> {
    let view = find(&state, &caller, id).await?;
    let file = state.disk.open(caller.org, id).await?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let disposition =
        HeaderValue::from_str(&name::content_disposition(&view.name)).unwrap_or(HeaderValue::from_static("attachment"));
    let content_type =
        HeaderValue::from_str(&view.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CONTENT_LENGTH, HeaderValue::from(view.size)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response())
}

/// `DELETE /v1/files/{id}`: the row first, then the bytes (an orphan file is swept; a row never dangles).
/// Deletes a file.
#[utoipa::path(delete, path = "/v1/files/{id}", tag = "files", params(("id" = Uuid, Path, description = "File id")),
    responses((status = 204, description = "Deleted")))]
async fn delete(
    State(state): State<FilesState>,
    caller: Caller,
    PathId(id): PathId<FileId>,
) -> Result<StatusCode, FileError> {
    let mut client = state.db.get().await?;
    let tx = tenant::begin(&mut client, caller.org, caller.principal()).await?;
    let deleted = store::delete_file(&tx, caller.org, id).await?;
    tx.commit().await?;
    if !deleted {
        return Err(FileError::NotFound);
    }
    state.disk.remove(caller.org, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes what a crash can leave on disk, if older than `min_age`:
/// temporary uploads, files whose row was never written (or already
/// deleted), and anything else that is not a stored file (e.g. a symlink).
/// Returns how many entries were removed.
pub async fn sweep(disk: &disk::Disk, pool: &crate::db::Pool, min_age: Duration) -> anyhow::Result<usize> {
    let candidates = {
        let disk = disk.clone();
        tokio::task::spawn_blocking(move || disk.candidates(min_age)).await??
    };
    let mut by_org: std::collections::BTreeMap<OrgId, Vec<(std::path::PathBuf, Option<FileId>)>> = Default::default();
    for (org, path, id) in candidates {
        by_org.entry(org).or_default().push((path, id));
    }
    let mut removed = 0;
    for (org, entries) in by_org {
        let ids: Vec<FileId> = entries.iter().filter_map(|(_, id)| *id).collect();
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tenant::set_org(&tx, org).await?;
        let known = store::known_ids(&tx, org, &ids).await?;
        tx.commit().await?;
        for (path, id) in entries {
            if id.is_some_and(|id| known.contains(&id)) {
                continue;
            }
            if tokio::fs::remove_file(&path).await.is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}
