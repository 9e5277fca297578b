//! The per-user token vault: for each (user, MCP server) one
//! [`ServerRecord`] — the client registration and the tokens — sealed with
//! XChaCha20-Poly1305 under the app's key and bound to its user and server (a row copied
//! to another user does not open).
//!
//! A [`VaultBackend`] stores the sealed text and gives the cross-process locks; the
//! [`Vault`] seals and opens, and hands out one [`UserStore`] per user: a
//! [`CredentialStore`] that the client library's [`mcp_auth_client::OAuthClient`] uses as it
//! uses its file store. Refresh is therefore the client library's: under the (user, server)
//! lock, re-read, refresh only if still needed, and write the rotated refresh token with
//! the new access token in one `put` — single-flight across processes and instances that
//! share the backend, and a rotated refresh token is never lost or used twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use mcp_auth_client::store::{CredentialStore, ServerRecord, StoreError, StoreLock};
use mcp_auth_types::seal::SealKeys;

/// Where sealed records live, per user. Implementations: [`MemoryVault`] (tests), and the
/// SQLite and PostgreSQL backends.
///
/// Keys are what [`mcp_auth_client::store::server_key`] makes (and `<key>-authorize` for
/// the client library's authorization lock): short ASCII. Users are the app's user ids
/// (any non-empty string).
#[async_trait]
pub trait VaultBackend: Send + Sync {
    /// The sealed record of `user` for `key`.
    async fn get(&self, user: &str, key: &str) -> Result<Option<String>, StoreError>;
    /// Replaces it, atomically (a reader sees the old or the new text, never a mix).
    async fn put(&self, user: &str, key: &str, sealed: &str) -> Result<(), StoreError>;
    /// Forgets it (no error when missing).
    async fn delete(&self, user: &str, key: &str) -> Result<(), StoreError>;
    /// Every record of `user`: `(key, sealed)`.
    async fn list(&self, user: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Takes the exclusive lock of (`user`, `key`), waiting for it; exclusive across every
    /// process and instance sharing the backend. Dropping the guard releases it, also when
    /// the holder panics; a holder that dies releases it too (a lease, a session lock).
    async fn lock(&self, user: &str, key: &str) -> Result<Box<dyn StoreLock>, StoreError>;
    /// Records `id` as used until `expires_at` (Unix seconds): `true` the first time,
    /// `false` when it was already recorded and has not expired — atomically, across
    /// instances. Makes an authorization callback single-use.
    async fn use_once(&self, id: &str, expires_at: u64) -> Result<bool, StoreError>;
}

/// The vault: a backend and the keys that seal its records.
#[derive(Clone)]
pub struct Vault {
    backend: Arc<dyn VaultBackend>,
    keys: Arc<SealKeys>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

fn aad(user: &str, key: &str) -> Vec<u8> {
    format!("mcp-auth-connect v1\0{user}\0{key}").into_bytes()
}

impl Vault {
    /// A vault over `backend`, sealing with `keys` (see [`SealKeys::parse`]).
    pub fn new(backend: Arc<dyn VaultBackend>, keys: SealKeys) -> Self {
        Self {
            backend,
            keys: Arc::new(keys),
        }
    }

    /// The backend (for `use_once`).
    pub fn backend(&self) -> &Arc<dyn VaultBackend> {
        &self.backend
    }

    /// `user`'s credential store, for an [`mcp_auth_client::OAuthClient`].
    pub fn for_user(&self, user: &str) -> UserStore {
        UserStore {
            vault: self.clone(),
            user: user.to_owned(),
        }
    }

    fn seal(&self, user: &str, key: &str, rec: &ServerRecord) -> Result<String, StoreError> {
        let json =
            zeroize::Zeroizing::new(serde_json::to_vec(rec).map_err(|e| StoreError::Corrupt {
                key: key.to_owned(),
                message: e.to_string(),
            })?);
        self.keys
            .seal(&aad(user, key), &json)
            .map_err(|_| StoreError::Decrypt(key.to_owned()))
    }

    fn open(&self, user: &str, key: &str, sealed: &str) -> Result<ServerRecord, StoreError> {
        let plain = zeroize::Zeroizing::new(
            self.keys
                .open(&aad(user, key), sealed)
                .map_err(|_| StoreError::Decrypt(key.to_owned()))?,
        );
        serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt {
            key: key.to_owned(),
            message: format!("not a record ({})", e.classify() as u8),
        })
    }
}

/// One user's records in the [`Vault`], as a [`CredentialStore`].
#[derive(Clone)]
pub struct UserStore {
    vault: Vault,
    user: String,
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl UserStore {
    /// The user.
    pub fn user(&self) -> &str {
        &self.user
    }
}

#[async_trait]
impl CredentialStore for UserStore {
    async fn get(&self, server_key: &str) -> Result<Option<ServerRecord>, StoreError> {
        match self.vault.backend.get(&self.user, server_key).await? {
            Some(sealed) => self.vault.open(&self.user, server_key, &sealed).map(Some),
            None => Ok(None),
        }
    }

