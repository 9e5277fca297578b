//! The OS keyring (macOS Keychain, Windows Credential Manager, Secret Service, ...) as a
//! credential store, and as the home of the [`FileStore`](super::FileStore) key.
//!
//! Both talk to whatever `keyring-core` store the program installed as the default; see
//! [`store_key_from_keyring`] for how a binary installs the OS one.
//!
//! Keyring calls are synchronous and may block (on D-Bus, or on an unlock prompt): the
//! [`KeyringStore`] methods run them on Tokio's blocking pool.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keyring_core::{CredentialPersistence, Entry, Error as KeyringError};
use zeroize::Zeroizing;

use super::file::{parse_record, record_json};
use super::lockfile::LockDir;
use super::{CredentialStore, ServerRecord, StoreError, StoreLock, validate_key};

/// The keyring service of every entry this crate writes.
pub(super) const KEYRING_SERVICE: &str = "mcp-auth";
/// The keyring user holding the [`FileStore`](super::FileStore) key.
pub(super) const STORE_KEY_USER: &str = "store-key";
/// The keyring user holding the list of server keys, since keyring search is optional and
/// differs per platform. Server keys cannot start with a dot, so it never collides with one.
const INDEX_USER: &str = ".index";
/// The lock serializing read-modify-write of the index.
const INDEX_LOCK: &str = ".index";

/// The key of an encrypted [`FileStore`](super::FileStore), kept in the OS keyring (service
/// `mcp-auth`, user `store-key`, 32 random bytes in base64), created on first use.
///
/// Most programs want [`FileStore::open_auto`](super::FileStore::open_auto) instead, which
/// calls this for a new store only, remembers the choice in the store directory, and so keeps
/// every process sharing the store on the same key. Calling this directly and passing the
/// key to [`FileStore::open_with_key`](super::FileStore::open_with_key) leaves that to the
/// caller.
///
/// Returns `Ok(None)` when no keyring is available: no default `keyring-core` store has
/// been installed (see below for how a binary installs one), or the installed store does
/// not keep secrets on disk (a mock, or a kernel keyring that forgets them at reboot, which
/// would make every stored record undecryptable). The caller then uses the key file
/// ([`FileStore::open`](super::FileStore::open)).
///
/// Blocking: call it at startup or from `spawn_blocking`.
///
/// Two processes creating the key at the same moment on first use could end up with
/// different keys, as keyrings have no create-if-absent: `open_auto` serializes that with a
/// lock file in the store directory.
///
/// # Installing the OS keyring
///
/// This crate talks to whatever `keyring-core` store the program installed as the default;
/// `keyring-core` itself ships only a mock and a sample store. A binary that wants the real
/// OS keyring adds the store crate of each platform and installs it before any store here is
/// used, falling back to the key file when that fails (no D-Bus session on a headless Linux
/// machine, for one). The `mcp-auth` CLI does this (its `keyring` feature):
///
/// ```ignore
/// use mcp_auth_client::store::FileStore;
/// // Cargo.toml: apple-native-keyring-store (macOS, feature "keychain"),
/// // windows-native-keyring-store (Windows), zbus-secret-service-keyring-store (Linux, feature
/// // "rt-async-io-crypto-rust": its blocking calls then work inside a Tokio runtime too).
/// #[cfg(target_os = "macos")]
/// let store = apple_native_keyring_store::keychain::Store::new();
/// #[cfg(target_os = "windows")]
/// let store = windows_native_keyring_store::Store::new();
/// #[cfg(target_os = "linux")]
/// let store = zbus_secret_service_keyring_store::Store::new();
/// match store {
///     Ok(store) => keyring_core::set_default_store(store),
///     Err(e) => tracing::debug!("no OS keyring ({e}); using the key file"),
/// }
/// let store = FileStore::open_auto(dir)?;
/// ```
///
/// # Errors
///
/// [`StoreError::Keyring`] if the keyring refuses access (locked, denied) or holds a value
/// under `store-key` that is not a key.
pub fn store_key_from_keyring() -> Result<Option<[u8; 32]>, StoreError> {
    let Some(backend) = keyring_core::get_default_store() else {
        tracing::debug!("no keyring store installed; the store key stays in a file");
        return Ok(None);
    };
    let Some(backend) = persistent(backend) else {
        return Ok(None);
    };
    key_from_backend(&*backend).map(|key| Some(*key))
}

