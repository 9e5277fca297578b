//! The connections behind [`SqliteStore`](crate::SqliteStore): one writer thread that
//! commits concurrent writes together (group commit), sync threads that make them durable
//! before anyone hears of them, and a pool of reader connections.
//!
//! # Group commit
//! Every commit of a durable database waits for the disk to flush the write-ahead log, and
//! SQLite lets one writer commit at a time: a flush per write caps a disk at a few hundred
//! to a few thousand writes per second, whatever the CPU. Here every write is a *job* sent
//! to one thread that owns the only writing connection. The thread takes every job waiting
//! in its queue (up to [`MAX_BATCH`]) and runs them in one `BEGIN IMMEDIATE` transaction.
//!
//! # Durable before answered, and pipelined
//! The writer commits with `synchronous=NORMAL`, which in WAL mode writes the log without
//! flushing it, and hands the batch's answers to a *sync thread*. That thread flushes the
//! log (`fdatasync`) and only then answers: no caller hears "done" before its write is on
//! disk, exactly as with `synchronous=FULL`. But the writer does not wait: it runs the next
//! batch while the disk flushes the last, and one flush covers every batch committed before
//! it started. There are two sync threads, so that a batch committed while one flushes is
//! flushed at once by the other rather than after it. The disk's flush latency then bounds
//! each request's latency, not the server's throughput. (SQLite's `NORMAL` keeps the database consistent after a crash; what
//! it gives up is only the durability of the last commits, which the flush before answering
//! restores.) If a flush fails, the store stops taking writes: what the disk holds is then
//! unknown, and the failure is reported to every caller from then on.
//!
//! A job that fails is undone (a job of several statements runs inside a savepoint) and
//! answered at once; the others in its batch are unaffected. If the commit itself fails,
//! every job of the batch is answered with the error (none of them was applied).
//!
//! # Checkpoints
//! The log is copied into the database file (a checkpoint) once it holds 64 MiB
//! ([`checkpoint::START_FRAMES`]; SQLite's default is 4 MiB, and at that size the
//! checkpoints' flushes kept the writer blocked a quarter of the time): a longer log absorbs
//! more rewrites of the same index pages per checkpoint, and flushes the database less
//! often. The copying is done by a checkpointer thread on its own connection while the
//! writer goes on; the writer copies only the last tail itself, so that its next commit
//! starts the log over and the file stays bounded (see [`checkpoint`] for how, and for the
//! limit at which the writer checkpoints by itself if the checkpointer falls behind).
//!
//! # Reads
//! A file database also has reader connections, used on the calling task: a point lookup by
//! primary key takes a few microseconds, and in WAL mode a reader never waits for the writer
//! (it reads the last committed state). Since a write is answered only after it is durable,
//! a read that starts after a write's answer sees it. A private in-memory database has no
//! second connection, so its reads are jobs of the writer thread, and it has no sync thread.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use mcp_auth_server::store::StoreError;
use rusqlite::{Connection, OpenFlags};

use crate::checkpoint;
use tokio::sync::oneshot;

/// How long a connection waits for another process's write lock before failing with
/// "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most jobs one transaction takes. Bounds how long one transaction holds the write lock
/// against other processes and how much work one failed commit throws away.
pub(crate) const MAX_BATCH: usize = 512;

/// Idle reader connections kept for reuse; more are opened when more reads run at once.
const MAX_IDLE_READERS: usize = 8;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// The writer's page cache, in KiB (SQLite's default is 2 MiB): the indexes the writer
/// inserts into at random places stay in memory.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

/// After a checkpoint has emptied it, the log file is cut back to this size.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The schema, version by version (`PRAGMA user_version` records the last one applied).
/// A released migration is never edited: add a new one.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_sessions_upstream.sql"),
    include_str!("../migrations/0003_device.sql"),
    // 0003 (device authorization) is numbered before it; list them in file order.
    include_str!("../migrations/0004_claims.sql"),
    include_str!("../migrations/0005_refresh_indexes.sql"),
    include_str!("../migrations/0006_grants.sql"),
];

