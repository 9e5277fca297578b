//! Redis-specific checks: atomicity across two store instances, key TTLs, tenant key
//! isolation, and behaviour while Redis is down.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_auth_server::store::suite::{self, NOW};
use mcp_auth_server::store::{Rotate, Store, StoreError, TakeCode, hash_secret, unix_now};
use mcp_auth_store_redis::{RedisOptions, RedisStore};
use redis::AsyncCommands;
use tokio::sync::Barrier;

const RACERS: usize = 64;

/// Two stores (two connection managers: two "instances") on one fresh prefix.
async fn two_instances() -> (Arc<dyn Store>, Arc<dyn Store>, common::Cleanup) {
    let (a, cleanup) = common::fresh_store().await;
    let b = RedisStore::connect_with(common::options(&cleanup.prefix))
        .await
        .unwrap();
    (Arc::new(a), Arc::new(b), cleanup)
}

/// Runs `RACERS` calls of `op`, alternately on each instance, released together.
async fn race<T, Fut>(
    a: &Arc<dyn Store>,
    b: &Arc<dyn Store>,
    op: impl Fn(usize, Arc<dyn Store>) -> Fut,
) -> Vec<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let fut = op(i, store);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                fut.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(RACERS);
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_take_code_across_instances_has_one_winner() {
    let (a, b, _cleanup) = two_instances().await;
    a.put_code(&suite::code("t1", "code-1", "fam-1"))
        .await
        .unwrap();
    let h = hash_secret("code-1");
    let results = race(&a, &b, |_, s| {
        let h = h.clone();
        async move { s.take_code("t1", &h, NOW).await.unwrap() }
    })
    .await;
    let taken = results
        .iter()
        .filter(|r| matches!(r, TakeCode::Taken(_)))
        .count();
    let replayed = results
        .iter()
        .filter(|r| matches!(r, TakeCode::Replayed { family_id, .. } if family_id == "fam-1"))
        .count();
    assert_eq!((taken, replayed), (1, RACERS - 1), "{results:?}");
}

