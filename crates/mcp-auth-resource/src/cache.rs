//! A bounded cache keyed by the SHA-256 of a token.
//!
//! Keys are hashes, never tokens: a heap dump or a debug print of the cache holds nothing a
//! caller could replay. SHA-256 rather than the `HashMap`'s own 64-bit hasher, because two
//! tokens sharing a cache slot would hand one caller another's claims.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use sha2::{Digest as _, Sha256};

/// The cache key of a token.
pub(crate) type TokenKey = [u8; 32];

/// SHA-256 of the token's bytes.
pub(crate) fn token_key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

/// Entries expire at an absolute time (Unix seconds) chosen by the caller; at capacity,
/// expired entries are purged and, if that is not enough, an eighth of the entries go
/// (whichever the map yields first: with its random hasher state that is an unpredictable
/// choice, so a client cannot aim evictions at one victim's entry).
pub(crate) struct TtlCache<V> {
    // A std mutex, not Tokio's: it is never held across an `.await`, and the critical
    // section is one hash lookup, so an async mutex would only add overhead on the hot path.
    map: Mutex<HashMap<TokenKey, (V, u64)>>,
    capacity: usize,
}

impl<V: Clone> TtlCache<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenKey, (V, u64)>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters (each operation is one insert or remove), so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value, if present and not expired at `now`.
    pub(crate) fn get(&self, key: &TokenKey, now: u64) -> Option<V> {
        match self.lock().get(key) {
            Some((v, expires_at)) if now < *expires_at => Some(v.clone()),
            _ => None,
        }
    }

    /// Stores a value until `expires_at` (exclusive). Values already expired are not stored.
    pub(crate) fn insert(&self, key: TokenKey, value: V, expires_at: u64, now: u64) {
        if expires_at <= now || self.capacity == 0 {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, (_, e)| *e > now);
            if map.len() >= self.capacity {
                let n = (self.capacity / 8).max(1);
                let victims: Vec<TokenKey> = map.keys().take(n).copied().collect();
                for k in victims {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, (value, expires_at));
    }

    /// Number of entries, expired ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let c = TtlCache::new(10);
        c.insert(token_key("a"), 1, 105, 100);
        assert_eq!(c.get(&token_key("a"), 104), Some(1));
        assert_eq!(c.get(&token_key("a"), 105), None);
        assert_eq!(c.get(&token_key("b"), 100), None);
        c.insert(token_key("old"), 2, 100, 100);
        assert_eq!(c.len(), 1, "an already expired value is not stored");
    }

    #[test]
    fn size_is_bounded() {
        let c = TtlCache::new(16);
        for i in 0..1000 {
            c.insert(token_key(&i.to_string()), i, 1_000, 1);
            assert!(c.len() <= 16);
        }
        // The newest entry is always kept.
        assert_eq!(c.get(&token_key("999"), 2), Some(999));
    }

    #[test]
    fn expired_entries_go_first() {
        let c = TtlCache::new(4);
        for i in 0..3 {
            c.insert(token_key(&i.to_string()), i, 10, 1);
        }
        c.insert(token_key("keep"), 99, 1_000, 1);
        // At time 20 the first three are expired: inserting purges them, "keep" survives.
        c.insert(token_key("new"), 7, 1_000, 20);
        assert_eq!(c.get(&token_key("keep"), 20), Some(99));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn key_is_a_hash_of_the_token() {
        assert_eq!(token_key("abc"), token_key("abc"));
        assert_ne!(token_key("abc"), token_key("abd"));
    }
}
