//! Checkpoints off the writer thread.
//!
//! A checkpoint copies the write-ahead log into the database file and flushes both; SQLite
//! runs it inside the commit that makes the log long enough, so the one writer thread — the
//! one every write waits for — stalls for the whole copy and both flushes. Here a
//! *checkpointer* thread does the copying on a connection of its own, while the writer goes
//! on committing. What it cannot do alone is start the log over: SQLite rewrites the log
//! from its beginning only when a write transaction starts on a log that is copied to its
//! last frame, and under steady load the writer has always added frames since the
//! checkpointer's pass began. So once a pass has left only a short tail ([`TAIL_FRAMES`]),
//! the writer copies that tail itself between two batches; its next commit then starts the
//! log over. The writer's stall shrinks from the whole log to the tail and two flushes. (If
//! the passes do not catch up — the log reaches twice [`START_FRAMES`] — the writer copies
//! what is left after the next pass, however much.)
//!
//! If the checkpointer falls behind (a reader keeps an old snapshot, the disk is slow), the
//! log grows; at [`HARD_LIMIT_FRAMES`] the writer checkpoints in its commit as SQLite does by
//! itself, so the log stays bounded whatever happens to the checkpointer thread.

use std::os::raw::c_int;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use mcp_auth_server::store::StoreError;
use rusqlite::Connection;
use rusqlite::hooks::Wal;

use crate::engine::backend;

/// When the log holds this many frames, the checkpointer starts copying (64 MiB of 4 KiB
/// pages; SQLite's default is 1000). A checkpoint writes each page changed since the last
/// one once, however often it changed, and flushes the database file: the longer the log,
/// the more rewrites of the same index pages one checkpoint absorbs. The price is a longer
/// recovery when the database is opened after a crash (the log is read once) and this much
/// disk for the log.
pub(crate) const START_FRAMES: u64 = 16 * 1024;

/// The writer finishes a checkpoint itself when at most this many frames are left to copy.
pub(crate) const TAIL_FRAMES: u64 = 1024;

/// Past this many frames the writer checkpoints in its commit, as SQLite does by default.
pub(crate) const HARD_LIMIT_FRAMES: u64 = 4 * START_FRAMES;

/// What the writer, its commit hook and the checkpointer know of the log.
#[derive(Debug)]
pub(crate) struct LogState {
    start: u64,
    tail: u64,
    hard: u64,
    /// Frames in the log after the last commit.
    frames: AtomicU64,
    /// Bumped each time the log starts over.
    cycle: AtomicU64,
    /// Frames the last finished pass had copied (of this cycle).
    copied: AtomicU64,
    /// Bumped at the end of every background pass.
    passes: AtomicU64,
    /// The checkpointer has been asked to run and has not started yet.
    asked: AtomicBool,
}

impl LogState {
    pub(crate) fn new(start: u64, tail: u64, hard: u64) -> Arc<Self> {
        Arc::new(Self {
            start,
            tail,
            hard,
            frames: AtomicU64::new(0),
            cycle: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            passes: AtomicU64::new(0),
            asked: AtomicBool::new(false),
        })
    }
}

/// The checkpointer thread. (The writer's commit hook holds a second sender, so the channel
/// alone never tells the thread to stop.)
pub(crate) struct Checkpointer {
    wake: Sender<()>,
    stopping: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Lets the thread finish its pass, then stops it and closes its connection.
    pub(crate) fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.wake.send(());
        let _ = self.thread.join();
    }
}

/// Opens the checkpointer's connection on `path`, starts its thread, and installs on the
/// writer connection the commit hook that wakes it.
pub(crate) fn start(
    writer: &mut Connection,
    path: &Path,
    log: Arc<LogState>,
) -> Result<Checkpointer, StoreError> {
    let conn = crate::engine::open_connection(path)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(backend)?;
    let (wake, rx) = mpsc::channel::<()>();
    let hook_log = log.clone();
    let hook_wake = wake.clone();
    writer
        .wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
            on_commit(&hook_log, &hook_wake, wal, pages);
            // An error here would fail a statement whose commit already happened.
            Ok(())
        }))
        .map_err(backend)?;
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = stopping.clone();
    let thread = std::thread::Builder::new()
        .name("mcp-auth-sqlite-checkpoint".into())
        .spawn(move || run(conn, rx, &log, &stop))
        .map_err(backend)?;
    Ok(Checkpointer {
        wake,
        stopping,
        thread,
    })
}

/// The writer's commit hook: records the log's length and asks for a pass when it is long.
fn on_commit(log: &LogState, wake: &Sender<()>, wal: &mut Wal, pages: c_int) {
    let pages = u64::try_from(pages).unwrap_or(0);
    let before = log.frames.swap(pages, Ordering::AcqRel);
    if pages < before {
        // The log started over: what was copied of the last one says nothing of this one.
        log.cycle.fetch_add(1, Ordering::AcqRel);
        log.copied.store(0, Ordering::Release);
    }
    if pages >= log.hard {
        // The checkpointer is not keeping up: do as SQLite does without it.
        let _ = wal.checkpoint();
    } else if pages >= log.start && !log.asked.swap(true, Ordering::AcqRel) {
        let _ = wake.send(());
    }
}

