//! [`PostgresVault`]: the [`VaultBackend`] in PostgreSQL, for apps that run several
//! instances against one database.
//!
//! - **Tables of its own.** `connect_vault_records` and `connect_used_ids` in the schema of
//!   [`PostgresVaultOptions::schema`] (default `public`; a named schema is created if
//!   missing): the `connect_` prefix lets them share a database, and a schema, with the
//!   authorization server's tables.
//! - **Versioned migrations.** Compiled into the crate, applied by
//!   [`PostgresVault::connect`] in one transaction holding an advisory lock keyed by the
//!   schema, so instances starting together apply each once. The applied versions are rows
//!   of `connect_schema_migrations`; a schema newer than this crate is refused.
//! - **Bounded calls.** `get`, `put`, `delete`, `list` and `use_once` run on a pool of
//!   connections ([`PostgresVaultOptions::pool_size`]); each waits at most
//!   [`PostgresVaultOptions::statement_timeout`] for a connection and as long for its
//!   statement (enforced by the server and by a client-side deadline; a connection that
//!   missed it is closed, not reused). Failures are [`StoreError::Backend`], naming the
//!   server (`host:port`) and the step, never a password or a row's content.
//! - **Locks across instances.** [`VaultBackend::lock`] takes the session-level
//!   `pg_advisory_lock` of a 64-bit hash of (schema, user, key) on a connection of a second
//!   pool (at most [`PostgresVaultOptions::lock_connections`] locks held or awaited at once
//!   per instance; a further `lock` waits up to the statement timeout for one, then fails).
//!   Tasks of one instance first queue on an in-process mutex per (user, key), so one
//!   connection per contended key waits in PostgreSQL. The wait for the advisory lock itself
//!   is unbounded, as for the other backends. The connection stays with the guard: dropping
//!   the guard unlocks and returns it to the pool (from a task; if the unlock fails or the
//!   runtime is gone, the connection is closed instead, which releases the lock too). If
//!   the process dies, its sessions end and PostgreSQL releases their locks. If the lock's
//!   connection is cut while held (a server restart), the lock is lost with it.
//! - **Single use.** [`VaultBackend::use_once`] is one `INSERT … ON CONFLICT DO UPDATE …
//!   WHERE expired … RETURNING`: of concurrent callers on any instance exactly one wins. It
//!   also deletes a few expired ids, so the table does not grow.
//!
//! Connections are not encrypted (no TLS connector): keep the database on a trusted network
//! or a Unix socket. Without a password in the URL, `PGPASSWORD` is used if set.
//!
//! ```no_run
//! use std::sync::Arc;
//! use mcp_auth_connect::postgres::{PostgresVault, PostgresVaultOptions};
//! use mcp_auth_connect::vault::Vault;
//! use mcp_auth_types::seal::SealKeys;
//!
//! # async fn demo(keys: SealKeys) -> Result<(), mcp_auth_client::store::StoreError> {
//! let backend = PostgresVault::connect_with(
//!     PostgresVaultOptions::new("postgres://app@db.internal:5432/app").schema("connect"),
//! )
//! .await?;
//! let vault = Vault::new(Arc::new(backend), keys);
//! # let _ = vault;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use mcp_auth_client::store::{StoreError, StoreLock};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedMutexGuard, oneshot};
use tokio_postgres::config::Host;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::sqlite::{KeyedMutex, to_sql_time, unix_now};
use crate::vault::VaultBackend;

/// One step of the schema. Run with `search_path` set to the vault's schema.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in order. A released migration is never edited: add a new one.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "vault records and used ids",
    sql: "\
CREATE TABLE connect_vault_records (
    user_id    TEXT   NOT NULL,
    key        TEXT   NOT NULL,
    sealed     TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE TABLE connect_used_ids (
    id         TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX connect_used_ids_expires_at ON connect_used_ids (expires_at);
",
}];

/// The first key of the two-key advisory lock serializing migrations ("mcpc"; the
/// authorization server's store uses "mcpa"); the second is `hashtext(schema)`. Two-key
/// advisory locks never collide with the one-key (bigint) locks of [`VaultBackend::lock`].
const MIGRATION_LOCK_CLASS: i32 = 0x6d63_7063;