/// `backend` if it keeps secrets on disk. Holding the store key in one that forgets them (a
/// mock, or a kernel keyring cleared at reboot) would make every record undecryptable later.
pub(super) fn persistent(
    backend: Arc<keyring_core::CredentialStore>,
) -> Option<Arc<keyring_core::CredentialStore>> {
    if matches!(
        backend.persistence(),
        CredentialPersistence::UntilDelete | CredentialPersistence::Unspecified
    ) {
        Some(backend)
    } else {
        tracing::debug!(
            vendor = %backend.vendor(),
            "the keyring store does not persist secrets; not using it for the store key"
        );
        None
    }
}

/// Gets or creates the store key in `backend` (service `mcp-auth`, user `store-key`).
pub(super) fn key_from_backend(
    backend: &keyring_core::CredentialStore,
) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    if let Some(key) = existing_key(backend, KEYRING_SERVICE, STORE_KEY_USER)? {
        return Ok(key);
    }
    let entry = backend
        .build(KEYRING_SERVICE, STORE_KEY_USER, None)
        .map_err(keyring_err)?;
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut key[..])
        .map_err(|e| StoreError::Key(format!("the system random number generator failed: {e}")))?;
    let encoded = Zeroizing::new(B64.encode(&key[..]));
    entry.set_password(&encoded).map_err(keyring_err)?;
    // Read back: if another process stored its key in between, use the stored one.
    let stored = Zeroizing::new(entry.get_password().map_err(keyring_err)?);
    decode_key(KEYRING_SERVICE, STORE_KEY_USER, &stored)
}

/// The store key kept in `backend` under `service`/`user`, if there is one. Never creates one.
pub(super) fn existing_key(
    backend: &keyring_core::CredentialStore,
    service: &str,
    user: &str,
) -> Result<Option<Zeroizing<[u8; 32]>>, StoreError> {
    let entry = backend.build(service, user, None).map_err(keyring_err)?;
    match entry.get_password() {
        Ok(encoded) => decode_key(service, user, &Zeroizing::new(encoded)).map(Some),
        Err(KeyringError::NoEntry) => Ok(None),
        Err(e) => Err(keyring_err(e)),
    }
}

fn decode_key(service: &str, user: &str, encoded: &str) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let malformed = || {
        StoreError::Keyring(format!(
            "the keyring entry {service}/{user} is not a base64 32-byte key"
        ))
    };
    let bytes = Zeroizing::new(B64.decode(encoded.trim()).map_err(|_| malformed())?);
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return Err(malformed());
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Maps a keyring error to ours, leaving out the variants that carry stored data.
fn keyring_err(e: KeyringError) -> StoreError {
    StoreError::Keyring(match e {
        KeyringError::BadEncoding(_) => "a stored value is not UTF-8".to_owned(),
        KeyringError::BadDataFormat(..) => "a stored value is malformed".to_owned(),
        KeyringError::Ambiguous(entries) => {
            format!("{} keyring entries match one name", entries.len())
        }
        other => other.to_string(),
    })
}

/// Records as secrets in the OS keyring: service `mcp-auth`, user = server key, value = the
/// record's JSON; plus an index entry (user `.index`) listing the server keys, for
/// [`list`](CredentialStore::list). The keyring encrypts and guards the values; locks are
/// lock files in a directory given at construction, as keyrings have no locks.
///
/// Mind the platform limits: Windows Credential Manager holds at most 2560 bytes per secret,
/// which a record with a `private_key_jwt` key may exceed (the write then fails with
/// [`StoreError::Keyring`]). For many servers or large records prefer a
/// [`FileStore`](super::FileStore) whose key is in the keyring.
pub struct KeyringStore {
    backend: Arc<keyring_core::CredentialStore>,
    locks: LockDir,
}

impl std::fmt::Debug for KeyringStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringStore")
            .field("backend", &self.backend.vendor())
            .field("locks", &self.locks)
            .finish()
    }
}

impl KeyringStore {
    /// A store in the default keyring (installed with `keyring_core::set_default_store`),
    /// with lock files in `lock_dir` (created, mode 0700).
    ///
    /// # Errors
    ///
    /// [`StoreError::Keyring`] if no default keyring store is installed; [`StoreError::Io`]
    /// if the lock directory cannot be created.
    pub fn new(lock_dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let backend = keyring_core::get_default_store().ok_or_else(|| {
            StoreError::Keyring(
                "no keyring store is installed (keyring_core::set_default_store)".to_owned(),
            )
        })?;
        Self::with_backend(backend, lock_dir)
    }

