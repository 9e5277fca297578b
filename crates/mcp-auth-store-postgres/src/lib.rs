//! # mcp-auth-store-postgres
//!
//! A PostgreSQL backend for the [`Store`] of the `mcp-auth-server` authorization server,
//! for deployments that run several server instances against one database.
//!
//! - **Pooled, bounded, self-healing.** Calls run on a pool of connections
//!   ([`PostgresOptions::pool_size`], 16 by default). Each call waits at most the statement
//!   timeout (5 s by default) for a connection, opening one takes at most the connect timeout
//!   (5 s), and its statements at most the statement timeout, enforced both by the server
//!   (`statement_timeout`) and by a client-side deadline for a server that stopped
//!   answering. When PostgreSQL goes away calls fail with [`StoreError::Backend`] instead of
//!   hanging; a connection that missed its deadline is closed, not reused, and the pool opens
//!   new ones when the server is back, without a restart.
//! - **Versioned migrations.** The schema's migrations are compiled into the crate and applied
//!   by [`PostgresStore::connect`] in one transaction, under an advisory lock, so instances
//!   starting together apply each once. The applied versions are recorded in
//!   `mcp_auth_schema_migrations`; a database whose schema is newer than the program is
//!   refused. [`PostgresOptions::schema`] puts the tables in a schema of their own.
//! - **Single use across instances.** The single-use operations are decided by PostgreSQL,
//!   not in this process: an authorization code is spent by one `UPDATE … WHERE spent_at IS
//!   NULL … RETURNING` (RFC 6749 §4.1.2) and a pending request taken by one `DELETE …
//!   RETURNING`, so of concurrent callers on any connections exactly one wins. Every change to
//!   a token family (storing, rotating — OAuth 2.1 §4.3.1 — and revoking its refresh tokens,
//!   RFC 9700 §4.14.2) runs in one transaction holding the family's advisory lock, so a reused
//!   token revokes the whole family, the newest token included, and a token stored for a
//!   family revoked meanwhile is refused. [`Store::redeem_code`] spends the code and stores
//!   the family's first refresh token in one transaction (the code's row lock, then the
//!   family's lock): a concurrent replay waits for it and sees the code spent only together
//!   with the token, so revoking the family on replay always removes the winner's token, and
//!   a token that cannot be stored (revoked family, existing hash) leaves the code unspent. A
//!   failed call leaves no partial write.
//! - **Signing keys coordinate instances.** [`Store::put_signing_key`] fails with
//!   [`StoreError::Conflict`] when the `kid` exists, so instances rotating keys together learn
//!   that another one won.
//! - **Credentials stay secret.** The password (from the URL, or `PGPASSWORD` when the URL
//!   has none) never appears in `Debug` output, logs or errors; errors name `host:port`.
//!   Connections are not encrypted (no TLS connector): keep the database on a trusted
//!   network or a Unix socket.
//!
//! ```no_run
//! use mcp_auth_server::store::{Store, UserRow};
//! use mcp_auth_store_postgres::{PostgresOptions, PostgresStore};
//!
//! # async fn demo() -> Result<(), mcp_auth_server::store::StoreError> {
//! let store = PostgresStore::connect_with(
//!     PostgresOptions::new("postgres://mcp_auth@db.internal:5432/mcp_auth").schema("auth"),
//! )
//! .await?;
//! let _sweeper = store.spawn_sweeper(std::time::Duration::from_secs(60));
//! let alice = UserRow {
//!     tenant: "acme".into(),
//!     username: "alice".into(),
//!     password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
//!     created_at: 1_700_000_000,
//! };
//! store.put_user(&alice).await?;
//! assert_eq!(store.get_user("acme", "alice").await?, Some(alice));
//! assert_eq!(store.get_user("other-tenant", "alice").await?, None);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod migrate;
mod options;
mod store;

pub use options::PostgresOptions;
pub use store::PostgresStore;

#[doc(no_inline)]
pub use mcp_auth_server::store::{Store, StoreError};