/// Called with the outcome (`None` = committed and durable) to answer a job's caller.
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;

/// Whether a write is one statement or several. SQLite undoes a failed statement by itself;
/// a write of several statements runs in a savepoint, so that a failure halfway undoes the
/// statements before it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Steps {
    /// At most one statement that changes the database; or several, when keeping what the
    /// first ones did if a later one fails is harmless. (An I/O error is not such a failure:
    /// SQLite then ends the whole transaction, and no job of it is kept.)
    One,
    /// Several statements that change the database.
    Many,
}

/// A write: runs on the writer connection inside the batch's transaction. Returns whether it
/// succeeded (else it is undone) and how to answer its caller. Given no connection (the
/// transaction could not start), it does nothing and answers with the reason it is given.
struct Job {
    steps: Steps,
    run: RunJob,
}

type RunJob = Box<dyn FnOnce(Option<&Connection>) -> (bool, Reply) + Send>;

enum Msg {
    Job(Job),
    /// Finish the queued jobs, stop the threads, close the connections, then answer.
    Close(oneshot::Sender<()>),
}

/// What the threads share: counters, and the failure that stopped writes, if any.
#[derive(Debug, Default)]
struct Shared {
    commits: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    failed: OnceLock<String>,
}

/// How the writer has grouped writes so far: see [`SqliteStore::write_stats`].
///
/// [`SqliteStore::write_stats`]: crate::SqliteStore::write_stats
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed.
    pub commits: u64,
    /// Writes (and, for an in-memory database, reads) those transactions carried, failed
    /// ones included.
    pub writes: u64,
    /// Flushes of the write-ahead log to disk (each makes every commit before it durable).
    pub syncs: u64,
}

/// The writer thread's queue and the reader pool. Dropping the last clone of the store drops
/// the queue's sender, and the threads finish what is queued and exit.
pub(crate) struct Engine {
    jobs: Sender<Msg>,
    readers: Option<ReaderPool>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.readers.as_ref().map(|r| &r.path))
            .finish_non_exhaustive()
    }
}

pub(crate) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn backend_msg(msg: String) -> StoreError {
    StoreError::Backend(msg.into())
}

fn closed() -> StoreError {
    backend_msg("the SQLite store is closed".into())
}