/// The checkpointer: a pass each time it is asked, passes one after the other until only a
/// tail is left for the writer or the log has started over.
fn run(conn: Connection, rx: Receiver<()>, log: &LogState, stopping: &AtomicBool) {
    while rx.recv().is_ok() {
        loop {
            if stopping.load(Ordering::Acquire) {
                return;
            }
            log.asked.store(false, Ordering::Release);
            let cycle = log.cycle.load(Ordering::Acquire);
            match passive_checkpoint(&conn) {
                Ok(Some(copied)) if log.cycle.load(Ordering::Acquire) == cycle => {
                    log.copied.fetch_max(copied, Ordering::AcqRel);
                }
                Ok(_) => {}
                Err(e) => {
                    // The writer's hard limit still bounds the log; say why it may grow.
                    tracing::warn!(error = %e, "background checkpoint of the SQLite store failed");
                    break;
                }
            }
            log.passes.fetch_add(1, Ordering::AcqRel);
            let left = log
                .frames
                .load(Ordering::Acquire)
                .saturating_sub(log.copied.load(Ordering::Acquire));
            if log.cycle.load(Ordering::Acquire) != cycle || left <= log.tail {
                break;
            }
        }
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: the frames copied so far, or `None` when another
/// checkpoint was running.
fn passive_checkpoint(conn: &Connection) -> Result<Option<u64>, rusqlite::Error> {
    let (busy, copied): (i64, i64) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(2)?))
    })?;
    Ok((busy == 0).then(|| u64::try_from(copied).unwrap_or(0)))
}

/// Called by the writer between batches: copies the tail when a background pass has left
/// only that, so that the next commit starts the log over. `last_pass` is the writer's
/// memory of the pass it last finished after (at most one tail per pass).
pub(crate) fn finish_tail(conn: &Connection, log: &LogState, last_pass: &mut u64) {
    let passes = log.passes.load(Ordering::Acquire);
    if passes == *last_pass {
        return;
    }
    let frames = log.frames.load(Ordering::Acquire);
    let copied = log.copied.load(Ordering::Acquire);
    // Past twice the starting length the passes are not catching up with the writes: finish
    // whatever is left rather than let the log grow on to the hard limit.
    let behind = frames >= log.start.saturating_mul(2);
    if frames < log.start || copied == 0 || (frames.saturating_sub(copied) > log.tail && !behind) {
        return;
    }
    *last_pass = passes;
    if let Ok(Some(c)) = passive_checkpoint(conn) {
        log.copied.fetch_max(c, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(path: &Path) -> Connection {
        let writer = Connection::open(path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "synchronous", "NORMAL").unwrap();
        writer
            .execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")
            .unwrap();
        writer
    }

    fn insert(writer: &Connection, i: usize) {
        writer
            .execute(
                "INSERT INTO t VALUES (?, zeroblob(3000))",
                [format!("{i:08}")],
            )
            .unwrap();
    }

    fn rows(writer: &Connection) -> i64 {
        writer
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    /// Under a steady stream of commits the checkpointer copies the log and the writer,
    /// finishing the tails, starts it over again and again; every row is there.
    #[test]
    fn the_log_starts_over_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.db");
        let mut writer = writer(&path);
        let log = LogState::new(64, 64, 100_000);
        let ck = start(&mut writer, &path, log.clone()).unwrap();
        let mut last_pass = 0;
        for i in 0..3000 {
            insert(&writer, i);
            finish_tail(&writer, &log, &mut last_pass);
            // A writer with pauses, as under real load (batches, then waiting for the next).
            if i % 10 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        ck.stop();
        // Far below the hard limit, so the checkpointer and the tails did it: each row is
        // about a page, and 3000 rows in one log would be 3000+ frames.
        assert!(log.passes.load(Ordering::Acquire) > 0, "{log:?}");
        assert!(log.cycle.load(Ordering::Acquire) > 0, "{log:?}");
        assert_eq!(rows(&writer), 3000);
    }

    /// With a checkpointer that never gets to run (its starting length is never reached),
    /// the writer's commit hook still bounds the log at the hard limit.
    #[test]
    fn the_hard_limit_bounds_the_log_without_the_checkpointer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hard.db");
        let mut writer = writer(&path);
        let log = LogState::new(u64::MAX, 16, 100);
        let ck = start(&mut writer, &path, log.clone()).unwrap();
        let mut max_frames = 0;
        for i in 0..1000 {
            insert(&writer, i);
            max_frames = max_frames.max(log.frames.load(Ordering::Acquire));
        }
        ck.stop();
        assert_eq!(log.passes.load(Ordering::Acquire), 0, "{log:?}");
        assert!(log.cycle.load(Ordering::Acquire) > 5, "{log:?}");
        assert!(max_frames < 110, "the log grew to {max_frames} frames");
        assert_eq!(rows(&writer), 1000);
    }
}
