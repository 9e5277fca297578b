//! The default credential store: one encrypted file per server in a private directory.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::fsutil::{self, ensure_private_dir, io_err, sync_dir};
use super::lockfile::LockDir;
use super::{CredentialStore, ServerRecord, StoreError, StoreLock, validate_key};

pub(super) const KEY_FILE: &str = "store.key";
/// Present instead of the key file when the key is in the OS keyring; names the keyring entry
/// and holds no secret. See `FileStore::open_auto` (the `keyring` feature).
pub(super) const KEY_MARKER: &str = "store.key.keyring";
/// The lock (in `locks/`) held while a new store's key is chosen and created, so that
/// processes opening a new store at once all end up with the same key.
pub(super) const KEY_LOCK: &str = ".store-key";
const SERVERS_DIR: &str = "servers";
const LOCKS_DIR: &str = "locks";
const RECORD_SUFFIX: &str = ".json";
/// Temporary files start with a dot, which server keys cannot, so they never look like records.
pub(super) const TMP_PREFIX: &str = ".tmp-";
/// A writer needs milliseconds; a temporary file this old belongs to a writer that died.
const STALE_TMP_AGE: Duration = Duration::from_secs(60 * 60);
const FORMAT_VERSION: u32 = 1;
pub(super) const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The on-disk form of a record.
#[derive(Serialize, Deserialize)]
struct Envelope {
    /// Format version; 1 is XChaCha20-Poly1305, AAD = server key, plaintext = record JSON.
    v: u32,
    /// Base64 of the 24-byte nonce.
    nonce: String,
    /// Base64 of ciphertext and tag.
    ct: String,
}

/// Encrypted files in a private directory: the default [`CredentialStore`].
///
/// Safe to share between processes: writes are atomic (temporary file, fsync, rename), and
/// [`lock`](CredentialStore::lock) takes an OS file lock that excludes other processes as
/// well as other tasks of this one. Cloning is cheap and clones share everything.
///
/// ```text
/// <dir>/                  0700
///   store.key             0600  32 random bytes (absent when the key comes from elsewhere)
///   store.key.keyring     0600  instead of store.key when the key is in the OS keyring
///                               (`open_auto`): names the keyring entry, holds no secret
///   servers/<key>.json    0600  {"v":1,"nonce":"<base64>","ct":"<base64>"}
///   locks/<key>.lock      0600  empty; held with an OS file lock during read-modify-write
/// ```
///
/// Each record is the JSON of a [`ServerRecord`], sealed with XChaCha20-Poly1305 under the
/// store key with a fresh random 192-bit nonce per write (random nonces of that size never
/// realistically repeat, so no counter has to be kept consistent across processes). The
/// associated data is the server key, so a record moved to another server's file name fails
/// to decrypt instead of handing one server's tokens to another.
///
/// The key is a random 256-bit key, not derived from a passphrase, so reading a token costs
/// one file read and one AEAD pass (microseconds), which matters to a CLI that runs per
/// request. The encryption keeps tokens out of backups, sync folders and casual `grep`s; it
/// does not protect against code running as the same user, who can read the key file too
/// (an OS keyring does better there: see `open_auto`, with the `keyring` feature).
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

/// A server key with its record, or why it cannot be read.
type Entry = (String, Result<ServerRecord, StoreError>);

struct Inner {
    dir: PathBuf,
    servers: PathBuf,
    // The cipher holds the only in-memory copy of the key and wipes it when dropped.
    cipher: XChaCha20Poly1305,
    locks: LockDir,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The directory only: never the key, never a record.
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl FileStore {
    /// Opens the store in `dir`, creating it if needed, with the key kept in `dir/store.key`.
    ///
    /// The directories are created with mode 0700 (and tightened to it if they are open to
    /// other users); the key file is created with 0600 and 32 random bytes on first use.
    /// Processes racing to create it all end up with the same key: it is created under a
    /// lock file, written to a temporary file and moved into place only if no key file
    /// exists yet.
    ///
    /// A store whose key is in the OS keyring (created by `open_auto`, with the `keyring`
    /// feature) is refused rather than given a new key file, which would leave the records
    /// already stored unreadable here and, as the key file then wins, in every other process.
    ///
    /// # Errors
    ///
    /// [`StoreError::Key`] if the key file is readable by other users (the message says how
    /// to fix it) or is not a key file, or if the store's key is in the OS keyring;
    /// [`StoreError::Io`] if a directory or file cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let (dir, locks) = prepare_dirs(dir.into())?;
        let key_path = dir.join(KEY_FILE);
        let key = match read_key_file(&key_path)? {
            Some(key) => key,
            None => {
                // The same lock as `open_auto`'s, so a new store gets a key file or a keyring
                // key, never both.
                let _lock = locks.lock_blocking(KEY_LOCK)?;
                if marker_exists(&dir)? {
                    return Err(key_is_in_keyring(&dir));
                }
                load_or_create_key(&key_path)?
            }
        };
        // A process killed while creating the key file leaves its temporary file here.
        sweep_stale_tmp(&dir);
        Ok(Self::with_key(dir, locks, &key))
    }