impl Engine {
    /// Opens (creating if needed) the database file, applies the migrations, and starts the
    /// threads. Blocking: call from a blocking context.
    pub(crate) fn open_file(path: &Path) -> Result<Self, StoreError> {
        create_private_file(path)?;
        let mut conn = open_connection(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        // NORMAL: commits write the log without flushing it; a sync thread flushes it
        // before anyone is answered (see the module docs).
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(backend)?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(backend)?;
        // A job of several statements runs in a savepoint, which journals the pages it
        // changes; past 64 KiB in a transaction that journal spills into a temporary file,
        // a write system call per page (a fifth of the writer's time in a profile of
        // refresh rotations). Kept in memory, it is a copy.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(backend)?;
        migrate(&conn)?;

        // The migration wrote the log, so it exists: make it, and its directory entry,
        // durable before the first answer depends on them.
        let wal = wal_path(path);
        sync_file(&wal).map_err(backend)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(backend)?;
        }

        let shared = Arc::new(Shared::default());
        let syncer = spawn_syncer(wal, shared.clone())?;
        // Replaces SQLite's own checkpoints on this connection (the commit hook is theirs).
        let log = checkpoint::LogState::new(
            checkpoint::START_FRAMES,
            checkpoint::TAIL_FRAMES,
            checkpoint::HARD_LIMIT_FRAMES,
        );
        let checkpointer = checkpoint::start(&mut conn, path, log.clone())?;
        let jobs = spawn_writer(
            conn,
            shared.clone(),
            Some(syncer),
            Some((checkpointer, log)),
        )?;
        Ok(Self {
            jobs,
            shared,
            readers: Some(ReaderPool {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// A private database in memory; reads go through the writer thread.
    pub(crate) fn open_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(backend)?;
        configure(&conn)?;
        migrate(&conn)?;
        let shared = Arc::new(Shared::default());
        let jobs = spawn_writer(conn, shared.clone(), None, None)?;
        Ok(Self {
            jobs,
            shared,
            readers: None,
        })
    }

    /// Runs `f` in the next batch and answers once the batch is committed and durable. An
    /// `Err` from `f` undoes what `f` did (and only that) and is answered at once. `steps`
    /// says whether `f` changes the database with one statement or several.
    pub(crate) async fn write<T, F>(&self, steps: Steps, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if let Some(why) = self.shared.failed.get() {
            return Err(backend_msg(format!("the SQLite store stopped: {why}")));
        }
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let run: RunJob = Box::new(move |conn: Option<&Connection>| {
            let Some(conn) = conn else {
                let reply: Reply = Box::new(move |why| {
                    let why = why.unwrap_or("the transaction did not start");
                    let _ = tx.send(Err(backend_msg(format!("write not run: {why}"))));
                });
                return (false, reply);
            };
            let result = f(conn);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |failure| {
                let answer = match failure {
                    None => result,
                    Some(why) => Err(backend_msg(format!("write not saved: {why}"))),
                };
                // The caller may have gone (a cancelled request): nothing to tell.
                let _ = tx.send(answer);
            });
            (ok, reply)
        });
        self.jobs
            .send(Msg::Job(Job { steps, run }))
            .map_err(|_| closed())?;
        // A dropped sender means the job panicked or a thread died: never a silent success.
        rx.await.map_err(|_| closed())?
    }

    /// Runs a read: on a reader connection of the calling task for a file, or as a job of
    /// the writer thread for a private in-memory database.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        match &self.readers {
            Some(pool) => pool.with(f),
            None => self.write(Steps::One, f).await,
        }
    }

    pub(crate) fn stats(&self) -> WriteStats {
        WriteStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            writes: self.shared.writes.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
        }
    }

    /// Finishes the queued jobs and stops the threads; later calls fail.
    pub(crate) async fn close(&self) {
        if let Some(pool) = &self.readers {
            pool.closed.store(true, Ordering::Release);
            pool.lock().clear();
        }
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Msg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl ReaderPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // Connections are pushed and popped whole: a poisoned lock holds nothing half done.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let idle = self.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = open_connection(&self.path)?;
                // A reader never writes; make SQLite hold it to that.
                conn.pragma_update(None, "query_only", true)
                    .map_err(backend)?;
                conn
            }
        };
        let result = f(&conn);
        // A connection left inside a transaction (a failed read cannot do that, but be
        // sure) would pin an old snapshot: drop it rather than reuse it.
        if conn.is_autocommit() && !self.closed.load(Ordering::Acquire) {
            let mut idle = self.lock();
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
        result
    }
}

