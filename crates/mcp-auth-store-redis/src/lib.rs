//! # mcp-auth-store-redis
//!
//! A Redis backend for the [`Store`] of the `mcp-auth-server` authorization server, for
//! several server instances sharing one Redis.
//!
//! ```no_run
//! use mcp_auth_server::store::{Store, UserRow};
//! use mcp_auth_store_redis::{RedisOptions, RedisStore};
//!
//! # async fn run() -> Result<(), mcp_auth_server::store::StoreError> {
//! let store = RedisStore::connect_with(
//!     RedisOptions::new("redis://127.0.0.1:6379/0").prefix("auth:"),
//! )
//! .await?;
//! let alice = UserRow {
//!     tenant: "acme".into(),
//!     username: "alice".into(),
//!     password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
//!     created_at: 1_700_000_000,
//! };
//! store.put_user(&alice).await?;
//! assert_eq!(store.get_user("acme", "alice").await?, Some(alice));
//! # Ok(())
//! # }
//! ```
//!
//! ## Key layout
//! Every key starts with the prefix ([`RedisOptions::prefix`], `mcp-auth:` by default),
//! then, for a tenant's rows, `t{len}:{tenant}:` where `len` is the tenant's length in
//! bytes, so that no tenant name, `:` and all, can spell another tenant's key. Each row is
//! a hash: the row as JSON in field `row`, plus the fields the scripts test.
//!
//! | key (after `{prefix}t{len}:{tenant}:`) | holds |
//! |---|---|
//! | `client:{client_id}` | a client |
//! | `user:{username}` | a user |
//! | `code:{code_hash}` | an authorization code; `spent` once redeemed |
//! | `refresh:{token_hash}` | a refresh token; `rotated` once rotated |
//! | `family:{family_id}` | set: the keys of the family's refresh tokens |
//! | `revoked:{family_id}` | a revoked family, remembered until `exp` |
//! | `access:{jti}` | a revoked access token, until `exp` |
//! | `key:{kid}` | a signing key; `exp` = `not_after` once retired |
//! | `keys` | set: the keys of the tenant's signing keys |
//! | `pending:{id}` | a pending authorization request |
//! | `consent:{len}:{subject}:{client_id}` | a consent |
//! | `consents` | set: the keys of the tenant's consents, for [`Store::list_consents`] |
//! | `by-subject:{subject}` | set: the keys of a user's consents, for [`Store::list_consents`] of one user |
//! | `by-client:{client_id}` | set: the codes, refresh tokens, pending requests and consents of a client, for the cascade of [`Store::delete_client`] (RFC 7592 §2.3) and [`Store::revoke_client_grants`] |
//! | `session:{session_hash}` | a login session |
//! | `device:{device_code_hash}` | a device authorization (RFC 8628): the row as first stored in `row`, and what changes in `status`, `subject`, `granted`, `interval`, `last` (the last poll), decided and polled in scripts |
//! | `device-user:{user_code_hash}` | the key of the device authorization with that user code (`dev`); expires with it (key TTL only, not in the expiry index) |
//! | `upstream:{account}` | an account's sealed upstream tokens; `ver` = its version, compared by [`Store::swap_upstream`] in a script |
//!
//! and one key per store, `{prefix}expiry`: a sorted set of every row that expires,
//! scored by its expiry.
//!
//! ## Atomicity
//! Every write of more than one key, and every "first or not" decision, is one Lua script
//! (`EVALSHA`, loaded again by itself after a Redis restart). Redis runs a script to its
//! end before serving anything else, so across any number of server instances an
//! authorization code is redeemed once (RFC 6749 §4.1.2), a refresh token rotated once
//! (OAuth 2.1 §4.3.1; reuse revokes the family, RFC 9700 §4.14.2), a pending request taken
//! once, a signing key `kid` added once, and no client ever sees a row half written.
//!
//! [`Store::redeem_code`] spends the code and stores the first refresh token of its family
//! in one script (`REDEEM_CODE`: `TAKE_CODE` and `PUT_REFRESH` together), so a replay
//! always finds the token to revoke, and a token that cannot be stored (family revoked,
//! hash taken) leaves the code unspent. The token row is made from the code row
//! ([`NewRefresh::row_for`](mcp_auth_server::store::NewRefresh::row_for)), which the store
//! reads first; the script takes the code only if its row is still the one read (if not,
//! nothing changes and the store reads it again), so all JSON is written by Rust.
//! Some scripts reach keys they find in the data (a family's tokens, a client's rows), so
//! the store needs one Redis server (replicas are fine), not a Redis Cluster.
//!
//! ## Expiry
//! Reads decide expiry from the `now` they are given, as the [`Store`] rules ask. Redis's
//! own expiry only reclaims memory: each row with an expiry gets a key TTL of the time
//! left, by the store's TTL clock ([`RedisOptions::ttl_clock`]), plus a margin
//! ([`RedisOptions::ttl_margin_secs`], 300 s by default); a row already expired by that
//! clock is kept only for the margin. [`Store::sweep`] deletes the rows of the expiry
//! index due at its `now`, and removes them from the index sets, counting only the keys it
//! actually deleted, so rows Redis already dropped are not counted twice.
//!
//! Run the sweep periodically ([`RedisStore::spawn_sweeper`], or
//! [`spawn_sweeper`](mcp_auth_server::store::spawn_sweeper)), more often than the margin:
//! the expiry index only shrinks by sweeping, and a row that Redis drops first leaves its
//! key name in its client's index set (a few dozen bytes, gone when that set expires or the
//! client is deleted).
//!
//! ## Outages
//! The connection is multiplexed and reconnects by itself. While Redis is unreachable,
//! every call fails with [`StoreError::Backend`](mcp_auth_server::store::StoreError)
//! within the connect plus response timeouts; once Redis is back, calls succeed again.
//! Errors, logs and `Debug` name the address, never the password.
//!
//! Redis persists data only as configured (RDB snapshots, AOF): for codes and refresh
//! tokens to survive a Redis restart, run it with `appendonly yes`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod keys;
mod options;
mod scripts;
mod store;

pub use options::RedisOptions;
pub use store::RedisStore;

#[doc(no_inline)]
pub use mcp_auth_server::store::Store;