    async fn put(&self, server_key: &str, record: &ServerRecord) -> Result<(), StoreError> {
        let sealed = self.vault.seal(&self.user, server_key, record)?;
        self.vault
            .backend
            .put(&self.user, server_key, &sealed)
            .await
    }

    async fn delete(&self, server_key: &str) -> Result<(), StoreError> {
        self.vault.backend.delete(&self.user, server_key).await
    }

    async fn list(&self) -> Result<Vec<ServerRecord>, StoreError> {
        let mut out = Vec::new();
        for (key, sealed) in self.vault.backend.list(&self.user).await? {
            out.push(self.vault.open(&self.user, &key, &sealed)?);
        }
        Ok(out)
    }

    async fn lock(&self, server_key: &str) -> Result<Box<dyn StoreLock>, StoreError> {
        self.vault.backend.lock(&self.user, server_key).await
    }
}

/// `(user, key)`.
type RowKey = (String, String);

/// A [`VaultBackend`] in memory, for tests and single-process demos: locks are exclusive
/// within the process only.
#[derive(Default)]
pub struct MemoryVault {
    rows: Mutex<HashMap<RowKey, String>>,
    used: Mutex<HashMap<String, u64>>,
    locks: Mutex<HashMap<RowKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl MemoryVault {
    /// An empty vault backend.
    pub fn new() -> Self {
        Self::default()
    }
}

struct MemoryLock(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>);

impl StoreLock for MemoryLock {}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[async_trait]
impl VaultBackend for MemoryVault {
    async fn get(&self, user: &str, key: &str) -> Result<Option<String>, StoreError> {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(rows.get(&(user.to_owned(), key.to_owned())).cloned())
    }

    async fn put(&self, user: &str, key: &str, sealed: &str) -> Result<(), StoreError> {
        self.rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((user.to_owned(), key.to_owned()), sealed.to_owned());
        Ok(())
    }

    async fn delete(&self, user: &str, key: &str) -> Result<(), StoreError> {
        self.rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(user.to_owned(), key.to_owned()));
        Ok(())
    }

    async fn list(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<(String, String)> = rows
            .iter()
            .filter(|((u, _), _)| u == user)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn lock(&self, user: &str, key: &str) -> Result<Box<dyn StoreLock>, StoreError> {
        let m = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((user.to_owned(), key.to_owned()))
            .or_default()
            .clone();
        Ok(Box::new(MemoryLock(m.lock_owned().await)))
    }

    async fn use_once(&self, id: &str, expires_at: u64) -> Result<bool, StoreError> {
        let now = now_secs();
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        used.retain(|_, e| *e > now);
        if used.contains_key(id) {
            return Ok(false);
        }
        used.insert(id.to_owned(), expires_at);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(url: &str) -> ServerRecord {
        serde_json::from_value(serde_json::json!({
            "server_url": url, "issuer": "https://as.example", "token_endpoint": "https://as.example/token",
            "tokens": {"access_token": "AT-SECRET", "token_type": "Bearer", "refresh_token": "RT-SECRET", "obtained_at": 1},
        }))
        .unwrap()
    }

    fn vault() -> (Arc<MemoryVault>, Vault) {
        let backend = Arc::new(MemoryVault::new());
        let v = Vault::new(backend.clone(), SealKeys::new("k1", [3u8; 32]).unwrap());
        (backend, v)
    }

    #[tokio::test]
    async fn records_are_sealed_per_user_and_server() {
        let (backend, v) = vault();
        let alice = v.for_user("alice");
        alice
            .put("srv", &record("https://mcp.example/mcp"))
            .await
            .unwrap();
        let sealed = backend.get("alice", "srv").await.unwrap().unwrap();
        assert!(!sealed.contains("SECRET"), "{sealed}");
        let back = alice.get("srv").await.unwrap().unwrap();
        assert_eq!(back.server_url, "https://mcp.example/mcp");
        // Another user sees nothing, and a row moved to them does not open.
        let bob = v.for_user("bob");
        assert!(bob.get("srv").await.unwrap().is_none());
        backend.put("bob", "srv", &sealed).await.unwrap();
        assert!(matches!(bob.get("srv").await, Err(StoreError::Decrypt(_))));
        assert_eq!(alice.list().await.unwrap().len(), 1);
        alice.delete("srv").await.unwrap();
        assert!(alice.get("srv").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn use_once_is_single_use() {
        let (backend, _) = vault();
        let exp = now_secs() + 60;
        assert!(backend.use_once("s1", exp).await.unwrap());
        assert!(!backend.use_once("s1", exp).await.unwrap());
        assert!(backend.use_once("s2", exp).await.unwrap());
    }
}
