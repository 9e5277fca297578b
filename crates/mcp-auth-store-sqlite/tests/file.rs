//! What only a file-backed store can show: data survives closing and reopening, two stores
//! on one file see each other's writes and stay atomic, the file is private, the sweeper
//! runs.

use std::time::Duration;

use mcp_auth_server::store::suite::{self, NOW};
use mcp_auth_server::store::{Rotate, Store, StoreError, TakeCode, hash_secret};
use mcp_auth_store_sqlite::SqliteStore;

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");

    let store = SqliteStore::open(&path).await.unwrap();
    let client = suite::client("t1", "client-1");
    store.put_client(&client).await.unwrap();
    store.put_user(&suite::user("t1", "alice")).await.unwrap();
    store
        .put_code(&suite::code("t1", "code-1", "fam-1"))
        .await
        .unwrap();
    let code_2 = suite::code("t1", "code-2", "fam-2");
    store.put_code(&code_2).await.unwrap();
    let c1 = hash_secret("code-1");
    assert!(matches!(
        store.take_code("t1", &c1, NOW).await.unwrap(),
        TakeCode::Taken(_)
    ));
    let r0 = suite::refresh("t1", "rt-0", "fam-1");
    let r1 = suite::refresh("t1", "rt-1", "fam-1");
    store.put_refresh(&r0).await.unwrap();
    let got = store
        .rotate_refresh("t1", &r0.token_hash, &r1, NOW)
        .await
        .unwrap();
    assert!(matches!(got, Rotate::Rotated(_)));
    store.revoke_access("t1", "jti-1", NOW + 60).await.unwrap();
    let key = suite::signing_key("t1", "k1", NOW);
    store.put_signing_key(&key).await.unwrap();
    let pending = suite::pending("t1", "p-1");
    store.put_pending(&pending).await.unwrap();
    let consent = suite::consent("t1", "alice", "client-1");
    store.put_consent(&consent).await.unwrap();
    store.revoke_family("t1", "fam-9", NOW).await.unwrap();
    let session = suite::session("t1", "cookie-1");
    store.put_session(&session).await.unwrap();
    let upstream = suite::upstream("t1", "github:1", 3);
    store.put_upstream(&upstream).await.unwrap();
    store.close().await;
    drop(store);

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        store.get_client("t1", "client-1", NOW).await.unwrap(),
        Some(client)
    );
    assert_eq!(
        store.get_user("t1", "alice").await.unwrap(),
        Some(suite::user("t1", "alice"))
    );
    // The spent code is still spent, the other still fresh.
    assert!(matches!(
        store.take_code("t1", &c1, NOW).await.unwrap(),
        TakeCode::Replayed { .. }
    ));
    let c2 = hash_secret("code-2");
    assert_eq!(
        store.take_code("t1", &c2, NOW).await.unwrap(),
        TakeCode::Taken(code_2)
    );
    // The rotated token is still a tombstone: reuse is still detected.
    assert_eq!(
        store.get_refresh("t1", &r1.token_hash, NOW).await.unwrap(),
        Some(r1.clone())
    );
    let r2 = suite::refresh("t1", "rt-2", "fam-1");
    assert_eq!(
        store
            .rotate_refresh("t1", &r0.token_hash, &r2, NOW)
            .await
            .unwrap(),
        Rotate::Reused {
            family_id: "fam-1".into()
        }
    );
    assert!(store.is_access_revoked("t1", "jti-1").await.unwrap());
    let keys = store.list_signing_keys("t1", NOW).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].private_pem.secret(), key.private_pem.secret());
    assert_eq!(keys[0].public_jwk, key.public_jwk);
    assert_eq!(
        store.take_pending("t1", "p-1", NOW).await.unwrap(),
        Some(pending)
    );
    assert_eq!(
        store.get_consent("t1", "alice", "client-1").await.unwrap(),
        Some(consent)
    );
    let late = store
        .put_refresh(&suite::refresh("t1", "rt-late", "fam-9"))
        .await;
    assert!(late.is_err(), "the revoked family is remembered: {late:?}");
    assert_eq!(
        store
            .get_session("t1", &session.session_hash, NOW)
            .await
            .unwrap(),
        Some(session)
    );
    assert_eq!(
        store.get_upstream("t1", "github:1", NOW).await.unwrap(),
        Some(upstream)
    );
    store.close().await;
}

