//! [`FileStore::open_auto`]: the store key from the OS keyring when one is reachable, from a
//! key file otherwise. The choice is made once, when the store is created, and recorded in
//! the store directory, so every process sharing the store uses the same key.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::StoreError;
use super::file::{
    FileStore, KEY_FILE, KEY_LEN, KEY_LOCK, KEY_MARKER, TMP_PREFIX, load_or_create_key,
    prepare_dirs, read_key_file, sweep_stale_tmp,
};
use super::fsutil::{io_err, sync_dir};
use super::keyring::{KEYRING_SERVICE, STORE_KEY_USER, existing_key, key_from_backend, persistent};

type Key = Zeroizing<[u8; KEY_LEN]>;
type Backend = Arc<keyring_core::CredentialStore>;

/// The content of `store.key.keyring`: where the key is. No secret.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    service: String,
    user: String,
}

/// Where a store's key is, as its directory says.
enum Found {
    KeyFile(Key),
    InKeyring(Marker),
    Nothing,
}

impl FileStore {
    /// Opens the store in `dir`, creating it if needed, with its key in the OS keyring when
    /// one is available and in the key file `dir/store.key` (0600) otherwise.
    ///
    /// The OS keyring is the default `keyring-core` store, which the program installs at
    /// startup (see [`store_key_from_keyring`](super::store_key_from_keyring) for how);
    /// [`open_auto_with`](FileStore::open_auto_with) takes it from a function instead, so
    /// that it is only set up when needed. The choice is made once per store:
    ///
    /// - if `dir/store.key` exists, it is the key, as with [`open`](FileStore::open). An
    ///   existing store is never moved to the keyring behind the user's back;
    /// - else if `dir/store.key.keyring` exists, the key is the keyring entry it names. If the
    ///   keyring cannot be reached, or has no such entry, this fails: a new key would leave
    ///   every stored record unreadable;
    /// - else the store is new: the key is taken from the keyring, or created there
    ///   (service `mcp-auth`, user `store-key`, shared by every store of the user), and
    ///   `store.key.keyring` is written. Without a keyring that keeps secrets on disk, or if
    ///   the keyring fails (locked, access denied), a key file is created instead, as
    ///   [`open`](FileStore::open) does.
    ///
    /// Processes opening a new store at the same time all end up with the same key: the
    /// choice is made under a lock file in `dir/locks`. [`open`](FileStore::open) takes the
    /// same lock and refuses a store whose key is in the keyring, so programs built with and
    /// without keyring support can share a store without splitting it between two keys. The
    /// lock is per directory, and keyrings have no create-if-absent: two new stores in
    /// different directories, created at the very same moment before the keyring holds an
    /// `mcp-auth` key, could each put their own key there, and the first would lose what it
    /// stored. Create one store before starting concurrent first runs elsewhere.
    ///
    /// # Cost
    ///
    /// With a key file, opening costs what [`open`](FileStore::open) costs: one small file
    /// read, no lock, no keyring. With the key in the keyring, every open asks the keyring,
    /// which is a round trip to another process (on Linux, a D-Bus connection to the Secret
    /// Service with a key exchange: tens of milliseconds in a debug build) and may show an
    /// unlock prompt. Either way, reading a record is
    /// then one file read and one AEAD pass: there is no key derivation.
    ///
    /// Blocking: call it at startup or from `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Key`] if the key is in the keyring and cannot be had from it (the
    /// message says why and what to do), or for the reasons [`open`](FileStore::open) gives;
    /// [`StoreError::Io`] if a directory or file cannot be created or read.
    pub fn open_auto(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_auto_with(dir, keyring_core::get_default_store)
    }

