//! [`SqliteVault`]: the [`VaultBackend`] in one SQLite file, for an app on one machine
//! (one process or several sharing the file).
//!
//! - **One file, durable.** WAL mode with `synchronous=FULL`: a write is answered once it is
//!   on disk, and survives a crash or power loss. The file (and SQLite's `-wal` and `-shm`
//!   files, which take its mode) is created with mode 0600 on Unix; a looser existing mode is
//!   tightened. The records are sealed by the [`Vault`](crate::vault::Vault) anyway: the file
//!   holds no token in the clear.
//! - **Versioned schema.** `PRAGMA user_version` records the schema version, and
//!   `PRAGMA application_id` marks the file as a vault: [`SqliteVault::open`] creates or
//!   upgrades it, and refuses a file of another program, or from a newer version of this
//!   crate. Use a file of its own (not the authorization server's database).
//! - **Never blocks the runtime.** Every SQLite call runs on Tokio's blocking pool, on a
//!   connection of a small per-vault pool. Writes run in a `BEGIN IMMEDIATE` transaction:
//!   atomic, and serialized with every other writer of the file, in any process (a writer
//!   waits up to 5 s for another's transaction before failing with
//!   [`StoreError::Backend`]).
//! - **Locks across tasks and processes.** [`VaultBackend::lock`] takes an in-process async
//!   mutex for the (user, key), then an OS file lock (`flock` on Unix, `LockFileEx` on
//!   Windows) on `<database>.locks/<hash of (user, key)>.lock` next to the database. Tasks
//!   of one process queue on the mutex (one blocking-pool thread per contended key at most);
//!   processes exclude each other with the file lock, which the OS releases when the holder
//!   exits or is killed, so a dead holder never blocks the others. Dropping the guard
//!   releases both. The lock files are tiny and never deleted (deleting one while held would
//!   let two processes hold "the" lock); there is one per (user, key) ever locked. On NFS,
//!   file locks are only as good as the NFS server's locking: keep the file on a local disk.
//! - **Single use.** [`VaultBackend::use_once`] deletes expired ids and inserts the new one
//!   in one transaction that holds SQLite's write lock, so of concurrent callers in any
//!   process exactly one gets `true`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use mcp_auth_connect::sqlite::SqliteVault;
//! use mcp_auth_connect::vault::Vault;
//! use mcp_auth_types::seal::SealKeys;
//!
//! # async fn demo(keys: SealKeys) -> Result<(), mcp_auth_client::store::StoreError> {
//! let vault = Vault::new(Arc::new(SqliteVault::open("connections.db").await?), keys);
//! let alice = vault.for_user("alice");
//! # let _ = alice;
//! # Ok(())
//! # }
//! ```

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use mcp_auth_client::store::{StoreError, StoreLock};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};
use tokio::sync::OwnedMutexGuard;

use crate::vault::VaultBackend;

/// How long a connection waits for another connection's (or process's) write transaction
/// before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections kept per vault; more are opened when more calls run at once.
const MAX_IDLE: usize = 4;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 16;

/// `PRAGMA application_id` of a vault file ("mcpv").
const APPLICATION_ID: i32 = 0x6d63_7076;

/// The schema, version by version (`PRAGMA user_version` is the number applied). A
/// released migration is never edited: add a new one.
const MIGRATIONS: &[&str] = &["\
CREATE TABLE vault_records (
    user_id    TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    sealed     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
CREATE TABLE used_ids (
    id         TEXT    NOT NULL PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX used_ids_expires_at ON used_ids (expires_at);
"];

/// A [`VaultBackend`] in a SQLite file. Cloning is cheap and shares the connections.
///
/// Several `SqliteVault`s, in one process or in several, may open the same file: writes are
/// serialized by SQLite, locks are exclusive across all of them, and `use_once` is decided
/// by the database. See the [module docs](self).
#[derive(Clone)]
pub struct SqliteVault {
    inner: Arc<Inner>,
}

struct Inner {
    /// The database file (absolute).
    path: PathBuf,
    /// `<database>.locks`, holding the lock files.
    lock_dir: PathBuf,
    /// Idle connections.
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteVault")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteVault {
    /// Opens the vault in the SQLite file at `path`, creating it (mode 0600 on Unix) and its
    /// lock directory `<path>.locks` (mode 0700) if needed, and bringing its schema up to
    /// date. Async: the file work runs on Tokio's blocking pool, so call it inside a Tokio
    /// runtime.
    ///
    /// Fails with [`StoreError::Backend`] when the file cannot be opened, is not a vault
    /// (another program's database), or has a schema newer than this crate's; with
    /// [`StoreError::Io`] when the lock directory cannot be created.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        blocking("opening the database", move || Self::open_blocking(&path)).await
    }

    fn open_blocking(path: &Path) -> Result<Self, StoreError> {
        let path = std::path::absolute(path).map_err(io_err(path))?;
        create_private_file(&path)?;
        let mut conn = open_connection(&path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(db_err(&path, "switching to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "SQLite vault {}: the database refused WAL mode (it is in {mode} mode)",
                path.display()
            )));
        }
        migrate(&mut conn, &path)?;
        let lock_dir = sibling(&path, ".locks");
        create_private_dir(&lock_dir)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                lock_dir,
                idle: Mutex::new(vec![conn]),
            }),
        })
    }

    /// The database file (absolute).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a pooled connection on the blocking pool; `what` names it in errors.
    async fn run<T, F>(&self, what: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        blocking(what, move || {
            let mut conn = inner.connection()?;
            let out = f(&mut conn).map_err(db_err(&inner.path, what));
            // A failed call has rolled back (a dropped transaction does): the connection
            // is clean, keep it.
            inner.give_back(conn);
            out
        })
        .await
    }
}

