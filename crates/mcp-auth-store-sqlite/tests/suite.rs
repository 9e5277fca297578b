//! The shared `Store` conformance suite against SQLite: on a temporary file (WAL, several
//! connections, the configuration used in production) and in memory.

use mcp_auth_server::store::suite::Fixture;
use mcp_auth_store_sqlite::SqliteStore;

/// A fresh database file in a temporary directory that lives as long as the store.
async fn temp_file_store() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("auth.db")).await.unwrap();
    Fixture::with_guard(store, dir)
}

mod file {
    mcp_auth_server::store_suite!(async || super::temp_file_store().await);
}

mod in_memory {
    mcp_auth_server::store_suite!(
        async || mcp_auth_store_sqlite::SqliteStore::open_in_memory()
            .await
            .unwrap()
    );
}
