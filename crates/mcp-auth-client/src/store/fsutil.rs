//! Small filesystem helpers shared by the file-backed stores: private directories, directory
//! fsync, and running blocking work off the async runtime.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::StoreError;

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and missing parents) readable only by the owner, and tightens an existing
/// directory that is open to the group or others: the files inside are encrypted, but their
/// names and timestamps still say which servers the user talks to, and when.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_err(dir))?;

    let meta = fs::metadata(dir).map_err(io_err(dir))?;
    if !meta.is_dir() {
        return Err(StoreError::Io {
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %dir.display(),
                mode = format_args!("{mode:o}"),
                "credential store directory was accessible to other users; setting mode 700"
            );
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        }
    }
    Ok(())
}

/// Flushes a directory's entries to disk, so a rename or unlink inside it survives a crash.
/// Without it, a power loss after `rename` can bring back the old name on some filesystems.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    // Windows cannot open a directory as a plain file, and NTFS journals renames itself.
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Runs blocking filesystem (or keyring) work on Tokio's blocking pool, so a slow disk or a
/// contended lock never stalls the async workers. `path` names the work in the error if the
/// task cannot finish (it panicked, or the runtime is shutting down).
pub(crate) async fn blocking<T, F>(path: PathBuf, f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(StoreError::Io {
            path,
            source: io::Error::other(format!("credential store background task failed: {join}")),
        }),
    }
}