    /// A store in the given keyring store, with lock files in `lock_dir`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the lock directory cannot be created.
    pub fn with_backend(
        backend: Arc<keyring_core::CredentialStore>,
        lock_dir: impl Into<PathBuf>,
    ) -> Result<Self, StoreError> {
        let locks = LockDir::open(&lock_dir.into())?;
        Ok(Self { backend, locks })
    }
}

/// What every keyring operation needs, cheap to move onto the blocking pool.
#[derive(Clone)]
struct Backend(Arc<keyring_core::CredentialStore>);

impl Backend {
    fn entry(&self, user: &str) -> Result<Entry, StoreError> {
        self.0
            .build(KEYRING_SERVICE, user, None)
            .map_err(keyring_err)
    }

    fn read(&self, server_key: &str) -> Result<Option<ServerRecord>, StoreError> {
        match self.entry(server_key)?.get_password() {
            Ok(json) => {
                let json = Zeroizing::new(json);
                parse_record(server_key, json.as_bytes()).map(Some)
            }
            Err(KeyringError::NoEntry) => Ok(None),
            Err(e) => Err(keyring_err(e)),
        }
    }

    fn index(&self) -> Result<BTreeSet<String>, StoreError> {
        match self.entry(INDEX_USER)?.get_password() {
            Ok(json) => serde_json::from_str(&json).map_err(|_| {
                StoreError::Keyring(format!(
                    "the keyring entry {KEYRING_SERVICE}/{INDEX_USER} is not a list of keys"
                ))
            }),
            Err(KeyringError::NoEntry) => Ok(BTreeSet::new()),
            Err(e) => Err(keyring_err(e)),
        }
    }

    /// Adds or removes a key in the index. Callers hold the index lock.
    fn update_index(&self, server_key: &str, present: bool) -> Result<(), StoreError> {
        let mut index = self.index()?;
        let changed = if present {
            index.insert(server_key.to_owned())
        } else {
            index.remove(server_key)
        };
        if !changed {
            return Ok(());
        }
        let json = serde_json::to_string(&index)
            .map_err(|_| StoreError::Keyring("the index cannot be serialized".to_owned()))?;
        self.entry(INDEX_USER)?
            .set_password(&json)
            .map_err(keyring_err)
    }
}

/// Runs keyring calls on the blocking pool: they may wait on D-Bus or an unlock prompt.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|join| {
        Err(StoreError::Keyring(format!(
            "background task failed: {join}"
        )))
    })
}

/// Server keys are keyring users; `store-key` is taken by the store key.
fn check_key(server_key: &str) -> Result<(), StoreError> {
    validate_key(server_key)?;
    if server_key == STORE_KEY_USER {
        return Err(StoreError::InvalidKey(server_key.len()));
    }
    Ok(())
}

#[async_trait]
impl CredentialStore for KeyringStore {
    async fn get(&self, server_key: &str) -> Result<Option<ServerRecord>, StoreError> {
        check_key(server_key)?;
        let (backend, key) = (Backend(Arc::clone(&self.backend)), server_key.to_owned());
        blocking(move || backend.read(&key)).await
    }

    async fn put(&self, server_key: &str, record: &ServerRecord) -> Result<(), StoreError> {
        check_key(server_key)?;
        let json = record_json(server_key, record, 0)?;
        let index_lock = self.locks.lock(INDEX_LOCK).await?;
        let (backend, key) = (Backend(Arc::clone(&self.backend)), server_key.to_owned());
        blocking(move || {
            // The record first: a crash before the index update leaves a record `list`
            // misses until the next `put`, never an index entry without a record.
            let json = std::str::from_utf8(&json).map_err(|_| StoreError::Corrupt {
                key: key.clone(),
                message: "the record's JSON is not UTF-8".to_owned(),
            })?;
            backend
                .entry(&key)?
                .set_password(json)
                .map_err(keyring_err)?;
            backend.update_index(&key, true)?;
            drop(index_lock);
            Ok(())
        })
        .await
    }