/// Expired used ids deleted by one `use_once`, at most.
const SWEEP_BATCH: i64 = 32;

/// How to reach the database, for [`PostgresVault::connect_with`].
///
/// `Debug` prints the URL with its password replaced by `[redacted]`.
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresVaultOptions {
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB` (or `postgresql://`), with optional
    /// libpq-style query parameters. Without a password in the URL, the `PGPASSWORD`
    /// environment variable is used, if set.
    pub url: String,
    /// The schema holding the tables; `None` means `public`. A named schema is created if
    /// missing. It must be a plain lowercase SQL identifier: `[a-z_][a-z0-9_]*`, at most 63
    /// bytes, not starting with `pg_`.
    pub schema: Option<String>,
    /// The most connections for `get`/`put`/`delete`/`list`/`use_once`. Default 8.
    pub pool_size: usize,
    /// The most locks this instance holds or waits for at once, each on a connection of
    /// its own. Default 16.
    pub lock_connections: usize,
    /// How long opening one connection may take. Default 5 s.
    pub connect_timeout: Duration,
    /// How long a call may wait for a free connection, and then how long its statement may
    /// run. Default 5 s. (Not the wait for a lock, which is unbounded.)
    pub statement_timeout: Duration,
}

impl PostgresVaultOptions {
    /// The defaults, for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            pool_size: 8,
            lock_connections: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }

    /// Sets [`schema`](Self::schema).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Sets [`pool_size`](Self::pool_size).
    pub fn pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// Sets [`lock_connections`](Self::lock_connections).
    pub fn lock_connections(mut self, lock_connections: usize) -> Self {
        self.lock_connections = lock_connections;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`statement_timeout`](Self::statement_timeout).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }
}

impl fmt::Debug for PostgresVaultOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresVaultOptions")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("lock_connections", &self.lock_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// A [`VaultBackend`] in PostgreSQL. Cloning is cheap and shares the pools.
///
/// Several instances (processes, machines) may share one database and schema: locks and
/// single use are decided by PostgreSQL. See the [module docs](self).
#[derive(Clone)]
pub struct PostgresVault {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    lock_pool: Pool,
    /// `host:port`, for error messages (never the password).
    target: String,
    schema: String,
    /// The deadline of each call once it holds a connection.
    timeout: Duration,
    sql: Statements,
    /// Tasks of this instance waiting for the same lock queue here.
    locks: KeyedMutex<i64>,
}

/// The statements, with the schema spliced in (a validated identifier).
struct Statements {
    get: String,
    put: String,
    delete: String,
    list: String,
    use_once: String,
}

impl Statements {
    fn new(s: &str) -> Self {
        Self {
            get: format!(
                "SELECT sealed FROM {s}.connect_vault_records WHERE user_id = $1 AND key = $2"
            ),
            put: format!(
                "INSERT INTO {s}.connect_vault_records (user_id, key, sealed, updated_at) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, key) DO UPDATE \
                 SET sealed = EXCLUDED.sealed, updated_at = EXCLUDED.updated_at"
            ),
            delete: format!(
                "DELETE FROM {s}.connect_vault_records WHERE user_id = $1 AND key = $2"
            ),
            list: format!(
                "SELECT key, sealed FROM {s}.connect_vault_records WHERE user_id = $1 \
                 ORDER BY key"
            ),
            // The sweep skips `$1`, so the statement never touches one row twice, and rows
            // another sweep is deleting (SKIP LOCKED), so concurrent callers never wait on
            // each other's sweeps.
            use_once: format!(
                "WITH swept AS ( \
                     DELETE FROM {s}.connect_used_ids WHERE id IN ( \
                         SELECT id FROM {s}.connect_used_ids \
                         WHERE expires_at <= $3 AND id <> $1 \
                         LIMIT {SWEEP_BATCH} FOR UPDATE SKIP LOCKED)) \
                 INSERT INTO {s}.connect_used_ids AS u (id, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at \
                 WHERE u.expires_at <= $3 \
                 RETURNING 1"
            ),
        }
    }
}

