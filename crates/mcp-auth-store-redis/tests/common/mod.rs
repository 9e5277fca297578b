//! Shared test helpers: the test database, random prefixes, and cleanup of their keys.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mcp_auth_server::store::suite;
use mcp_auth_store_redis::{RedisOptions, RedisStore};

/// The test database: `MCP_AUTH_TEST_REDIS_URL`, by default DB 15 of the local Redis.
pub fn url() -> String {
    std::env::var("MCP_AUTH_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/15".to_owned())
}

/// 16 random hex digits.
pub fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    format!("{:016x}", h.finish())
}

/// A fresh prefix: `mcp-auth-test:<random hex>:`.
pub fn random_prefix() -> String {
    format!("mcp-auth-test:{}:", random_hex())
}

/// Deletes every key under its prefix when dropped.
pub struct Cleanup {
    pub url: String,
    pub prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Best effort, synchronous (drop cannot await): a leftover key only wastes memory.
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let mut cursor: u64 = 0;
        loop {
            let Ok((next, keys)) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query::<(u64, Vec<String>)>(&mut conn)
            else {
                return;
            };
            if !keys.is_empty() {
                let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query(&mut conn);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

/// Options for the test database under `prefix`, with the suite's clock.
pub fn options(prefix: &str) -> RedisOptions {
    RedisOptions::new(url())
        .prefix(prefix)
        .ttl_clock(|| suite::NOW)
}

/// A store on a fresh prefix with the suite's clock, and the guard that cleans up after it.
pub async fn fresh_store() -> (RedisStore, Cleanup) {
    let prefix = random_prefix();
    let store = RedisStore::connect_with(options(&prefix))
        .await
        .expect("the test Redis (scripts/services) is up");
    (store, Cleanup { url: url(), prefix })
}

/// Every key under `prefix`, by SCAN (never KEYS: the test database may hold many other
/// keys, and KEYS blocks Redis while it walks them all).
pub async fn keys_under(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, mut keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        found.append(&mut keys);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

/// A raw async connection to the test database.
pub async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}