/// Redemptions of one code on two instances, each replay revoking the family: one winner,
/// whose token went in with the redemption and out with the revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redeem_code_across_instances_has_one_winner() {
    let (a, b, _cleanup) = two_instances().await;
    a.put_code(&suite::code("t1", "code-1", "fam-1"))
        .await
        .unwrap();
    let h = hash_secret("code-1");
    let results = race(&a, &b, |i, s| {
        let h = h.clone();
        async move {
            let new = suite::new_refresh(&format!("rt-{i}"));
            let got = s.redeem_code("t1", &h, Some(&new), NOW).await.unwrap();
            if let TakeCode::Replayed { family_id, .. } = &got {
                s.revoke_family("t1", family_id, NOW).await.unwrap();
            }
            (got, new.token_hash)
        }
    })
    .await;
    let taken = results
        .iter()
        .filter(|(r, _)| matches!(r, TakeCode::Taken(_)))
        .count();
    let replayed = results
        .iter()
        .filter(|(r, _)| matches!(r, TakeCode::Replayed { family_id, .. } if family_id == "fam-1"))
        .count();
    assert_eq!((taken, replayed), (1, RACERS - 1), "{results:?}");
    for (_, hash) in &results {
        assert_eq!(a.get_refresh("t1", hash, NOW).await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotation_across_instances_has_one_winner_and_revokes_the_family() {
    let (a, b, _cleanup) = two_instances().await;
    let r0 = suite::refresh("t1", "rt-0", "fam-1");
    a.put_refresh(&r0).await.unwrap();
    let old = r0.token_hash.clone();
    let results = race(&a, &b, |i, s| {
        let old = old.clone();
        async move {
            let new = suite::refresh("t1", &format!("rt-new-{i}"), "fam-1");
            let got = s.rotate_refresh("t1", &old, &new, NOW).await.unwrap();
            (got, new.token_hash)
        }
    })
    .await;
    let rotated: Vec<_> = results
        .iter()
        .filter(|(r, _)| matches!(r, Rotate::Rotated(_)))
        .collect();
    assert_eq!(rotated.len(), 1, "{results:?}");
    let reused = results
        .iter()
        .filter(|(r, _)| matches!(r, Rotate::Reused { family_id } if family_id == "fam-1"))
        .count();
    let invalid = results
        .iter()
        .filter(|(r, _)| *r == Rotate::Invalid)
        .count();
    assert!(reused >= 1, "{results:?}");
    assert_eq!(1 + reused + invalid, RACERS);
    // The winner's new token went with the family.
    let winner = &rotated[0].1;
    assert_eq!(a.get_refresh("t1", winner, NOW).await.unwrap(), None);
    assert_eq!(b.get_refresh("t1", winner, NOW).await.unwrap(), None);
    for (_, hash) in &results {
        assert_eq!(a.get_refresh("t1", hash, NOW).await.unwrap(), None);
    }
    let late = a
        .put_refresh(&suite::refresh("t1", "rt-late", "fam-1"))
        .await;
    assert!(matches!(late, Err(StoreError::FamilyRevoked)), "{late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_put_signing_key_has_one_winner() {
    let (a, b, _cleanup) = two_instances().await;
    let results = race(&a, &b, |i, s| async move {
        s.put_signing_key(&suite::signing_key("t1", "k1", NOW + i as u64))
            .await
    })
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let conflict = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict(_))))
        .count();
    assert_eq!((ok, conflict), (1, RACERS - 1), "{results:?}");
    assert_eq!(a.list_signing_keys("t1", NOW).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_swap_upstream_across_instances_has_one_winner() {
    let (a, b, _cleanup) = two_instances().await;
    a.put_upstream(&suite::upstream("t1", "acct", 1))
        .await
        .unwrap();
    let results = race(&a, &b, |i, s| async move {
        let mut row = suite::upstream("t1", "acct", 2);
        row.sealed = format!("racer-{i}");
        let won = s.swap_upstream(&row, 1).await.unwrap();
        (won, row)
    })
    .await;
    let winners: Vec<_> = results.iter().filter(|(won, _)| *won).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert_eq!(
        b.get_upstream("t1", "acct", NOW).await.unwrap().as_ref(),
        Some(&winners[0].1)
    );
}

/// The families of a user's grants to a client are revoked together, across instances'
/// concurrent rotations (one per family): no token of theirs is left current.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_client_grants_racing_rotations_leaves_no_token() {
    let (a, b, _cleanup) = two_instances().await;
    let revoker = RACERS / 2;
    let rotators = (0..RACERS).filter(|&i| i != revoker);
    for i in rotators.clone() {
        a.put_refresh(&suite::refresh(
            "t1",
            &format!("rt-{i}-0"),
            &format!("fam-{i}"),
        ))
        .await
        .unwrap();
    }
    let results = race(&a, &b, |i, s| async move {
        if i == revoker {
            let families = s
                .revoke_client_grants("t1", "alice", "client-1", NOW)
                .await
                .unwrap();
            return Some(families);
        }
        let old = hash_secret(&format!("rt-{i}-0"));
        let new = suite::refresh("t1", &format!("rt-{i}-1"), &format!("fam-{i}"));
        s.rotate_refresh("t1", &old, &new, NOW).await.unwrap();
        None
    })
    .await;
    // A rotation never empties a family: all were there to revoke.
    let mut all: Vec<String> = rotators.clone().map(|i| format!("fam-{i}")).collect();
    all.sort();
    let revoked: Vec<_> = results.into_iter().flatten().collect();
    assert_eq!(revoked, [all]);
    for i in rotators {
        for n in 0..2 {
            let h = hash_secret(&format!("rt-{i}-{n}"));
            assert_eq!(a.get_refresh("t1", &h, NOW).await.unwrap(), None, "{i}");
        }
        let late = suite::refresh("t1", &format!("late-{i}"), &format!("fam-{i}"));
        let got = b.put_refresh(&late).await;
        assert!(matches!(got, Err(StoreError::FamilyRevoked)), "{got:?}");
    }
}

#[tokio::test]
async fn rows_with_an_expiry_get_a_key_ttl() {
    let prefix = common::random_prefix();
    let _cleanup = common::Cleanup {
        url: common::url(),
        prefix: prefix.clone(),
    };
    // The real clock here: TTLs are what Redis counts down.
    let store = RedisStore::connect_with(RedisOptions::new(common::url()).prefix(&prefix))
        .await
        .unwrap();
    let now = unix_now();
    let mut code = suite::code("acme", "code-1", "fam-1");
    code.expires_at = now + 600;
    store.put_code(&code).await.unwrap();
    store
        .put_client(&suite::client("acme", "client-1"))
        .await
        .unwrap();
    let mut refresh = suite::refresh("acme", "rt-1", "fam-1");
    refresh.expires_at = now + 3600;
    store.put_refresh(&refresh).await.unwrap();

    let mut raw = common::raw().await;
    let code_key = format!("{prefix}t4:acme:code:{}", code.code_hash);
    let ttl: i64 = raw.ttl(&code_key).await.unwrap();
    let want = 600 + RedisOptions::DEFAULT_TTL_MARGIN_SECS as i64;
    assert!(
        (want - 5..=want).contains(&ttl),
        "code TTL {ttl}, want ~{want}"
    );
    let rt_key = format!("{prefix}t4:acme:refresh:{}", refresh.token_hash);
    let ttl: i64 = raw.ttl(&rt_key).await.unwrap();
    let want = 3600 + RedisOptions::DEFAULT_TTL_MARGIN_SECS as i64;
    assert!(
        (want - 5..=want).contains(&ttl),
        "refresh TTL {ttl}, want ~{want}"
    );
    // A client without `expires_at` never expires.
    let ttl: i64 = raw
        .ttl(format!("{prefix}t4:acme:client:client-1"))
        .await
        .unwrap();
    assert_eq!(ttl, -1);
    // The expiry index has the code's expiry.
    let score: Option<f64> = raw
        .zscore(format!("{prefix}expiry"), &code_key)
        .await
        .unwrap();
    assert_eq!(score, Some(code.expires_at as f64));
}

/// The token `redeem_code` stores is kept like one from `put_refresh`: key TTL, expiry
/// index, family and client sets; a revoked family stores nothing and spends nothing.
#[tokio::test]
async fn redeem_code_stores_the_token_with_its_indexes() {
    let (store, cleanup) = common::fresh_store().await;
    let p = &cleanup.prefix;
    let code = suite::code("t1", "code-1", "fam-1");
    store.put_code(&code).await.unwrap();
    let new = suite::new_refresh("rt-1");
    let got = store
        .redeem_code("t1", &code.code_hash, Some(&new), NOW)
        .await
        .unwrap();
    assert_eq!(got, TakeCode::Taken(code.clone()));

    let mut raw = common::raw().await;
    let rt_key = format!("{p}t2:t1:refresh:{}", new.token_hash);
    let family_set = format!("{p}t2:t1:family:fam-1");
    let by_client = format!("{p}t2:t1:by-client:client-1");
    let ttl: i64 = raw.ttl(&rt_key).await.unwrap();
    let want = 86_400 + RedisOptions::DEFAULT_TTL_MARGIN_SECS as i64;
    assert!(
        (want - 5..=want).contains(&ttl),
        "refresh TTL {ttl}, want ~{want}"
    );
    let score: Option<f64> = raw.zscore(format!("{p}expiry"), &rt_key).await.unwrap();
    assert_eq!(score, Some(new.expires_at as f64));
    let (family, client, fidx, cidx): (String, String, String, String) = redis::cmd("HMGET")
        .arg(&rt_key)
        .arg(&["family", "client", "fidx", "cidx"])
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!((family.as_str(), client.as_str()), ("fam-1", "client-1"));
    assert_eq!((&fidx, &cidx), (&family_set, &by_client));
    let in_family: bool = raw.sismember(&family_set, &rt_key).await.unwrap();
    let in_client: bool = raw.sismember(&by_client, &rt_key).await.unwrap();
    assert!(in_family && in_client);
    let ttl: i64 = raw.ttl(&family_set).await.unwrap();
    assert!(ttl >= want - 5, "family set TTL {ttl}");

    // Deleting the client takes the token with it (RFC 7592 §2.3).
    store
        .put_client(&suite::client("t1", "client-1"))
        .await
        .unwrap();
    assert!(store.delete_client("t1", "client-1").await.unwrap());
    assert_eq!(
        store.get_refresh("t1", &new.token_hash, NOW).await.unwrap(),
        None
    );

    // A revoked family: refused, no token, and the code is still there to take.
    let code = suite::code("t1", "code-2", "fam-2");
    store.put_code(&code).await.unwrap();
    store.revoke_family("t1", "fam-2", NOW).await.unwrap();
    let new = suite::new_refresh("rt-2");
    let got = store
        .redeem_code("t1", &code.code_hash, Some(&new), NOW)
        .await;
    assert!(matches!(got, Err(StoreError::FamilyRevoked)), "{got:?}");
    let rt_key = format!("{p}t2:t1:refresh:{}", new.token_hash);
    let exists: bool = raw.exists(&rt_key).await.unwrap();
    assert!(!exists);
    let spent: Option<String> = raw
        .hget(format!("{p}t2:t1:code:{}", code.code_hash), "spent")
        .await
        .unwrap();
    assert_eq!(spent, None);
    assert_eq!(
        store.take_code("t1", &code.code_hash, NOW).await.unwrap(),
        TakeCode::Taken(code)
    );
}

#[tokio::test]
async fn sweep_does_not_count_rows_redis_already_expired() {
    let prefix = common::random_prefix();
    let _cleanup = common::Cleanup {
        url: common::url(),
        prefix: prefix.clone(),
    };
    let store = RedisStore::connect_with(
        RedisOptions::new(common::url())
            .prefix(&prefix)
            .ttl_margin_secs(0),
    )
    .await
    .unwrap();
    let now = unix_now();
    let mut soon = suite::code("t1", "code-soon", "fam-1");
    soon.expires_at = now + 1;
    store.put_code(&soon).await.unwrap();
    let mut later = suite::code("t1", "code-later", "fam-2");
    later.expires_at = now + 1000;
    store.put_code(&later).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Redis dropped `code-soon` by itself: only `code-later` is deleted by the sweep.
    assert_eq!(store.sweep(now + 2000).await.unwrap(), 1);
    assert_eq!(store.sweep(now + 2000).await.unwrap(), 0);
}

#[tokio::test]
async fn tenant_names_cannot_collide() {
    let (store, _cleanup) = common::fresh_store().await;
    // Pairs of (tenant, ID) that would spell the same key if simply joined with ':'.
    let pairs = [
        (("a", "b:client:c"), ("a:client:b", "c")),
        (("a:b", "c"), ("a", "b:c")),
        (("1:x", "y"), ("1", "x:y")),
        (("t3:abc", "d"), ("t3", "abc:d")),
    ];
    for ((t1, id1), (t2, id2)) in pairs {
        let mut c1 = suite::client(t1, id1);
        c1.metadata = serde_json::json!({"who": 1});
        let mut c2 = suite::client(t2, id2);
        c2.metadata = serde_json::json!({"who": 2});
        store.put_client(&c1).await.unwrap();
        store.put_client(&c2).await.unwrap();
        assert_eq!(
            store.get_client(t1, id1, NOW).await.unwrap(),
            Some(c1.clone())
        );
        assert_eq!(
            store.get_client(t2, id2, NOW).await.unwrap(),
            Some(c2.clone())
        );

        let p1 = suite::pending(t1, id1);
        store.put_pending(&p1).await.unwrap();
        assert_eq!(store.get_pending(t2, id2, NOW).await.unwrap(), None);

        store
            .put_consent(&suite::consent(t1, id1, "c"))
            .await
            .unwrap();
        assert_eq!(store.get_consent(t2, id2, "c").await.unwrap(), None);

        assert!(store.delete_client(t2, id2).await.unwrap());
        assert_eq!(store.get_client(t1, id1, NOW).await.unwrap(), Some(c1));
        assert!(store.delete_client(t1, id1).await.unwrap());
    }
    // Consent keys: subject and client ID are both free text.
    let c1 = suite::consent("t", "a:b", "c");
    let c2 = suite::consent("t", "a", "b:c");
    store.put_consent(&c1).await.unwrap();
    assert_eq!(store.get_consent("t", "a", "b:c").await.unwrap(), None);
    store.put_consent(&c2).await.unwrap();
    assert!(store.delete_consent("t", "a", "b:c").await.unwrap());
    assert_eq!(store.get_consent("t", "a:b", "c").await.unwrap(), Some(c1));
}

/// The client index still lists a pending request that was since replaced by one of
/// another client under the same ID: deleting the first client leaves it alone.
#[tokio::test]
async fn delete_client_spares_rows_reused_by_another_client() {
    let (store, _cleanup) = common::fresh_store().await;
    store
        .put_pending(&suite::pending("t1", "p-1"))
        .await
        .unwrap();
    let mut p = suite::pending("t1", "p-1");
    p.client_id = "client-2".into();
    store.put_pending(&p).await.unwrap();
    store
        .put_client(&suite::client("t1", "client-1"))
        .await
        .unwrap();
    assert!(store.delete_client("t1", "client-1").await.unwrap());
    assert_eq!(store.get_pending("t1", "p-1", NOW).await.unwrap(), Some(p));
}

/// Sweeping everything leaves only what never expires, and no index entries behind.
#[tokio::test]
async fn sweep_leaves_no_index_entries_behind() {
    let (store, cleanup) = common::fresh_store().await;
    store
        .put_code(&suite::code("t1", "code-1", "fam-1"))
        .await
        .unwrap();
    let r0 = suite::refresh("t1", "rt-0", "fam-1");
    store.put_refresh(&r0).await.unwrap();
    let r1 = suite::refresh("t1", "rt-1", "fam-1");
    store
        .rotate_refresh("t1", &r0.token_hash, &r1, NOW)
        .await
        .unwrap();
    store
        .put_pending(&suite::pending("t1", "p-1"))
        .await
        .unwrap();
    store
        .put_consent(&suite::consent("t1", "alice", "client-1"))
        .await
        .unwrap();
    store.revoke_access("t1", "jti", NOW + 5).await.unwrap();
    store
        .put_session(&suite::session("t1", "cookie-1"))
        .await
        .unwrap();
    store
        .put_upstream(&suite::upstream("t1", "github:1", 1))
        .await
        .unwrap();
    assert!(
        store
            .swap_upstream(&suite::upstream("t1", "github:1", 2), 1)
            .await
            .unwrap()
    );
    assert_eq!(store.sweep(NOW + 1_000_000).await.unwrap(), 7);

    let mut raw = common::raw().await;
    let mut left = common::keys_under(&mut raw, &cleanup.prefix).await;
    left.sort();
    let p = &cleanup.prefix;
    let consent = format!("{p}t2:t1:consent:5:alice:client-1");
    assert_eq!(
        left,
        [
            format!("{p}t2:t1:by-client:client-1"),
            format!("{p}t2:t1:by-subject:alice"),
            consent.clone(),
            format!("{p}t2:t1:consents"),
        ]
    );
    for set in [&left[0], &left[1], &left[3]] {
        let members: Vec<String> = raw.smembers(set).await.unwrap();
        assert_eq!(members, std::slice::from_ref(&consent), "{set}");
        let ttl: i64 = raw.ttl(set).await.unwrap();
        assert_eq!(
            ttl, -1,
            "{set}: a consent never expires, nor its index sets"
        );
    }

    // Withdrawing the consent empties its index sets, which Redis then deletes.
    assert!(
        store
            .delete_consent("t1", "alice", "client-1")
            .await
            .unwrap()
    );
    let left = common::keys_under(&mut raw, &cleanup.prefix).await;
    assert!(left.is_empty(), "{left:?}");
}

/// Consents of users whose names would spell each other's keys if joined with `:` are
/// listed apart, and a tenant's listing never shows another tenant's.
#[tokio::test]
async fn consent_listings_cannot_collide() {
    let (store, _cleanup) = common::fresh_store().await;
    let c1 = suite::consent("t", "a:b", "c");
    let c2 = suite::consent("t", "a", "b:c");
    let c3 = suite::consent("t:a", "b", "c");
    for c in [&c1, &c2, &c3] {
        store.put_consent(c).await.unwrap();
    }
    let listed = store.list_consents("t", Some("a")).await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&c2));
    let listed = store.list_consents("t", Some("a:b")).await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&c1));
    assert_eq!(store.list_consents("t", None).await.unwrap(), [c2, c1]);
    assert_eq!(store.list_consents("t:a", None).await.unwrap(), [c3]);
}