#[tokio::test]
async fn reopening_does_not_rerun_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    for _ in 0..3 {
        let store = SqliteStore::open(&path).await.unwrap();
        store.put_user(&suite::user("t1", "alice")).await.unwrap();
        store.close().await;
    }
}

/// Two stores on one file (two processes, in production) still let exactly one caller
/// redeem a code and exactly one rotate a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_stay_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let a = SqliteStore::open(&path).await.unwrap();
    let b = SqliteStore::open(&path).await.unwrap();
    a.put_code(&suite::code("t1", "code-1", "fam-1"))
        .await
        .unwrap();
    let r0 = suite::refresh("t1", "rt-0", "fam-1");
    a.put_refresh(&r0).await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..suite::RACERS {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let old = r0.token_hash.clone();
        tasks.push(tokio::spawn(async move {
            let taken = store
                .take_code("t1", &hash_secret("code-1"), NOW)
                .await
                .unwrap();
            let new = suite::refresh("t1", &format!("rt-new-{i}"), "fam-1");
            let rotated = store.rotate_refresh("t1", &old, &new, NOW).await.unwrap();
            (taken, rotated)
        }));
    }
    let mut taken = 0;
    let mut rotated = 0;
    for task in tasks {
        let (t, r) = task.await.unwrap();
        taken += usize::from(matches!(t, TakeCode::Taken(_)));
        rotated += usize::from(matches!(r, Rotate::Rotated(_)));
    }
    assert_eq!((taken, rotated), (1, 1));
    a.close().await;
    b.close().await;
}

/// Two stores on one file: of concurrent `swap_upstream` calls from the same version, split
/// between them, exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_swap_upstream_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let a = SqliteStore::open(&path).await.unwrap();
    let b = SqliteStore::open(&path).await.unwrap();
    a.put_upstream(&suite::upstream("t1", "acct", 1))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..suite::RACERS {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut row = suite::upstream("t1", "acct", 2);
            row.sealed = format!("racer-{i}");
            let won = store.swap_upstream(&row, 1).await.unwrap();
            (won, row)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (won, row) = task.await.unwrap();
        if won {
            winners.push(row);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        b.get_upstream("t1", "acct", NOW).await.unwrap().as_ref(),
        Some(&winners[0])
    );
    a.close().await;
    b.close().await;
}

#[cfg(unix)]
#[tokio::test]
async fn new_database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.put_user(&suite::user("t1", "alice")).await.unwrap();
    for name in ["auth.db", "auth.db-wal"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    store.close().await;
}

#[tokio::test]
async fn sweeper_deletes_expired_rows() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    // Expired long ago by the system clock.
    store.revoke_access("t1", "jti-old", 1).await.unwrap();
    store
        .revoke_access("t1", "jti-new", u64::MAX)
        .await
        .unwrap();
    let sweeper = store.spawn_sweeper(Duration::from_millis(20));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.is_access_revoked("t1", "jti-old").await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "sweeper never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(store.is_access_revoked("t1", "jti-new").await.unwrap());
    sweeper.abort();
}

