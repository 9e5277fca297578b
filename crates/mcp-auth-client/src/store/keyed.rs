//! One async mutex per key, created on demand and forgotten when nobody holds or awaits it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A map from key to async mutex. The map keeps only weak references: the guard and every
/// waiter hold the strong ones, so an entry dies exactly when it is no longer contended and
/// the map does not grow with every key ever locked.
pub struct KeyedMutex<K> {
    // A std mutex, not a Tokio one: it is held only to look up or insert an entry, never
    // across an `.await`, so it cannot block the runtime for long (see mini-redis `db.rs`).
    map: Mutex<HashMap<K, Weak<AsyncMutex<()>>>>,
}

impl<K> Default for KeyedMutex<K> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedMutex<K> {
    /// Waits for the mutex of `key`. Cancel-safe: dropping the future gives up the place in
    /// the queue without taking the lock.
    pub async fn lock(&self, key: &K) -> OwnedMutexGuard<()> {
        let mutex = {
            // The map is consistent after every statement, so a panic elsewhere while it was
            // held leaves nothing to repair: recover from poisoning instead of propagating it.
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            match map.get(key).and_then(Weak::upgrade) {
                Some(mutex) => mutex,
                None => {
                    map.retain(|_, weak| weak.strong_count() > 0);
                    let mutex = Arc::new(AsyncMutex::new(()));
                    map.insert(key.clone(), Arc::downgrade(&mutex));
                    mutex
                }
            }
        };
        mutex.lock_owned().await
    }

    #[cfg(test)]
    fn live_entries(&self) -> usize {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().filter(|w| w.strong_count() > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_excludes_other_keys_do_not() {
        let locks = Arc::new(KeyedMutex::<String>::default());
        let a = locks.lock(&"a".to_owned()).await;
        // A different key is free.
        let _b = locks.lock(&"b".to_owned()).await;
        // The same key waits.
        let a_key = "a".to_owned();
        let again = tokio::time::timeout(Duration::from_millis(50), locks.lock(&a_key));
        assert!(again.await.is_err());
        drop(a);
        let _a = locks.lock(&"a".to_owned()).await;
    }

    #[tokio::test]
    async fn entries_are_forgotten_when_released() {
        let locks = KeyedMutex::<String>::default();
        for i in 0..10 {
            let _g = locks.lock(&i.to_string()).await;
        }
        assert_eq!(locks.live_entries(), 0);
        let _g = locks.lock(&"x".to_owned()).await;
        assert_eq!(locks.live_entries(), 1);
        // Pruning happens on insert, so the dead entries are gone from the map too.
        assert_eq!(locks.map.lock().unwrap().len(), 1);
    }
}