    /// Opens the store in `dir` with a key from elsewhere, such as the OS keyring
    /// (`store_key_from_keyring`, with the `keyring` feature). No key file is read or written.
    ///
    /// Every process sharing the store must use the same key: records written under another
    /// key fail to decrypt ([`StoreError::Decrypt`]). The store keeps its own copy of the key
    /// and wipes it when dropped; wiping `key` at the call site is the caller's part.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the directories cannot be created.
    pub fn open_with_key(dir: impl Into<PathBuf>, key: [u8; KEY_LEN]) -> Result<Self, StoreError> {
        let key = Zeroizing::new(key);
        let (dir, locks) = prepare_dirs(dir.into())?;
        Ok(Self::with_key(dir, locks, &key))
    }

    /// The store's directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub(super) fn with_key(dir: PathBuf, locks: LockDir, key: &Zeroizing<[u8; KEY_LEN]>) -> Self {
        let servers = dir.join(SERVERS_DIR);
        Self {
            inner: Arc::new(Inner {
                dir,
                servers,
                cipher: XChaCha20Poly1305::new(Key::from_slice(&key[..])),
                locks,
            }),
        }
    }
}

impl Inner {
    fn record_path(&self, server_key: &str) -> PathBuf {
        self.servers.join(format!("{server_key}{RECORD_SUFFIX}"))
    }

    /// Reads and decrypts one record; `None` if there is none.
    fn read(&self, server_key: &str) -> Result<Option<ServerRecord>, StoreError> {
        let path = self.record_path(server_key);
        let sealed = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let plaintext = open_sealed(&self.cipher, server_key, &sealed)?;
        parse_record(server_key, &plaintext).map(Some)
    }

    /// Replaces a record atomically: a reader, or a later process after a crash, sees the
    /// old file or the new one, never a mix.
    fn write(&self, server_key: &str, sealed: &[u8]) -> Result<(), StoreError> {
        let path = self.record_path(server_key);
        let mut builder = tempfile::Builder::new();
        builder.prefix(TMP_PREFIX).suffix(".tmp");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Created with this mode, not chmod-ed afterwards, so no other user can open it
            // in between.
            builder.permissions(fs::Permissions::from_mode(0o600));
        }
        let mut tmp = builder
            .tempfile_in(&self.servers)
            .map_err(io_err(&self.servers))?;
        tmp.write_all(sealed).map_err(io_err(tmp.path()))?;
        // Data on disk before the rename makes it visible; otherwise a crash could leave the
        // new name pointing at an empty file.
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        // If this fails the temporary file is removed when `PersistError` drops.
        tmp.persist(&path).map_err(|e| io_err(&path)(e.error))?;
        sync_dir(&self.servers)
    }

    fn remove(&self, server_key: &str) -> Result<(), StoreError> {
        let path = self.record_path(server_key);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.servers),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Every record file, read and decrypted one by one, with the failures kept per key so
    /// the caller can skip them. Sweeps temporary files left by writers that died.
    fn read_all(&self) -> Result<Vec<Entry>, StoreError> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.servers).map_err(io_err(&self.servers))? {
            let entry = entry.map_err(io_err(&self.servers))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TMP_PREFIX) {
                remove_if_stale(&entry.path(), now);
                continue;
            }
            let Some(key) = name.strip_suffix(RECORD_SUFFIX) else {
                continue;
            };
            if validate_key(key).is_err() {
                continue;
            }
            match self.read(key) {
                Ok(Some(record)) => out.push((key.to_owned(), Ok(record))),
                // Deleted since the directory was read.
                Ok(None) => {}
                Err(e) => out.push((key.to_owned(), Err(e))),
            }
        }
        // Directory order is arbitrary; a stable order makes `list` output reproducible.
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[async_trait]
impl CredentialStore for FileStore {
    async fn get(&self, server_key: &str) -> Result<Option<ServerRecord>, StoreError> {
        validate_key(server_key)?;
        let inner = Arc::clone(&self.inner);
        let key = server_key.to_owned();
        fsutil::blocking(self.inner.record_path(server_key), move || inner.read(&key)).await
    }

