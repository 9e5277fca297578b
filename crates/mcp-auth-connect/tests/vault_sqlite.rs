//! The SQLite vault backend against real files: sealing at rest, isolation, single use,
//! and locks across tasks and across processes (the test binary re-executes itself as the
//! other process).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcp_auth_client::store::{CredentialStore, ServerRecord, StoreError};
use mcp_auth_connect::sqlite::SqliteVault;
use mcp_auth_connect::vault::{Vault, VaultBackend};
use mcp_auth_types::seal::SealKeys;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Set in a child process: the database it opens.
const CHILD_DB: &str = "MCP_AUTH_CONNECT_TEST_CHILD_DB";
/// Set in a child process: how long it holds the lock before exiting, in milliseconds.
const CHILD_HOLD_MS: &str = "MCP_AUTH_CONNECT_TEST_CHILD_HOLD_MS";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
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

fn keys() -> SealKeys {
    SealKeys::new("k1", [7u8; 32]).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn roundtrip_sealed_at_rest_and_users_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let backend = Arc::new(SqliteVault::open(&path).await.unwrap());
    let vault = Vault::new(backend.clone(), keys());
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

    let got = alice.get("srv-a").await.unwrap().unwrap();
    let tokens = got.tokens.unwrap();
    assert_eq!(tokens.access_token.secret(), "AT-PLAINTEXT-alice-a");
    assert_eq!(alice.list().await.unwrap().len(), 2);
    assert_eq!(bob.list().await.unwrap().len(), 1);
    let bob_tokens = bob.get("srv-a").await.unwrap().unwrap().tokens.unwrap();
    assert_eq!(bob_tokens.access_token.secret(), "AT-PLAINTEXT-bob-a");
    assert!(bob.get("srv-b").await.unwrap().is_none());
    assert!(vault.for_user("carol").list().await.unwrap().is_empty());

    // Replacing is atomic and visible.
    alice
        .put("srv-a", &record("https://a.example/mcp", "alice-a2"))
        .await
        .unwrap();
    let tokens = alice.get("srv-a").await.unwrap().unwrap().tokens.unwrap();
    assert_eq!(tokens.access_token.secret(), "AT-PLAINTEXT-alice-a2");

    // A row copied to another user does not open.
    let sealed = backend.get("alice", "srv-b").await.unwrap().unwrap();
    backend.put("bob", "srv-b", &sealed).await.unwrap();
    assert!(matches!(
        bob.get("srv-b").await,
        Err(StoreError::Decrypt(_))
    ));

    // Neither the database nor its log holds a token in the clear.
    let mut files = 0;
    for file in [path.clone(), dir.path().join("vault.db-wal")] {
        if let Ok(bytes) = std::fs::read(&file) {
            files += 1;
            assert!(!contains(&bytes, b"PLAINTEXT"), "{} leaks", file.display());
        }
    }
    assert_eq!(files, 2, "the database and its log");

    // Deleting forgets one record only.
    alice.delete("srv-a").await.unwrap();
    alice.delete("srv-a").await.unwrap();
    assert!(alice.get("srv-a").await.unwrap().is_none());
    assert!(bob.get("srv-a").await.unwrap().is_some());

    // Reopened, the data is there.
    drop(vault);
    drop(backend);
    let again = SqliteVault::open(&path).await.unwrap();
    assert_eq!(again.list("alice").await.unwrap().len(), 1);
    assert_eq!(again.list("bob").await.unwrap().len(), 2);
}

#[cfg(unix)]
#[tokio::test]
async fn files_are_private_and_the_schema_is_versioned() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let vault = SqliteVault::open(&path).await.unwrap();
    vault.put("u", "k", "sealed").await.unwrap();
    let _guard = vault.lock("u", "k").await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("vault.db-wal")), 0o600);
    let locks = dir.path().join("vault.db.locks");
    assert_eq!(mode(&locks), 0o700);
    let lock_files: Vec<_> = std::fs::read_dir(&locks).unwrap().collect();
    assert_eq!(lock_files.len(), 1);
    assert_eq!(mode(&lock_files[0].as_ref().unwrap().path()), 0o600);
    // The lock file is named by a hash: no user id in file names.
    let name = lock_files[0].as_ref().unwrap().file_name();
    assert!(!name.to_string_lossy().contains('u'));

    // A looser mode is tightened on open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(SqliteVault::open(&path).await.unwrap());
    assert_eq!(mode(&path), 0o600);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[tokio::test]