    /// [`open_auto`](FileStore::open_auto) with the keyring returned by `keyring` rather than
    /// the default `keyring-core` store. `keyring` is called only when there is no key file:
    /// for a store whose key is in the keyring, or to create a new store. So a program can
    /// connect to the OS keyring in it, and save that cost whenever a key file exists.
    ///
    /// `keyring` returns `None` when no keyring is available. A keyring that does not keep
    /// secrets on disk (a mock, or a kernel keyring cleared at reboot) counts as none.
    ///
    /// # Errors
    ///
    /// As for [`open_auto`](FileStore::open_auto).
    pub fn open_auto_with<F>(dir: impl Into<PathBuf>, keyring: F) -> Result<Self, StoreError>
    where
        F: FnOnce() -> Option<Backend>,
    {
        open_auto_in(dir.into(), || keyring().and_then(persistent))
    }
}

/// `open_auto` with any keyring, persistent or not (tests use the mock).
fn open_auto_in(
    dir: PathBuf,
    keyring: impl FnOnce() -> Option<Backend>,
) -> Result<FileStore, StoreError> {
    let (dir, locks) = prepare_dirs(dir)?;
    // The common case, an existing store, takes no lock.
    let key = match find(&dir)? {
        Found::KeyFile(key) => key,
        Found::InKeyring(marker) => key_from_marker(&dir, &marker, keyring())?,
        Found::Nothing => {
            let _lock = locks.lock_blocking(KEY_LOCK)?;
            // Another process may have chosen while this one waited for the lock.
            match find(&dir)? {
                Found::KeyFile(key) => key,
                Found::InKeyring(marker) => key_from_marker(&dir, &marker, keyring())?,
                Found::Nothing => create_key(&dir, keyring())?,
            }
        }
    };
    sweep_stale_tmp(&dir);
    Ok(FileStore::with_key(dir, locks, &key))
}

fn find(dir: &Path) -> Result<Found, StoreError> {
    if let Some(key) = read_key_file(&dir.join(KEY_FILE))? {
        return Ok(Found::KeyFile(key));
    }
    Ok(match read_marker(dir)? {
        Some(marker) => Found::InKeyring(marker),
        None => Found::Nothing,
    })
}

/// The key of a store whose marker says it is in the keyring. Never creates one.
fn key_from_marker(
    dir: &Path,
    marker: &Marker,
    keyring: Option<Backend>,
) -> Result<Key, StoreError> {
    let why = match keyring {
        None => "no OS keyring can be reached now".to_owned(),
        Some(backend) => match existing_key(&*backend, &marker.service, &marker.user) {
            Ok(Some(key)) => return Ok(key),
            Ok(None) => "the OS keyring has no such entry (deleted, or another keyring)".to_owned(),
            Err(e) => format!("the OS keyring failed ({e})"),
        },
    };
    Err(StoreError::Key(format!(
        "the key of the store in {dir} is in the OS keyring (service {service:?}, user \
         {user:?}, as {KEY_MARKER} says), but {why}. The stored credentials cannot be read \
         without it, so no new key was created: make the keyring reachable (on Linux, an \
         unlocked Secret Service such as gnome-keyring in this D-Bus session) and try again, \
         or delete {dir} to start over and log in to every server again",
        dir = dir.display(),
        service = marker.service,
        user = marker.user,
    )))
}

/// Chooses the key of a new store. The caller holds the `KEY_LOCK`.
fn create_key(dir: &Path, keyring: Option<Backend>) -> Result<Key, StoreError> {
    if let Some(backend) = keyring {
        match key_from_backend(&*backend) {
            Ok(key) => {
                // After the key is in the keyring: a crash in between leaves a keyring entry
                // and no marker, and the next open finds the entry and writes the marker.
                write_marker(dir)?;
                tracing::debug!(
                    vendor = %backend.vendor(),
                    "new credential store; its key is in the OS keyring"
                );
                return Ok(key);
            }
            Err(error) => tracing::warn!(
                %error,
                "the OS keyring cannot hold the credential store key; keeping it in a file"
            ),
        }
    }
    load_or_create_key(&dir.join(KEY_FILE))
}

