//! Database errors, classified once: [`DbError::Unavailable`] (the database
//! cannot be reached right now — worth retrying) or [`DbError::Failed`]
//! (anything else — opaque to clients, described for operators). HTTP maps
//! them once too (`crate::http::ApiError`: 503 with `Retry-After`, or an
//! opaque 500); capability errors carry them, never the driver's error.

use super::{connection_lost, describe_error};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A lost or refused connection, or no pooled connection in time.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Any other failure: the server's message and SQLSTATE, or the client-side cause.
    #[error("database error: {0}")]
    Failed(String),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        if connection_lost(&e) {
            tracing::warn!(error = %describe_error(&e), "the database connection was lost");
            return Self::Unavailable(describe_error(&e));
        }
        Self::Failed(describe_error(&e))
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %e, "no database connection available");
        Self::Unavailable(e.to_string())
    }
}
