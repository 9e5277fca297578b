//! A bounded cache keyed by a keyed 128-bit hash of a token ([`crate::siphash`]), or of the
//! signature of a JWS whose entry keeps the rest to compare (`server::cache_parts`).
//!
//! Keys are hashes, never tokens, and what an entry keeps of a JWS (its header and payload) is
//! worth nothing without the signature: a heap dump or a debug print of the cache holds
//! nothing a caller could replay. A secret-keyed 128-bit hash rather than the `HashMap`'s own
//! 64-bit one, because two tokens sharing a cache slot would hand one caller another's
//! claims; see the `siphash` module for why this one suffices and why not SHA-256.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Mutex, PoisonError};

use crate::siphash::SipKey;

/// The cache key of a token: SipHash-1-3-128 of its bytes under the cache's secret key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenKey([u8; 16]);

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already the output of a keyed pseudorandom function: its first 8 bytes are as good
        // a hash as the map could compute, without hashing again.
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        state.write_u64(u64::from_le_bytes([a, b, c, d, e, f, g, h]));
    }
}

/// The map's hasher: takes the `u64` that [`TokenKey`]'s `Hash` writes as it is.
#[derive(Default)]
struct KeyBits(u64);

impl Hasher for KeyBits {
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    // Not reached with `TokenKey`s; mixes anything else in rather than ignoring it.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Map<V> = HashMap<TokenKey, (V, u64), BuildHasherDefault<KeyBits>>;

/// Entries expire at an absolute time (Unix seconds) chosen by the caller; at capacity,
/// expired entries are purged and, if that is not enough, an eighth of the entries go
/// (whichever the map yields first: keys are secret-keyed hashes, so that is an unpredictable
/// choice, and a client cannot aim evictions at one victim's entry).
///
/// A large cache is split by key into shards, each with its own lock and an equal share of
/// the capacity (purges and evictions are per shard): every request of a protected route
/// takes this lock, and with one lock for all, the threads serving different tokens would
/// pass its cache line back and forth on every request.
pub(crate) struct TtlCache<V> {
    shards: Box<[Shard<V>]>,
    shard_capacity: usize,
    key: SipKey,
}

/// Caches below this many entries per shard are not split.
const MIN_SHARD_CAPACITY: usize = 64;
const MAX_SHARDS: usize = 16;

// A std mutex, not Tokio's: it is never held across an `.await`, and the critical section is
// one hash lookup, so an async mutex would only add overhead on the hot path. Aligned so that
// no two shards' locks share a cache line (128: adjacent-line prefetch pairs lines).
#[repr(align(128))]
struct Shard<V>(Mutex<Map<V>>);

impl<V> TtlCache<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        let shards = (capacity / MIN_SHARD_CAPACITY).clamp(1, MAX_SHARDS);
        Self {
            shards: (0..shards)
                .map(|_| Shard(Mutex::new(Map::default())))
                .collect(),
            shard_capacity: capacity / shards,
            key: SipKey::random(),
        }
    }

    /// The key of `token` in this cache (each cache has its own secret).
    pub(crate) fn key(&self, token: &[u8]) -> TokenKey {
        TokenKey(self.key.hash128(token))
    }

    fn lock(&self, key: &TokenKey) -> std::sync::MutexGuard<'_, Map<V>> {
        // The last byte: the map's own hash uses the first eight.
        let shard = &self.shards[usize::from(key.0[15]) % self.shards.len()];
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters (each operation is one insert or remove), so a poisoned lock is still usable.
        shard.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value, if present and not expired at `now`.
    pub(crate) fn get(&self, key: &TokenKey, now: u64) -> Option<V>
    where
        V: Clone,
    {
        self.get_with(key, now, |v| Some(v.clone()))
    }

    /// What `f` makes of the value, if present and not expired at `now`; `f` runs under the
    /// shard's lock, so it should be quick (a comparison, a reference count).
    pub(crate) fn get_with<R>(
        &self,
        key: &TokenKey,
        now: u64,
        f: impl FnOnce(&V) -> Option<R>,
    ) -> Option<R> {
        match self.lock(key).get(key) {
            Some((v, expires_at)) if now < *expires_at => f(v),
            _ => None,
        }
    }

    /// Stores a value until `expires_at` (exclusive). Values already expired are not stored.
    pub(crate) fn insert(&self, key: TokenKey, value: V, expires_at: u64, now: u64) {
        self.insert_with(key, value, expires_at, now, false);
    }

    /// Stores a value unless a live one is there already, in one step under the shard's
    /// lock: `true` when this call stored it (a replay check: first use wins).
    pub(crate) fn insert_new(&self, key: TokenKey, value: V, expires_at: u64, now: u64) -> bool {
        self.insert_with(key, value, expires_at, now, true)
    }

    fn insert_with(
        &self,
        key: TokenKey,
        value: V,
        expires_at: u64,
        now: u64,
        only_new: bool,
    ) -> bool {
        let capacity = self.shard_capacity;
        if expires_at <= now || capacity == 0 {
            return true;
        }
        let mut map = self.lock(&key);
        if only_new && map.get(&key).is_some_and(|(_, e)| now < *e) {
            return false;
        }
        if map.len() >= capacity && !map.contains_key(&key) {
            map.retain(|_, (_, e)| *e > now);
            if map.len() >= capacity {
                let n = (capacity / 8).max(1);
                let victims: Vec<TokenKey> = map.keys().take(n).copied().collect();
                for k in victims {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, (value, expires_at));
        true
    }

    /// Number of entries, expired ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let c = TtlCache::new(10);
        let k = |t: &str| c.key(t.as_bytes());
        c.insert(k("a"), 1, 105, 100);
        assert_eq!(c.get(&k("a"), 104), Some(1));
        assert_eq!(c.get(&k("a"), 105), None);
        assert_eq!(c.get(&k("b"), 100), None);
        c.insert(k("old"), 2, 100, 100);
        assert_eq!(c.len(), 1, "an already expired value is not stored");
    }

    #[test]
    fn insert_new_lets_only_the_first_win() {
        let c = TtlCache::new(10);
        let k = c.key(b"jti");
        assert!(c.insert_new(k, (), 200, 100));
        assert!(!c.insert_new(k, (), 200, 150));
        // Expired: a new first use.
        assert!(c.insert_new(k, (), 300, 200));
    }

    #[test]
    fn size_is_bounded() {
        let c = TtlCache::new(16);
        let k = |t: &str| c.key(t.as_bytes());
        for i in 0..1000 {
            c.insert(k(&i.to_string()), i, 1_000, 1);
            assert!(c.len() <= 16);
        }
        // The newest entry is always kept.
        assert_eq!(c.get(&k("999"), 2), Some(999));
    }

    #[test]
    fn expired_entries_go_first() {
        let c = TtlCache::new(4);
        let k = |t: &str| c.key(t.as_bytes());
        for i in 0..3 {
            c.insert(k(&i.to_string()), i, 10, 1);
        }
        c.insert(k("keep"), 99, 1_000, 1);
        // At time 20 the first three are expired: inserting purges them, "keep" survives.
        c.insert(k("new"), 7, 1_000, 20);
        assert_eq!(c.get(&k("keep"), 20), Some(99));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn large_caches_are_sharded_and_still_bounded() {
        let c = TtlCache::new(10_000);
        assert_eq!(c.shards.len(), MAX_SHARDS);
        assert_eq!(c.shard_capacity, 625);
        let k = |t: &str| c.key(t.as_bytes());
        for i in 0..30_000 {
            c.insert(k(&i.to_string()), i, 1_000, 1);
        }
        assert!(c.len() <= 10_000, "{}", c.len());
        assert!(c.len() >= 10_000 * 7 / 8 - MAX_SHARDS, "{}", c.len());
        assert_eq!(c.get(&k("29999"), 2), Some(29_999));
        // Small caches keep one shard and their exact capacity.
        let small = TtlCache::<()>::new(100);
        assert_eq!((small.shards.len(), small.shard_capacity), (1, 100));
        let none = TtlCache::<()>::new(0);
        assert_eq!((none.shards.len(), none.shard_capacity), (1, 0));
    }

    #[test]
    fn key_is_a_keyed_hash_of_the_token() {
        let (a, b) = (TtlCache::<()>::new(1), TtlCache::<()>::new(1));
        assert!(a.key(b"abc") == a.key(b"abc"));
        assert!(a.key(b"abc") != a.key(b"abd"));
        // Each cache has its own secret: keys cannot be computed outside it.
        assert!(a.key(b"abc") != b.key(b"abc"));
    }
}