/// Session and upstream rows get a key TTL and their place in the expiry index; a swap
/// moves both to the new expiry.
#[tokio::test]
async fn sessions_and_upstream_rows_get_a_key_ttl() {
    let (store, cleanup) = common::fresh_store().await;
    let p = &cleanup.prefix;
    let session = suite::session("t1", "cookie-1");
    store.put_session(&session).await.unwrap();
    let up = suite::upstream("t1", "github:1", 1);
    store.put_upstream(&up).await.unwrap();
    let mut raw = common::raw().await;
    let margin = RedisOptions::DEFAULT_TTL_MARGIN_SECS as i64;
    let session_key = format!("{p}t2:t1:session:{}", session.session_hash);
    let up_key = format!("{p}t2:t1:upstream:github:1");
    for (key, exp) in [(&session_key, session.expires_at), (&up_key, up.expires_at)] {
        let want = (exp - NOW) as i64 + margin;
        let ttl: i64 = raw.ttl(key).await.unwrap();
        assert!(
            (want - 5..=want).contains(&ttl),
            "{key}: TTL {ttl}, want ~{want}"
        );
        let score: Option<f64> = raw.zscore(format!("{p}expiry"), key).await.unwrap();
        assert_eq!(score, Some(exp as f64));
    }
    let mut next = suite::upstream("t1", "github:1", 2);
    next.expires_at = NOW + 10;
    assert!(store.swap_upstream(&next, 1).await.unwrap());
    let ttl: i64 = raw.ttl(&up_key).await.unwrap();
    assert!((10 + margin - 5..=10 + margin).contains(&ttl), "TTL {ttl}");
    let score: Option<f64> = raw.zscore(format!("{p}expiry"), &up_key).await.unwrap();
    assert_eq!(score, Some((NOW + 10) as f64));
    let ver: Option<String> = raw.hget(&up_key, "ver").await.unwrap();
    assert_eq!(ver.as_deref(), Some("2"));
}