    async fn put(&self, server_key: &str, record: &ServerRecord) -> Result<(), StoreError> {
        validate_key(server_key)?;
        // Sealing a record takes microseconds: done here, so only the file I/O needs the
        // blocking pool and the record need not be cloned into it.
        let sealed = seal_record(&self.inner.cipher, server_key, record)?;
        let inner = Arc::clone(&self.inner);
        let key = server_key.to_owned();
        fsutil::blocking(self.inner.record_path(server_key), move || {
            inner.write(&key, &sealed)
        })
        .await
    }

    async fn delete(&self, server_key: &str) -> Result<(), StoreError> {
        validate_key(server_key)?;
        let inner = Arc::clone(&self.inner);
        let key = server_key.to_owned();
        fsutil::blocking(self.inner.record_path(server_key), move || {
            inner.remove(&key)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<ServerRecord>, StoreError> {
        let inner = Arc::clone(&self.inner);
        let entries =
            fsutil::blocking(self.inner.servers.clone(), move || inner.read_all()).await?;
        // Logged here rather than on the blocking thread, so the caller's tracing context
        // (span, scoped subscriber) applies.
        Ok(entries
            .into_iter()
            .filter_map(|(key, result)| match result {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::warn!(
                        server_key = %key,
                        %error,
                        "skipping a credential store entry that cannot be read"
                    );
                    None
                }
            })
            .collect())
    }

    async fn lock(&self, server_key: &str) -> Result<Box<dyn StoreLock>, StoreError> {
        validate_key(server_key)?;
        Ok(Box::new(self.inner.locks.lock(server_key).await?))
    }
}

/// Makes `dir` absolute (so lock paths compare equal across instances) and creates it and
/// its subdirectories, private.
pub(super) fn prepare_dirs(dir: PathBuf) -> Result<(PathBuf, LockDir), StoreError> {
    let dir = std::path::absolute(&dir).map_err(io_err(&dir))?;
    ensure_private_dir(&dir)?;
    ensure_private_dir(&dir.join(SERVERS_DIR))?;
    let locks = LockDir::open(&dir.join(LOCKS_DIR))?;
    Ok((dir, locks))
}

/// Removes the stale temporary files of `dir`. Best effort, like [`remove_if_stale`].
pub(super) fn sweep_stale_tmp(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TMP_PREFIX))
        {
            remove_if_stale(&entry.path(), now);
        }
    }
}

/// Removes a temporary file left by a writer that was killed. Best effort: a failure only
/// leaves an ignored file behind.
fn remove_if_stale(path: &Path, now: SystemTime) {
    let modified = fs::symlink_metadata(path).and_then(|m| m.modified());
    let stale = modified
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age > STALE_TMP_AGE);
    if stale {
        match fs::remove_file(path) {
            Ok(()) => tracing::debug!(path = %path.display(), "removed a stale temporary file"),
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, "cannot remove a stale temporary file");
            }
        }
    }
}

// ---- the key file ----