pub(crate) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(backend)?;
    configure(&conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Brings the schema up to date in one transaction.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
    let result = (|| {
        let mut version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(backend)?;
        if version == 0 {
            version = sqlx_era_version(conn)?;
        }
        let known = MIGRATIONS.len() as i64;
        if version > known || version < 0 {
            return Err(backend_msg(format!(
                "the database's schema version {version} is newer than this program's \
                 ({known}): upgrade mcp-auth"
            )));
        }
        for sql in &MIGRATIONS[version as usize..] {
            conn.execute_batch(sql).map_err(backend)?;
        }
        conn.pragma_update(None, "user_version", known)
            .map_err(backend)?;
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(backend),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Databases created by the first releases recorded their schema in sqlx's
/// `_sqlx_migrations` table rather than in `user_version`: read it once.
fn sqlx_era_version(conn: &Connection) -> Result<i64, StoreError> {
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(backend)?
        > 0;
    if !has_table {
        return Ok(0);
    }
    conn.query_row(
        "SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success",
        [],
        |r| r.get(0),
    )
    .map_err(backend)
}

// ---- the writer ----

/// The checkpointer thread and what it shares with the writer.
type Checkpointing = (checkpoint::Checkpointer, Arc<checkpoint::LogState>);

fn spawn_writer(
    conn: Connection,
    shared: Arc<Shared>,
    syncer: Option<Syncer>,
    checkpointing: Option<Checkpointing>,
) -> Result<Sender<Msg>, StoreError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("mcp-auth-sqlite".into())
        .spawn(move || writer_loop(conn, rx, &shared, syncer, checkpointing))
        .map_err(backend)?;
    Ok(tx)
}

fn writer_loop(
    conn: Connection,
    rx: Receiver<Msg>,
    shared: &Shared,
    syncer: Option<Syncer>,
    checkpointing: Option<Checkpointing>,
) {
    let sync = syncer.as_ref().map(|s| &s.queue);
    let mut last_pass = 0;
    let mut batch: Vec<Job> = Vec::new();
    let mut close: Option<oneshot::Sender<()>> = None;
    let mut disconnected = false;
    loop {
        if batch.is_empty() {
            if close.is_some() || disconnected {
                break;
            }
            match rx.recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Close(done)) => close = Some(done),
                Err(_) => disconnected = true,
            }
        }
        while batch.len() < MAX_BATCH && close.is_none() && !disconnected {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Close(done)) => close = Some(done),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => disconnected = true,
            }
        }
        if batch.is_empty() {
            continue;
        }
        if let Some(why) = shared.failed.get() {
            let why = format!("the SQLite store stopped: {why}");
            for job in batch.drain(..) {
                let (_, reply) = (job.run)(None);
                reply(Some(&why));
            }
            continue;
        }
        let (committed, failure) = run_batch(&conn, &mut batch, shared);
        match (failure, sync) {
            (Some(why), _) => committed.into_iter().for_each(|r| r(Some(&why))),
            (None, Some(sync)) => {
                // A sync thread answers once the log is on disk. If it is gone, the
                // answers drop and their callers hear "closed": never an unsynced success.
                let _ = sync.send(committed);
            }
            (None, None) => committed.into_iter().for_each(|r| r(None)),
        }
        if let Some((_, log)) = &checkpointing {
            checkpoint::finish_tail(&conn, log, &mut last_pass);
        }
    }
    // The checkpointer first: its pass may still be reading the log.
    if let Some((checkpointer, _)) = checkpointing {
        checkpointer.stop();
    }
    // Stop the sync threads before closing: they answer what they hold.
    if let Some(syncer) = syncer {
        drop(syncer.queue);
        for thread in syncer.threads {
            let _ = thread.join();
        }
    }
    drop(conn);
    if let Some(done) = close {
        let _ = done.send(());
    }
}