#[tokio::test]
async fn debug_and_errors_never_show_the_password() {
    let port = free_port();
    let url = format!("redis://user:hunter2@127.0.0.1:{port}/0");
    let options = RedisOptions::new(&url).connect_timeout(Duration::from_secs(1));
    assert!(!format!("{options:?}").contains("hunter2"));
    let err = RedisStore::connect_with(options).await.unwrap_err();
    let printed = format!("{err:?} {}", error_chain(&err));
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains(&format!("127.0.0.1:{port}")), "{printed}");

    let err = RedisStore::connect("redis://user:hunter2@[::1")
        .await
        .unwrap_err();
    let printed = format!("{err:?} {}", error_chain(&err));
    assert!(!printed.contains("hunter2"), "{printed}");

    let (store, _cleanup) = common::fresh_store().await;
    assert!(!format!("{store:?}").contains("hunter2"));
}

#[tokio::test]
async fn connect_to_an_unreachable_address_fails_quickly_naming_it() {
    let port = free_port();
    let started = Instant::now();
    let err = RedisStore::connect(&format!("redis://127.0.0.1:{port}/0"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    let chain = error_chain(&err);
    assert!(chain.contains(&format!("127.0.0.1:{port}")), "{chain}");
}

/// Redis goes away: calls fail with `Backend` within the timeouts; Redis comes back on the
/// same port: the same store works again, scripts included (they are reloaded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_fails_fast_and_recovers() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("mcp-auth-redis-{}", common::random_hex()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = PrivateRedis::start(port, &dir);
    let store = RedisStore::connect_with(
        RedisOptions::new(format!("redis://127.0.0.1:{port}/0"))
            .ttl_clock(|| NOW)
            .connect_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    store.put_user(&suite::user("t1", "alice")).await.unwrap();
    store
        .put_code(&suite::code("t1", "code-1", "fam-1"))
        .await
        .unwrap();

    // Frozen (SIGSTOP): the connection stays open but nothing answers; the response
    // timeout ends each call.
    server.signal("STOP");
    assert_fails_fast(&store).await;
    server.signal("CONT");
    recovered(&store, "carol").await;

    // Gone (SIGKILL): connections are refused.
    server.stop();
    assert_fails_fast(&store).await;

    let _server = PrivateRedis::start(port, &dir);
    recovered(&store, "bob").await;
    // Written with appendonly on before the outage: survived the restart.
    assert!(store.get_user("t1", "alice").await.unwrap().is_some());
    // A script after the restart (EVALSHA answers NOSCRIPT; the script is loaded again).
    assert!(matches!(
        store
            .take_code("t1", &hash_secret("code-1"), NOW)
            .await
            .unwrap(),
        TakeCode::Taken(_)
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Calls on a store whose Redis is unreachable fail with `Backend` within the timeouts
/// (500 ms + 500 ms here), again and again.
async fn assert_fails_fast(store: &RedisStore) {
    for _ in 0..3 {
        let started = Instant::now();
        let got = store.get_user("t1", "alice").await;
        eprintln!("get_user: {got:?} after {:?}", started.elapsed());
        assert!(matches!(got, Err(StoreError::Backend(_))), "{got:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let got = store.take_code("t1", &hash_secret("code-1"), NOW).await;
        eprintln!("take_code: {got:?} after {:?}", started.elapsed());
        assert!(matches!(got, Err(StoreError::Backend(_))), "{got:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}

/// Waits (up to 20 s) until the store writes and reads again: it reconnects by itself.
async fn recovered(store: &RedisStore, username: &str) {
    let started = Instant::now();
    loop {
        match store.put_user(&suite::user("t1", username)).await {
            Ok(()) => break,
            Err(e) if started.elapsed() < Duration::from_secs(20) => {
                eprintln!("not yet recovered: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store did not recover: {e:?}"),
        }
    }
    eprintln!("recovered after {:?}", started.elapsed());
    assert!(store.get_user("t1", username).await.unwrap().is_some());
}

/// A `redis-server` of this test's own on a loopback port, with an append-only file in
/// `dir`, killed when dropped.
struct PrivateRedis(Option<Child>);

impl PrivateRedis {
    fn start(port: u16, dir: &std::path::Path) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self(Some(child))
    }

    /// Sends a signal (`STOP`, `CONT`) to the server.
    fn signal(&self, signal: &str) {
        if let Some(child) = &self.0 {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nobody listens on (just now).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The error and its sources, one per line.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push('\n');
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