fn read_marker(dir: &Path) -> Result<Option<Marker>, StoreError> {
    let path = dir.join(KEY_MARKER);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let marker: Marker = serde_json::from_slice(&bytes).map_err(|_| {
        StoreError::Key(format!(
            "{} is not a keyring marker: expected {{\"service\": ..., \"user\": ...}}",
            path.display()
        ))
    })?;
    Ok(Some(marker))
}

/// Writes the marker atomically (temporary file, fsync, rename), mode 0600.
fn write_marker(dir: &Path) -> Result<(), StoreError> {
    let marker = Marker {
        service: KEYRING_SERVICE.to_owned(),
        user: STORE_KEY_USER.to_owned(),
    };
    let path = dir.join(KEY_MARKER);
    let json = serde_json::to_vec(&marker).map_err(|e| StoreError::Key(e.to_string()))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(TMP_PREFIX).suffix(".keyring");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o600));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(io_err(dir))?;
    tmp.write_all(&json).map_err(io_err(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
    tmp.persist(&path).map_err(|e| io_err(&path)(e.error))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;
    use crate::store::CredentialStore;
    use crate::store::conformance::{sample_record, token_of};

    fn mock() -> Backend {
        keyring_core::mock::Store::new().unwrap()
    }

    fn keyring_key(backend: &Backend) -> Option<[u8; KEY_LEN]> {
        existing_key(&**backend, KEYRING_SERVICE, STORE_KEY_USER)
            .unwrap()
            .map(|key| *key)
    }

    /// Makes the next call on the keyring's store-key entry fail, as a locked keyring would.
    fn fail_next_call(backend: &Backend) {
        let entry = backend
            .build(KEYRING_SERVICE, STORE_KEY_USER, None)
            .unwrap();
        let cred: &keyring_core::mock::Cred = entry.as_any().downcast_ref().unwrap();
        cred.set_error(keyring_core::Error::NoStorageAccess(
            "locked".to_owned().into(),
        ));
    }

    #[tokio::test]
    async fn a_new_store_keeps_its_key_in_the_keyring() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let backend = mock();
        let store = open_auto_in(dir.clone(), || Some(Arc::clone(&backend))).unwrap();
        store
            .put("k", &sample_record("https://mcp.example", "tok-1"))
            .await
            .unwrap();

        assert!(!dir.join(KEY_FILE).exists());
        let marker = read_marker(&dir).unwrap().unwrap();
        assert_eq!(
            (&*marker.service, &*marker.user),
            (KEYRING_SERVICE, STORE_KEY_USER)
        );
        assert!(keyring_key(&backend).is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(KEY_MARKER))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // Reopened, it finds the key in the keyring again.
        let again = open_auto_in(dir, || Some(Arc::clone(&backend))).unwrap();
        assert_eq!(token_of(&again.get("k").await.unwrap().unwrap()), "tok-1");
    }

    #[tokio::test]
    async fn an_existing_key_file_wins_and_the_keyring_is_not_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let old = FileStore::open(&dir).unwrap();
        old.put("k", &sample_record("https://mcp.example", "tok-1"))
            .await
            .unwrap();

        let store = open_auto_in(dir.clone(), || panic!("the keyring was asked")).unwrap();
        assert_eq!(token_of(&store.get("k").await.unwrap().unwrap()), "tok-1");
        assert!(!dir.join(KEY_MARKER).exists());
    }

    #[tokio::test]
    async fn a_store_whose_key_is_in_the_keyring_is_not_given_a_new_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let backend = mock();
        open_auto_in(dir.clone(), || Some(Arc::clone(&backend))).unwrap();

        // No keyring in this process.
        let err = open_auto_in(dir.clone(), || None).unwrap_err();
        assert!(matches!(err, StoreError::Key(_)), "{err}");
        assert!(
            err.to_string().contains("no OS keyring can be reached"),
            "{err}"
        );
        // A keyring without the entry, which must not be created there.
        let empty = mock();
        let err = open_auto_in(dir.clone(), || Some(Arc::clone(&empty))).unwrap_err();
        assert!(err.to_string().contains("has no such entry"), "{err}");
        assert!(keyring_key(&empty).is_none());
        // A keyring that fails.
        fail_next_call(&backend);
        let err = open_auto_in(dir.clone(), || Some(Arc::clone(&backend))).unwrap_err();
        assert!(err.to_string().contains("the OS keyring failed"), "{err}");
        // Nor does the key-file-only `open` create a key file.
        assert!(matches!(FileStore::open(&dir), Err(StoreError::Key(_))));

        assert!(!dir.join(KEY_FILE).exists());
        assert!(open_auto_in(dir, || Some(backend)).is_ok());
    }

    #[test]
    fn without_a_keyring_a_new_store_gets_a_key_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        open_auto_in(dir.clone(), || None).unwrap();
        assert!(dir.join(KEY_FILE).exists());
        assert!(!dir.join(KEY_MARKER).exists());
    }

    /// The mock keeps secrets in memory only: holding the key there would lose every record
    /// when the process exits.
    #[test]
    fn a_keyring_that_forgets_is_not_used() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let backend = mock();
        FileStore::open_auto_with(&dir, || Some(Arc::clone(&backend))).unwrap();
        assert!(dir.join(KEY_FILE).exists());
        assert!(keyring_key(&backend).is_none());
    }

    #[test]
    fn a_failing_keyring_at_creation_means_a_key_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let backend = mock();
        fail_next_call(&backend);
        open_auto_in(dir.clone(), || Some(Arc::clone(&backend))).unwrap();
        assert!(dir.join(KEY_FILE).exists());
        assert!(!dir.join(KEY_MARKER).exists());
    }

    #[test]
    fn a_marker_that_is_not_one_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(KEY_MARKER), "garbage").unwrap();
        let err = open_auto_in(dir, || Some(mock())).unwrap_err();
        assert!(matches!(err, StoreError::Key(_)), "{err}");
    }

    /// Opens `dir` from many threads at once, each with `keyring(i)`, and checks that every
    /// store that opened reads what every other one wrote: one key, whoever chose it.
    async fn open_at_once(
        dir: PathBuf,
        threads: usize,
        keyring: impl Fn(usize) -> Option<Backend>,
    ) {
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (barrier, dir, keyring) = (Arc::clone(&barrier), dir.clone(), keyring(i));
                std::thread::spawn(move || {
                    barrier.wait();
                    match keyring {
                        Some(backend) => open_auto_in(dir, || Some(backend)),
                        // A program without keyring support.
                        None => FileStore::open(dir),
                    }
                })
            })
            .collect();
        let stores: Vec<FileStore> = handles
            .into_iter()
            .filter_map(|h| match h.join().unwrap() {
                Ok(store) => Some(store),
                // Only a keyring-less open of a store that went to the keyring may fail.
                Err(StoreError::Key(_)) if dir.join(KEY_MARKER).exists() => None,
                Err(e) => panic!("{e}"),
            })
            .collect();
        assert!(!stores.is_empty());
        assert!(dir.join(KEY_FILE).exists() != dir.join(KEY_MARKER).exists());
        for (i, store) in stores.iter().enumerate() {
            let record = sample_record(&format!("https://mcp{i}.example"), &format!("tok-{i}"));
            store.put(&format!("k{i}"), &record).await.unwrap();
        }
        for store in &stores {
            assert_eq!(store.list().await.unwrap().len(), stores.len());
        }
    }

    #[tokio::test]
    async fn concurrent_opens_of_a_new_store_agree_on_one_key() {
        for _ in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let backend = mock();
            open_at_once(tmp.path().join("store"), 8, |_| Some(Arc::clone(&backend))).await;
        }
    }

    #[tokio::test]
    async fn opens_with_and_without_keyring_support_never_split_the_key() {
        for _ in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let backend = mock();
            open_at_once(tmp.path().join("store"), 8, |i| {
                (i % 2 == 0).then(|| Arc::clone(&backend))
            })
            .await;
        }
    }
}
