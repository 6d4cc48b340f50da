//! The files capability's SQL (`sql/files/`) as typed functions: rows are
//! decoded here, once, into [`StoredFile`].

use std::collections::HashSet;

use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use tokio_postgres::Row;

use crate::db::DbError;
use crate::http::pagination::Page;
use crate::ids::{FileId, OrgId};

crate::db::statements! { "files":
    INSERT_FILE => "insert_file",
    LIST_FILES => "list_files",
    GET_FILE => "get_file",
    DELETE_FILE => "delete_file",
    KNOWN_IDS => "known_ids",
}

/// A stored file's metadata (its bytes are on disk under its id).
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub id: FileId,
    pub name: String,
    pub size: i64,
    pub sha256: String,
    pub content_type: String,
    pub created_at: OffsetDateTime,
}

impl From<&Row> for StoredFile {
    fn from(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            name: row.get("name"),
            size: row.get("size"),
            sha256: row.get("sha256"),
            content_type: row.get("content_type"),
            created_at: row.get("created_at"),
        }
    }
}

/// What an upload records about the file it stored.
pub struct NewFile<'a> {
    pub id: FileId,
    pub name: &'a str,
    pub size: i64,
    pub sha256: &'a str,
    pub content_type: &'a str,
    pub created_by: &'a str,
}

pub async fn insert_file(tx: &Transaction<'_>, org: OrgId, file: &NewFile<'_>) -> Result<StoredFile, DbError> {
    let statement = tx.prepare_cached(INSERT_FILE).await?;
    let NewFile { id, name, size, sha256, content_type, created_by } = file;
    let row = tx.query_one(&statement, &[id, &org, name, size, sha256, content_type, created_by]).await?;
    Ok(StoredFile::from(&row))
}

/// One page of `org`'s files, newest first (one more than the page's limit: the caller cuts it).
pub async fn list_files(tx: &Transaction<'_>, org: OrgId, page: &Page) -> Result<Vec<StoredFile>, DbError> {
    let statement = tx.prepare_cached(LIST_FILES).await?;
    let (after_at, after_id) = (page.after.map(|c| c.at()), page.after.map(|c| c.id()));
    let rows = tx.query(&statement, &[&org, &after_at, &after_id, &(page.limit + 1)]).await?;
    Ok(rows.iter().map(StoredFile::from).collect())
}

pub async fn get_file(tx: &Transaction<'_>, org: OrgId, id: FileId) -> Result<Option<StoredFile>, DbError> {
    let statement = tx.prepare_cached(GET_FILE).await?;
    Ok(tx.query_opt(&statement, &[&id, &org]).await?.as_ref().map(StoredFile::from))
}

/// Deletes the row; whether there was one.
pub async fn delete_file(tx: &Transaction<'_>, org: OrgId, id: FileId) -> Result<bool, DbError> {
    let statement = tx.prepare_cached(DELETE_FILE).await?;
    Ok(tx.query_opt(&statement, &[&id, &org]).await?.is_some())
}

/// Which of `ids` have a row in `org` (the orphan sweep keeps exactly those files).
pub async fn known_ids(tx: &Transaction<'_>, org: OrgId, ids: &[FileId]) -> Result<HashSet<FileId>, DbError> {
    Ok(tx.query(KNOWN_IDS, &[&org, &ids]).await?.iter().map(|r| r.get("id")).collect())
}
