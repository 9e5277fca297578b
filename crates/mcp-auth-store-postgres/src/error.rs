//! The errors this crate puts inside [`StoreError::Backend`], and the mapping of driver
//! errors to [`StoreError`].

use mcp_auth_server::store::StoreError;
use tokio_postgres::error::SqlState;

/// What failed, in words an operator can act on (which server, what step), with the driver's
/// error as the source. Never holds a password: messages are built from the host and port,
/// and the driver's errors do not print passwords.
///
/// `Display` is the message alone; the driver's error ("password authentication failed for
/// user ...", "Connection refused") is the source, for error reporters that walk the chain.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct PgError {
    message: String,
    #[source]
    source: Option<tokio_postgres::Error>,
}

impl PgError {
    pub(crate) fn msg(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(message: impl Into<String>, source: tokio_postgres::Error) -> Self {
        Self {
            message: message.into(),
            source: Some(source),
        }
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// A failed statement.
pub(crate) fn backend(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Maps a failed insert: a primary key violation means the row exists.
pub(crate) fn insert_error(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            StoreError::Conflict(what)
        } else {
            backend(e)
        }
    }
}

/// A column that did not decode.
pub(crate) fn corrupt(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        source: Box::new(e),
    }
}