impl fmt::Debug for PostgresVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresVault")
            .field("target", &self.inner.target)
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresVault {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`) with
    /// the default [`PostgresVaultOptions`] (tables in `public`), and brings the vault's
    /// tables up to date.
    ///
    /// Fails with [`StoreError::Backend`] (naming the server, never the password) when the
    /// server cannot be reached, refuses the credentials, or holds a schema newer than this
    /// crate.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(PostgresVaultOptions::new(url)).await
    }

    /// Connects as `options` say, creates the schema if one is named, and brings the vault's
    /// tables up to date. Fails like [`connect`](Self::connect), and on invalid options.
    pub async fn connect_with(options: PostgresVaultOptions) -> Result<Self, StoreError> {
        let schema = match &options.schema {
            Some(name) if valid_schema_name(name) => name.clone(),
            Some(_) => {
                return Err(backend_msg(
                    "invalid PostgreSQL schema name: use [a-z_][a-z0-9_]*, at most 63 bytes, \
                     not starting with pg_",
                ));
            }
            None => "public".to_owned(),
        };
        if options.pool_size == 0 || options.lock_connections == 0 {
            return Err(backend_msg(
                "the PostgreSQL vault needs at least one connection of each kind",
            ));
        }
        let (config, target) = driver_config(&options)?;
        let timeout_ms = options.statement_timeout.as_millis().max(1);
        let pool = build_pool(
            with_startup_options(
                config.clone(),
                &format!(
                    "-c statement_timeout={timeout_ms} \
                     -c idle_in_transaction_session_timeout={}",
                    timeout_ms.saturating_mul(2)
                ),
            ),
            options.pool_size,
            &options,
        )?;
        // Lock connections wait for locks as long as it takes.
        let lock_pool = build_pool(
            with_startup_options(config, "-c statement_timeout=0"),
            options.lock_connections,
            &options,
        )?;
        let vault = Self {
            inner: Arc::new(Inner {
                pool,
                lock_pool,
                sql: Statements::new(&schema),
                target,
                schema,
                timeout: options.statement_timeout,
                locks: KeyedMutex::default(),
            }),
        };
        let mut object = checkout(&vault.inner.pool, &vault.inner.target).await?;
        // Migrations may wait for another instance's; allow them a few statements' time.
        let deadline = options.statement_timeout.saturating_mul(4);
        let outcome = tokio::time::timeout(
            deadline,
            migrate(
                &mut object,
                &vault.inner.schema,
                options.schema.is_some(),
                &vault.inner.target,
            ),
        )
        .await;
        vault.checkin(object, outcome)?;
        Ok(vault)
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Closes the pools: idle connections close, the others as they come back (held locks
    /// are released as their guards drop), and later calls fail.
    pub fn close(&self) {
        self.inner.pool.close();
        self.inner.lock_pool.close();
    }

    /// Runs one statement on a pooled connection within the deadline; its rows.
    async fn query(
        &self,
        what: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let object = checkout(&self.inner.pool, &self.inner.target).await?;
        let outcome = tokio::time::timeout(self.inner.timeout, async {
            let stmt = object.prepare_cached(sql).await?;
            object.query(&stmt, params).await
        })
        .await;
        let outcome = outcome.map(|r| r.map_err(|e| self.failed(what, &e)));
        self.checkin(object, outcome)
    }

    /// Passes a call's result on, and returns its connection to the pool, unless the call
    /// missed its deadline (the connection is mid-statement, or its server is gone) or the
    /// connection closed: such a connection is dropped, and the pool opens a new one.
    fn checkin<T>(
        &self,
        object: Object,
        outcome: Result<Result<T, StoreError>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        match outcome {
            Ok(result) => {
                if object.is_closed() {
                    drop(Object::take(object));
                }
                result
            }
            Err(_) => {
                drop(Object::take(object));
                Err(StoreError::Backend(format!(
                    "PostgreSQL at {} did not answer within {:?}",
                    self.inner.target, self.inner.timeout
                )))
            }
        }
    }

    fn failed(&self, what: &str, e: &tokio_postgres::Error) -> StoreError {
        StoreError::Backend(format!(
            "PostgreSQL vault at {}: {what} failed: {}",
            self.inner.target,
            describe(e)
        ))
    }

    /// The advisory lock key of (`user`, `key`) in this vault's schema (advisory locks are
    /// per database, so the schema is part of the key).
    fn lock_key(&self, user: &str, key: &str) -> i64 {
        let mut h = Sha256::new();
        h.update(b"mcp-auth-connect lock v1\0");
        h.update(self.inner.schema.as_bytes());
        h.update(b"\0");
        h.update((user.len() as u64).to_be_bytes());
        h.update(user.as_bytes());
        h.update(key.as_bytes());
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }
}

#[async_trait]
impl VaultBackend for PostgresVault {
    async fn get(&self, user: &str, key: &str) -> Result<Option<String>, StoreError> {
        let rows = self
            .query("reading a record", &self.inner.sql.get, &[&user, &key])
            .await?;
        match rows.first() {
            Some(row) => row
                .try_get(0)
                .map(Some)
                .map_err(|e| self.failed("decoding a record", &e)),
            None => Ok(None),
        }
    }

    async fn put(&self, user: &str, key: &str, sealed: &str) -> Result<(), StoreError> {
        let now = to_sql_time(unix_now());
        self.query(
            "writing a record",
            &self.inner.sql.put,
            &[&user, &key, &sealed, &now],
        )
        .await
        .map(drop)
    }

    async fn delete(&self, user: &str, key: &str) -> Result<(), StoreError> {
        self.query("deleting a record", &self.inner.sql.delete, &[&user, &key])
            .await
            .map(drop)
    }

    async fn list(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .query("listing records", &self.inner.sql.list, &[&user])
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| self.failed("decoding a record", &e))
    }

    async fn lock(&self, user: &str, key: &str) -> Result<Box<dyn StoreLock>, StoreError> {
        let lock_key = self.lock_key(user, key);
        let local = self.inner.locks.lock(&lock_key).await;
        let object = checkout(&self.inner.lock_pool, &self.inner.target).await?;
        // From here until the lock is handed to the holder task, dropping this future
        // (cancellation) drops `session`, which cancels the wait and closes the connection.
        let mut session = LockSession {
            object: Some(object),
            clean: false,
        };
        let acquired = match &session.object {
            Some(object) => object
                .execute("SELECT pg_advisory_lock($1)", &[&lock_key])
                .await
                .map(drop),
            None => Ok(()),
        };
        if let Err(e) = acquired {
            // The statement failed and is over: nothing is held, the connection is fine
            // unless closed.
            session.clean = session.object.as_ref().is_some_and(|o| !o.is_closed());
            return Err(self.failed("taking a lock", &e));
        }
        let (release, released) = oneshot::channel::<()>();
        let target = self.inner.target.clone();
        let timeout = self.inner.timeout;
        tokio::spawn(hold(session, local, released, lock_key, target, timeout));
        Ok(Box::new(PgLock { _release: release }))
    }

    async fn use_once(&self, id: &str, expires_at: u64) -> Result<bool, StoreError> {
        let expires_at = to_sql_time(expires_at);
        let now = to_sql_time(unix_now());
        let rows = self
            .query(
                "recording a used id",
                &self.inner.sql.use_once,
                &[&id, &expires_at, &now],
            )
            .await?;
        Ok(!rows.is_empty())
    }
}

/// A held advisory lock. Dropping it (anywhere: no runtime needed) wakes the task holding
/// the connection, which unlocks and returns it to the pool.
struct PgLock {
    _release: oneshot::Sender<()>,
}

impl StoreLock for PgLock {}

/// A lock connection. Unless marked `clean` (no lock held, no statement in flight), dropping
/// it cancels any statement in flight and closes the connection, never returning it to the
/// pool: the server then ends the session and releases whatever it held. A pooled
/// connection still holding a session lock would hand that lock to its next user.
struct LockSession {
    object: Option<Object>,
    clean: bool,
}

impl Drop for LockSession {
    fn drop(&mut self) {
        let Some(object) = self.object.take() else {
            return;
        };
        if self.clean {
            return; // back to the pool
        }
        let client = Object::take(object);
        // A backend waiting for a lock does not notice its client is gone until the lock
        // is granted: cancel the wait, from a task if there is a runtime to run one.
        let cancel = client.cancel_token();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = cancel.cancel_query(NoTls).await;
            });
        }
        drop(client);
    }
}

/// Holds the lock until the guard is dropped, then unlocks and lets the next task of this
/// instance in.
async fn hold(
    mut session: LockSession,
    local: OwnedMutexGuard<()>,
    released: oneshot::Receiver<()>,
    lock_key: i64,
    target: String,
    timeout: Duration,
) {
    // Err when the guard is dropped (nothing is ever sent).
    let _ = released.await;
    if let Some(object) = &session.object {
        let unlock = tokio::time::timeout(
            timeout,
            object.query_one("SELECT pg_advisory_unlock($1)", &[&lock_key]),
        )
        .await;
        match unlock {
            Ok(Ok(row)) if row.try_get::<_, bool>(0).unwrap_or(false) => session.clean = true,
            Ok(Ok(_)) => {
                tracing::warn!(%target, "a vault lock was no longer held when released");
                session.clean = true;
            }
            Ok(Err(e)) => {
                tracing::warn!(%target, error = %describe(&e), "releasing a vault lock failed; closing its connection");
            }
            Err(_) => {
                tracing::warn!(%target, "releasing a vault lock timed out; closing its connection");
            }
        }
    }
    // The PostgreSQL lock first (unlocked, or its connection closed), then this process's.
    drop(session);
    drop(local);
}

async fn checkout(pool: &Pool, target: &str) -> Result<Object, StoreError> {
    pool.get().await.map_err(|e| {
        StoreError::Backend(match e {
            PoolError::Backend(e) => {
                format!("cannot connect to PostgreSQL at {target}: {}", describe(&e))
            }
            PoolError::Timeout(TimeoutType::Create) => {
                format!("cannot connect to PostgreSQL at {target}: no answer in time")
            }
            PoolError::Timeout(TimeoutType::Wait) => format!(
                "no free connection to PostgreSQL at {target} in time: all {} are busy",
                pool.status().max_size
            ),
            PoolError::Timeout(TimeoutType::Recycle) => {
                format!("PostgreSQL at {target} did not answer a connection check in time")
            }
            PoolError::Closed => "the PostgreSQL vault was closed".to_owned(),
            other => format!("PostgreSQL connection pool failed: {other}"),
        })
    })
}

/// A driver error without the server's DETAIL (which can quote a row's values).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => e.to_string(),
    }
}

fn backend_msg(message: &str) -> StoreError {
    StoreError::Backend(message.to_owned())
}

fn build_pool(
    config: tokio_postgres::Config,
    size: usize,
    options: &PostgresVaultOptions,
) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A closed connection is dropped on checkout; one that hangs is dropped when its
            // call misses the deadline.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.statement_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.statement_timeout))
        .build()
        .map_err(|e| StoreError::Backend(format!("cannot build the PostgreSQL pool: {e}")))
}

/// Brings the vault's tables in `schema` up to date, creating the schema first when
/// `create_schema`, in one transaction under the migration advisory lock.
async fn migrate(
    client: &mut tokio_postgres::Client,
    schema: &str,
    create_schema: bool,
    target: &str,
) -> Result<(), StoreError> {
    let failed = |step: &str, e: tokio_postgres::Error| {
        StoreError::Backend(format!(
            "migrating the vault's tables in the PostgreSQL schema {schema} at {target} failed \
             ({step}): {}",
            describe(&e)
        ))
    };
    let tx = client.transaction().await.map_err(|e| failed("begin", e))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&MIGRATION_LOCK_CLASS, &schema],
    )
    .await
    .map_err(|e| failed("lock", e))?;
    if create_schema {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .map_err(|e| failed("create schema", e))?;
    }
    tx.batch_execute(&format!(
        "SET LOCAL search_path TO {schema}; \
         CREATE TABLE IF NOT EXISTS connect_schema_migrations (\
             version    INTEGER PRIMARY KEY, \
             name       TEXT    NOT NULL, \
             applied_at BIGINT  NOT NULL)"
    ))
    .await
    .map_err(|e| failed("create the migrations table", e))?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM connect_schema_migrations",
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| failed("read the schema version", e))?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > latest {
        return Err(StoreError::Backend(format!(
            "the vault's tables in the PostgreSQL schema {schema} at {target} are at version \
             {current}, newer than this program supports ({latest}): upgrade it"
        )));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(migration.sql)
            .await
            .map_err(|e| failed(migration.name, e))?;
        tx.execute(
            "INSERT INTO connect_schema_migrations (version, name, applied_at) \
             VALUES ($1, $2, extract(epoch FROM now())::bigint)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(|e| failed(migration.name, e))?;
        tracing::info!(
            schema,
            version = migration.version,
            name = migration.name,
            "applied vault migration"
        );
    }
    tx.commit().await.map_err(|e| failed("commit", e))
}

/// Whether `name` is a schema name this crate accepts: lowercase (so case folding cannot
/// make it name another schema) and safe to splice into SQL unquoted.
fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    first_ok
        && name.len() <= 63
        && !name.starts_with("pg_")
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The driver configuration for `options` (without the per-pool startup options), and
/// `host:port` for error messages.
fn driver_config(
    options: &PostgresVaultOptions,
) -> Result<(tokio_postgres::Config, String), StoreError> {
    if !(options.url.starts_with("postgres://") || options.url.starts_with("postgresql://")) {
        return Err(backend_msg(
            "the PostgreSQL URL must start with postgres:// or postgresql://",
        ));
    }
    // The driver's parse errors name the offending option, never its value.
    let mut config = tokio_postgres::Config::from_str(&options.url)
        .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
    if config.get_password().is_none()
        && let Some(password) = std::env::var_os("PGPASSWORD")
    {
        config.password(password.into_encoded_bytes());
    }
    config.connect_timeout(options.connect_timeout);
    // A server that vanished without closing the socket is noticed by TCP keepalives
    // (also while waiting for a lock).
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("mcp-auth-connect");
    }
    let target = describe_target(&config);
    Ok((config, target))
}

/// `config` with `ours` appended to its startup options.
fn with_startup_options(mut config: tokio_postgres::Config, ours: &str) -> tokio_postgres::Config {
    let startup = match config.get_options() {
        Some(existing) if !existing.trim().is_empty() => format!("{existing} {ours}"),
        _ => ours.to_owned(),
    };
    config.options(startup);
    config
}

/// `host:port[,host:port…]`, as the driver will try them.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = match ports {
                [] => 5432,
                [one] => *one,
                many => many.get(i).copied().unwrap_or(5432),
            };
            match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}/.s.PGSQL.{port}", path.display()),
            }
        })
        .collect();
    if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    }
}

/// `url` with the password of its user info and any `password=` parameter replaced.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:[redacted]@{hosts}"),
            None => format!("{userinfo}@{hosts}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=[redacted]")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_debug_redacts_the_password() {
        let options = PostgresVaultOptions::new("postgres://u:hunter2@db/x?password=s3");
        let text = format!("{options:?}");
        assert!(!text.contains("hunter2") && !text.contains("s3"), "{text}");
    }

    #[test]
    fn schema_names() {
        assert!(valid_schema_name("connect_test_0af3"));
        for bad in ["", "1a", "Public", "a-b", "a;drop", "pg_x"] {
            assert!(!valid_schema_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn rejects_bad_options_without_connecting() {
        let err = PostgresVault::connect("mysql://x").await.unwrap_err();
        assert!(err.to_string().contains("postgres://"), "{err}");
        let err = PostgresVault::connect_with(
            PostgresVaultOptions::new("postgres://u@127.0.0.1/x").schema("Bad"),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("schema name"), "{err}");
    }
}
