//! The PostgreSQL vault backend against a real server (`MCP_AUTH_TEST_POSTGRES_URL`;
//! `scripts/services` starts one): records, isolation, single use, and locks across
//! instances and processes. Each test uses a schema of its own, dropped at the end.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcp_auth_client::store::{CredentialStore, ServerRecord, StoreError};
use mcp_auth_connect::postgres::{PostgresVault, PostgresVaultOptions};
use mcp_auth_connect::vault::{Vault, VaultBackend};
use mcp_auth_types::seal::SealKeys;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Set in a child process: the schema it opens.
const CHILD_SCHEMA: &str = "MCP_AUTH_CONNECT_TEST_CHILD_SCHEMA";

fn url() -> String {
    std::env::var("MCP_AUTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://mcp_auth:mcp_auth@127.0.0.1:5432/mcp_auth_test".to_owned())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `connect_test_` and 16 random hex digits.
fn random_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("connect_test_{:016x}", hasher.finish())
}

/// Small pools: tests run at once, and PostgreSQL allows 100 connections by default.
fn options(schema: &str) -> PostgresVaultOptions {
    PostgresVaultOptions::new(url())
        .schema(schema)
        .pool_size(2)
        .lock_connections(4)
}

/// Drops its schema when dropped (from a thread and runtime of its own: `Drop` cannot
/// await, and blocking a test runtime's worker would panic).
struct DropSchema(String);

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
            eprintln!("could not drop test schema {}: {e}", self.0);
        }
    }
}

/// A vault in a new schema, and the guard that drops the schema.
async fn fresh() -> (PostgresVault, DropSchema) {
    let schema = random_schema();
    let guard = DropSchema(schema.clone());
    let vault = PostgresVault::connect_with(options(&schema)).await.unwrap();
    (vault, guard)
}

fn record(url: &str, marker: &str) -> ServerRecord {
    serde_json::from_value(serde_json::json!({
        "server_url": url,
        "issuer": "https://as.example",
        "token_endpoint": "https://as.example/token",
        "tokens": {
            "access_token": format!("AT-PLAINTEXT-{marker}"),
            "token_type": "Bearer",
            "refresh_token": format!("RT-PLAINTEXT-{marker}"),
            "obtained_at": 1,
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn roundtrip_sealed_and_users_isolated() {
    let (backend, _schema) = fresh().await;
    let backend = Arc::new(backend);
    let vault = Vault::new(backend.clone(), SealKeys::new("k1", [9u8; 32]).unwrap());
    let alice = vault.for_user("alice");
    let bob = vault.for_user("bob");

    alice
        .put("srv-a", &record("https://a.example/mcp", "alice-a"))
        .await
        .unwrap();
    alice
        .put("srv-b", &record("https://b.example/mcp", "alice-b"))
        .await
        .unwrap();
    bob.put("srv-a", &record("https://a.example/mcp", "bob-a"))
        .await
        .unwrap();
    let tokens = alice.get("srv-a").await.unwrap().unwrap().tokens.unwrap();
    assert_eq!(tokens.access_token.secret(), "AT-PLAINTEXT-alice-a");
    assert_eq!(alice.list().await.unwrap().len(), 2);
    assert_eq!(bob.list().await.unwrap().len(), 1);
    assert!(bob.get("srv-b").await.unwrap().is_none());

    alice
        .put("srv-a", &record("https://a.example/mcp", "alice-a2"))
        .await
        .unwrap();
    let tokens = alice.get("srv-a").await.unwrap().unwrap().tokens.unwrap();
    assert_eq!(tokens.access_token.secret(), "AT-PLAINTEXT-alice-a2");

    // The rows hold no token in the clear; a row copied to another user does not open.
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            &format!(
                "SELECT sealed FROM {}.connect_vault_records",
                backend.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let sealed: String = row.get(0);
        assert!(!sealed.contains("PLAINTEXT"));
    }
    let sealed = backend.get("alice", "srv-b").await.unwrap().unwrap();
    backend.put("bob", "srv-b", &sealed).await.unwrap();
    assert!(matches!(
        bob.get("srv-b").await,
        Err(StoreError::Decrypt(_))
    ));

    alice.delete("srv-a").await.unwrap();
    alice.delete("srv-a").await.unwrap();
    assert!(alice.get("srv-a").await.unwrap().is_none());
    assert!(bob.get("srv-a").await.unwrap().is_some());

    // Connecting again (a restart, a second instance) finds the schema up to date.
    let again = PostgresVault::connect_with(options(backend.schema()))
        .await
        .unwrap();
    assert_eq!(again.list("bob").await.unwrap().len(), 2);
    let versions: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.connect_schema_migrations",
                backend.schema()
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 1);
}

#[tokio::test]
async fn instances_starting_together_migrate_once() {
    let schema = random_schema();
    let _guard = DropSchema(schema.clone());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let options = options(&schema);
        tasks.push(tokio::spawn(PostgresVault::connect_with(options)));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn use_once_is_single_use_until_expiry() {
    let (a, _schema) = fresh().await;
    let exp = now() + 60;
    assert!(a.use_once("s1", exp).await.unwrap());
    assert!(!a.use_once("s1", exp).await.unwrap());
    assert!(a.use_once("s2", exp).await.unwrap());

    assert!(a.use_once("old", now() - 1).await.unwrap());
    assert!(a.use_once("old", now() + 60).await.unwrap());
    assert!(!a.use_once("old", now() + 120).await.unwrap());

    // Expired ids are swept by later calls.
    for i in 0..40 {
        assert!(a.use_once(&format!("gone-{i}"), now() - 10).await.unwrap());
    }
    assert!(a.use_once("sweeper", exp).await.unwrap());
    assert!(a.use_once("sweeper-2", exp).await.unwrap());
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let expired: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.connect_used_ids WHERE expires_at <= $1",
                a.schema()
            ),
            &[&i64::try_from(now()).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(expired, 0);

    // Across two instances, concurrently: exactly one winner.
    let b = PostgresVault::connect_with(options(a.schema()))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let v = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            v.use_once("race", exp).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
}

/// Two instances (two pools) on one schema, 32 tasks incrementing a counter under the lock
/// with a yield and a sleep between read and write: no update lost, never two holders.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_excludes_across_instances() {
    let (a, _schema) = fresh().await;
    let b = PostgresVault::connect_with(options(a.schema()))
        .await
        .unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    let holders = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let v = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (counter, holders) = (counter.clone(), holders.clone());
        tasks.push(tokio::spawn(async move {
            let _guard = v.lock("alice", "srv").await.unwrap();
            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
            let seen = counter.load(Ordering::SeqCst);
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
            counter.store(seen + 1, Ordering::SeqCst);
            holders.fetch_sub(1, Ordering::SeqCst);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), 32);
}

#[tokio::test]
async fn a_dropped_guard_releases_promptly() {
    let (a, _schema) = fresh().await;
    let b = PostgresVault::connect_with(options(a.schema()))
        .await
        .unwrap();
    for _ in 0..3 {
        let guard = a.lock("alice", "srv").await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), b.lock("alice", "srv"))
                .await
                .is_err(),
            "took a lock the other instance holds"
        );
        // Other keys and other users are free.
        drop(b.lock("alice", "other").await.unwrap());
        drop(b.lock("bob", "srv").await.unwrap());
        drop(guard);
        let again = tokio::time::timeout(Duration::from_secs(2), b.lock("alice", "srv"))
            .await
            .expect("the dropped guard did not release the lock")
            .unwrap();
        drop(again);
    }
    // The lock connections went back to their pool (4 of them) in a state that does not
    // hold the lock: many more rounds than connections work.
    for _ in 0..12 {
        drop(a.lock("alice", "srv").await.unwrap());
        drop(
            tokio::time::timeout(Duration::from_secs(2), b.lock("alice", "srv"))
                .await
                .unwrap()
                .unwrap(),
        );
    }
}

#[tokio::test]
async fn schemas_do_not_share_locks() {
    let (a, _schema_a) = fresh().await;
    let (b, _schema_b) = fresh().await;
    let _held = a.lock("alice", "srv").await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), b.lock("alice", "srv"))
        .await
        .expect("a lock in one schema blocked another schema's")
        .unwrap();
}