/// Concurrent writes are committed together, a failing one (a duplicate code) undoes only
/// itself, and every answered write is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_commits_and_all_persist() {
    const WRITES: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .put_code(&suite::code("t1", "dup", "fam-dup"))
        .await
        .unwrap();
    let before = store.write_stats();

    let mut tasks = Vec::new();
    for i in 0..WRITES {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Every tenth write collides with the existing code.
            let name = if i % 10 == 0 {
                "dup".to_owned()
            } else {
                format!("code-{i}")
            };
            store.put_code(&suite::code("t1", &name, "fam-1")).await
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => {}
            Err(mcp_auth_server::store::StoreError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(conflicts, WRITES / 10);
    let after = store.write_stats();
    assert_eq!(after.writes - before.writes, WRITES as u64);
    assert!(
        after.commits - before.commits < WRITES as u64,
        "no two writes shared a commit: {before:?} → {after:?}"
    );
    // Every commit was flushed before its writes were answered; a flush covers one commit
    // or more, never none.
    let syncs = after.syncs - before.syncs;
    assert!(
        syncs >= 1 && syncs <= after.commits - before.commits,
        "{before:?} → {after:?}"
    );
    store.close().await;
    drop(store);

    let store = SqliteStore::open(&path).await.unwrap();
    for i in (0..WRITES).filter(|i| i % 10 != 0) {
        let got = store
            .take_code("t1", &hash_secret(&format!("code-{i}")), NOW)
            .await
            .unwrap();
        assert!(matches!(got, TakeCode::Taken(_)), "code-{i}: {got:?}");
    }
    // The duplicate attempts did not replace the original row.
    let dup = store
        .take_code("t1", &hash_secret("dup"), NOW)
        .await
        .unwrap();
    assert!(
        matches!(&dup, TakeCode::Taken(row) if row.family_id == "fam-dup"),
        "{dup:?}"
    );
    store.close().await;
}

/// A database written by the first releases (schema recorded by sqlx in
/// `_sqlx_migrations`, `user_version` 0) opens without re-running its migration.
#[tokio::test]
async fn opens_a_database_from_the_sqlx_releases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../migrations/0001_initial.sql"))
            .unwrap();
        conn.execute_batch(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
             installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
             checksum BLOB NOT NULL, execution_time BIGINT NOT NULL); \
             INSERT INTO _sqlx_migrations VALUES (1, 'initial', CURRENT_TIMESTAMP, 1, x'00', 1); \
             INSERT INTO users VALUES ('t1', 'alice', 'hash', 1);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.get_user("t1", "alice").await.unwrap().is_some());
    // The migrations after the first one were applied.
    let session = suite::session("t1", "cookie-1");
    store.put_session(&session).await.unwrap();
    assert!(
        store
            .get_session("t1", &session.session_hash, NOW)
            .await
            .unwrap()
            .is_some()
    );
    store.close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    // Every migration file, up to the latest, was applied.
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    assert_eq!(version, i64::try_from(migrations).unwrap());
}