    async fn delete(&self, server_key: &str) -> Result<(), StoreError> {
        check_key(server_key)?;
        let index_lock = self.locks.lock(INDEX_LOCK).await?;
        let (backend, key) = (Backend(Arc::clone(&self.backend)), server_key.to_owned());
        blocking(move || {
            match backend.entry(&key)?.delete_credential() {
                Ok(()) | Err(KeyringError::NoEntry) => {}
                Err(e) => return Err(keyring_err(e)),
            }
            backend.update_index(&key, false)?;
            drop(index_lock);
            Ok(())
        })
        .await
    }

    async fn list(&self) -> Result<Vec<ServerRecord>, StoreError> {
        let backend = Backend(Arc::clone(&self.backend));
        let entries = blocking(move || {
            let index = backend.index()?;
            Ok(index
                .into_iter()
                .map(|key| {
                    let result = backend.read(&key);
                    (key, result)
                })
                .collect::<Vec<_>>())
        })
        .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(key, result)| match result {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(
                        server_key = %key,
                        %error,
                        "skipping a keyring entry that cannot be read"
                    );
                    None
                }
            })
            .collect())
    }

    async fn lock(&self, server_key: &str) -> Result<Box<dyn StoreLock>, StoreError> {
        check_key(server_key)?;
        Ok(Box::new(self.locks.lock(server_key).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::sample_record;

    fn mock() -> Arc<keyring_core::CredentialStore> {
        keyring_core::mock::Store::new().unwrap()
    }

    crate::store::conformance::conformance_tests!({
        let tmp = tempfile::tempdir().unwrap();
        (
            KeyringStore::with_backend(mock(), tmp.path().join("locks")).unwrap(),
            tmp,
        )
    });

    #[tokio::test]
    async fn the_index_tracks_puts_and_deletes() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = mock();
        let store = KeyringStore::with_backend(Arc::clone(&backend), tmp.path()).unwrap();
        store
            .put("a", &sample_record("https://a.example", "t"))
            .await
            .unwrap();
        store
            .put("b", &sample_record("https://b.example", "t"))
            .await
            .unwrap();
        store.delete("a").await.unwrap();
        let index = Backend(backend).index().unwrap();
        assert_eq!(index.into_iter().collect::<Vec<_>>(), ["b"]);
    }

    #[tokio::test]
    async fn list_skips_an_unreadable_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = mock();
        let store = KeyringStore::with_backend(Arc::clone(&backend), tmp.path()).unwrap();
        store
            .put("good", &sample_record("https://good.example", "t"))
            .await
            .unwrap();
        store
            .put("bad", &sample_record("https://bad.example", "t"))
            .await
            .unwrap();
        Backend(backend)
            .entry("bad")
            .unwrap()
            .set_password("{not json")
            .unwrap();
        let listed = store.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(matches!(
            store.get("bad").await,
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn the_store_key_user_is_not_a_server_key() {
        let tmp = tempfile::tempdir().unwrap();
        let store = KeyringStore::with_backend(mock(), tmp.path()).unwrap();
        let record = sample_record("https://a.example", "t");
        assert!(matches!(
            store.put(STORE_KEY_USER, &record).await,
            Err(StoreError::InvalidKey(_))
        ));
    }

    #[test]
    fn the_store_key_is_created_once_and_kept() {
        let backend = mock();
        let first = key_from_backend(&*backend).unwrap();
        let second = key_from_backend(&*backend).unwrap();
        assert_eq!(*first, *second);
        assert_ne!(*first, [0u8; 32]);
    }

    #[test]
    fn a_malformed_store_key_is_an_error_that_does_not_echo_it() {
        let backend = mock();
        let entry = backend
            .build(KEYRING_SERVICE, STORE_KEY_USER, None)
            .unwrap();
        entry.set_password("c2hvcnQtU0VDUkVU").unwrap();
        let err = key_from_backend(&*backend).unwrap_err();
        assert!(matches!(err, StoreError::Keyring(_)));
        assert!(!err.to_string().contains("c2hvcnQtU0VDUkVU"));
    }

    /// Nothing in this crate installs a default keyring store, and this machine has none.
    #[test]
    fn without_a_keyring_there_is_no_key() {
        if keyring_core::get_default_store().is_none() {
            assert!(store_key_from_keyring().unwrap().is_none());
        }
    }
}
