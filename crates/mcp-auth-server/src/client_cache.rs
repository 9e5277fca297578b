//! A short-lived, bounded cache of client rows in front of the store.
//!
//! Every authorization request and every token request looks its client up; the client
//! barely ever changes, while the lookup costs a store read (a B-tree walk for SQLite, a
//! round trip for Redis and PostgreSQL) and a parse of the stored metadata. So lookups are
//! answered from memory for `ServerConfig::client_cache_ttl` after the store was read.
//!
//! What that gives up, and what it keeps:
//! - Within one server process nothing is stale: every write to a client through this
//!   server (registration, RFC 7592 update and delete, a fetched metadata document) drops
//!   its entry, and a lookup that raced with such a write does not put its older row back.
//! - Other processes sharing the store (several `mcp-auth serve` on one SQLite file, a
//!   cluster on Redis or PostgreSQL) see an update or a deletion made elsewhere within the
//!   TTL (5 s by default) — as the resource layer sees a revoked token within its own cache
//!   lifetime. A TTL of zero turns the cache off.
//! - A row's own expiry is checked on every hit, so an expired registration or metadata
//!   document is never served from the cache.
//! - Unknown clients are not cached: a spray of made-up ids cannot fill it, and a client
//!   registered elsewhere is found at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::store::ClientRow;

/// Entries kept at most; when full, the expired ones go, and if that is not enough, an
/// eighth of the others (as the resource layer's token cache does): a server with more
/// active clients than this keeps most of them cached rather than starting over.
pub(crate) const CLIENT_CACHE_ENTRIES: usize = 4096;

/// The cache: client id → the row and when it was read from the store.
#[derive(Debug)]
pub(crate) struct ClientCache {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<String, (Instant, Arc<ClientRow>)>>,
    /// Bumped by every invalidation: a lookup that read the store before an invalidation
    /// and finished after it must not cache what it read.
    generation: AtomicU64,
}

impl ClientCache {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// Whether the cache is on (a TTL above zero).
    pub(crate) fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.max > 0
    }

    /// The generation to pass to [`insert`](Self::insert) for a store read that starts now.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The cached row of `client_id`, if read from the store less than the TTL ago and not
    /// expired at `now` (seconds since the Unix epoch).
    pub(crate) fn get(&self, client_id: &str, now: u64) -> Option<Arc<ClientRow>> {
        if !self.enabled() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (read_at, row) = entries.get(client_id)?;
        let fresh = read_at.elapsed() < self.ttl && row.expires_at.is_none_or(|e| e > now);
        fresh.then(|| row.clone())
    }

    /// Caches `row`, read from the store by a lookup that started at `generation`, unless
    /// an invalidation happened since.
    pub(crate) fn insert(&self, row: Arc<ClientRow>, generation: u64) {
        if !self.enabled() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock: `invalidate` bumps the generation under it too.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= self.max && !entries.contains_key(&row.client_id) {
            let ttl = self.ttl;
            entries.retain(|_, (read_at, _)| read_at.elapsed() < ttl);
            if entries.len() >= self.max {
                // Whichever the map yields first: its hasher is randomly keyed per process.
                let evict: Vec<String> = entries
                    .keys()
                    .take((self.max / 8).max(1))
                    .cloned()
                    .collect();
                for id in evict {
                    entries.remove(&id);
                }
            }
        }
        entries.insert(row.client_id.clone(), (Instant::now(), row));
    }

    /// Forgets `client_id`: called after every write to it.
    pub(crate) fn invalidate(&self, client_id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(client_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RegistrationKind;

    fn row(id: &str, expires_at: Option<u64>) -> Arc<ClientRow> {
        Arc::new(ClientRow {
            tenant: "default".into(),
            client_id: id.into(),
            secret_hash: None,
            metadata: serde_json::json!({"client_name": id}),
            registration_kind: RegistrationKind::Dynamic,
            registration_token_hash: None,
            created_at: 0,
            expires_at,
        })
    }

    #[test]
    fn a_hit_until_the_ttl_or_the_rows_expiry() {
        let c = ClientCache::new(Duration::from_millis(80), 16);
        c.insert(row("a", Some(100)), c.generation());
        c.insert(row("b", None), c.generation());
        assert_eq!(
            c.get("a", 50).map(|r| r.client_id.clone()),
            Some("a".into())
        );
        // The registration expired: not served, whatever the TTL.
        assert!(c.get("a", 100).is_none());
        assert!(c.get("b", u64::MAX).is_some());
        assert!(c.get("unknown", 0).is_none());
        std::thread::sleep(Duration::from_millis(100));
        assert!(c.get("b", 0).is_none(), "read longer than the TTL ago");
    }

    #[test]
    fn an_invalidation_drops_the_entry_and_beats_a_racing_lookup() {
        let c = ClientCache::new(Duration::from_secs(60), 16);
        c.insert(row("a", None), c.generation());
        c.invalidate("a");
        assert!(c.get("a", 0).is_none());

        // A lookup read the store, then the client was updated, then the lookup finished:
        // what it read is older than the update and is not cached.
        let started = c.generation();
        c.invalidate("a");
        c.insert(row("a", None), started);
        assert!(c.get("a", 0).is_none());
        c.insert(row("a", None), c.generation());
        assert!(c.get("a", 0).is_some());
    }

    #[test]
    fn bounded_and_off_at_zero() {
        let c = ClientCache::new(Duration::from_secs(60), 16);
        for i in 0..100 {
            c.insert(row(&format!("c{i}"), None), c.generation());
            let len = c.entries.lock().map(|e| e.len()).unwrap_or(usize::MAX);
            assert!(len <= 16, "{len} entries");
        }
        assert!(c.get("c99", 0).is_some(), "the newest entry is kept");
        // Full, nothing expired: one insert evicts an eighth, not everything.
        let len = c.entries.lock().map(|e| e.len()).unwrap_or(0);
        assert!(len >= 14, "only {len} entries left");

        let off = ClientCache::new(Duration::ZERO, 4);
        off.insert(row("a", None), off.generation());
        assert!(off.get("a", 0).is_none());
    }
}
