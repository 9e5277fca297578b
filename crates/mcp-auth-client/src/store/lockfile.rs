//! Per-key exclusive locks that hold across processes: one lock file per key in a private
//! directory, locked with `flock`-style advisory locks (`std::fs::File::lock`).
//!
//! Two layers, both needed:
//! - the OS lock on the file excludes other processes. On Linux, macOS and the BSDs it is
//!   `flock(2)`, which belongs to the open file description, so two handles opened separately
//!   in one process also exclude each other; Windows `LockFileEx` is per handle as well;
//! - an in-process async mutex per lock path, taken first, so that many tasks waiting for the
//!   same key wait on the async runtime rather than each parking a blocking-pool thread in
//!   `flock`, and so exclusion inside a process does not depend on the filesystem (on NFS,
//!   `flock` is emulated with per-process `fcntl` locks that do not exclude within a process).
//!
//! Lock files are never deleted: if one process unlinked a lock file while another held it, a
//! third could create and lock a new file at the same path, and two would hold "the" lock.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use tokio::sync::OwnedMutexGuard;

use super::fsutil::{self, ensure_private_dir, io_err};
use super::keyed::KeyedMutex;
use super::{StoreError, StoreLock};

/// In-process exclusion, keyed by the absolute lock file path, shared by every store instance
/// in the process.
static IN_PROCESS: LazyLock<KeyedMutex<PathBuf>> = LazyLock::new(KeyedMutex::default);

/// A directory of lock files.
#[derive(Debug, Clone)]
pub(crate) struct LockDir {
    dir: PathBuf,
}

impl LockDir {
    /// Creates (or tightens) the lock directory: mode 0700 on Unix.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let dir = std::path::absolute(dir).map_err(io_err(dir))?;
        ensure_private_dir(&dir)?;
        Ok(Self { dir })
    }

    /// Waits for the exclusive lock `name`. `name` must be a validated server key or an
    /// internal name starting with `.` (which server keys cannot), so names never collide and
    /// never escape the directory.
    pub(crate) async fn lock(&self, name: &str) -> Result<FileLock, StoreError> {
        let path = self.dir.join(format!("{name}.lock"));
        let local = IN_PROCESS.lock(&path).await;
        let file = {
            let path = path.clone();
            fsutil::blocking(path.clone(), move || lock_blocking(&path)).await?
        };
        Ok(FileLock {
            file,
            _local: local,
        })
    }

    /// Waits for the exclusive lock `name` on the calling thread, with the OS lock only: for
    /// short critical sections in synchronous code, such as choosing a store's key while it
    /// is opened. Dropping the returned file releases the lock.
    ///
    /// Threads of one process exclude each other too, as each opens its own handle (see
    /// `os_lock_excludes_between_handles_of_one_process`); on NFS, where `flock` becomes a
    /// per-process `fcntl` lock, only other processes are excluded.
    pub(crate) fn lock_blocking(&self, name: &str) -> Result<File, StoreError> {
        lock_blocking(&self.dir.join(format!("{name}.lock")))
    }
}

/// Opens (creating if needed, mode 0600) and locks a lock file, waiting as long as it takes.
pub(crate) fn lock_blocking(path: &Path) -> Result<File, StoreError> {
    let file = open_lock_file(path)?;
    file.lock().map_err(io_err(path))?;
    Ok(file)
}

/// Opens a lock file without locking it.
pub(crate) fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    let mut options = OpenOptions::new();
    // Write access because Windows `LockFileEx` wants it; no truncation, as other holders
    // have the same file open.
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(io_err(path))
}

/// A held lock. Dropping it unlocks the file, then lets the next task of this process in.
pub(crate) struct FileLock {
    file: File,
    _local: OwnedMutexGuard<()>,
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file would release the lock too; unlocking first makes the order
        // explicit (OS lock released before the in-process mutex, which drops after this).
        // A failure leaves the lock to be released by the close right after.
        let _ = self.file.unlock();
    }
}

impl StoreLock for FileLock {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::TryLockError;

    /// The claim the whole design rests on: OS locks taken through two separately opened
    /// handles of one file exclude each other inside a single process.
    #[test]
    fn os_lock_excludes_between_handles_of_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.lock");
        let a = open_lock_file(&path).unwrap();
        let b = open_lock_file(&path).unwrap();
        a.lock().unwrap();
        assert!(matches!(b.try_lock(), Err(TryLockError::WouldBlock)));
        // Also from another thread.
        let path2 = path.clone();
        let other = std::thread::spawn(move || {
            let c = open_lock_file(&path2).unwrap();
            matches!(c.try_lock(), Err(TryLockError::WouldBlock))
        });
        assert!(other.join().unwrap());
        a.unlock().unwrap();
        b.try_lock().unwrap();
    }

    #[test]
    fn closing_the_handle_releases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.lock");
        let a = lock_blocking(&path).unwrap();
        drop(a);
        open_lock_file(&path).unwrap().try_lock().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn lock_dir_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let locks = dir.path().join("locks");
        LockDir::open(&locks).unwrap();
        let mode = std::fs::metadata(&locks).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let path = locks.join("k.lock");
        drop(open_lock_file(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
