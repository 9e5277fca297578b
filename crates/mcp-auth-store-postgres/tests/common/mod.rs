//! Helpers shared by the PostgreSQL tests: the test database, fresh schemas, and their
//! cleanup.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcp_auth_store_postgres::{PostgresOptions, PostgresStore};

/// The test database (`MCP_AUTH_TEST_POSTGRES_URL`; `scripts/services` starts it).
pub fn url() -> String {
    std::env::var("MCP_AUTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://mcp_auth:mcp_auth@127.0.0.1:5432/mcp_auth_test".to_owned())
}

/// A schema name no other test uses: `t_` and 16 random hex digits.
pub fn random_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("t_{:016x}", hasher.finish())
}

/// Options for a store in `schema` of the test database. The pools are small: many tests
/// run at once, and PostgreSQL allows 100 connections by default.
pub fn options(schema: &str) -> PostgresOptions {
    PostgresOptions::new(url()).pool_size(4).schema(schema)
}

/// A store in a new, empty schema, and the guard that drops the schema.
pub async fn fresh_store() -> (PostgresStore, DropSchema) {
    let schema = random_schema();
    let guard = DropSchema(schema.clone());
    let store = PostgresStore::connect_with(options(&schema)).await.unwrap();
    (store, guard)
}

/// A plain driver connection to the test database, for inspecting and tampering.
pub async fn raw_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Drops its schema (and every table in it) when dropped.
///
/// `Drop` cannot await, and may run on a runtime's worker thread, where blocking on that
/// runtime panics: the schema is dropped from a thread of its own, on a runtime of its own,
/// and the guard waits for it.
pub struct DropSchema(pub String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        let schema = self.0.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                match tokio::time::timeout(Duration::from_secs(10), client.batch_execute(&sql))
                    .await
                {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                }
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            // Leaving a schema behind is harmless; the next test uses another name.
            eprintln!("could not drop test schema {}: {e}", self.0);
        }
    }
}

/// The error's message with every source's, as a log line would show them.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