#[tokio::test]
async fn a_cancelled_wait_takes_nothing() {
    let (a, _schema) = fresh().await;
    let b = PostgresVault::connect_with(options(a.schema()))
        .await
        .unwrap();
    let guard = a.lock("alice", "srv").await.unwrap();
    // Give up waiting, several times: the abandoned waits must not end up holding it.
    for _ in 0..3 {
        assert!(
            tokio::time::timeout(Duration::from_millis(200), b.lock("alice", "srv"))
                .await
                .is_err()
        );
    }
    drop(guard);
    let _again = tokio::time::timeout(Duration::from_secs(5), a.lock("alice", "srv"))
        .await
        .expect("an abandoned wait kept the lock")
        .unwrap();
}

/// Not a test by itself: the other process of `a_killed_holder_does_not_block`.
#[tokio::test]
#[ignore = "helper: run as a child process by a_killed_holder_does_not_block"]
async fn child_holds_pg_lock() {
    let Ok(schema) = std::env::var(CHILD_SCHEMA) else {
        return;
    };
    let vault = PostgresVault::connect_with(options(&schema)).await.unwrap();
    let _guard = vault.lock("alice", "srv").await.unwrap();
    // On a line of its own: the test harness has printed "test … ... " without a newline.
    println!("\nlocked");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

async fn spawn_holder(schema: &str) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_holds_pg_lock",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SCHEMA, schema)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.trim() == "locked" {
                return;
            }
        }
        panic!("the child exited without taking the lock");
    })
    .await;
    assert!(waited.is_ok(), "the child did not take the lock in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

#[tokio::test]
async fn a_killed_holder_does_not_block() {
    let (vault, _schema) = fresh().await;
    let mut child = spawn_holder(vault.schema()).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), vault.lock("alice", "srv"))
            .await
            .is_err(),
        "took a lock the child holds"
    );
    child.kill().await.unwrap();
    let _guard = tokio::time::timeout(Duration::from_secs(10), vault.lock("alice", "srv"))
        .await
        .expect("a killed holder's session still holds the lock")
        .unwrap();
}