async fn use_once_is_single_use_until_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let a = SqliteVault::open(&path).await.unwrap();
    let exp = now() + 60;
    assert!(a.use_once("s1", exp).await.unwrap());
    assert!(!a.use_once("s1", exp).await.unwrap());
    assert!(a.use_once("s2", exp).await.unwrap());

    // An expired id may be used again; an unexpired one may not, even if "renewed".
    assert!(a.use_once("old", now() - 1).await.unwrap());
    assert!(a.use_once("old", now() + 60).await.unwrap());
    assert!(!a.use_once("old", now() + 120).await.unwrap());

    // Across instances on one file, concurrently: exactly one winner.
    let b = SqliteVault::open(&path).await.unwrap();
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

/// 32 tasks over two instances on one file increment a counter under the lock, with a
/// yield and a sleep between read and write: no update is lost, never two holders.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_excludes_across_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let a = SqliteVault::open(&path).await.unwrap();
    let b = SqliteVault::open(&path).await.unwrap();
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

    // Other keys and other users are not blocked by a held lock.
    let _held = a.lock("alice", "srv").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), b.lock("alice", "other"))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), b.lock("bob", "srv"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), b.lock("alice", "srv"))
            .await
            .is_err()
    );
}

/// Starts this test binary again, running only `child_holds_lock`, with the database and
/// hold time in its environment. Returns once the child says it holds the lock.
async fn spawn_holder(db: &Path, hold_ms: u64) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_holds_lock",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, db)
        .env(CHILD_HOLD_MS, hold_ms.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
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
    // Keep reading, so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// Not a test by itself: the other process of the cross-process tests.
#[tokio::test]
#[ignore = "helper: run as a child process by the cross-process lock tests"]
async fn child_holds_lock() {
    let Ok(db) = std::env::var(CHILD_DB) else {
        return;
    };
    let hold_ms: u64 = std::env::var(CHILD_HOLD_MS).unwrap().parse().unwrap();
    let vault = SqliteVault::open(&db).await.unwrap();
    let _guard = vault.lock("alice", "srv").await.unwrap();
    // On a line of its own: the test harness has printed "test … ... " without a newline.
    println!("\nlocked");
    tokio::time::sleep(Duration::from_millis(hold_ms)).await;
    // Exits holding the lock: the OS releases it with the process.
    std::process::exit(0);
}

#[tokio::test]
async fn lock_excludes_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let vault = SqliteVault::open(&path).await.unwrap();
    let mut child = spawn_holder(&path, 1000).await;
    let started = Instant::now();
    // Held by the child: not ours yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), vault.lock("alice", "srv"))
            .await
            .is_err(),
        "took a lock the child holds"
    );
    // Another key is free.
    drop(vault.lock("alice", "other").await.unwrap());
    let guard = tokio::time::timeout(Duration::from_secs(30), vault.lock("alice", "srv"))
        .await
        .expect("the lock was not released when the child exited")
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "took the lock after {waited:?}, while the child held it for 1 s"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    drop(guard);
}

#[tokio::test]
async fn a_killed_holder_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let vault = SqliteVault::open(&path).await.unwrap();
    let mut child = spawn_holder(&path, 600_000).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), vault.lock("alice", "srv"))
            .await
            .is_err(),
        "took a lock the child holds"
    );
    child.kill().await.unwrap();
    let guard = tokio::time::timeout(Duration::from_secs(10), vault.lock("alice", "srv"))
        .await
        .expect("a killed holder still blocks the lock")
        .unwrap();
    drop(guard);
}
