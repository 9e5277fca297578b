//! # mcp-auth-store-sqlite
//!
//! A SQLite backend for the [`Store`] of the `mcp-auth-server` authorization server: one
//! file, no server process, safe to share between the processes of one machine.
//!
//! - The database runs in WAL mode (readers never block the writer) with a busy timeout, so
//!   concurrent writers wait for each other instead of failing.
//! - The schema is versioned; its migrations are compiled into the crate and applied by
//!   [`SqliteStore::open`].
//! - The single-use operations are atomic in the database, not in this process: an
//!   authorization code is spent by one `UPDATE … WHERE spent_at IS NULL … RETURNING`
//!   (RFC 6749 §4.1.2), and a refresh token is rotated inside a `BEGIN IMMEDIATE`
//!   transaction (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2), so two processes sharing the file can
//!   never both win.
//! - Queries are built at run time (`sqlx::query`), so building needs no database.
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

mod store;

pub use store::SqliteStore;

#[doc(no_inline)]
pub use mcp_auth_server::store::Store;