/// A database written before grants had their own table (schema version 5) keeps its
/// sessions through the upgrade: current refresh tokens still rotate, rotated ones still
/// count as reuse, revoked families stay revoked, codes can still be redeemed once, and
/// deleting a client still cuts off what it holds.
#[tokio::test]
async fn grants_survive_the_upgrade_from_schema_version_5() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in [
            include_str!("../migrations/0001_initial.sql"),
            include_str!("../migrations/0002_sessions_upstream.sql"),
            include_str!("../migrations/0003_device.sql"),
            include_str!("../migrations/0004_claims.sql"),
            include_str!("../migrations/0005_refresh_indexes.sql"),
        ] {
            conn.execute_batch(sql).unwrap();
        }
        let far = NOW + 86_400;
        conn.execute_batch(&format!(
            "PRAGMA user_version = 5;
             INSERT INTO refresh_tokens VALUES
               ('t1', '{live}', 'fam-live', 'client-1', 'alice', 'files:read', NULL, {far}, {NOW}, NULL),
               ('t1', '{old}', 'fam-live', 'client-1', 'alice', 'files:read', NULL, {far}, {NOW}, {NOW}),
               ('t1', '{other}', 'fam-other', 'client-2', 'bob', 'files:read', NULL, {far}, {NOW}, NULL);
             INSERT INTO revoked_families VALUES ('t1', 'fam-revoked', {far});
             INSERT INTO codes VALUES
               ('t1', '{code}', 'client-1', 'http://127.0.0.1/cb', 'challenge', 'files:read',
                NULL, 'alice', NULL, {soon}, 'fam-code', NULL);",
            live = hash_secret("rt-live"),
            old = hash_secret("rt-old"),
            other = hash_secret("rt-other"),
            code = hash_secret("code-1"),
            soon = NOW + 60,
        ))
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let live = store
        .get_refresh("t1", &hash_secret("rt-live"), NOW)
        .await
        .unwrap()
        .expect("the current token survives");
    assert_eq!(live.family_id, "fam-live");
    let mut next = suite::refresh("t1", "rt-next", "fam-live");
    next.created_at = NOW + 1;
    let rotated = store
        .rotate_refresh("t1", &live.token_hash, &next, NOW + 1)
        .await
        .unwrap();
    assert!(matches!(rotated, Rotate::Rotated(_)), "{rotated:?}");
    // The token rotated before the upgrade is reuse: the family goes.
    let reused = store
        .rotate_refresh(
            "t1",
            &hash_secret("rt-old"),
            &suite::refresh("t1", "x", "fam-live"),
            NOW + 2,
        )
        .await
        .unwrap();
    assert!(matches!(reused, Rotate::Reused { .. }), "{reused:?}");
    assert_eq!(
        store
            .get_refresh("t1", &next.token_hash, NOW + 2)
            .await
            .unwrap(),
        None
    );
    // A family revoked before the upgrade takes no new token.
    let late = suite::refresh("t1", "rt-late", "fam-revoked");
    let err = store.put_refresh(&late).await.unwrap_err();
    assert!(matches!(err, StoreError::FamilyRevoked), "{err:?}");
    // The code is redeemed once.
    let taken = store
        .take_code("t1", &hash_secret("code-1"), NOW)
        .await
        .unwrap();
    assert!(matches!(taken, TakeCode::Taken(_)), "{taken:?}");
    // Deleting client-2 cuts off its token.
    store.delete_client("t1", "client-2").await.unwrap();
    assert_eq!(
        store
            .get_refresh("t1", &hash_secret("rt-other"), NOW)
            .await
            .unwrap(),
        None
    );
    store.close().await;
}

/// The record that refuses a deleted client's codes goes when the same client id is
/// registered again (a client ID metadata document fetched anew): its new codes work.
#[tokio::test]
async fn a_client_registered_again_after_deletion_can_redeem_codes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("auth.db")).await.unwrap();
    store
        .put_client(&suite::client("t1", "client-1"))
        .await
        .unwrap();
    store
        .put_code(&suite::code("t1", "code-1", "fam-1"))
        .await
        .unwrap();
    assert!(store.delete_client("t1", "client-1").await.unwrap());
    let old = hash_secret("code-1");
    assert_eq!(
        store.take_code("t1", &old, NOW).await.unwrap(),
        TakeCode::Missing
    );
    store
        .put_client(&suite::client("t1", "client-1"))
        .await
        .unwrap();
    store
        .put_code(&suite::code("t1", "code-2", "fam-2"))
        .await
        .unwrap();
    let taken = store
        .take_code("t1", &hash_secret("code-2"), NOW)
        .await
        .unwrap();
    assert!(matches!(taken, TakeCode::Taken(_)), "{taken:?}");
    // Other clients' codes never depended on it.
    let mut other = suite::code("t1", "code-3", "fam-3");
    other.client_id = "client-2".into();
    store.put_code(&other).await.unwrap();
    store.delete_client("t1", "client-1").await.unwrap();
    let taken = store
        .take_code("t1", &hash_secret("code-3"), NOW)
        .await
        .unwrap();
    assert!(matches!(taken, TakeCode::Taken(_)), "{taken:?}");
    store.close().await;
}

/// A refresh token stored into another client's token family is refused, and nothing of it
/// is kept: the family's grant names its client once.
#[tokio::test]
async fn a_token_family_belongs_to_one_client() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("auth.db")).await.unwrap();
    store
        .put_refresh(&suite::refresh("t1", "rt-1", "fam-1"))
        .await
        .unwrap();
    let mut other = suite::refresh("t1", "rt-2", "fam-1");
    other.client_id = "client-2".into();
    let err = store.put_refresh(&other).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidRow(_)), "{err:?}");
    assert_eq!(
        store
            .get_refresh("t1", &other.token_hash, NOW)
            .await
            .unwrap(),
        None
    );
    store.close().await;
}