/// Runs jobs from the front of `batch` in one transaction. Jobs that failed are answered
/// here; the committed ones' answers are returned with the commit's failure, if any. Jobs it
/// could not run (the transaction ended under them) stay in `batch` for the next round.
fn run_batch(
    conn: &Connection,
    batch: &mut Vec<Job>,
    shared: &Shared,
) -> (Vec<Reply>, Option<String>) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let why = e.to_string();
        for job in batch.drain(..) {
            // Not run: answer with the reason without touching the database.
            let (_, reply) = (job.run)(None);
            reply(Some(&why));
        }
        return (Vec::new(), None);
    }
    let mut done: Vec<Reply> = Vec::with_capacity(batch.len());
    let mut jobs = std::mem::take(batch).into_iter();
    let mut aborted: Option<String> = None;
    for job in jobs.by_ref() {
        let savepoint = job.steps == Steps::Many;
        if savepoint && let Err(e) = exec(conn, "SAVEPOINT job") {
            aborted = Some(e.to_string());
            batch.push(job);
            break;
        }
        shared.writes.fetch_add(1, Ordering::Relaxed);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (job.run)(Some(conn))));
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back under the job (an I/O error, a full
            // disk): the jobs run so far are undone, the rest wait for the next round.
            aborted = Some("the transaction was rolled back by SQLite".into());
            if let Ok((_, reply)) = outcome {
                reply(aborted.as_deref());
            }
            break;
        }
        let undo = |conn: &Connection| {
            if savepoint {
                exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
            } else {
                Ok(())
            }
        };
        let step = match outcome {
            Ok((true, reply)) => {
                let kept = if savepoint {
                    exec(conn, "RELEASE job")
                } else {
                    Ok(())
                };
                done.push(reply);
                kept
            }
            Ok((false, reply)) => {
                reply(None);
                undo(conn)
            }
            // The job's answer went with the panic: its caller hears "closed".
            Err(_panic) => undo(conn),
        };
        if let Err(e) = step {
            aborted = Some(e.to_string());
            break;
        }
    }
    batch.extend(jobs);
    let failure = match aborted {
        Some(why) => Some(why),
        None => match exec(conn, "COMMIT") {
            Ok(()) => {
                shared.commits.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => Some(e.to_string()),
        },
    };
    if failure.is_some() && !conn.is_autocommit() {
        let _ = exec(conn, "ROLLBACK");
    }
    (done, failure)
}

fn exec(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

// ---- the sync threads ----

/// Threads that flush the log. With one, a commit made while a flush runs waits for that
/// flush to end before its own starts (a flush covers only what was written before it
/// began): one and a half flushes on average. With two, the second starts at once.
const SYNC_THREADS: usize = 2;

/// The sync threads and the queue of committed batches they answer.
struct Syncer {
    queue: Sender<Vec<Reply>>,
    threads: Vec<JoinHandle<()>>,
}

fn spawn_syncer(wal: PathBuf, shared: Arc<Shared>) -> Result<Syncer, StoreError> {
    let (queue, rx) = mpsc::channel::<Vec<Reply>>();
    let rx = Arc::new(Mutex::new(rx));
    let mut threads = Vec::with_capacity(SYNC_THREADS);
    for _ in 0..SYNC_THREADS {
        let (rx, wal, shared) = (rx.clone(), wal.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("mcp-auth-sqlite-sync".into())
            .spawn(move || sync_loop(&rx, &wal, &shared))
            .map_err(backend)?;
        threads.push(thread);
    }
    Ok(Syncer { queue, threads })
}

/// A sync thread: takes every batch committed so far (the others wait for the queue
/// meanwhile), flushes the log, answers them; while it flushes, the next thread takes the
/// next batches.
fn sync_loop(rx: &Mutex<Receiver<Vec<Reply>>>, wal: &Path, shared: &Shared) {
    loop {
        let mut replies = {
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            let Ok(mut replies) = rx.recv() else { return };
            // Everything committed so far rides on this one flush.
            while let Ok(more) = rx.try_recv() {
                replies.extend(more);
            }
            replies
        };
        match sync_file(wal) {
            Ok(()) => {
                shared.syncs.fetch_add(1, Ordering::Relaxed);
                replies.drain(..).for_each(|r| r(None));
            }
            Err(e) => {
                // After a failed flush the kernel may have dropped the dirty pages:
                // what is on disk is unknown, so stop taking writes.
                let why = format!("flushing the write-ahead log failed: {e}");
                tracing::error!(error = %why, "SQLite store stopped");
                let _ = shared.failed.set(why.clone());
                replies.drain(..).for_each(|r| r(Some(&why)));
            }
        }
    }
}

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// `fdatasync` of a file SQLite writes (opened anew, so it is the file now at that path).
fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_data()
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(backend(e)),
    }
}

#[cfg(not(unix))]
fn create_private_file(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}