/// Whether the store in `dir` keeps its key in the OS keyring.
fn marker_exists(dir: &Path) -> Result<bool, StoreError> {
    let path = dir.join(KEY_MARKER);
    match fs::symlink_metadata(&path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// The store in `dir` keeps its key in the OS keyring, and this code cannot reach it.
fn key_is_in_keyring(dir: &Path) -> StoreError {
    StoreError::Key(format!(
        "the key of the store in {dir} is in the OS keyring ({KEY_MARKER} says so), and this \
         program opens stores with a key file only: use a build with OS keyring support (the \
         `keyring` cargo feature). No key file was created, as one would leave the records \
         already stored unreadable",
        dir = dir.display()
    ))
}

/// Reads the key file, or creates it with a fresh random key if there is none. Callers
/// creating a store hold the `KEY_LOCK`.
pub(super) fn load_or_create_key(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, StoreError> {
    if let Some(key) = read_key_file(path)? {
        return Ok(key);
    }
    let dir = path
        .parent()
        .ok_or_else(|| StoreError::Key(format!("{} has no parent directory", path.display())))?;
    let key = random_key()?;

    // Written in full under a temporary name, then given the final name only if that name
    // is still free (rename-no-replace, or link + unlink). So the key file is never seen
    // half-written, and of several processes creating it at once exactly one wins; the
    // others read the winner's key below.
    let mut builder = tempfile::Builder::new();
    builder.prefix(TMP_PREFIX).suffix(".key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o600));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(io_err(dir))?;
    tmp.write_all(&key[..]).map_err(io_err(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {
            sync_dir(dir)?;
            Ok(key)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            // Dropping the error removes our temporary file.
            drop(e);
            read_key_file(path)?.ok_or_else(|| {
                StoreError::Key(format!(
                    "{} was created by another process and then removed",
                    path.display()
                ))
            })
        }
        Err(e) => Err(StoreError::Key(format!(
            "cannot create {}: {}",
            path.display(),
            e.error
        ))),
    }
}

/// Reads a key file: `None` if it does not exist. Refuses one that other users can read,
/// since the key may then be known to them.
pub(super) fn read_key_file(path: &Path) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    // Checked on the open handle, so the file checked is the file read.
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(StoreError::Key(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::Key(format!(
                "{path} has mode {mode:o}, so other users may have read the key that \
                 encrypts the stored credentials; refusing to use it. If only you could \
                 have read it, run `chmod 600 {path}`; otherwise delete it (all stored \
                 credentials are then lost and servers must be authorized again)",
                path = path.display()
            )));
        }
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(StoreError::Key(format!(
            "{} is {} bytes long, not {KEY_LEN}: not a store key file",
            path.display(),
            meta.len()
        )));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    file.read_exact(&mut key[..]).map_err(io_err(path))?;
    Ok(Some(key))
}

fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, StoreError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(&mut key[..])
        .map_err(|e| StoreError::Key(format!("the system random number generator failed: {e}")))?;
    Ok(key)
}

// ---- sealing records ----

/// Serializes and encrypts a record. The plaintext exists only in one exactly-sized buffer,
/// which is encrypted in place (and wiped on drop regardless).
fn seal_record(
    cipher: &XChaCha20Poly1305,
    server_key: &str,
    record: &ServerRecord,
) -> Result<Vec<u8>, StoreError> {
    let buf = record_json(server_key, record, TAG_LEN)?;
    seal_in_place(cipher, server_key, buf)
}

/// A record's JSON in a buffer wiped on drop, with `spare` bytes of capacity to grow into.
/// Measured first so the buffer never reallocates: a reallocation would leave a copy of the
/// plaintext in freed memory that nothing wipes.
pub(super) fn record_json(
    server_key: &str,
    record: &ServerRecord,
    spare: usize,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let cannot = |_| StoreError::Corrupt {
        key: server_key.to_owned(),
        message: "the record cannot be serialized".to_owned(),
    };
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, record).map_err(cannot)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(counter.0 + spare));
    serde_json::to_writer(&mut *buf, record).map_err(cannot)?;
    Ok(buf)
}

fn seal_in_place(
    cipher: &XChaCha20Poly1305,
    server_key: &str,
    mut buf: Zeroizing<Vec<u8>>,
) -> Result<Vec<u8>, StoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|e| StoreError::Key(format!("the system random number generator failed: {e}")))?;
    cipher
        .encrypt_in_place(&XNonce::from(nonce), server_key.as_bytes(), &mut *buf)
        // Only fails for messages beyond the cipher's length limit (256 GiB).
        .map_err(|_| StoreError::Corrupt {
            key: server_key.to_owned(),
            message: "the record is too large to encrypt".to_owned(),
        })?;
    let envelope = Envelope {
        v: FORMAT_VERSION,
        nonce: B64.encode(nonce),
        ct: B64.encode(&*buf),
    };
    serde_json::to_vec(&envelope).map_err(|_| StoreError::Corrupt {
        key: server_key.to_owned(),
        message: "the envelope cannot be serialized".to_owned(),
    })
}

/// Checks and decrypts a sealed record, returning the plaintext in a buffer wiped on drop.
/// Any damage to the envelope, nonce, ciphertext or tag, a different key, or a different
/// server key all come out as [`StoreError::Decrypt`]: only a version from the future is
/// told apart, as it is not damage.
fn open_sealed(
    cipher: &XChaCha20Poly1305,
    server_key: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let undecryptable = || StoreError::Decrypt(server_key.to_owned());
    let envelope: Envelope = serde_json::from_slice(sealed).map_err(|_| undecryptable())?;
    if envelope.v != FORMAT_VERSION {
        return Err(StoreError::Corrupt {
            key: server_key.to_owned(),
            message: format!(
                "written in format version {}, this version reads {FORMAT_VERSION}",
                envelope.v
            ),
        });
    }
    let nonce = B64.decode(&envelope.nonce).map_err(|_| undecryptable())?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| undecryptable())?;
    let mut buf = Zeroizing::new(B64.decode(&envelope.ct).map_err(|_| undecryptable())?);
    cipher
        .decrypt_in_place(&XNonce::from(nonce), server_key.as_bytes(), &mut *buf)
        .map_err(|_| undecryptable())?;
    Ok(buf)
}