impl Inner {
    fn connection(&self) -> Result<Connection, StoreError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => open_connection(&self.path),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

#[async_trait]
impl VaultBackend for SqliteVault {
    async fn get(&self, user: &str, key: &str) -> Result<Option<String>, StoreError> {
        let (user, key) = (user.to_owned(), key.to_owned());
        self.run("reading a record", move |conn| {
            conn.prepare_cached("SELECT sealed FROM vault_records WHERE user_id = ?1 AND key = ?2")?
                .query_row(params![user, key], |r| r.get(0))
                .optional()
        })
        .await
    }

    async fn put(&self, user: &str, key: &str, sealed: &str) -> Result<(), StoreError> {
        let (user, key, sealed) = (user.to_owned(), key.to_owned(), sealed.to_owned());
        let now = to_sql_time(unix_now());
        self.run("writing a record", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO vault_records (user_id, key, sealed, updated_at) \
                 VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (user_id, key) DO UPDATE \
                 SET sealed = excluded.sealed, updated_at = excluded.updated_at",
            )?
            .execute(params![user, key, sealed, now])?;
            tx.commit()
        })
        .await
    }

    async fn delete(&self, user: &str, key: &str) -> Result<(), StoreError> {
        let (user, key) = (user.to_owned(), key.to_owned());
        self.run("deleting a record", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached("DELETE FROM vault_records WHERE user_id = ?1 AND key = ?2")?
                .execute(params![user, key])?;
            tx.commit()
        })
        .await
    }

    async fn list(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
        let user = user.to_owned();
        self.run("listing records", move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, sealed FROM vault_records WHERE user_id = ?1 ORDER BY key",
            )?;
            let rows = stmt.query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn lock(&self, user: &str, key: &str) -> Result<Box<dyn StoreLock>, StoreError> {
        let path = self
            .inner
            .lock_dir
            .join(format!("{}.lock", lock_name(user, key)));
        // Tasks of this process queue here, on the runtime, rather than each parking a
        // blocking-pool thread in the OS lock; and exclusion inside the process does not
        // depend on the filesystem's lock semantics.
        let local = IN_PROCESS.lock(&path).await;
        // If this future is dropped while the OS lock is awaited, the blocking call still
        // finishes; its file is then dropped, which releases the lock at once.
        let file = blocking("taking a lock", move || {
            let file = open_lock_file(&path)?;
            file.lock().map_err(io_err(&path))?;
            Ok(file)
        })
        .await?;
        Ok(Box::new(SqliteLock {
            file,
            _local: local,
        }))
    }

    async fn use_once(&self, id: &str, expires_at: u64) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let expires_at = to_sql_time(expires_at);
        let now = to_sql_time(unix_now());
        self.run("recording a used id", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached("DELETE FROM used_ids WHERE expires_at <= ?1")?
                .execute(params![now])?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO used_ids (id, expires_at) VALUES (?1, ?2) \
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![id, expires_at])?;
            tx.commit()?;
            Ok(inserted == 1)
        })
        .await
    }
}

/// A held lock: the OS lock on the file, and this process's mutex for it. Dropping it
/// unlocks the file, then lets the next task of this process in.
struct SqliteLock {
    file: File,
    _local: OwnedMutexGuard<()>,
}

impl Drop for SqliteLock {
    fn drop(&mut self) {
        // Closing the file would release the lock too; unlocking first makes the order
        // explicit (the OS lock before the in-process mutex, which drops after this).
        let _ = self.file.unlock();
    }
}

impl StoreLock for SqliteLock {}

