//! A credential store that lives and dies with the process: for tests, and for callers that
//! must not write credentials anywhere.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use tokio::sync::OwnedMutexGuard;

use super::keyed::KeyedMutex;
use super::{CredentialStore, ServerRecord, StoreError, StoreLock, validate_key};

/// An in-memory [`CredentialStore`]. Locks exclude tasks and threads of this process only,
/// which is all there is to exclude: nothing else can see the records.
#[derive(Default)]
pub struct MemoryStore {
    // A std mutex: held only to clone a record in or out, never across an `.await`.
    records: Mutex<HashMap<String, ServerRecord>>,
    locks: KeyedMutex<String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, ServerRecord>> {
        // Every critical section is a single map operation, so a poisoned map is still whole.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Records hold tokens; show how many, never what.
        f.debug_struct("MemoryStore")
            .field("records", &self.records().len())
            .finish_non_exhaustive()
    }
}

/// The guard of a [`MemoryStore`] lock.
struct MemoryLock {
    _guard: OwnedMutexGuard<()>,
}

impl StoreLock for MemoryLock {}

#[async_trait]
impl CredentialStore for MemoryStore {
    async fn get(&self, server_key: &str) -> Result<Option<ServerRecord>, StoreError> {
        validate_key(server_key)?;
        Ok(self.records().get(server_key).cloned())
    }

    async fn put(&self, server_key: &str, record: &ServerRecord) -> Result<(), StoreError> {
        validate_key(server_key)?;
        self.records().insert(server_key.to_owned(), record.clone());
        Ok(())
    }

    async fn delete(&self, server_key: &str) -> Result<(), StoreError> {
        validate_key(server_key)?;
        self.records().remove(server_key);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ServerRecord>, StoreError> {
        Ok(self.records().values().cloned().collect())
    }

    async fn lock(&self, server_key: &str) -> Result<Box<dyn StoreLock>, StoreError> {
        validate_key(server_key)?;
        let guard = self.locks.lock(&server_key.to_owned()).await;
        Ok(Box::new(MemoryLock { _guard: guard }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store::conformance::conformance_tests!((MemoryStore::new(), ()));

    #[test]
    fn debug_shows_no_records() {
        let store = MemoryStore::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(store.put(
            "k",
            &crate::store::conformance::sample_record("https://a.example", "tok-SECRET"),
        ))
        .unwrap();
        let debug = format!("{store:?}");
        assert_eq!(debug, "MemoryStore { records: 1, .. }");
    }
}
