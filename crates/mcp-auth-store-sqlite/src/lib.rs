//! # mcp-auth-store-sqlite
//!
//! A SQLite backend for the [`Store`] of the `mcp-auth-server` authorization server: one
//! file, no server process, safe to share between the processes of one machine.
//!
//! - **Durable before answered.** The database runs in WAL mode; a write is answered only
//!   once the log holding it has been flushed to disk (`fdatasync`), as with SQLite's
//!   `synchronous=FULL`, so an answered write survives a crash or a power loss.
//! - **Group commit, pipelined.** One thread owns the writing connection. It takes every
//!   write waiting in its queue and runs them in one transaction (a write of several
//!   statements in its own savepoint, so one failing write undoes only itself). A second
//!   thread flushes the log and then answers; meanwhile the writer already runs the next
//!   batch, and one flush covers every batch committed before it. Concurrent writes thus
//!   share flushes, and the disk's flush latency bounds each request's latency rather than
//!   the server's throughput. Reads run on a small pool of reader connections on the
//!   calling task, and never wait for the writer.
//! - **Checkpoints in the background.** A third thread copies the log into the database
//!   file on its own connection; the writer only copies the last short tail, so that the
//!   log starts over, instead of stalling for the whole copy.
//! - The schema is versioned (`PRAGMA user_version`); its migrations are compiled into the
//!   crate and applied by [`SqliteStore::open`].
//! - The single-use operations are atomic in the database, not only in this process: each
//!   runs inside the writer's `BEGIN IMMEDIATE` transaction, which holds SQLite's write lock,
//!   so an authorization code is spent once (RFC 6749 §4.1.2) and a refresh token rotated
//!   once (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2) even when two processes share the file (a
//!   second process waits up to 5 s for the lock).
//!
//! ```
//! use mcp_auth_server::store::{Store, UserRow};
//! use mcp_auth_store_sqlite::SqliteStore;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = SqliteStore::open_in_memory().await.unwrap();
//! let alice = UserRow {
//!     tenant: "acme".into(),
//!     username: "alice".into(),
//!     password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
//!     created_at: 1_700_000_000,
//! };
//! store.put_user(&alice).await.unwrap();
//! assert_eq!(store.get_user("acme", "alice").await.unwrap(), Some(alice));
//! assert_eq!(store.get_user("other-tenant", "alice").await.unwrap(), None);
//! # });
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod checkpoint;
mod engine;
mod store;

pub use engine::WriteStats;
pub use store::SqliteStore;

#[doc(no_inline)]
pub use mcp_auth_server::store::Store;