/// Parses decrypted JSON. The message of a failure gives the position only: serde_json's
/// own messages quote the offending value, which may be a token.
pub(super) fn parse_record(server_key: &str, plaintext: &[u8]) -> Result<ServerRecord, StoreError> {
    serde_json::from_slice(plaintext).map_err(|e| StoreError::Corrupt {
        key: server_key.to_owned(),
        message: format!(
            "not a valid record ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    })
}

/// An `io::Write` that only counts.
struct ByteCounter(usize);

impl Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{sample_record, token_of};
    use crate::store::server_key;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Barrier, Mutex};

    crate::store::conformance::conformance_tests!({
        let tmp = tempfile::tempdir().unwrap();
        (FileStore::open(tmp.path().join("store")).unwrap(), tmp)
    });

    fn new_store() -> (FileStore, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        (FileStore::open(tmp.path().join("store")).unwrap(), tmp)
    }

    fn record_file(store: &FileStore, key: &str) -> PathBuf {
        store.inner.record_path(key)
    }

    #[tokio::test]
    async fn records_are_not_plaintext_on_disk() {
        let (store, _tmp) = new_store();
        let key = server_key("https://mcp.example");
        let record = sample_record("https://mcp.example/secret-path", "tok-PLAINTEXT-CANARY");
        store.put(&key, &record).await.unwrap();

        let bytes = fs::read(record_file(&store, &key)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for needle in [
            "tok-PLAINTEXT-CANARY",
            "refresh-token-VALUE",
            "client-secret-VALUE",
            "dpop-key-VALUE",
            "secret-path",
            "as.example",
        ] {
            assert!(!text.contains(needle), "{needle} is readable on disk");
        }
        let envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(envelope.v, 1);
        assert_eq!(B64.decode(&envelope.nonce).unwrap().len(), NONCE_LEN);
    }

    #[tokio::test]
    async fn each_write_uses_a_fresh_nonce() {
        let (store, _tmp) = new_store();
        let record = sample_record("https://mcp.example", "t");
        store.put("k", &record).await.unwrap();
        let first: Envelope =
            serde_json::from_slice(&fs::read(record_file(&store, "k")).unwrap()).unwrap();
        store.put("k", &record).await.unwrap();
        let second: Envelope =
            serde_json::from_slice(&fs::read(record_file(&store, "k")).unwrap()).unwrap();
        assert_ne!(first.nonce, second.nonce);
        assert_ne!(first.ct, second.ct);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn files_are_0600_and_directories_0700() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let (store, _tmp) = new_store();
        store
            .put("k", &sample_record("https://mcp.example", "t"))
            .await
            .unwrap();
        drop(store.lock("k").await.unwrap());

        let dir = store.dir();
        assert_eq!(mode(dir), 0o700);
        assert_eq!(mode(&dir.join(SERVERS_DIR)), 0o700);
        assert_eq!(mode(&dir.join(LOCKS_DIR)), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&record_file(&store, "k")), 0o600);
        assert_eq!(mode(&dir.join(LOCKS_DIR).join("k.lock")), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn an_existing_open_directory_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        fs::create_dir_all(dir.join(SERVERS_DIR)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join(SERVERS_DIR), fs::Permissions::from_mode(0o777)).unwrap();
        FileStore::open(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(SERVERS_DIR)), 0o700);
    }

    #[tokio::test]
    async fn reopening_uses_the_same_key() {
        let (store, tmp) = new_store();
        store
            .put("k", &sample_record("https://mcp.example", "kept"))
            .await
            .unwrap();
        drop(store);
        let again = FileStore::open(tmp.path().join("store")).unwrap();
        assert_eq!(token_of(&again.get("k").await.unwrap().unwrap()), "kept");
    }

    #[tokio::test]
    async fn a_tampered_file_does_not_decrypt() {
        let (store, _tmp) = new_store();
        store
            .put("k", &sample_record("https://mcp.example", "t"))
            .await
            .unwrap();
        let path = record_file(&store, "k");
        let original: Envelope = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();

        // One flipped bit in the ciphertext.
        let mut ct = B64.decode(&original.ct).unwrap();
        ct[3] ^= 0x01;
        let tampered = Envelope {
            v: 1,
            nonce: original.nonce.clone(),
            ct: B64.encode(&ct),
        };
        fs::write(&path, serde_json::to_vec(&tampered).unwrap()).unwrap();
        assert!(matches!(store.get("k").await, Err(StoreError::Decrypt(k)) if k == "k"));

        // Another nonce.
        let tampered = Envelope {
            v: 1,
            nonce: B64.encode([7u8; NONCE_LEN]),
            ct: original.ct.clone(),
        };
        fs::write(&path, serde_json::to_vec(&tampered).unwrap()).unwrap();
        assert!(matches!(store.get("k").await, Err(StoreError::Decrypt(_))));

        // A truncated tag, a short nonce, not an envelope at all, an empty file.
        let ct = B64.decode(&original.ct).unwrap();
        let truncated = Envelope {
            v: 1,
            nonce: original.nonce.clone(),
            ct: B64.encode(&ct[..ct.len() - 1]),
        };
        let short_nonce = Envelope {
            v: 1,
            nonce: B64.encode([0u8; 12]),
            ct: original.ct.clone(),
        };
        for bytes in [
            serde_json::to_vec(&truncated).unwrap(),
            serde_json::to_vec(&short_nonce).unwrap(),
            b"garbage".to_vec(),
            Vec::new(),
        ] {
            fs::write(&path, bytes).unwrap();
            assert!(matches!(store.get("k").await, Err(StoreError::Decrypt(_))));
        }
    }

    #[tokio::test]
    async fn swapped_files_do_not_decrypt() {
        let (store, _tmp) = new_store();
        store
            .put("aaaa", &sample_record("https://a.example", "token-a"))
            .await
            .unwrap();
        store
            .put("bbbb", &sample_record("https://b.example", "token-b"))
            .await
            .unwrap();
        let (a, b) = (record_file(&store, "aaaa"), record_file(&store, "bbbb"));
        let tmp = a.with_extension("swap");
        fs::rename(&a, &tmp).unwrap();
        fs::rename(&b, &a).unwrap();
        fs::rename(&tmp, &b).unwrap();
        assert!(matches!(store.get("aaaa").await, Err(StoreError::Decrypt(k)) if k == "aaaa"));
        assert!(matches!(store.get("bbbb").await, Err(StoreError::Decrypt(k)) if k == "bbbb"));
        // A record copied under a new name is no more usable.
        fs::copy(&a, record_file(&store, "cccc")).unwrap();
        assert!(matches!(
            store.get("cccc").await,
            Err(StoreError::Decrypt(_))
        ));
    }

    #[tokio::test]
    async fn a_wrong_key_does_not_decrypt() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let right = FileStore::open_with_key(&dir, [1u8; KEY_LEN]).unwrap();
        right
            .put("k", &sample_record("https://mcp.example", "t"))
            .await
            .unwrap();

        let wrong = FileStore::open_with_key(&dir, [2u8; KEY_LEN]).unwrap();
        assert!(matches!(wrong.get("k").await, Err(StoreError::Decrypt(_))));
        // open_with_key leaves no key file behind, and the key-file store has another key.
        assert!(!dir.join(KEY_FILE).exists());
        let from_file = FileStore::open(&dir).unwrap();
        assert!(matches!(
            from_file.get("k").await,
            Err(StoreError::Decrypt(_))
        ));
        // The right key still works.
        assert_eq!(token_of(&right.get("k").await.unwrap().unwrap()), "t");
    }

    #[tokio::test]
    async fn a_future_format_version_is_reported_as_such() {
        let (store, _tmp) = new_store();
        store
            .put("k", &sample_record("https://mcp.example", "t"))
            .await
            .unwrap();
        let path = record_file(&store, "k");
        let mut envelope: Envelope = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        envelope.v = 2;
        fs::write(&path, serde_json::to_vec(&envelope).unwrap()).unwrap();
        let err = store.get("k").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }));
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[tokio::test]
    async fn corrupt_plaintext_is_reported_without_its_content() {
        let (store, _tmp) = new_store();
        // Decrypts fine, but `issuer` has the wrong type and quotes a secret.
        let plaintext = br#"{"server_url":"https://x","issuer":"tok-LEAK","token_endpoint":7}"#;
        let sealed =
            seal_in_place(&store.inner.cipher, "k", Zeroizing::new(plaintext.to_vec())).unwrap();
        fs::write(record_file(&store, "k"), sealed).unwrap();
        let err = store.get("k").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }));
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("tok-LEAK"), "{shown}");
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        FileStore::open(&dir).unwrap();
        let key_file = dir.join(KEY_FILE);
        for mode in [0o644, 0o640, 0o604] {
            fs::set_permissions(&key_file, fs::Permissions::from_mode(mode)).unwrap();
            let err = FileStore::open(&dir).unwrap_err();
            let StoreError::Key(message) = &err else {
                panic!("expected a key error, got {err:?}");
            };
            assert!(message.contains("chmod 600"), "{message}");
            assert!(
                message.contains(&key_file.display().to_string()),
                "{message}"
            );
        }
        fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).unwrap();
        FileStore::open(&dir).unwrap();
    }

    #[test]
    fn a_key_file_of_the_wrong_size_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        FileStore::open(&dir).unwrap();
        let key_file = dir.join(KEY_FILE);
        fs::write(&key_file, b"short").unwrap();
        assert!(matches!(FileStore::open(&dir), Err(StoreError::Key(_))));
    }

    #[test]
    fn racing_key_creation_yields_one_key() {
        for _ in 0..5 {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_path_buf();
            let path = dir.join(KEY_FILE);
            let threads = 16;
            let barrier = Arc::new(Barrier::new(threads));
            let keys: Vec<[u8; KEY_LEN]> = (0..threads)
                .map(|_| {
                    let (barrier, path) = (Arc::clone(&barrier), path.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        *load_or_create_key(&path).unwrap()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            assert!(keys.iter().all(|k| *k == keys[0]));
            assert_eq!(fs::read(&path).unwrap(), keys[0]);
            // The losers' temporary files are gone.
            let names: Vec<_> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, [KEY_FILE]);
        }
    }

    /// A build without keyring support must not give a keyring store a key file: the key
    /// file would win in every process from then on, orphaning the records already stored.
    #[test]
    fn open_refuses_a_store_whose_key_is_in_the_keyring() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        fs::create_dir(&dir).unwrap();
        fs::write(
            dir.join(KEY_MARKER),
            r#"{"service":"mcp-auth","user":"store-key"}"#,
        )
        .unwrap();
        let err = FileStore::open(&dir).unwrap_err();
        assert!(matches!(err, StoreError::Key(_)), "{err}");
        assert!(err.to_string().contains("OS keyring"), "{err}");
        assert!(!dir.join(KEY_FILE).exists());
    }

    #[tokio::test]
    async fn stores_opened_concurrently_share_records() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let barrier = Arc::new(Barrier::new(8));
        let stores: Vec<FileStore> = (0..8)
            .map(|_| {
                let (barrier, dir) = (Arc::clone(&barrier), dir.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    FileStore::open(dir).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        stores[0]
            .put("k", &sample_record("https://mcp.example", "shared"))
            .await
            .unwrap();
        for store in &stores {
            assert_eq!(token_of(&store.get("k").await.unwrap().unwrap()), "shared");
        }
    }

    /// Two store instances on one directory (as two processes would have) exclude each other.
    #[tokio::test]
    async fn lock_excludes_across_instances() {
        let (a, tmp) = new_store();
        let b = FileStore::open(tmp.path().join("store")).unwrap();
        let held = a.lock("k").await.unwrap();
        let acquired = Arc::new(AtomicBool::new(false));
        let waiter = tokio::spawn({
            let acquired = Arc::clone(&acquired);
            async move {
                let _guard = b.lock("k").await.unwrap();
                acquired.store(true, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!acquired.load(Ordering::SeqCst));
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(acquired.load(Ordering::SeqCst));
    }

    const CHILD_ENV: &str = "MCP_AUTH_TEST_LOCK_CHILD_DIR";

    /// Not a test on its own: run by `lock_excludes_another_process` in a child process,
    /// where it holds the lock of key `k` for a while.
    #[tokio::test]
    async fn lock_child_process_helper() {
        let Some(dir) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let dir = PathBuf::from(dir);
        let store = FileStore::open(dir.join("store")).unwrap();
        let guard = store.lock("k").await.unwrap();
        fs::write(dir.join("child-locked"), b"").unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        // Written before the release, so the parent, once it holds the lock, must see it.
        fs::write(dir.join("child-releasing"), b"").unwrap();
        drop(guard);
    }

    #[tokio::test]
    async fn lock_excludes_another_process() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path().join("store")).unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::file::tests::lock_child_process_helper",
                "--test-threads=1",
                "--quiet",
            ])
            .env(CHILD_ENV, tmp.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !tmp.path().join("child-locked").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never took the lock"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _guard = store.lock("k").await.unwrap();
        assert!(
            tmp.path().join("child-releasing").exists(),
            "got the lock while another process held it"
        );
        assert!(child.wait().unwrap().success());
    }

    /// What a writer killed between creating its temporary file and renaming it leaves.
    #[tokio::test]
    async fn a_dead_writers_temporary_file_is_harmless() {
        let (store, _tmp) = new_store();
        store
            .put("k", &sample_record("https://mcp.example", "old"))
            .await
            .unwrap();
        let servers = store.dir().join(SERVERS_DIR);
        let fresh = servers.join(format!("{TMP_PREFIX}fresh.tmp"));
        let stale = servers.join(format!("{TMP_PREFIX}stale.tmp"));
        fs::write(&fresh, b"{\"v\":1,\"nonce\":\"AAAA").unwrap();
        fs::write(&stale, b"").unwrap();
        let old = SystemTime::now() - 2 * STALE_TMP_AGE;
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();

        assert_eq!(token_of(&store.get("k").await.unwrap().unwrap()), "old");
        let listed = store.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        // The stale one was swept, the recent one (perhaps a live writer's) left alone.
        assert!(!stale.exists());
        assert!(fresh.exists());
        // And writing goes on.
        store
            .put("k", &sample_record("https://mcp.example", "new"))
            .await
            .unwrap();
        assert_eq!(token_of(&store.get("k").await.unwrap().unwrap()), "new");
    }

    /// What a process killed while creating the key file leaves.
    #[test]
    fn a_stale_key_temporary_file_is_swept_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        FileStore::open(&dir).unwrap();
        let stale = dir.join(format!("{TMP_PREFIX}dead.key"));
        fs::write(&stale, [0u8; KEY_LEN]).unwrap();
        let old = SystemTime::now() - 2 * STALE_TMP_AGE;
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        FileStore::open(&dir).unwrap();
        assert!(!stale.exists());
    }

    /// A reader racing a writer sees a whole record every time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_never_see_a_torn_record() {
        let (store, _tmp) = new_store();
        store
            .put("k", &sample_record("https://mcp.example", "0"))
            .await
            .unwrap();
        let writer = tokio::spawn({
            let store = store.clone();
            async move {
                for i in 1..100 {
                    store
                        .put("k", &sample_record("https://mcp.example", &i.to_string()))
                        .await
                        .unwrap();
                }
            }
        });
        while !writer.is_finished() {
            let record = store.get("k").await.unwrap().unwrap();
            assert!(token_of(&record).parse::<u32>().is_ok());
        }
        writer.await.unwrap();
        assert_eq!(token_of(&store.get("k").await.unwrap().unwrap()), "99");
    }

    /// A `tracing` writer into a shared buffer.
    #[derive(Clone, Default)]
    struct LogBuffer(Arc<Mutex<Vec<u8>>>);

    impl Write for LogBuffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn list_skips_an_unreadable_entry_and_names_it() {
        let logs = LogBuffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .with_ansi(false)
            .finish();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();

        tracing::subscriber::with_default(subscriber, || {
            rt.block_on(async {
                let (store, _tmp) = new_store();
                store
                    .put("good", &sample_record("https://good.example", "tok-GOOD"))
                    .await
                    .unwrap();
                store
                    .put("bad", &sample_record("https://bad.example", "tok-BAD"))
                    .await
                    .unwrap();
                let path = record_file(&store, "bad");
                let mut bytes = fs::read(&path).unwrap();
                let at = bytes.len() - 5;
                bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                fs::write(&path, bytes).unwrap();

                let listed = store.list().await.unwrap();
                assert_eq!(listed.len(), 1);
                assert_eq!(listed[0].server_url, "https://good.example");
                // get of that key still reports the problem.
                assert!(matches!(
                    store.get("bad").await,
                    Err(StoreError::Decrypt(_))
                ));
            });
        });

        let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("WARN"), "{logs}");
        assert!(logs.contains("server_key=bad"), "{logs}");
        assert!(!logs.contains("tok-"), "{logs}");
    }

    #[tokio::test]
    async fn debug_and_errors_show_no_secrets() {
        let tmp = tempfile::tempdir().unwrap();
        let key = [0xA5u8; KEY_LEN];
        let store = FileStore::open_with_key(tmp.path().join("store"), key).unwrap();
        store
            .put(
                "k",
                &sample_record("https://mcp.example", "tok-DEBUG-CANARY"),
            )
            .await
            .unwrap();

        let debug = format!("{store:?}");
        assert_eq!(debug, format!("FileStore {{ dir: {:?} }}", store.dir()));
        assert!(!debug.contains("165, 165") && !debug.to_lowercase().contains("a5a5"));

        let wrong = FileStore::open_with_key(tmp.path().join("store"), [0x5Au8; KEY_LEN]).unwrap();
        let err = wrong.get("k").await.unwrap_err();
        let shown = format!("{err} {err:?} {wrong:?}");
        assert!(!shown.contains("tok-DEBUG-CANARY"), "{shown}");
        assert!(
            !shown.contains("165, 165") && !shown.contains("90, 90"),
            "{shown}"
        );
        assert!(
            !shown.to_lowercase().contains("a5a5") && !shown.contains("paWl"),
            "{shown}"
        );
    }
}
