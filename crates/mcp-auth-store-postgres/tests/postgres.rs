//! What the shared suite cannot check: migrations, several instances (separate pools) racing
//! on one schema, and connection failures.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{DropSchema, chain, fresh_store, options, random_schema, raw_client};
use mcp_auth_server::store::suite::{
    NOW, code, new_refresh, refresh, session, signing_key, upstream,
};
use mcp_auth_server::store::{Rotate, Store, StoreError, TakeCode, hash_secret};
use mcp_auth_store_postgres::{PostgresOptions, PostgresStore};
use tokio::sync::Barrier;

/// How many tasks race in these tests, split over two instances.
const RACERS: usize = 64;

/// Two stores with their own pools on one new schema: two server instances.
async fn two_instances() -> (PostgresStore, PostgresStore, DropSchema) {
    let schema = random_schema();
    let guard = DropSchema(schema.clone());
    let a = PostgresStore::connect_with(options(&schema).pool_size(8))
        .await
        .unwrap();
    let b = PostgresStore::connect_with(options(&schema).pool_size(8))
        .await
        .unwrap();
    (a, b, guard)
}

/// Runs `RACERS` calls of `op`, alternating between the instances, released together.
async fn race<T, F, Fut>(a: &PostgresStore, b: &PostgresStore, op: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(PostgresStore, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let barrier = barrier.clone();
            let call = op(store, i);
            tokio::spawn(async move {
                barrier.wait().await;
                call.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(RACERS);
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// The versions of the migration files shipped (`migrations/NNNN_*.sql`), in order.
fn shipped_versions() -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".sql")?.get(..4)?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

async fn versions(schema: &str) -> Vec<i32> {
    raw_client()
        .await
        .query(
            &format!("SELECT version FROM {schema}.mcp_auth_schema_migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_are_idempotent_and_versioned() {
    let (store, guard) = fresh_store().await;
    store.put_code(&code("t1", "c1", "fam")).await.unwrap();
    assert_eq!(versions(&guard.0).await, shipped_versions());

    // Connecting again applies nothing and keeps the data.
    let again = PostgresStore::connect_with(options(&guard.0))
        .await
        .unwrap();
    assert_eq!(versions(&guard.0).await, shipped_versions());
    assert!(matches!(
        again
            .take_code("t1", &hash_secret("c1"), NOW)
            .await
            .unwrap(),
        TakeCode::Taken(_)
    ));

    // A schema written by a newer program is refused, with a message that says so.
    let future = shipped_versions().last().unwrap() + 1;
    raw_client()
        .await
        .execute(
            &format!(
                "INSERT INTO {}.mcp_auth_schema_migrations (version, name, applied_at) \
                 VALUES ({future}, 'from the future', 0)",
                guard.0
            ),
            &[],
        )
        .await
        .unwrap();
    let err = PostgresStore::connect_with(options(&guard.0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    let message = chain(&err);
    assert!(message.contains("newer than this program"), "{message}");
    assert!(message.contains(&format!("version {future}")), "{message}");
}

/// A schema at version 1 (written by the first releases) is brought up to date on connect,
/// keeping its data.
#[tokio::test]
async fn a_version_1_schema_is_upgraded() {
    let schema = random_schema();
    let guard = DropSchema(schema.clone());
    let raw = raw_client().await;
    raw.batch_execute(&format!(
        "CREATE SCHEMA {schema}; SET search_path TO {schema}; {} \
         CREATE TABLE mcp_auth_schema_migrations (version INTEGER PRIMARY KEY, \
         name TEXT NOT NULL, applied_at BIGINT NOT NULL); \
         INSERT INTO mcp_auth_schema_migrations VALUES (1, 'initial', 0); \
         INSERT INTO users VALUES ('t1', 'alice', 'hash', 1);",
        include_str!("../migrations/0001_initial.sql")
    ))
    .await
    .unwrap();
    let store = PostgresStore::connect_with(options(&schema)).await.unwrap();
    assert_eq!(versions(&guard.0).await, shipped_versions());
    let alice = store.get_user("t1", "alice").await.unwrap().unwrap();
    assert_eq!(alice.password_hash, "hash");
    let s = session("t1", "cookie-1");
    store.put_session(&s).await.unwrap();
    assert_eq!(
        store.get_session("t1", &s.session_hash, NOW).await.unwrap(),
        Some(s)
    );
    let u = upstream("t1", "github:1", 1);
    store.put_upstream(&u).await.unwrap();
    assert!(
        store
            .swap_upstream(&upstream("t1", "github:1", 2), 1)
            .await
            .unwrap()
    );
}

/// Instances starting together on a new schema: the advisory lock makes one create it and
/// apply the migrations while the others wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_migrate_once() {
    let schema = random_schema();
    let guard = DropSchema(schema.clone());
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let options = options(&schema).pool_size(1);
            tokio::spawn(PostgresStore::connect_with(options))
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap();
    }
    assert_eq!(versions(&guard.0).await, shipped_versions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn code_taken_once_across_instances() {
    let (a, b, _guard) = two_instances().await;
    a.put_code(&code("t1", "the-code", "fam-1")).await.unwrap();
    let results = race(&a, &b, |store, _| async move {
        store.take_code("t1", &hash_secret("the-code"), NOW).await
    })
    .await;
    let taken = results
        .iter()
        .filter(|r| matches!(r, Ok(TakeCode::Taken(_))))
        .count();
    let replayed = results
        .iter()
        .filter(|r| matches!(r, Ok(TakeCode::Replayed { family_id, .. }) if family_id == "fam-1"))
        .count();
    assert_eq!((taken, replayed), (1, RACERS - 1), "{results:?}");
}

/// Several codes, each redeemed by many callers on two instances, every replay revoking the
/// family as the token endpoint does: one redemption per code wins with its token, no call
/// fails (no deadlock between code rows and family locks), and the replays always find and
/// revoke the winner's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn code_redeemed_once_across_instances_and_replays_revoke_the_grant() {
    const CODES: usize = 8;
    let (a, b, _guard) = two_instances().await;
    for n in 0..CODES {
        a.put_code(&code("t1", &format!("code-{n}"), &format!("fam-{n}")))
            .await
            .unwrap();
    }
    let results = race(&a, &b, |store, i| async move {
        let n = i % CODES;
        let new = new_refresh(&format!("rt-{i}"));
        let r = store
            .redeem_code("t1", &hash_secret(&format!("code-{n}")), Some(&new), NOW)
            .await;
        if let Ok(TakeCode::Replayed { family_id, .. }) = &r {
            store.revoke_family("t1", family_id, NOW).await.unwrap();
        }
        (n, new.token_hash, r)
    })
    .await;
    for n in 0..CODES {
        let taken = results
            .iter()
            .filter(|(m, _, r)| *m == n && matches!(r, Ok(TakeCode::Taken(_))))
            .count();
        assert_eq!(taken, 1, "code-{n}: {results:?}");
    }
    for (n, hash, r) in &results {
        assert!(
            matches!(r, Ok(TakeCode::Taken(_) | TakeCode::Replayed { .. })),
            "code-{n}: {r:?}"
        );
        assert_eq!(a.get_refresh("t1", hash, NOW).await.unwrap(), None);
    }
    for n in 0..CODES {
        let late = refresh("t1", &format!("late-{n}"), &format!("fam-{n}"));
        assert!(matches!(
            b.put_refresh(&late).await,
            Err(StoreError::FamilyRevoked)
        ));
    }
}

/// A redemption whose token cannot go in because the family's revocation is remembered
/// fails as a whole: the code stays unspent and no token is stored.
#[tokio::test]
async fn redeem_into_a_revoked_family_leaves_the_code_unspent() {
    let (store, _guard) = fresh_store().await;
    store.put_code(&code("t1", "c1", "fam-1")).await.unwrap();
    store.revoke_family("t1", "fam-1", NOW).await.unwrap();
    let h = hash_secret("c1");
    let refused = store
        .redeem_code("t1", &h, Some(&new_refresh("rt-1")), NOW)
        .await;
    assert!(
        matches!(refused, Err(StoreError::FamilyRevoked)),
        "{refused:?}"
    );
    let rt = hash_secret("rt-1");
    assert_eq!(store.get_refresh("t1", &rt, NOW).await.unwrap(), None);
    assert!(matches!(
        store.take_code("t1", &h, NOW).await.unwrap(),
        TakeCode::Taken(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_rotated_once_across_instances_and_family_revoked() {
    let (a, b, _guard) = two_instances().await;
    a.put_refresh(&refresh("t1", "rt-0", "fam-1"))
        .await
        .unwrap();
    let results = race(&a, &b, |store, i| async move {
        let next = refresh("t1", &format!("rt-next-{i}"), "fam-1");
        store
            .rotate_refresh("t1", &hash_secret("rt-0"), &next, NOW)
            .await
    })
    .await;
    let mut rotated = 0;
    let mut reused = 0;
    for result in &results {
        match result {
            Ok(Rotate::Rotated(old)) => {
                assert_eq!(old.token_hash, hash_secret("rt-0"));
                rotated += 1;
            }
            Ok(Rotate::Reused { family_id }) => {
                assert_eq!(family_id, "fam-1");
                reused += 1;
            }
            Ok(Rotate::Invalid) => {}
            Err(e) => panic!("rotation failed: {e:?}"),
        }
    }
    assert_eq!(rotated, 1, "{results:?}");
    assert!(reused >= 1, "{results:?}");
    // No lost family: the winner's new token went with the rest.
    for i in 0..RACERS {
        let next = hash_secret(&format!("rt-next-{i}"));
        assert_eq!(a.get_refresh("t1", &next, NOW).await.unwrap(), None, "{i}");
    }
    let left: i64 = raw_client()
        .await
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.refresh_tokens WHERE family_id = 'fam-1'",
                a.schema()
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    assert!(matches!(
        b.put_refresh(&refresh("t1", "rt-late", "fam-1")).await,
        Err(StoreError::FamilyRevoked)
    ));
}

/// A refresh token stored while its family is being revoked (a code exchange racing the
/// replay of its code) is either refused or revoked with the family: never left current.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_refresh_racing_revocation_never_survives() {
    let (a, b, _guard) = two_instances().await;
    let results = race(&a, &b, |store, i| async move {
        let family = format!("fam-{}", i / 2);
        if i % 2 == 0 {
            let row = refresh("t1", &format!("rt-{i}"), &family);
            store.put_refresh(&row).await.map(|()| false)
        } else {
            store.revoke_family("t1", &family, NOW).await
        }
    })
    .await;
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(_) | Err(StoreError::FamilyRevoked) => {}
            Err(e) => panic!("call {i} failed: {e:?}"),
        }
    }
    for i in (0..RACERS).step_by(2) {
        let token = hash_secret(&format!("rt-{i}"));
        assert_eq!(a.get_refresh("t1", &token, NOW).await.unwrap(), None, "{i}");
    }
}

/// Of concurrent `swap_upstream` calls from one version on two instances, exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_swapped_once_across_instances() {
    let (a, b, _guard) = two_instances().await;
    a.put_upstream(&upstream("t1", "acct", 1)).await.unwrap();
    let results = race(&a, &b, |store, i| async move {
        let mut row = upstream("t1", "acct", 2);
        row.sealed = format!("racer-{i}");
        let won = store.swap_upstream(&row, 1).await;
        (won, row)
    })
    .await;
    let winners: Vec<_> = results
        .iter()
        .filter(|(won, _)| matches!(won, Ok(true)))
        .map(|(_, row)| row)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().all(|(won, _)| won.is_ok()), "{results:?}");
    assert_eq!(
        b.get_upstream("t1", "acct", NOW).await.unwrap().as_ref(),
        Some(winners[0])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_key_created_once_across_instances() {
    let (a, b, _guard) = two_instances().await;
    let results = race(&a, &b, |store, _| async move {
        store
            .put_signing_key(&signing_key("t1", "k-2026", NOW))
            .await
    })
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict(_))))
        .count();
    assert_eq!((ok, conflicts), (1, RACERS - 1), "{results:?}");
    assert_eq!(b.list_signing_keys("t1", NOW).await.unwrap().len(), 1);
}

#[tokio::test]
async fn unreachable_server_fails_fast_without_the_password() {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let options = PostgresOptions::new("postgres://mcp_auth:hunter2-pw@127.0.0.1:1/db")
        .connect_timeout(Duration::from_secs(2));
    assert!(!format!("{options:?}").contains("hunter2"));
    let started = Instant::now();
    let err = PostgresStore::connect_with(options).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    let message = chain(&err);
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!format!("{err:?}").contains("hunter2"));
}

#[tokio::test]
async fn wrong_password_is_refused_without_the_password() {
    let url = common::url();
    let Some((_, rest)) = url.split_once('@') else {
        panic!("the test URL has no user info");
    };
    let err = PostgresStore::connect(&format!("postgres://mcp_auth:not-the-pw-4711@{rest}"))
        .await
        .unwrap_err();
    let message = chain(&err);
    assert!(
        message.contains("cannot connect to PostgreSQL at "),
        "{message}"
    );
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert!(!message.contains("not-the-pw-4711"), "{message}");
    assert!(!format!("{err:?}").contains("not-the-pw-4711"));
}

#[tokio::test]
async fn invalid_options_are_refused() {
    for bad in ["Upper", "a-b", "x; DROP TABLE users", "pg_catalog", ""] {
        let err = PostgresStore::connect_with(options(bad)).await.unwrap_err();
        assert!(chain(&err).contains("schema name"), "{bad}: {err:?}");
    }
    let err = PostgresStore::connect("mysql://u:p@127.0.0.1/db")
        .await
        .unwrap_err();
    assert!(chain(&err).contains("postgres://"), "{err:?}");
    let err = PostgresStore::connect_with(options("t_unused").pool_size(0))
        .await
        .unwrap_err();
    assert!(chain(&err).contains("pool size"), "{err:?}");
}

#[tokio::test]
async fn debug_shows_the_target_not_the_password() {
    let (store, guard) = fresh_store().await;
    let printed = format!("{store:?}");
    assert!(printed.contains("target: \""), "{printed}");
    assert!(printed.contains(&guard.0), "{printed}");
    // The test URL's user info is `mcp_auth:mcp_auth@`.
    assert!(!printed.contains('@'), "{printed}");
}

#[tokio::test]
async fn sweeper_runs() {
    let (store, _guard) = fresh_store().await;
    // Expired long ago by the system clock.
    let mut old = code("t1", "old", "fam");
    old.expires_at = 1;
    store.put_code(&old).await.unwrap();
    let sweeper = store.spawn_sweeper(Duration::from_secs(3600));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: i64 = raw_client()
            .await
            .query_one(
                &format!("SELECT count(*) FROM {}.codes", store.schema()),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the sweeper did not sweep");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sweeper.abort();
}