/// In-process exclusion keyed by the absolute lock file path, shared by every
/// [`SqliteVault`] of the process.
static IN_PROCESS: LazyLock<KeyedMutex<PathBuf>> = LazyLock::new(KeyedMutex::default);

pub(crate) use mcp_auth_client::store::keyed::KeyedMutex;

/// The lock file name of (`user`, `key`): 128 bits of SHA-256 in hex. Users are arbitrary
/// strings, so they never appear in a file name; the user's length goes first, so no two
/// pairs share an input.
fn lock_name(user: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"mcp-auth-connect lock v1\0");
    h.update((user.len() as u64).to_be_bytes());
    h.update(user.as_bytes());
    h.update(key.as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Seconds since the Unix epoch, by the system clock.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds as SQL's signed 64-bit integer (saturating; no real time is that large).
pub(crate) fn to_sql_time(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Runs blocking work on Tokio's blocking pool; `what` names it if the task cannot finish.
async fn blocking<T, F>(what: &'static str, f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(StoreError::Backend(format!(
            "SQLite vault: {what} {}",
            if join.is_panic() {
                "panicked"
            } else {
                "was cancelled (the runtime is shutting down)"
            }
        ))),
    }
}

/// A failed SQLite call: the file and the step. SQLite's messages name tables and
/// constraints, never values.
fn db_err<'a>(path: &'a Path, what: &'a str) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |e| {
        StoreError::Backend(format!(
            "SQLite vault {}: {what} failed: {e}",
            path.display()
        ))
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `path` with `suffix` appended to its file name (`vault.db` → `vault.db.locks`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(db_err(path, "opening"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_err(path, "configuring"))?;
    // Per connection: every commit flushes the log before it returns.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err(path, "configuring"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Creates or upgrades the schema, in one transaction holding the write lock (so processes
/// opening a new file together apply each migration once).
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let refuse =
        |why: String| StoreError::Backend(format!("SQLite vault {}: {why}", path.display()));
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(path, "starting the migration"))?;
    let read = |sql: &str| -> Result<i64, StoreError> {
        tx.query_row(sql, [], |r| r.get(0))
            .map_err(db_err(path, "reading the schema version"))
    };
    let version = read("PRAGMA user_version")?;
    let app = read("PRAGMA application_id")?;
    let tables = read("SELECT count(*) FROM sqlite_master")?;
    let known = MIGRATIONS.len() as i64;
    let fresh = version == 0 && app == 0 && tables == 0;
    if !fresh && app != i64::from(APPLICATION_ID) {
        return Err(refuse(
            "the file is not a token vault (it holds another program's database)".into(),
        ));
    }
    if !(0..=known).contains(&version) {
        return Err(refuse(format!(
            "the vault's schema version {version} is newer than this program's ({known}): \
             upgrade it"
        )));
    }
    for sql in MIGRATIONS
        .iter()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        tx.execute_batch(sql)
            .map_err(db_err(path, "applying a migration"))?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(db_err(path, "recording the schema version"))?;
    tx.pragma_update(None, "user_version", known)
        .map_err(db_err(path, "recording the schema version"))?;
    tx.commit()
        .map_err(db_err(path, "committing the migration"))
}

/// Creates the database file with mode 0600, or tightens an existing file (and its `-wal`
/// and `-shm`) open to the group or others.
#[cfg(unix)]
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut options = OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    match options.open(path) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    for file in [
        path.to_path_buf(),
        sibling(path, "-wal"),
        sibling(path, "-shm"),
    ] {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %file.display(),
                mode = format_args!("{mode:o}"),
                "token vault file was accessible to other users; setting mode 600"
            );
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(&file))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_file(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Creates the lock directory (mode 0700 on Unix).
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_err(dir))
}

/// Opens (creating if needed, mode 0600) a lock file without locking it. Write access
/// because Windows `LockFileEx` wants it; never truncated, as other holders have it open.
fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_are_distinct_and_safe() {
        let a = lock_name("alice", "srv");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, lock_name("alic", "esrv"));
        assert_ne!(a, lock_name("alice", "srv-authorize"));
        assert_eq!(a, lock_name("alice", "srv"));
        assert_eq!(lock_name("../../etc", "x").len(), 32);
    }

    #[tokio::test]
    async fn refuses_foreign_and_newer_files() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("other.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let err = SqliteVault::open(&foreign).await.unwrap_err();
        assert!(err.to_string().contains("not a token vault"), "{err}");

        let newer = dir.path().join("newer.db");
        drop(SqliteVault::open(&newer).await.unwrap());
        Connection::open(&newer)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteVault::open(&newer).await.unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