#[tokio::test]
async fn refuses_a_database_from_a_newer_release() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(err.to_string().contains("storage backend failed"), "{err}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("newer"), "{source}");
}

#[tokio::test]
async fn a_closed_store_refuses_calls() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("auth.db")).await.unwrap();
    store.put_user(&suite::user("t1", "alice")).await.unwrap();
    store.close().await;
    assert!(store.put_user(&suite::user("t1", "bob")).await.is_err());
    assert!(store.get_user("t1", "alice").await.is_err());
    let memory = SqliteStore::open_in_memory().await.unwrap();
    memory.close().await;
    assert!(memory.get_user("t1", "alice").await.is_err());
}

/// Set in the child process of `answered_writes_survive_a_killed_process`.
const CRASH_CHILD: &str = "MCP_AUTH_SQLITE_CRASH_CHILD";

/// A process that writes codes concurrently and prints each one's number once its write is
/// answered is killed (`SIGKILL`) mid-stream: every printed code is in the database.
#[test]
fn answered_writes_survive_a_killed_process() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    if let Ok(path) = std::env::var(CRASH_CHILD) {
        return crash_child(&path);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "answered_writes_survive_a_killed_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut answered = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while answered.len() < 2_000 {
        let line = lines.next().expect("the child stopped early").unwrap();
        if let Some(n) = line.strip_prefix("answered ") {
            answered.push(n.to_owned());
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Whatever the child printed before the kill and we did not read yet also counts.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("answered ") {
            answered.push(n.to_owned());
        }
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&path).await.unwrap();
        for n in &answered {
            let got = store
                .take_code("t1", &hash_secret(&format!("code-{n}")), NOW)
                .await
                .unwrap();
            assert!(matches!(got, TakeCode::Taken(_)), "code-{n}: {got:?}");
        }
        store.close().await;
    });
}

fn crash_child(path: &str) {
    use std::io::Write;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(path).await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let n = format!("{w}-{i}");
                    store
                        .put_code(&suite::code("t1", &format!("code-{n}"), "fam-1"))
                        .await
                        .unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "answered {n}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

/// Every query that finds grants, codes or refresh tokens by something other than their
/// key uses an index: deleting a client, withdrawing a consent, sweeping, and the check of
/// a token's grant never read a whole table, however many rows it holds.
#[tokio::test]
async fn grant_and_token_lookups_use_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    for (query, index) in [
        (
            "DELETE FROM grants INDEXED BY grants_client WHERE tenant = 't' AND client_id = 'c'",
            "grants_client",
        ),
        (
            "SELECT family_id FROM grants INDEXED BY grants_client \
             WHERE tenant = 't' AND client_id = 'c' AND subject = 's' AND revoked_at IS NULL",
            "grants_client",
        ),
        (
            "UPDATE grants SET revoked_at = 1 \
             WHERE tenant = 't' AND family_id = 'f' AND revoked_at IS NULL",
            "PRIMARY KEY",
        ),
        ("DELETE FROM grants WHERE expires_at <= 5", "grants_expiry"),
        (
            "SELECT token_hash FROM refresh_tokens WHERE tenant = 't' AND token_hash = 'h' \
             AND (SELECT g.revoked_at IS NULL FROM grants g WHERE g.tenant = refresh_tokens.tenant \
             AND g.family_id = refresh_tokens.family_id)",
            "PRIMARY KEY",
        ),
        (
            "DELETE FROM refresh_tokens WHERE expires_at <= 5",
            "refresh_expiry",
        ),
        ("DELETE FROM codes WHERE expires_at <= 5", "codes_expiry"),
    ] {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter().any(|step| step.contains(index)),
            "{query}: {plan:?}"
        );
    }
}
