//! The conformance suite of [`Store`]: one set of checks that every backend passes, so the
//! backends cannot drift apart (cargo feature `store-test-suite`).
//!
//! A backend runs it from its tests with [`store_suite!`](crate::store_suite), giving a
//! closure that makes a fresh, empty store for each check:
//!
//! ```ignore
//! // tests/suite.rs of a backend crate, with tokio (macros, rt-multi-thread) as a
//! // dev-dependency and mcp-auth-server's `store-test-suite` feature on.
//! mcp_auth_server::store_suite!(async || MyStore::open_temporary().await);
//! ```
//!
//! The closure may return the store itself or a [`Fixture`], which can also hold a guard
//! (a temporary directory, a server process) that must live as long as the store.
//!
//! The checks are plain `async fn`s too, for a backend that wants to call them differently.

use std::any::Any;
use std::sync::Arc;

use tokio::sync::Barrier;

use super::{
    ClientRow, CodeRow, ConsentRow, DeviceAuthRow, DeviceDecision, DevicePoll, DeviceStatus,
    NewRefresh, PendingAuthRow, REVOKED_FAMILY_RETENTION_SECS, RefreshRow, RegistrationKind,
    Rotate, SessionRow, SigningKeyRow, Store, StoreError, TakeCode, UpstreamRow, UserRow,
    hash_secret,
};
use mcp_auth_types::SecretString;

/// "Now" in the suite.
pub const NOW: u64 = 1_700_000_000;

/// How many tasks race in the concurrency checks.
pub const RACERS: usize = 16;

/// A store under test, with whatever must outlive it.
pub struct Fixture {
    store: Arc<dyn Store>,
    // Dropped after `store` (fields drop in order), so a temporary directory outlives the
    // database in it.
    _guard: Option<Box<dyn Any + Send>>,
}

impl Fixture {
    /// A store and a value to keep alive as long as the store (a temporary directory).
    pub fn with_guard(store: impl Store + 'static, guard: impl Any + Send) -> Self {
        Self {
            store: Arc::new(store),
            _guard: Some(Box::new(guard)),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

impl<S: Store + 'static> From<S> for Fixture {
    fn from(store: S) -> Self {
        Self {
            store: Arc::new(store),
            _guard: None,
        }
    }
}

/// Defines one `#[tokio::test]` per check of the suite, each on a fresh store made by
/// `$make` (a closure returning a future of a store or a [`Fixture`]).
///
/// The crate using it needs `tokio` (features `macros`, `rt-multi-thread`) as a
/// dev-dependency. Call it inside a module to keep the test names apart from others.
#[macro_export]
macro_rules! store_suite {
    ($make:expr) => {
        $crate::__store_suite_tests!($make;
            client_roundtrip,
            client_expiry,
            delete_client_cascades,
            user_roundtrip,
            consent_roundtrip,
            consents_are_listed_in_order,
            revoke_client_grants_revokes_the_users_families,
            revoke_client_grants_takes_the_users_unredeemed_codes,
            session_roundtrip_expiry_and_delete,
            upstream_roundtrip_expiry_and_delete,
            upstream_swap_compares_versions,
            upstream_concurrent_swap_has_one_winner,
            signing_keys_publish_until_not_after,
            pending_roundtrip_and_expiry,
            pending_take_is_single_use,
            pending_concurrent_take_has_one_winner,
            code_take_is_single_use,
            code_concurrent_take_has_one_winner,
            code_expiry,
            code_replay_revokes_the_family,
            code_redeem_stores_the_first_refresh_token,
            code_concurrent_redeem_and_replay_leave_one_grant_revoked,
            duplicate_keys_conflict,
            refresh_rotation_chain,
            refresh_chain_outlives_its_first_tokens_and_sweeps,
            refresh_reuse_revokes_the_family,
            refresh_concurrent_rotation_has_one_winner,
            refresh_rotation_checks_the_successor,
            refresh_expiry,
            access_revocation,
            tenants_are_isolated,
            tenants_are_isolated_in_consents_sessions_and_upstream,
            sweep_removes_expired_rows,
            sweep_removes_expired_sessions_and_upstream_rows,
            device_roundtrip_and_user_code_lookup,
            device_user_codes_are_unique_while_unexpired,
            device_decision_is_taken_once,
            device_concurrent_decisions_have_one_winner,
            device_poll_state_machine,
            device_poll_hands_out_an_approval_once,
            device_concurrent_poll_has_one_winner,
            device_rows_are_isolated_by_tenant_and_client,
            device_rows_are_swept_and_deleted_with_their_client,
            claim_once_is_single_use_until_expiry,
            claim_once_concurrent_has_one_winner,
            sweep_removes_expired_claims,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_suite_tests {
    ($make:expr; $($check:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let fixture = $crate::store::suite::Fixture::from(($make)().await);
                $crate::store::suite::$check(fixture).await;
            }
        )+
    };
}

// ---------------------------------------------------------------------------------------
// Sample rows.

/// A dynamically registered confidential client.
pub fn client(tenant: &str, client_id: &str) -> ClientRow {
    ClientRow {
        tenant: tenant.into(),
        client_id: client_id.into(),
        secret_hash: Some(hash_secret(&format!("secret-of-{client_id}"))),
        metadata: serde_json::json!({
            "client_name": "Sample",
            "redirect_uris": ["http://127.0.0.1:4242/callback"],
            "token_endpoint_auth_method": "client_secret_basic",
            "x-unknown": {"kept": [1, 2, 3]},
        }),
        registration_kind: RegistrationKind::Dynamic,
        registration_token_hash: Some(hash_secret(&format!("rat-of-{client_id}"))),
        created_at: NOW,
        expires_at: None,
    }
}

/// A user.
pub fn user(tenant: &str, username: &str) -> UserRow {
    UserRow {
        tenant: tenant.into(),
        username: username.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        created_at: NOW,
    }
}

/// An authorization code `code` (plaintext; stored hashed) of `family`, valid 60 s.
pub fn code(tenant: &str, code: &str, family: &str) -> CodeRow {
    CodeRow {
        tenant: tenant.into(),
        code_hash: hash_secret(code),
        client_id: "client-1".into(),
        redirect_uri: "http://127.0.0.1:4242/callback".into(),
        // RFC 7636 appendix B.
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        scope: "files:read files:write".into(),
        resource: Some("https://mcp.example.com/mcp".into()),
        subject: "alice".into(),
        nonce: Some("n-0S6_WzA2Mj".into()),
        expires_at: NOW + 60,
        family_id: family.into(),
    }
}

/// A refresh token `token` (plaintext; stored hashed) of `family`, valid a day.
pub fn refresh(tenant: &str, token: &str, family: &str) -> RefreshRow {
    RefreshRow {
        tenant: tenant.into(),
        token_hash: hash_secret(token),
        family_id: family.into(),
        client_id: "client-1".into(),
        subject: "alice".into(),
        scope: "files:read".into(),
        resource: Some("https://mcp.example.com/mcp".into()),
        expires_at: NOW + 86_400,
        created_at: NOW,
    }
}

/// An active signing key.
pub fn signing_key(tenant: &str, kid: &str, created_at: u64) -> SigningKeyRow {
    SigningKeyRow {
        tenant: tenant.into(),
        kid: kid.into(),
        alg: "ES256".into(),
        private_pem: SecretString::new(format!(
            "-----BEGIN PRIVATE KEY-----\nsecret-{kid}\n-----END PRIVATE KEY-----\n"
        )),
        public_jwk: serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": "x", "y": "y"}),
        created_at,
        not_after: None,
    }
}

/// A pending authorization request, valid 10 minutes.
pub fn pending(tenant: &str, id: &str) -> PendingAuthRow {
    let mut extra = serde_json::Map::new();
    extra.insert("ui_locales".into(), "de en".into());
    PendingAuthRow {
        id: id.into(),
        tenant: tenant.into(),
        client_id: "client-1".into(),
        redirect_uri: "http://127.0.0.1:4242/callback".into(),
        response_type: "code".into(),
        scope: Some("files:read".into()),
        state: Some("af0ifjsldkj".into()),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        code_challenge_method: "S256".into(),
        resource: Some("https://mcp.example.com/mcp".into()),
        nonce: None,
        prompt: Some("consent".into()),
        login_hint: None,
        extra,
        subject: None,
        csrf_hash: hash_secret(&format!("csrf-{id}")),
        created_at: NOW,
        expires_at: NOW + 600,
    }
}

/// A pending device authorization with device code `device_code` and user code
/// `user_code` (plaintext; stored hashed) for `client-1`, valid 10 minutes, interval 5 s.
pub fn device(tenant: &str, device_code: &str, user_code: &str) -> DeviceAuthRow {
    DeviceAuthRow {
        tenant: tenant.into(),
        device_code_hash: hash_secret(device_code),
        user_code_hash: hash_secret(user_code),
        client_id: "client-1".into(),
        scope: "files:read files:write".into(),
        resource: Some("https://mcp.example.com/mcp".into()),
        interval: 5,
        status: DeviceStatus::Pending,
        subject: None,
        granted_scope: None,
        last_poll: None,
        created_at: NOW,
        expires_at: NOW + 600,
    }
}

fn approve(subject: &str, scope: &str) -> DeviceDecision {
    DeviceDecision::Approve {
        subject: subject.into(),
        scope: scope.into(),
    }
}

/// A consent.
pub fn consent(tenant: &str, subject: &str, client_id: &str) -> ConsentRow {
    ConsentRow {
        tenant: tenant.into(),
        subject: subject.into(),
        client_id: client_id.into(),
        scope: "files:read".into(),
        granted_at: NOW,
    }
}

/// A login session whose cookie holds `cookie` (plaintext; stored hashed), valid an hour.
pub fn session(tenant: &str, cookie: &str) -> SessionRow {
    SessionRow {
        tenant: tenant.into(),
        session_hash: hash_secret(cookie),
        subject: "local:alice".into(),
        provider: "local".into(),
        created_at: NOW,
        expires_at: NOW + 3_600,
    }
}

/// An account's upstream tokens at `version`, kept a day.
pub fn upstream(tenant: &str, account: &str, version: u64) -> UpstreamRow {
    UpstreamRow {
        tenant: tenant.into(),
        account: account.into(),
        provider: "github".into(),
        sealed: format!("k1.nonce-{version}.sealed-tokens-of-{account}-v{version}"),
        version,
        created_at: NOW,
        updated_at: NOW + version,
        expires_at: NOW + 86_400,
    }
}

fn assert_key_eq(a: &SigningKeyRow, b: &SigningKeyRow) {
    assert_eq!(a.tenant, b.tenant);
    assert_eq!(a.kid, b.kid);
    assert_eq!(a.alg, b.alg);
    assert_eq!(a.private_pem.secret(), b.private_pem.secret());
    assert_eq!(a.public_jwk, b.public_jwk);
    assert_eq!(a.created_at, b.created_at);
    assert_eq!(a.not_after, b.not_after);
}

fn kids(keys: &[SigningKeyRow]) -> Vec<&str> {
    keys.iter().map(|k| k.kid.as_str()).collect()
}

// ---------------------------------------------------------------------------------------
// Checks.

/// Clients round-trip with their metadata intact (unknown fields included), are replaced
/// by a second put, and go away when deleted.
pub async fn client_roundtrip(f: Fixture) {
    let s = f.store();
    assert_eq!(s.get_client("t1", "client-1", NOW).await.unwrap(), None);
    let mut c = client("t1", "client-1");
    s.put_client(&c).await.unwrap();
    assert_eq!(
        s.get_client("t1", "client-1", NOW).await.unwrap(),
        Some(c.clone())
    );

    c.metadata["client_name"] = "Renamed".into();
    c.secret_hash = None;
    c.registration_token_hash = None;
    c.registration_kind = RegistrationKind::MetadataDocument;
    s.put_client(&c).await.unwrap();
    assert_eq!(
        s.get_client("t1", "client-1", NOW).await.unwrap(),
        Some(c.clone())
    );

    let mut st = client("t1", "static-1");
    st.registration_kind = RegistrationKind::Static;
    s.put_client(&st).await.unwrap();
    assert_eq!(s.get_client("t1", "static-1", NOW).await.unwrap(), Some(st));

    assert!(s.delete_client("t1", "client-1").await.unwrap());
    assert!(!s.delete_client("t1", "client-1").await.unwrap());
    assert_eq!(s.get_client("t1", "client-1", NOW).await.unwrap(), None);
}

/// A client past `expires_at` is missing.
pub async fn client_expiry(f: Fixture) {
    let s = f.store();
    let mut c = client("t1", "client-1");
    c.expires_at = Some(NOW + 10);
    s.put_client(&c).await.unwrap();
    assert!(
        s.get_client("t1", "client-1", NOW + 9)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        s.get_client("t1", "client-1", NOW + 10).await.unwrap(),
        None
    );
}

/// RFC 7592 §2.3: deleting a client invalidates its grants and tokens.
pub async fn delete_client_cascades(f: Fixture) {
    let s = f.store();
    s.put_client(&client("t1", "client-1")).await.unwrap();
    s.put_client(&client("t1", "client-2")).await.unwrap();
    s.put_code(&code("t1", "code-1", "fam-1")).await.unwrap();
    s.put_refresh(&refresh("t1", "rt-1", "fam-1"))
        .await
        .unwrap();
    s.put_pending(&pending("t1", "p-1")).await.unwrap();
    s.put_consent(&consent("t1", "alice", "client-1"))
        .await
        .unwrap();
    let mut other = refresh("t1", "rt-2", "fam-2");
    other.client_id = "client-2".into();
    s.put_refresh(&other).await.unwrap();
    s.put_consent(&consent("t1", "alice", "client-2"))
        .await
        .unwrap();

    assert!(s.delete_client("t1", "client-1").await.unwrap());

    let h = hash_secret("code-1");
    assert_eq!(s.take_code("t1", &h, NOW).await.unwrap(), TakeCode::Missing);
    let h = hash_secret("rt-1");
    assert_eq!(s.get_refresh("t1", &h, NOW).await.unwrap(), None);
    assert_eq!(s.get_pending("t1", "p-1", NOW).await.unwrap(), None);
    let got = s.get_consent("t1", "alice", "client-1").await.unwrap();
    assert_eq!(got, None);
    // The other client keeps everything.
    let h = hash_secret("rt-2");
    assert_eq!(s.get_refresh("t1", &h, NOW).await.unwrap(), Some(other));
    let got = s.get_consent("t1", "alice", "client-2").await.unwrap();
    assert!(got.is_some());
}

/// Users round-trip and are replaced by a second put (a password change).
pub async fn user_roundtrip(f: Fixture) {
    let s = f.store();
    assert_eq!(s.get_user("t1", "alice").await.unwrap(), None);
    let mut u = user("t1", "alice");
    s.put_user(&u).await.unwrap();
    assert_eq!(s.get_user("t1", "alice").await.unwrap(), Some(u.clone()));
    u.password_hash = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA".into();
    s.put_user(&u).await.unwrap();
    assert_eq!(s.get_user("t1", "alice").await.unwrap(), Some(u));
    assert_eq!(s.get_user("t1", "bob").await.unwrap(), None);
}

/// Consents round-trip, are replaced, and can be withdrawn.
pub async fn consent_roundtrip(f: Fixture) {
    let s = f.store();
    let mut c = consent("t1", "alice", "client-1");
    s.put_consent(&c).await.unwrap();
    let got = s.get_consent("t1", "alice", "client-1").await.unwrap();
    assert_eq!(got, Some(c.clone()));
    c.scope = "files:read files:write".into();
    c.granted_at = NOW + 5;
    s.put_consent(&c).await.unwrap();
    let got = s.get_consent("t1", "alice", "client-1").await.unwrap();
    assert_eq!(got, Some(c));
    assert_eq!(s.get_consent("t1", "bob", "client-1").await.unwrap(), None);
    assert_eq!(
        s.get_consent("t1", "alice", "client-2").await.unwrap(),
        None
    );
    assert!(s.delete_consent("t1", "alice", "client-1").await.unwrap());
    assert!(!s.delete_consent("t1", "alice", "client-1").await.unwrap());
    assert_eq!(
        s.get_consent("t1", "alice", "client-1").await.unwrap(),
        None
    );
}

/// Keys are listed newest first; a retired key stays published until `not_after`.
pub async fn signing_keys_publish_until_not_after(f: Fixture) {
    let s = f.store();
    assert!(s.list_signing_keys("t1", NOW).await.unwrap().is_empty());
    let old = signing_key("t1", "k-old", NOW - 100);
    let new = signing_key("t1", "k-new", NOW);
    s.put_signing_key(&old).await.unwrap();
    s.put_signing_key(&new).await.unwrap();
    let keys = s.list_signing_keys("t1", NOW).await.unwrap();
    assert_eq!(kids(&keys), ["k-new", "k-old"]);
    assert_key_eq(&keys[0], &new);
    assert_key_eq(&keys[1], &old);
    assert!(
        !format!("{keys:?}").contains("secret-k-"),
        "private key in Debug"
    );

    assert!(s.retire_signing_key("t1", "k-old", NOW + 50).await.unwrap());
    assert!(
        !s.retire_signing_key("t1", "k-none", NOW + 50)
            .await
            .unwrap()
    );
    let keys = s.list_signing_keys("t1", NOW + 49).await.unwrap();
    assert_eq!(kids(&keys), ["k-new", "k-old"]);
    assert_eq!(keys[1].not_after, Some(NOW + 50));
    let keys = s.list_signing_keys("t1", NOW + 50).await.unwrap();
    assert_eq!(kids(&keys), ["k-new"]);
}

/// Pending requests round-trip (extra parameters included), are replaced by a second put
/// and are missing once expired.
pub async fn pending_roundtrip_and_expiry(f: Fixture) {
    let s = f.store();
    let mut p = pending("t1", "p-1");
    s.put_pending(&p).await.unwrap();
    assert_eq!(
        s.get_pending("t1", "p-1", NOW).await.unwrap(),
        Some(p.clone())
    );
    p.subject = Some("alice".into());
    s.put_pending(&p).await.unwrap();
    assert_eq!(
        s.get_pending("t1", "p-1", NOW).await.unwrap(),
        Some(p.clone())
    );
    let end = p.expires_at;
    assert!(s.get_pending("t1", "p-1", end - 1).await.unwrap().is_some());
    assert_eq!(s.get_pending("t1", "p-1", end).await.unwrap(), None);
    assert_eq!(s.take_pending("t1", "p-1", end).await.unwrap(), None);
}

/// A pending request is taken once.
pub async fn pending_take_is_single_use(f: Fixture) {
    let s = f.store();
    let p = pending("t1", "p-1");
    s.put_pending(&p).await.unwrap();
    assert_eq!(s.take_pending("t1", "p-1", NOW).await.unwrap(), Some(p));
    assert_eq!(s.take_pending("t1", "p-1", NOW).await.unwrap(), None);
    assert_eq!(s.get_pending("t1", "p-1", NOW).await.unwrap(), None);
    assert_eq!(s.take_pending("t1", "p-unknown", NOW).await.unwrap(), None);
}

/// Of [`RACERS`] concurrent takers of one pending request, exactly one gets it.
pub async fn pending_concurrent_take_has_one_winner(f: Fixture) {
    let s = f.store().clone();
    s.put_pending(&pending("t1", "p-1")).await.unwrap();
    let results = race(
        &s,
        |s| async move { s.take_pending("t1", "p-1", NOW).await },
    )
    .await;
    let winners = results.iter().filter(|r| r.is_some()).count();
    assert_eq!(winners, 1, "{results:?}");
}

/// RFC 6749 §4.1.2: a code is redeemed once; redeeming it again is reported as a replay
/// with the family to revoke.
pub async fn code_take_is_single_use(f: Fixture) {
    let s = f.store();
    let c = code("t1", "code-1", "fam-1");
    s.put_code(&c).await.unwrap();
    let h = hash_secret("code-1");
    assert_eq!(
        s.take_code("t1", &h, NOW).await.unwrap(),
        TakeCode::Taken(c.clone())
    );
    let replayed = TakeCode::Replayed {
        family_id: "fam-1".into(),
        client_id: "client-1".into(),
    };
    assert_eq!(s.take_code("t1", &h, NOW).await.unwrap(), replayed);
    assert_eq!(s.take_code("t1", &h, NOW + 1).await.unwrap(), replayed);
    let unknown = hash_secret("code-unknown");
    assert_eq!(
        s.take_code("t1", &unknown, NOW).await.unwrap(),
        TakeCode::Missing
    );
}

/// Of [`RACERS`] concurrent redemptions of one code, exactly one is `Taken`; the others are
/// replays.
pub async fn code_concurrent_take_has_one_winner(f: Fixture) {
    let s = f.store().clone();
    s.put_code(&code("t1", "code-1", "fam-1")).await.unwrap();
    let h = hash_secret("code-1");
    let results = race(&s, |s| {
        let h = h.clone();
        async move { s.take_code("t1", &h, NOW).await }
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

/// A new refresh token `token` for a redeemed code, valid a day.
pub fn new_refresh(token: &str) -> NewRefresh {
    NewRefresh {
        token_hash: hash_secret(token),
        resource: Some("https://other.example.com/mcp".into()),
        expires_at: NOW + 86_400,
        created_at: NOW,
    }
}

/// `redeem_code` spends the code and stores the family's first refresh token, made from the
/// code (its resource when it names one, else the given one); a replay is told apart and the
/// token stays unstored; an unknown code stores nothing; a token that cannot be stored
/// leaves the code unspent.
pub async fn code_redeem_stores_the_first_refresh_token(f: Fixture) {
    let s = f.store();
    let c = code("t1", "code-1", "fam-1");
    s.put_code(&c).await.unwrap();
    let h = hash_secret("code-1");
    let new = new_refresh("rt-1");
    let TakeCode::Taken(row) = s.redeem_code("t1", &h, Some(&new), NOW).await.unwrap() else {
        panic!("the first redemption takes the code");
    };
    assert_eq!(row, c);
    let stored = s
        .get_refresh("t1", &hash_secret("rt-1"), NOW)
        .await
        .unwrap()
        .expect("the refresh token is stored with the redemption");
    assert_eq!(stored, new.row_for(&c));
    assert_eq!(stored.family_id, "fam-1");
    assert_eq!(stored.resource, c.resource, "the code's resource wins");
    assert_eq!(
        s.redeem_code("t1", &h, Some(&new_refresh("rt-2")), NOW)
            .await
            .unwrap(),
        TakeCode::Replayed {
            family_id: "fam-1".into(),
            client_id: "client-1".into()
        }
    );
    assert_eq!(
        s.get_refresh("t1", &hash_secret("rt-2"), NOW)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.redeem_code("t1", &hash_secret("nope"), Some(&new_refresh("rt-3")), NOW)
            .await
            .unwrap(),
        TakeCode::Missing
    );
    assert_eq!(
        s.get_refresh("t1", &hash_secret("rt-3"), NOW)
            .await
            .unwrap(),
        None
    );

    // Without a resource on the code, the given one; without a token, only the code.
    let mut c2 = code("t1", "code-2", "fam-2");
    c2.resource = None;
    s.put_code(&c2).await.unwrap();
    let TakeCode::Taken(_) = s
        .redeem_code(
            "t1",
            &hash_secret("code-2"),
            Some(&new_refresh("rt-4")),
            NOW,
        )
        .await
        .unwrap()
    else {
        panic!("taken");
    };
    let stored = s
        .get_refresh("t1", &hash_secret("rt-4"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.resource.as_deref(),
        Some("https://other.example.com/mcp")
    );
    s.put_code(&code("t1", "code-3", "fam-3")).await.unwrap();
    assert!(matches!(
        s.redeem_code("t1", &hash_secret("code-3"), None, NOW)
            .await
            .unwrap(),
        TakeCode::Taken(_)
    ));

    // A token hash that exists already: a conflict, and the code stays redeemable.
    s.put_code(&code("t1", "code-4", "fam-4")).await.unwrap();
    let clash = s
        .redeem_code(
            "t1",
            &hash_secret("code-4"),
            Some(&new_refresh("rt-1")),
            NOW,
        )
        .await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    assert!(matches!(
        s.redeem_code(
            "t1",
            &hash_secret("code-4"),
            Some(&new_refresh("rt-5")),
            NOW
        )
        .await
        .unwrap(),
        TakeCode::Taken(_)
    ));
}

/// Concurrent redemptions of one code, each replay revoking the family as the token
/// endpoint does: exactly one redemption wins, with its token stored, and the replays that
/// follow revoke it, so no token of the family is left current and none can be added.
pub async fn code_concurrent_redeem_and_replay_leave_one_grant_revoked(f: Fixture) {
    let s = f.store().clone();
    s.put_code(&code("t1", "code-1", "fam-1")).await.unwrap();
    let h = hash_secret("code-1");
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let results = race(&s, |s| {
        let (h, counter) = (h.clone(), counter.clone());
        async move {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let new = new_refresh(&format!("rt-{n}"));
            let r = s.redeem_code("t1", &h, Some(&new), NOW).await;
            if let Ok(TakeCode::Replayed { family_id, .. }) = &r {
                s.revoke_family("t1", family_id, NOW).await.unwrap();
            }
            Ok::<_, StoreError>((new.token_hash, r))
        }
    })
    .await;
    let winners: Vec<&String> = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(TakeCode::Taken(_))))
        .map(|(h, _)| h)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one redemption wins");
    assert!(
        results
            .iter()
            .all(|(_, r)| matches!(r, Ok(TakeCode::Taken(_) | TakeCode::Replayed { .. }))),
        "no error: the winner's token went in with the redemption"
    );
    for (hash, _) in &results {
        assert_eq!(s.get_refresh("t1", hash, NOW).await.unwrap(), None);
    }
    assert!(matches!(
        s.put_refresh(&refresh("t1", "late", "fam-1")).await,
        Err(StoreError::FamilyRevoked)
    ));
}

/// An expired code is missing, spent or not.
pub async fn code_expiry(f: Fixture) {
    let s = f.store();
    let c = code("t1", "code-1", "fam-1");
    s.put_code(&c).await.unwrap();
    let h = hash_secret("code-1");
    let end = c.expires_at;
    assert_eq!(s.take_code("t1", &h, end).await.unwrap(), TakeCode::Missing);
    assert_eq!(
        s.take_code("t1", &h, end + 1).await.unwrap(),
        TakeCode::Missing
    );

    s.put_code(&code("t1", "code-2", "fam-2")).await.unwrap();
    let h = hash_secret("code-2");
    assert!(matches!(
        s.take_code("t1", &h, end - 1).await.unwrap(),
        TakeCode::Taken(_)
    ));
    assert_eq!(s.take_code("t1", &h, end).await.unwrap(), TakeCode::Missing);
}

/// RFC 6749 §4.1.2: on replay the server revokes what the code issued. A refresh token the
/// first redemption tries to store after that is refused.
pub async fn code_replay_revokes_the_family(f: Fixture) {
    let s = f.store();
    s.put_code(&code("t1", "code-1", "fam-1")).await.unwrap();
    let h = hash_secret("code-1");
    assert!(matches!(
        s.take_code("t1", &h, NOW).await.unwrap(),
        TakeCode::Taken(_)
    ));
    s.put_refresh(&refresh("t1", "rt-1", "fam-1"))
        .await
        .unwrap();
    s.put_refresh(&refresh("t1", "rt-unrelated", "fam-2"))
        .await
        .unwrap();

    let TakeCode::Replayed { family_id, .. } = s.take_code("t1", &h, NOW).await.unwrap() else {
        panic!("expected a replay");
    };
    assert!(s.revoke_family("t1", &family_id, NOW).await.unwrap());
    assert!(!s.revoke_family("t1", &family_id, NOW).await.unwrap());
    let rt1 = hash_secret("rt-1");
    assert_eq!(s.get_refresh("t1", &rt1, NOW).await.unwrap(), None);
    let next = refresh("t1", "rt-1b", "fam-1");
    assert_eq!(
        s.rotate_refresh("t1", &rt1, &next, NOW).await.unwrap(),
        Rotate::Invalid
    );
    let unrelated = hash_secret("rt-unrelated");
    assert!(
        s.get_refresh("t1", &unrelated, NOW)
            .await
            .unwrap()
            .is_some()
    );

    // The race: the legitimate exchange stores its refresh token after the replay revoked
    // the family.
    let late = s.put_refresh(&refresh("t1", "rt-late", "fam-1")).await;
    assert!(matches!(late, Err(StoreError::FamilyRevoked)), "{late:?}");
    let late = hash_secret("rt-late");
    assert_eq!(s.get_refresh("t1", &late, NOW).await.unwrap(), None);
}

/// Storing a code, refresh token or signing key twice under one key is a conflict, and the
/// first row stays.
pub async fn duplicate_keys_conflict(f: Fixture) {
    let s = f.store();
    let c = code("t1", "code-1", "fam-1");
    s.put_code(&c).await.unwrap();
    let mut c2 = c.clone();
    c2.subject = "mallory".into();
    let err = s.put_code(&c2).await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    let h = hash_secret("code-1");
    assert_eq!(
        s.take_code("t1", &h, NOW).await.unwrap(),
        TakeCode::Taken(c)
    );

    let r = refresh("t1", "rt-1", "fam-1");
    s.put_refresh(&r).await.unwrap();
    let mut r2 = r.clone();
    r2.subject = "mallory".into();
    let err = s.put_refresh(&r2).await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    let h = hash_secret("rt-1");
    assert_eq!(s.get_refresh("t1", &h, NOW).await.unwrap(), Some(r));

    s.put_signing_key(&signing_key("t1", "k1", NOW))
        .await
        .unwrap();
    let err = s.put_signing_key(&signing_key("t1", "k1", NOW + 1)).await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    let keys = s.list_signing_keys("t1", NOW).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].created_at, NOW);
}

/// OAuth 2.1 §4.3.1: each refresh rotates the token; the previous one stops working and
/// the new one works.
pub async fn refresh_rotation_chain(f: Fixture) {
    let s = f.store();
    let first = refresh("t1", "rt-0", "fam-1");
    s.put_refresh(&first).await.unwrap();
    let mut previous = first;
    for i in 1..=5 {
        let mut next = refresh("t1", &format!("rt-{i}"), "fam-1");
        next.created_at = NOW + i;
        let now = NOW + i;
        let got = s
            .rotate_refresh("t1", &previous.token_hash, &next, now)
            .await
            .unwrap();
        assert_eq!(got, Rotate::Rotated(previous.clone()));
        let old = s
            .get_refresh("t1", &previous.token_hash, now)
            .await
            .unwrap();
        assert_eq!(old, None, "a rotated token is not current");
        let new = s.get_refresh("t1", &next.token_hash, now).await.unwrap();
        assert_eq!(new, Some(next.clone()));
        previous = next;
    }
    let unknown = refresh("t1", "rt-x", "fam-1");
    let h = hash_secret("rt-unknown");
    assert_eq!(
        s.rotate_refresh("t1", &h, &unknown, NOW).await.unwrap(),
        Rotate::Invalid
    );
}

/// A family rotated for much longer than one token's lifetime stays usable, sweeps in
/// between included: whatever a backend keeps per family lives as long as its newest token.
pub async fn refresh_chain_outlives_its_first_tokens_and_sweeps(f: Fixture) {
    let s = f.store();
    let mut code = code("t1", "code-1", "fam-1");
    code.expires_at = NOW + 10;
    s.put_code(&code).await.unwrap();
    let new = NewRefresh {
        token_hash: hash_secret("rt-0"),
        resource: None,
        expires_at: NOW + 100,
        created_at: NOW,
    };
    let first = new.row_for(&code);
    let taken = s
        .redeem_code("t1", &hash_secret("code-1"), Some(&new), NOW)
        .await
        .unwrap();
    assert!(matches!(taken, TakeCode::Taken(_)), "{taken:?}");
    let mut previous = first;
    // Each token lives 100 s and is rotated after 90: ten lifetimes in all.
    for i in 1..=10u64 {
        let now = NOW + 90 * i;
        s.sweep(now).await.unwrap();
        let current = s
            .get_refresh("t1", &previous.token_hash, now)
            .await
            .unwrap();
        assert_eq!(current, Some(previous.clone()), "rotation {i}");
        let mut next = refresh("t1", &format!("rt-{i}"), "fam-1");
        next.created_at = now;
        next.expires_at = now + 100;
        let got = s
            .rotate_refresh("t1", &previous.token_hash, &next, now)
            .await
            .unwrap();
        assert_eq!(got, Rotate::Rotated(previous.clone()), "rotation {i}");
        previous = next;
    }
    let last = NOW + 90 * 10 + 99;
    s.sweep(last).await.unwrap();
    let current = s
        .get_refresh("t1", &previous.token_hash, last)
        .await
        .unwrap();
    assert_eq!(current, Some(previous.clone()));
    // And the family can still be revoked as a whole.
    assert!(s.revoke_family("t1", "fam-1", last).await.unwrap());
    let current = s
        .get_refresh("t1", &previous.token_hash, last)
        .await
        .unwrap();
    assert_eq!(current, None);
}

/// RFC 9700 §4.14.2: presenting a rotated token revokes the whole family, the newest token
/// included; presenting it again is merely invalid.
pub async fn refresh_reuse_revokes_the_family(f: Fixture) {
    let s = f.store();
    let r0 = refresh("t1", "rt-0", "fam-1");
    let r1 = refresh("t1", "rt-1", "fam-1");
    let r2 = refresh("t1", "rt-2", "fam-1");
    s.put_refresh(&r0).await.unwrap();
    s.put_refresh(&refresh("t1", "rt-other", "fam-2"))
        .await
        .unwrap();
    let rotated = s
        .rotate_refresh("t1", &r0.token_hash, &r1, NOW)
        .await
        .unwrap();
    assert!(matches!(rotated, Rotate::Rotated(_)));
    let rotated = s
        .rotate_refresh("t1", &r1.token_hash, &r2, NOW)
        .await
        .unwrap();
    assert!(matches!(rotated, Rotate::Rotated(_)));

    // The attacker (or the legitimate client) presents rt-0 again.
    let r3 = refresh("t1", "rt-3", "fam-1");
    assert_eq!(
        s.rotate_refresh("t1", &r0.token_hash, &r3, NOW + 1)
            .await
            .unwrap(),
        Rotate::Reused {
            family_id: "fam-1".into()
        }
    );
    // The newest token of the family is dead too, and nothing was stored for rt-3.
    assert_eq!(
        s.get_refresh("t1", &r2.token_hash, NOW + 1).await.unwrap(),
        None
    );
    assert_eq!(
        s.get_refresh("t1", &r3.token_hash, NOW + 1).await.unwrap(),
        None
    );
    let r4 = refresh("t1", "rt-4", "fam-1");
    let got = s
        .rotate_refresh("t1", &r2.token_hash, &r4, NOW + 1)
        .await
        .unwrap();
    assert_eq!(got, Rotate::Invalid);
    let got = s
        .rotate_refresh("t1", &r0.token_hash, &r4, NOW + 1)
        .await
        .unwrap();
    assert!(
        matches!(got, Rotate::Invalid | Rotate::Reused { .. }),
        "{got:?}"
    );
    assert_eq!(
        s.get_refresh("t1", &r4.token_hash, NOW + 1).await.unwrap(),
        None
    );
    // Other families are untouched.
    let other = hash_secret("rt-other");
    assert!(
        s.get_refresh("t1", &other, NOW + 1)
            .await
            .unwrap()
            .is_some()
    );
}

/// Of [`RACERS`] concurrent rotations of one token exactly one is `Rotated`; the others
/// present a rotated token, so the family ends up revoked, the winner's new token included.
pub async fn refresh_concurrent_rotation_has_one_winner(f: Fixture) {
    let s = f.store().clone();
    let r0 = refresh("t1", "rt-0", "fam-1");
    s.put_refresh(&r0).await.unwrap();
    let mut i = 0;
    let results = race(&s, |s| {
        let old = r0.token_hash.clone();
        i += 1;
        async move {
            let new = refresh("t1", &format!("rt-new-{i}"), "fam-1");
            let got = s.rotate_refresh("t1", &old, &new, NOW).await;
            got.map(|r| (r, new.token_hash))
        }
    })
    .await;
    let rotated: Vec<_> = results
        .iter()
        .filter(|(r, _)| matches!(r, Rotate::Rotated(_)))
        .collect();
    let reused = results
        .iter()
        .filter(|(r, _)| matches!(r, Rotate::Reused { family_id } if family_id == "fam-1"))
        .count();
    let invalid = results
        .iter()
        .filter(|(r, _)| *r == Rotate::Invalid)
        .count();
    assert_eq!(rotated.len(), 1, "{results:?}");
    assert!(reused >= 1, "{results:?}");
    assert_eq!(rotated.len() + reused + invalid, RACERS);
    let winner = &rotated[0].1;
    assert_eq!(s.get_refresh("t1", winner, NOW).await.unwrap(), None);
    for (_, hash) in &results {
        assert_eq!(s.get_refresh("t1", hash, NOW).await.unwrap(), None);
    }
}

/// A successor in another family, for another client or tenant is refused and the old token
/// stays current.
pub async fn refresh_rotation_checks_the_successor(f: Fixture) {
    let s = f.store();
    let r0 = refresh("t1", "rt-0", "fam-1");
    s.put_refresh(&r0).await.unwrap();
    let mut wrong_family = refresh("t1", "rt-1", "fam-2");
    let mut wrong_client = refresh("t1", "rt-1", "fam-1");
    wrong_client.client_id = "client-2".into();
    let wrong_tenant = refresh("t2", "rt-1", "fam-1");
    for bad in [&wrong_family, &wrong_client, &wrong_tenant] {
        let got = s.rotate_refresh("t1", &r0.token_hash, bad, NOW).await;
        assert!(matches!(got, Err(StoreError::InvalidRow(_))), "{got:?}");
    }
    let same = refresh("t1", "rt-0", "fam-1");
    let got = s.rotate_refresh("t1", &r0.token_hash, &same, NOW).await;
    assert!(matches!(got, Err(StoreError::Conflict(_))), "{got:?}");
    assert_eq!(
        s.get_refresh("t1", &r0.token_hash, NOW).await.unwrap(),
        Some(r0.clone())
    );
    assert_eq!(
        s.get_refresh("t1", &wrong_family.token_hash, NOW)
            .await
            .unwrap(),
        None
    );
    wrong_family.family_id = "fam-1".into();
    let got = s
        .rotate_refresh("t1", &r0.token_hash, &wrong_family, NOW)
        .await;
    assert_eq!(got.unwrap(), Rotate::Rotated(r0));
}

/// An expired refresh token is invalid, and reusing an expired rotated one is no longer
/// detected (its tombstone is gone with it).
pub async fn refresh_expiry(f: Fixture) {
    let s = f.store();
    let r0 = refresh("t1", "rt-0", "fam-1");
    s.put_refresh(&r0).await.unwrap();
    let end = r0.expires_at;
    assert!(
        s.get_refresh("t1", &r0.token_hash, end - 1)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        s.get_refresh("t1", &r0.token_hash, end).await.unwrap(),
        None
    );
    let r1 = refresh("t1", "rt-1", "fam-1");
    let got = s
        .rotate_refresh("t1", &r0.token_hash, &r1, end)
        .await
        .unwrap();
    assert_eq!(got, Rotate::Invalid);
    assert_eq!(
        s.get_refresh("t1", &r1.token_hash, NOW).await.unwrap(),
        None
    );

    let a = refresh("t1", "rt-a", "fam-2");
    let mut b = refresh("t1", "rt-b", "fam-2");
    b.expires_at = a.expires_at + 1000;
    s.put_refresh(&a).await.unwrap();
    let got = s
        .rotate_refresh("t1", &a.token_hash, &b, NOW)
        .await
        .unwrap();
    assert!(matches!(got, Rotate::Rotated(_)));
    let c = refresh("t1", "rt-c", "fam-2");
    let got = s
        .rotate_refresh("t1", &a.token_hash, &c, a.expires_at)
        .await
        .unwrap();
    assert_eq!(got, Rotate::Invalid);
    let still = s
        .get_refresh("t1", &b.token_hash, a.expires_at)
        .await
        .unwrap();
    assert_eq!(still, Some(b));
}

/// RFC 7009: a revoked access token is reported revoked until its record expires.
pub async fn access_revocation(f: Fixture) {
    let s = f.store();
    assert!(!s.is_access_revoked("t1", "jti-1").await.unwrap());
    s.revoke_access("t1", "jti-1", NOW + 60).await.unwrap();
    s.revoke_access("t1", "jti-1", NOW + 30).await.unwrap();
    assert!(s.is_access_revoked("t1", "jti-1").await.unwrap());
    assert!(!s.is_access_revoked("t1", "jti-2").await.unwrap());
    // The second revocation did not shorten the first.
    assert_eq!(s.sweep(NOW + 30).await.unwrap(), 0);
    assert!(s.is_access_revoked("t1", "jti-1").await.unwrap());
    assert_eq!(s.sweep(NOW + 60).await.unwrap(), 1);
    assert!(!s.is_access_revoked("t1", "jti-1").await.unwrap());
}

/// No call made for one tenant sees or changes another tenant's rows, even with the same
/// IDs and hashes.
pub async fn tenants_are_isolated(f: Fixture) {
    let s = f.store();
    // Tenant a has one of everything; tenant b, where it has rows, uses the same keys.
    s.put_client(&client("a", "client-1")).await.unwrap();
    s.put_user(&user("a", "alice")).await.unwrap();
    s.put_code(&code("a", "code-1", "fam-1")).await.unwrap();
    s.put_code(&code("a", "code-2", "fam-2")).await.unwrap();
    s.put_refresh(&refresh("a", "rt-1", "fam-1")).await.unwrap();
    s.put_refresh(&refresh("a", "rt-2", "fam-2")).await.unwrap();
    s.put_signing_key(&signing_key("a", "k1", NOW))
        .await
        .unwrap();
    s.put_pending(&pending("a", "p-1")).await.unwrap();
    s.put_consent(&consent("a", "alice", "client-1"))
        .await
        .unwrap();
    s.revoke_access("a", "jti-1", NOW + 60).await.unwrap();

    // Tenant b sees none of it.
    assert_eq!(s.get_client("b", "client-1", NOW).await.unwrap(), None);
    assert_eq!(s.get_user("b", "alice").await.unwrap(), None);
    let c1 = hash_secret("code-1");
    assert_eq!(s.take_code("b", &c1, NOW).await.unwrap(), TakeCode::Missing);
    let rt1 = hash_secret("rt-1");
    assert_eq!(s.get_refresh("b", &rt1, NOW).await.unwrap(), None);
    let next = refresh("b", "rt-1-next", "fam-1");
    assert_eq!(
        s.rotate_refresh("b", &rt1, &next, NOW).await.unwrap(),
        Rotate::Invalid
    );
    assert!(s.list_signing_keys("b", NOW).await.unwrap().is_empty());
    assert!(!s.retire_signing_key("b", "k1", NOW).await.unwrap());
    assert_eq!(s.get_pending("b", "p-1", NOW).await.unwrap(), None);
    assert_eq!(s.take_pending("b", "p-1", NOW).await.unwrap(), None);
    assert_eq!(s.get_consent("b", "alice", "client-1").await.unwrap(), None);
    assert!(!s.delete_consent("b", "alice", "client-1").await.unwrap());
    assert!(!s.is_access_revoked("b", "jti-1").await.unwrap());
    assert!(!s.revoke_family("b", "fam-1", NOW).await.unwrap());
    assert!(!s.delete_client("b", "client-1").await.unwrap());

    // Tenant b may hold rows under the same keys.
    let mut b_code = code("b", "code-2", "fam-2");
    b_code.subject = "bob".into();
    s.put_code(&b_code).await.unwrap();
    let mut b_rt = refresh("b", "rt-2", "fam-2");
    b_rt.subject = "bob".into();
    s.put_refresh(&b_rt).await.unwrap();
    let mut b_client = client("b", "client-1");
    b_client.metadata = serde_json::json!({"client_name": "B"});
    s.put_client(&b_client).await.unwrap();
    s.put_signing_key(&signing_key("b", "k1", NOW + 1))
        .await
        .unwrap();
    let c2 = hash_secret("code-2");
    assert_eq!(
        s.take_code("b", &c2, NOW).await.unwrap(),
        TakeCode::Taken(b_code)
    );
    let rt2 = hash_secret("rt-2");
    let b_next = refresh("b", "rt-2-next", "fam-2");
    let got = s.rotate_refresh("b", &rt2, &b_next, NOW).await.unwrap();
    assert_eq!(got, Rotate::Rotated(b_rt));
    // ... and reusing tenant b's rotated token revokes only tenant b's family.
    let got = s.rotate_refresh("b", &rt2, &b_next, NOW).await.unwrap();
    assert!(matches!(got, Rotate::Reused { .. }));
    // Deleting b's client leaves a's.
    assert!(s.delete_client("b", "client-1").await.unwrap());

    // Tenant a still has everything, unchanged.
    assert_eq!(
        s.get_client("a", "client-1", NOW).await.unwrap(),
        Some(client("a", "client-1"))
    );
    assert_eq!(
        s.get_user("a", "alice").await.unwrap(),
        Some(user("a", "alice"))
    );
    assert_eq!(
        s.take_code("a", &c1, NOW).await.unwrap(),
        TakeCode::Taken(code("a", "code-1", "fam-1"))
    );
    assert_eq!(
        s.take_code("a", &c2, NOW).await.unwrap(),
        TakeCode::Taken(code("a", "code-2", "fam-2"))
    );
    assert!(s.get_refresh("a", &rt1, NOW).await.unwrap().is_some());
    assert!(s.get_refresh("a", &rt2, NOW).await.unwrap().is_some());
    s.put_refresh(&refresh("a", "rt-2b", "fam-2"))
        .await
        .unwrap();
    let keys = s.list_signing_keys("a", NOW).await.unwrap();
    assert_eq!(kids(&keys), ["k1"]);
    assert_eq!(keys[0].created_at, NOW);
    assert!(s.get_pending("a", "p-1", NOW).await.unwrap().is_some());
    assert!(
        s.get_consent("a", "alice", "client-1")
            .await
            .unwrap()
            .is_some()
    );
    assert!(s.is_access_revoked("a", "jti-1").await.unwrap());
}

/// `sweep` deletes exactly the expired rows and keeps the live ones.
pub async fn sweep_removes_expired_rows(f: Fixture) {
    let s = f.store();
    let later = NOW + 1_000;
    // Expired at `later`: 8 rows.
    let mut c = client("t1", "gone");
    c.expires_at = Some(later);
    s.put_client(&c).await.unwrap();
    s.put_code(&code("t1", "code-gone", "fam-9")).await.unwrap();
    let mut spent = code("t1", "code-spent", "fam-9");
    spent.expires_at = later - 1;
    s.put_code(&spent).await.unwrap();
    let h = hash_secret("code-spent");
    assert!(matches!(
        s.take_code("t1", &h, NOW).await.unwrap(),
        TakeCode::Taken(_)
    ));
    let mut r0 = refresh("t1", "rt-0", "fam-1");
    r0.expires_at = later;
    let mut r1 = refresh("t1", "rt-1", "fam-1");
    r1.expires_at = later;
    s.put_refresh(&r0).await.unwrap();
    let got = s
        .rotate_refresh("t1", &r0.token_hash, &r1, NOW)
        .await
        .unwrap();
    assert!(matches!(got, Rotate::Rotated(_)));
    s.revoke_access("t1", "jti-gone", later).await.unwrap();
    let mut k = signing_key("t1", "k-gone", NOW - 10);
    k.not_after = Some(later);
    s.put_signing_key(&k).await.unwrap();
    s.put_pending(&pending("t1", "p-gone")).await.unwrap();

    // Alive at `later`.
    let mut c = client("t1", "kept");
    c.expires_at = Some(later + 1);
    s.put_client(&c).await.unwrap();
    s.put_client(&client("t1", "forever")).await.unwrap();
    let mut kept_code = code("t1", "code-kept", "fam-8");
    kept_code.expires_at = later + 1;
    s.put_code(&kept_code).await.unwrap();
    let mut kept_rt = refresh("t1", "rt-kept", "fam-2");
    kept_rt.expires_at = later + 1;
    s.put_refresh(&kept_rt).await.unwrap();
    s.revoke_access("t1", "jti-kept", later + 1).await.unwrap();
    s.put_signing_key(&signing_key("t1", "k-kept", NOW))
        .await
        .unwrap();
    let mut p = pending("t1", "p-kept");
    p.expires_at = later + 1;
    s.put_pending(&p).await.unwrap();
    s.put_user(&user("t1", "alice")).await.unwrap();
    s.put_consent(&consent("t1", "alice", "kept"))
        .await
        .unwrap();

    assert_eq!(s.sweep(NOW).await.unwrap(), 0);
    assert_eq!(s.sweep(later).await.unwrap(), 8);
    assert_eq!(s.sweep(later).await.unwrap(), 0);

    assert!(s.get_client("t1", "kept", later).await.unwrap().is_some());
    assert!(
        s.get_client("t1", "forever", later)
            .await
            .unwrap()
            .is_some()
    );
    let h = hash_secret("code-kept");
    assert!(matches!(
        s.take_code("t1", &h, later).await.unwrap(),
        TakeCode::Taken(_)
    ));
    let got = s
        .get_refresh("t1", &kept_rt.token_hash, later)
        .await
        .unwrap();
    assert!(got.is_some());
    assert!(s.is_access_revoked("t1", "jti-kept").await.unwrap());
    assert!(!s.is_access_revoked("t1", "jti-gone").await.unwrap());
    assert_eq!(
        kids(&s.list_signing_keys("t1", later).await.unwrap()),
        ["k-kept"]
    );
    assert!(
        s.get_pending("t1", "p-kept", later)
            .await
            .unwrap()
            .is_some()
    );
    assert!(s.get_user("t1", "alice").await.unwrap().is_some());
    assert!(
        s.get_consent("t1", "alice", "kept")
            .await
            .unwrap()
            .is_some()
    );

    // A revoked family is remembered for REVOKED_FAMILY_RETENTION_SECS, then swept.
    assert!(s.revoke_family("t1", "fam-2", later).await.unwrap());
    let until = later + REVOKED_FAMILY_RETENTION_SECS;
    let late = refresh("t1", "rt-late", "fam-2");
    let err = s.put_refresh(&late).await;
    assert!(matches!(err, Err(StoreError::FamilyRevoked)), "{err:?}");
    // Everything else kept above expires at `later + 1`: client, code, revocation, pending,
    // and the revoked family's token if the backend left it to expire (see `Store::sweep`).
    let swept = s.sweep(until - 1).await.unwrap();
    assert!(swept == 4 || swept == 5, "{swept} rows swept");
    let err = s.put_refresh(&late).await;
    assert!(matches!(err, Err(StoreError::FamilyRevoked)), "{err:?}");
    assert_eq!(
        s.sweep(until).await.unwrap(),
        1,
        "the revoked-family record"
    );
    let mut late = late;
    late.expires_at = until + 100;
    s.put_refresh(&late).await.unwrap();
}

fn consent_keys(rows: &[ConsentRow]) -> Vec<(&str, &str)> {
    rows.iter()
        .map(|c| (c.subject.as_str(), c.client_id.as_str()))
        .collect()
}

/// Consents are listed by subject then client ID, in byte order (uppercase before
/// lowercase, `client-10` before `client-2`), all of the tenant's or one user's; a replaced
/// consent is listed once, and withdrawn or cascaded ones are not listed.
pub async fn consents_are_listed_in_order(f: Fixture) {
    let s = f.store();
    assert!(s.list_consents("t1", None).await.unwrap().is_empty());
    assert!(
        s.list_consents("t1", Some("alice"))
            .await
            .unwrap()
            .is_empty()
    );
    for (subject, client_id) in [
        ("bob", "client-2"),
        ("alice", "client-2"),
        ("Zed", "client-1"),
        ("alice", "client-10"),
        ("alice", "client-1"),
        ("al", "client-3"),
        ("bob", "client-1"),
    ] {
        s.put_consent(&consent("t1", subject, client_id))
            .await
            .unwrap();
    }
    // Another tenant's consent of the same user is never listed.
    s.put_consent(&consent("t2", "alice", "client-0"))
        .await
        .unwrap();
    // Replacing a consent keeps one row, with the new scope.
    let mut replaced = consent("t1", "alice", "client-2");
    replaced.scope = "files:read files:write".into();
    replaced.granted_at = NOW + 7;
    s.put_consent(&replaced).await.unwrap();

    let all = s.list_consents("t1", None).await.unwrap();
    assert_eq!(
        consent_keys(&all),
        [
            ("Zed", "client-1"),
            ("al", "client-3"),
            ("alice", "client-1"),
            ("alice", "client-10"),
            ("alice", "client-2"),
            ("bob", "client-1"),
            ("bob", "client-2"),
        ]
    );
    assert_eq!(all[4], replaced);
    assert_eq!(all[0], consent("t1", "Zed", "client-1"));

    let alice = s.list_consents("t1", Some("alice")).await.unwrap();
    assert_eq!(
        alice,
        [
            consent("t1", "alice", "client-1"),
            consent("t1", "alice", "client-10"),
            replaced.clone(),
        ]
    );
    assert!(
        s.list_consents("t1", Some("nobody"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.list_consents("t1", Some("ALICE"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.list_consents("t2", None).await.unwrap(),
        [consent("t2", "alice", "client-0")]
    );

    // Withdrawn and cascaded (RFC 7592 §2.3) consents go from the listing too.
    assert!(s.delete_consent("t1", "bob", "client-2").await.unwrap());
    s.put_client(&client("t1", "client-1")).await.unwrap();
    assert!(s.delete_client("t1", "client-1").await.unwrap());
    let all = s.list_consents("t1", None).await.unwrap();
    assert_eq!(
        consent_keys(&all),
        [
            ("al", "client-3"),
            ("alice", "client-10"),
            ("alice", "client-2"),
        ]
    );
    let bob = s.list_consents("t1", Some("bob")).await.unwrap();
    assert!(bob.is_empty(), "{bob:?}");
    assert_eq!(s.list_consents("t2", None).await.unwrap().len(), 1);
}

/// Withdrawing consent revokes every family the user holds for the client, current and
/// rotated tokens alike, as `revoke_family` does (a later token for one is refused), and
/// returns the family IDs sorted once each; other clients' and users' families stay.
pub async fn revoke_client_grants_revokes_the_users_families(f: Fixture) {
    let s = f.store();
    // alice at client-1: fam-b (rotated once, so a tombstone and a current token) and
    // fam-a (two current tokens).
    let b0 = refresh("t1", "rt-b0", "fam-b");
    let b1 = refresh("t1", "rt-b1", "fam-b");
    s.put_refresh(&b0).await.unwrap();
    let got = s
        .rotate_refresh("t1", &b0.token_hash, &b1, NOW)
        .await
        .unwrap();
    assert_eq!(got, Rotate::Rotated(b0.clone()));
    let a0 = refresh("t1", "rt-a0", "fam-a");
    let a1 = refresh("t1", "rt-a1", "fam-a");
    s.put_refresh(&a0).await.unwrap();
    s.put_refresh(&a1).await.unwrap();
    // alice at client-2, bob at client-1, and alice at client-1 in another tenant.
    let mut other_client = refresh("t1", "rt-c", "fam-c");
    other_client.client_id = "client-2".into();
    s.put_refresh(&other_client).await.unwrap();
    let mut other_user = refresh("t1", "rt-d", "fam-d");
    other_user.subject = "bob".into();
    s.put_refresh(&other_user).await.unwrap();
    let other_tenant = refresh("t2", "rt-e", "fam-a");
    s.put_refresh(&other_tenant).await.unwrap();
    s.put_consent(&consent("t1", "alice", "client-1"))
        .await
        .unwrap();

    let revoked = s
        .revoke_client_grants("t1", "alice", "client-1", NOW)
        .await
        .unwrap();
    assert_eq!(revoked, ["fam-a", "fam-b"]);

    for gone in [&a0, &a1, &b1] {
        let got = s.get_refresh("t1", &gone.token_hash, NOW).await.unwrap();
        assert_eq!(got, None, "{gone:?}");
    }
    // The rotated token's tombstone went too: presenting it is merely invalid.
    let next = refresh("t1", "rt-b2", "fam-b");
    let got = s
        .rotate_refresh("t1", &b0.token_hash, &next, NOW)
        .await
        .unwrap();
    assert_eq!(got, Rotate::Invalid);
    // The revocations are remembered, as `revoke_family` remembers them.
    for family in ["fam-a", "fam-b"] {
        let late = refresh("t1", &format!("rt-late-{family}"), family);
        let err = s.put_refresh(&late).await;
        assert!(matches!(err, Err(StoreError::FamilyRevoked)), "{err:?}");
    }
    // Everything else is untouched.
    for (tenant, kept) in [
        ("t1", &other_client),
        ("t1", &other_user),
        ("t2", &other_tenant),
    ] {
        let got = s.get_refresh(tenant, &kept.token_hash, NOW).await.unwrap();
        assert_eq!(got.as_ref(), Some(kept));
    }
    // Their families are not remembered as revoked.
    let mut c2 = refresh("t1", "rt-c2", "fam-c");
    c2.client_id = "client-2".into();
    s.put_refresh(&c2).await.unwrap();
    s.put_refresh(&refresh("t2", "rt-e2", "fam-a"))
        .await
        .unwrap();
    // Nothing left to revoke; a user without grants has none.
    let again = s
        .revoke_client_grants("t1", "alice", "client-1", NOW)
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    let none = s
        .revoke_client_grants("t1", "carol", "client-1", NOW)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
}

/// Withdrawing consent also takes the user's codes for the client that are not redeemed
/// yet: a code issued before cannot be redeemed after (with or without a refresh token),
/// and its family is revoked. A spent code stays (its replay still revokes), and other
/// users', clients' and tenants' codes are untouched.
pub async fn revoke_client_grants_takes_the_users_unredeemed_codes(f: Fixture) {
    let s = f.store();
    let pending = code("t1", "code-pending", "fam-p");
    let second = code("t1", "code-second", "fam-q");
    let spent = code("t1", "code-spent", "fam-s");
    let mut other_client = code("t1", "code-c2", "fam-c");
    other_client.client_id = "client-2".into();
    let mut other_user = code("t1", "code-bob", "fam-d");
    other_user.subject = "bob".into();
    let other_tenant = code("t2", "code-pending", "fam-p");
    let mut expired = code("t1", "code-expired", "fam-x");
    expired.expires_at = NOW;
    for c in [
        &pending,
        &second,
        &spent,
        &other_client,
        &other_user,
        &other_tenant,
        &expired,
    ] {
        s.put_code(c).await.unwrap();
    }
    assert_eq!(
        s.take_code("t1", &spent.code_hash, NOW).await.unwrap(),
        TakeCode::Taken(spent.clone())
    );

    let revoked = s
        .revoke_client_grants("t1", "alice", "client-1", NOW)
        .await
        .unwrap();
    assert_eq!(revoked, ["fam-p", "fam-q"]);

    assert_eq!(
        s.take_code("t1", &pending.code_hash, NOW).await.unwrap(),
        TakeCode::Missing
    );
    assert_eq!(
        s.redeem_code("t1", &second.code_hash, Some(&new_refresh("rt-after")), NOW)
            .await
            .unwrap(),
        TakeCode::Missing
    );
    // The families are remembered as revoked.
    let late = refresh("t1", "rt-late", "fam-p");
    let err = s.put_refresh(&late).await;
    assert!(matches!(err, Err(StoreError::FamilyRevoked)), "{err:?}");
    // The spent code stays spent: presenting it again is a replay.
    assert!(matches!(
        s.take_code("t1", &spent.code_hash, NOW).await.unwrap(),
        TakeCode::Replayed { .. }
    ));
    for (tenant, kept) in [
        ("t1", &other_client),
        ("t1", &other_user),
        ("t2", &other_tenant),
    ] {
        assert_eq!(
            s.take_code(tenant, &kept.code_hash, NOW).await.unwrap(),
            TakeCode::Taken(kept.clone()),
            "{tenant} {}",
            kept.family_id
        );
    }
}

/// Login sessions round-trip, are replaced by a second put, are missing once expired, and
/// end when deleted.
pub async fn session_roundtrip_expiry_and_delete(f: Fixture) {
    let s = f.store();
    let mut x = session("t1", "cookie-1");
    assert_eq!(
        s.get_session("t1", &x.session_hash, NOW).await.unwrap(),
        None
    );
    s.put_session(&x).await.unwrap();
    assert_eq!(
        s.get_session("t1", &x.session_hash, NOW).await.unwrap(),
        Some(x.clone())
    );
    assert!(
        !format!("{x:?}").contains(&x.session_hash),
        "session hash in Debug"
    );
    x.subject = "github:4711".into();
    x.provider = "github".into();
    x.expires_at = NOW + 60;
    s.put_session(&x).await.unwrap();
    let end = x.expires_at;
    assert_eq!(
        s.get_session("t1", &x.session_hash, end - 1).await.unwrap(),
        Some(x.clone())
    );
    assert_eq!(
        s.get_session("t1", &x.session_hash, end).await.unwrap(),
        None
    );
    assert_eq!(
        s.get_session("t1", &x.session_hash, end + 1).await.unwrap(),
        None
    );

    let y = session("t1", "cookie-2");
    s.put_session(&y).await.unwrap();
    assert!(s.delete_session("t1", &y.session_hash).await.unwrap());
    assert!(!s.delete_session("t1", &y.session_hash).await.unwrap());
    assert_eq!(
        s.get_session("t1", &y.session_hash, NOW).await.unwrap(),
        None
    );
    let unknown = hash_secret("cookie-unknown");
    assert!(!s.delete_session("t1", &unknown).await.unwrap());
    // The other session is still there.
    assert_eq!(
        s.get_session("t1", &x.session_hash, NOW).await.unwrap(),
        Some(x)
    );
}

/// Upstream tokens round-trip; a put replaces the account's row whatever its version; a row
/// is missing once expired; deleting returns the row, expired or not, and it is gone.
pub async fn upstream_roundtrip_expiry_and_delete(f: Fixture) {
    let s = f.store();
    assert_eq!(s.get_upstream("t1", "github:1", NOW).await.unwrap(), None);
    let v5 = upstream("t1", "github:1", 5);
    s.put_upstream(&v5).await.unwrap();
    assert_eq!(
        s.get_upstream("t1", "github:1", NOW).await.unwrap(),
        Some(v5.clone())
    );
    assert!(
        !format!("{v5:?}").contains("sealed-tokens"),
        "sealed in Debug"
    );
    // A new login writes whatever version it likes, lower included.
    let mut v2 = upstream("t1", "github:1", 2);
    v2.provider = "oidc".into();
    v2.expires_at = NOW + 100;
    s.put_upstream(&v2).await.unwrap();
    assert_eq!(
        s.get_upstream("t1", "github:1", NOW).await.unwrap(),
        Some(v2.clone())
    );
    let v9 = upstream("t1", "github:2", 9);
    s.put_upstream(&v9).await.unwrap();

    let end = v2.expires_at;
    assert_eq!(
        s.get_upstream("t1", "github:1", end - 1).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(s.get_upstream("t1", "github:1", end).await.unwrap(), None);

    // Deleting returns the row even though it expired by then (no `now` is given).
    assert_eq!(s.delete_upstream("t1", "github:1").await.unwrap(), Some(v2));
    assert_eq!(s.delete_upstream("t1", "github:1").await.unwrap(), None);
    assert_eq!(s.get_upstream("t1", "github:1", NOW).await.unwrap(), None);
    assert_eq!(s.delete_upstream("t1", "github:none").await.unwrap(), None);
    // The other account is untouched.
    assert_eq!(
        s.get_upstream("t1", "github:2", NOW).await.unwrap(),
        Some(v9)
    );
}

/// `swap_upstream` replaces the row only when its version is the expected one; a missing
/// row is not created; a new version not above the expected one is an invalid row.
pub async fn upstream_swap_compares_versions(f: Fixture) {
    let s = f.store();
    let got = s
        .swap_upstream(&upstream("t1", "acct", 2), 1)
        .await
        .unwrap();
    assert!(!got, "no row to swap");
    assert_eq!(s.get_upstream("t1", "acct", NOW).await.unwrap(), None);

    let v1 = upstream("t1", "acct", 1);
    s.put_upstream(&v1).await.unwrap();
    // Not the current version: nothing changes.
    assert!(
        !s.swap_upstream(&upstream("t1", "acct", 3), 2)
            .await
            .unwrap()
    );
    assert!(
        !s.swap_upstream(&upstream("t1", "acct", 1), 0)
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_upstream("t1", "acct", NOW).await.unwrap(),
        Some(v1.clone())
    );
    // The version must grow, checked before anything else (even for a missing row).
    for (version, expected) in [(1, 1), (0, 1), (1, 2)] {
        let bad = upstream("t1", "acct", version);
        let err = s.swap_upstream(&bad, expected).await;
        assert!(matches!(err, Err(StoreError::InvalidRow(_))), "{err:?}");
    }
    let err = s.swap_upstream(&upstream("t1", "missing", 1), 1).await;
    assert!(matches!(err, Err(StoreError::InvalidRow(_))), "{err:?}");
    assert_eq!(
        s.get_upstream("t1", "acct", NOW).await.unwrap(),
        Some(v1.clone())
    );

    // The refresher that read version 1 wins, and every field is written.
    let mut v2 = upstream("t1", "acct", 2);
    v2.provider = "google".into();
    v2.expires_at = NOW + 7_200;
    assert!(s.swap_upstream(&v2, 1).await.unwrap());
    assert_eq!(
        s.get_upstream("t1", "acct", NOW).await.unwrap(),
        Some(v2.clone())
    );
    // A second refresher that read version 1 too loses, and leaves the winner's row.
    let mut late = upstream("t1", "acct", 2);
    late.sealed = "k1.late.other-tokens".into();
    assert!(!s.swap_upstream(&late, 1).await.unwrap());
    assert_eq!(
        s.get_upstream("t1", "acct", NOW).await.unwrap(),
        Some(v2.clone())
    );
    // Versions may jump.
    let v10 = upstream("t1", "acct", 10);
    assert!(s.swap_upstream(&v10, 2).await.unwrap());
    assert_eq!(s.get_upstream("t1", "acct", NOW).await.unwrap(), Some(v10));
    // After a delete there is nothing to swap.
    assert!(s.delete_upstream("t1", "acct").await.unwrap().is_some());
    assert!(
        !s.swap_upstream(&upstream("t1", "acct", 11), 10)
            .await
            .unwrap()
    );
    assert_eq!(s.get_upstream("t1", "acct", NOW).await.unwrap(), None);
}

/// Of [`RACERS`] concurrent swaps from the same expected version, exactly one wins, and
/// the row is the winner's.
pub async fn upstream_concurrent_swap_has_one_winner(f: Fixture) {
    let s = f.store().clone();
    s.put_upstream(&upstream("t1", "acct", 1)).await.unwrap();
    let mut i = 0;
    let results = race(&s, |s| {
        i += 1;
        let mut row = upstream("t1", "acct", 2);
        row.sealed = format!("k1.racer-{i}.tokens");
        async move { s.swap_upstream(&row, 1).await.map(|won| (won, row)) }
    })
    .await;
    let winners: Vec<&UpstreamRow> = results
        .iter()
        .filter(|(won, _)| *won)
        .map(|(_, row)| row)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let stored = s.get_upstream("t1", "acct", NOW).await.unwrap();
    assert_eq!(stored.as_ref(), Some(winners[0]));
}

/// No call for one tenant sees or changes another tenant's consents, sessions or upstream
/// tokens, even under the same keys.
pub async fn tenants_are_isolated_in_consents_sessions_and_upstream(f: Fixture) {
    let s = f.store();
    let a_session = session("a", "cookie-1");
    let a_up = upstream("a", "github:1", 1);
    let a_consent = consent("a", "alice", "client-1");
    let a_rt = refresh("a", "rt-1", "fam-1");
    s.put_session(&a_session).await.unwrap();
    s.put_upstream(&a_up).await.unwrap();
    s.put_consent(&a_consent).await.unwrap();
    s.put_refresh(&a_rt).await.unwrap();

    // Tenant b sees none of it and changes none of it.
    let h = &a_session.session_hash;
    assert_eq!(s.get_session("b", h, NOW).await.unwrap(), None);
    assert!(!s.delete_session("b", h).await.unwrap());
    assert_eq!(s.get_upstream("b", "github:1", NOW).await.unwrap(), None);
    assert_eq!(s.delete_upstream("b", "github:1").await.unwrap(), None);
    assert!(
        !s.swap_upstream(&upstream("b", "github:1", 2), 1)
            .await
            .unwrap()
    );
    assert!(s.list_consents("b", None).await.unwrap().is_empty());
    assert!(
        s.list_consents("b", Some("alice"))
            .await
            .unwrap()
            .is_empty()
    );
    let revoked = s
        .revoke_client_grants("b", "alice", "client-1", NOW)
        .await
        .unwrap();
    assert!(revoked.is_empty(), "{revoked:?}");

    // Tenant b may hold rows under the same keys.
    let mut b_session = session("b", "cookie-1");
    b_session.subject = "local:bob".into();
    s.put_session(&b_session).await.unwrap();
    let b_up = upstream("b", "github:1", 7);
    s.put_upstream(&b_up).await.unwrap();
    let mut b_next = upstream("b", "github:1", 8);
    b_next.sealed = "k1.b.tokens".into();
    assert!(s.swap_upstream(&b_next, 7).await.unwrap());
    let mut b_consent = consent("b", "alice", "client-1");
    b_consent.scope = "other".into();
    s.put_consent(&b_consent).await.unwrap();
    assert_eq!(
        s.get_session("b", h, NOW).await.unwrap(),
        Some(b_session.clone())
    );
    assert_eq!(
        s.list_consents("b", None).await.unwrap(),
        [b_consent.clone()]
    );
    // Swapping from tenant a's version in tenant b does nothing.
    assert!(
        !s.swap_upstream(&upstream("b", "github:1", 2), 1)
            .await
            .unwrap()
    );

    // Tenant a still has everything, unchanged.
    assert_eq!(
        s.get_session("a", h, NOW).await.unwrap(),
        Some(a_session.clone())
    );
    assert_eq!(
        s.get_upstream("a", "github:1", NOW).await.unwrap(),
        Some(a_up.clone())
    );
    let listed = s.list_consents("a", None).await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&a_consent));
    assert_eq!(
        s.list_consents("a", Some("alice")).await.unwrap(),
        [a_consent]
    );
    assert_eq!(
        s.get_refresh("a", &a_rt.token_hash, NOW).await.unwrap(),
        Some(a_rt)
    );

    // Deleting b's rows leaves a's.
    assert!(s.delete_session("b", h).await.unwrap());
    assert_eq!(
        s.delete_upstream("b", "github:1").await.unwrap(),
        Some(b_next)
    );
    assert!(s.delete_consent("b", "alice", "client-1").await.unwrap());
    assert_eq!(s.get_session("a", h, NOW).await.unwrap(), Some(a_session));
    assert_eq!(
        s.get_upstream("a", "github:1", NOW).await.unwrap(),
        Some(a_up)
    );
    assert_eq!(s.list_consents("a", None).await.unwrap().len(), 1);
}

/// `sweep` deletes expired login sessions and upstream rows, and keeps live ones.
pub async fn sweep_removes_expired_sessions_and_upstream_rows(f: Fixture) {
    let s = f.store();
    let later = NOW + 1_000;
    let mut gone_session = session("t1", "cookie-gone");
    gone_session.expires_at = later;
    let mut kept_session = session("t1", "cookie-kept");
    kept_session.expires_at = later + 1;
    let mut gone_up = upstream("t1", "github:gone", 1);
    gone_up.expires_at = later;
    let mut kept_up = upstream("t1", "github:kept", 1);
    kept_up.expires_at = later + 1;
    // Swapped to a later expiry: the sweep must go by the new one.
    let mut swapped = upstream("t1", "github:swapped", 1);
    swapped.expires_at = later;
    s.put_upstream(&swapped).await.unwrap();
    swapped.version = 2;
    swapped.expires_at = later + 1;
    assert!(s.swap_upstream(&swapped, 1).await.unwrap());
    s.put_session(&gone_session).await.unwrap();
    s.put_session(&kept_session).await.unwrap();
    s.put_upstream(&gone_up).await.unwrap();
    s.put_upstream(&kept_up).await.unwrap();

    assert_eq!(s.sweep(NOW).await.unwrap(), 0);
    assert_eq!(s.sweep(later).await.unwrap(), 2);
    assert_eq!(s.sweep(later).await.unwrap(), 0);

    // Really gone, not merely expired: deleting finds nothing.
    assert!(
        !s.delete_session("t1", &gone_session.session_hash)
            .await
            .unwrap()
    );
    assert_eq!(s.delete_upstream("t1", "github:gone").await.unwrap(), None);
    assert_eq!(
        s.get_session("t1", &kept_session.session_hash, later)
            .await
            .unwrap(),
        Some(kept_session)
    );
    assert_eq!(
        s.get_upstream("t1", "github:kept", later).await.unwrap(),
        Some(kept_up)
    );
    assert_eq!(
        s.get_upstream("t1", "github:swapped", later).await.unwrap(),
        Some(swapped)
    );
    assert_eq!(s.sweep(later + 1).await.unwrap(), 3);
}

/// Device authorizations round-trip, are found by their user code's hash (not the device
/// code's), and are missing once expired.
pub async fn device_roundtrip_and_user_code_lookup(f: Fixture) {
    let s = f.store();
    let d = device("t1", "dc-1", "BCDFGHJK");
    s.put_device(&d).await.unwrap();
    let by_user = hash_secret("BCDFGHJK");
    assert_eq!(
        s.get_device_by_user_code("t1", &by_user, NOW)
            .await
            .unwrap(),
        Some(d.clone())
    );
    // Keyed by the device code: its hash is not a user code.
    let by_device = hash_secret("dc-1");
    assert_eq!(
        s.get_device_by_user_code("t1", &by_device, NOW)
            .await
            .unwrap(),
        None
    );
    let unknown = hash_secret("ZZZZZZZZ");
    assert_eq!(
        s.get_device_by_user_code("t1", &unknown, NOW)
            .await
            .unwrap(),
        None
    );
    let end = d.expires_at;
    assert!(
        s.get_device_by_user_code("t1", &by_user, end - 1)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        s.get_device_by_user_code("t1", &by_user, end)
            .await
            .unwrap(),
        None
    );
    // A second put with the same device code is a bug of the caller.
    let mut again = device("t1", "dc-1", "LMNPQRST");
    again.created_at = NOW + 1;
    assert!(matches!(
        s.put_device(&again).await,
        Err(StoreError::Conflict(_))
    ));
}

/// A user code names one unexpired request: a second request with the same user code is a
/// conflict (the server draws another) until the first expires, and then takes it over.
pub async fn device_user_codes_are_unique_while_unexpired(f: Fixture) {
    let s = f.store();
    let first = device("t1", "dc-1", "BCDFGHJK");
    s.put_device(&first).await.unwrap();
    let mut second = device("t1", "dc-2", "BCDFGHJK");
    second.created_at = first.expires_at - 1;
    second.expires_at = second.created_at + 600;
    assert!(matches!(
        s.put_device(&second).await,
        Err(StoreError::Conflict(_))
    ));
    let by_user = hash_secret("BCDFGHJK");
    let now = first.expires_at - 1;
    assert_eq!(
        s.get_device_by_user_code("t1", &by_user, now)
            .await
            .unwrap(),
        Some(first.clone())
    );
    // Once the first has expired, the code is free again.
    second.created_at = first.expires_at;
    second.expires_at = second.created_at + 600;
    s.put_device(&second).await.unwrap();
    let now = first.expires_at;
    assert_eq!(
        s.get_device_by_user_code("t1", &by_user, now)
            .await
            .unwrap(),
        Some(second.clone())
    );
    // The same user code in another tenant is another code.
    s.put_device(&device("t2", "dc-3", "BCDFGHJK"))
        .await
        .unwrap();
}

/// RFC 8628 §3.3: the user approves or denies once; a decision on a decided or expired
/// request changes nothing.
pub async fn device_decision_is_taken_once(f: Fixture) {
    let s = f.store();
    let d = device("t1", "dc-1", "BCDFGHJK");
    s.put_device(&d).await.unwrap();
    let h = hash_secret("dc-1");
    let by_user = hash_secret("BCDFGHJK");
    assert!(
        s.decide_device("t1", &h, &approve("alice", "files:read"), NOW)
            .await
            .unwrap()
    );
    assert!(
        !s.decide_device("t1", &h, &DeviceDecision::Deny, NOW)
            .await
            .unwrap()
    );
    assert!(
        !s.decide_device("t1", &h, &approve("mallory", "files:write"), NOW)
            .await
            .unwrap()
    );
    let got = s
        .get_device_by_user_code("t1", &by_user, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.status, DeviceStatus::Approved);
    assert_eq!(got.subject.as_deref(), Some("alice"));
    assert_eq!(got.granted_scope.as_deref(), Some("files:read"));

    // Denied is final too.
    s.put_device(&device("t1", "dc-2", "LMNPQRST"))
        .await
        .unwrap();
    let h2 = hash_secret("dc-2");
    assert!(
        s.decide_device("t1", &h2, &DeviceDecision::Deny, NOW)
            .await
            .unwrap()
    );
    assert!(
        !s.decide_device("t1", &h2, &approve("alice", "files:read"), NOW)
            .await
            .unwrap()
    );
    let got = s
        .get_device_by_user_code("t1", &hash_secret("LMNPQRST"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.status, got.subject), (DeviceStatus::Denied, None));

    // Expired or unknown: nothing to decide.
    s.put_device(&device("t1", "dc-3", "VWXZBCDF"))
        .await
        .unwrap();
    let h3 = hash_secret("dc-3");
    assert!(
        !s.decide_device("t1", &h3, &approve("alice", "x"), NOW + 600)
            .await
            .unwrap()
    );
    let unknown = hash_secret("dc-unknown");
    assert!(
        !s.decide_device("t1", &unknown, &DeviceDecision::Deny, NOW)
            .await
            .unwrap()
    );
}

/// Of [`RACERS`] concurrent decisions on one request, exactly one is recorded.
pub async fn device_concurrent_decisions_have_one_winner(f: Fixture) {
    let s = f.store().clone();
    s.put_device(&device("t1", "dc-1", "BCDFGHJK"))
        .await
        .unwrap();
    let h = hash_secret("dc-1");
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let results = race(&s, |s| {
        let h = h.clone();
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let decision = if n.is_multiple_of(2) {
            approve(&format!("user-{n}"), "files:read")
        } else {
            DeviceDecision::Deny
        };
        async move { s.decide_device("t1", &h, &decision, NOW).await }
    })
    .await;
    assert_eq!(results.iter().filter(|r| **r).count(), 1, "{results:?}");
}

/// RFC 8628 §3.5: pending until decided; a poll sooner than `interval` after the last one
/// is `slow_down` and raises the interval by 5 s for good; denied and expired are final;
/// another client's poll changes nothing.
pub async fn device_poll_state_machine(f: Fixture) {
    let s = f.store();
    s.put_device(&device("t1", "dc-1", "BCDFGHJK"))
        .await
        .unwrap();
    let h = hash_secret("dc-1");
    let poll = |client: &'static str, now: u64| {
        let h = h.clone();
        async move { s.poll_device("t1", &h, client, now).await.unwrap() }
    };
    assert_eq!(
        poll("client-1", NOW).await,
        DevicePoll::Pending { interval: 5 }
    );
    assert_eq!(
        poll("client-1", NOW + 4).await,
        DevicePoll::SlowDown { interval: 10 }
    );
    // The too-early poll counts as the last poll, and the new interval holds.
    assert_eq!(
        poll("client-1", NOW + 13).await,
        DevicePoll::SlowDown { interval: 15 }
    );
    assert_eq!(
        poll("client-1", NOW + 28).await,
        DevicePoll::Pending { interval: 15 }
    );
    // Another client learns nothing and changes nothing (no poll recorded).
    assert_eq!(poll("client-2", NOW + 29).await, DevicePoll::WrongClient);
    assert_eq!(
        poll("client-1", NOW + 43).await,
        DevicePoll::Pending { interval: 15 }
    );
    let stored = s
        .get_device_by_user_code("t1", &hash_secret("BCDFGHJK"), NOW + 43)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stored.interval, stored.last_poll), (15, Some(NOW + 43)));
    assert_eq!(
        poll("client-1", NOW + 600).await,
        DevicePoll::Expired,
        "expired while still stored"
    );
    let unknown = hash_secret("dc-unknown");
    assert_eq!(
        s.poll_device("t1", &unknown, "client-1", NOW)
            .await
            .unwrap(),
        DevicePoll::Missing
    );

    // Denied: every poll says so.
    s.put_device(&device("t1", "dc-2", "LMNPQRST"))
        .await
        .unwrap();
    let h2 = hash_secret("dc-2");
    assert!(
        s.decide_device("t1", &h2, &DeviceDecision::Deny, NOW)
            .await
            .unwrap()
    );
    for now in [NOW + 10, NOW + 11] {
        assert_eq!(
            s.poll_device("t1", &h2, "client-1", now).await.unwrap(),
            DevicePoll::Denied
        );
    }
}

/// An approved request is handed out to one poll; every later poll finds it consumed.
pub async fn device_poll_hands_out_an_approval_once(f: Fixture) {
    let s = f.store();
    let d = device("t1", "dc-1", "BCDFGHJK");
    s.put_device(&d).await.unwrap();
    let h = hash_secret("dc-1");
    assert_eq!(
        s.poll_device("t1", &h, "client-1", NOW).await.unwrap(),
        DevicePoll::Pending { interval: 5 }
    );
    assert!(
        s.decide_device("t1", &h, &approve("alice", "files:read"), NOW + 1)
            .await
            .unwrap()
    );
    // Approval is handed out at once, even sooner than the interval.
    let DevicePoll::Approved(row) = s.poll_device("t1", &h, "client-1", NOW + 2).await.unwrap()
    else {
        panic!("the approval was not handed out");
    };
    assert_eq!(row.subject.as_deref(), Some("alice"));
    assert_eq!(row.granted_scope.as_deref(), Some("files:read"));
    assert_eq!(row.resource, d.resource);
    assert_eq!(row.client_id, "client-1");
    for now in [NOW + 3, NOW + 30] {
        assert_eq!(
            s.poll_device("t1", &h, "client-1", now).await.unwrap(),
            DevicePoll::Consumed
        );
    }
    // Another client's poll of an approved request does not consume it.
    s.put_device(&device("t1", "dc-2", "LMNPQRST"))
        .await
        .unwrap();
    let h2 = hash_secret("dc-2");
    assert!(
        s.decide_device("t1", &h2, &approve("alice", "files:read"), NOW)
            .await
            .unwrap()
    );
    assert_eq!(
        s.poll_device("t1", &h2, "client-2", NOW).await.unwrap(),
        DevicePoll::WrongClient
    );
    assert!(matches!(
        s.poll_device("t1", &h2, "client-1", NOW).await.unwrap(),
        DevicePoll::Approved(_)
    ));
}

/// Of [`RACERS`] concurrent polls of one approved request, exactly one gets the grant; the
/// others find it consumed.
pub async fn device_concurrent_poll_has_one_winner(f: Fixture) {
    let s = f.store().clone();
    s.put_device(&device("t1", "dc-1", "BCDFGHJK"))
        .await
        .unwrap();
    let h = hash_secret("dc-1");
    assert!(
        s.decide_device("t1", &h, &approve("alice", "files:read"), NOW)
            .await
            .unwrap()
    );
    let results = race(&s, |s| {
        let h = h.clone();
        async move { s.poll_device("t1", &h, "client-1", NOW + 1).await }
    })
    .await;
    let approved = results
        .iter()
        .filter(|r| matches!(r, DevicePoll::Approved(_)))
        .count();
    let consumed = results
        .iter()
        .filter(|r| matches!(r, DevicePoll::Consumed))
        .count();
    assert_eq!((approved, consumed), (1, RACERS - 1), "{results:?}");
}

/// No call reaches another tenant's device authorization.
pub async fn device_rows_are_isolated_by_tenant_and_client(f: Fixture) {
    let s = f.store();
    let d = device("t1", "dc-1", "BCDFGHJK");
    s.put_device(&d).await.unwrap();
    let h = hash_secret("dc-1");
    let by_user = hash_secret("BCDFGHJK");
    assert_eq!(
        s.get_device_by_user_code("t2", &by_user, NOW)
            .await
            .unwrap(),
        None
    );
    assert!(
        !s.decide_device("t2", &h, &approve("mallory", "files:read"), NOW)
            .await
            .unwrap()
    );
    assert_eq!(
        s.poll_device("t2", &h, "client-1", NOW).await.unwrap(),
        DevicePoll::Missing
    );
    // t1's row is untouched: still pending, never polled.
    assert_eq!(
        s.get_device_by_user_code("t1", &by_user, NOW)
            .await
            .unwrap(),
        Some(d)
    );
}

/// Expired device authorizations are swept (one row each), freeing their user codes, and
/// a deleted client's go with it (RFC 7592 §2.3).
pub async fn device_rows_are_swept_and_deleted_with_their_client(f: Fixture) {
    let s = f.store();
    let mut gone = device("t1", "dc-gone", "BCDFGHJK");
    gone.expires_at = NOW + 100;
    let kept = device("t1", "dc-kept", "LMNPQRST");
    s.put_device(&gone).await.unwrap();
    s.put_device(&kept).await.unwrap();
    assert_eq!(s.sweep(NOW).await.unwrap(), 0);
    assert_eq!(s.sweep(NOW + 100).await.unwrap(), 1);
    assert_eq!(s.sweep(NOW + 100).await.unwrap(), 0);
    let h = hash_secret("dc-gone");
    assert_eq!(
        s.poll_device("t1", &h, "client-1", NOW + 100)
            .await
            .unwrap(),
        DevicePoll::Missing,
        "swept, not merely expired"
    );
    let mut reuse = device("t1", "dc-new", "BCDFGHJK");
    reuse.created_at = NOW + 100;
    reuse.expires_at = NOW + 700;
    s.put_device(&reuse).await.unwrap();

    s.put_client(&client("t1", "client-1")).await.unwrap();
    let mut other = device("t1", "dc-other", "VWXZBCDF");
    other.client_id = "client-2".into();
    s.put_device(&other).await.unwrap();
    assert!(s.delete_client("t1", "client-1").await.unwrap());
    for (code, user) in [("dc-kept", "LMNPQRST"), ("dc-new", "BCDFGHJK")] {
        let h = hash_secret(code);
        assert_eq!(
            s.poll_device("t1", &h, "client-1", NOW + 100)
                .await
                .unwrap(),
            DevicePoll::Missing
        );
        let u = hash_secret(user);
        assert_eq!(
            s.get_device_by_user_code("t1", &u, NOW + 100)
                .await
                .unwrap(),
            None
        );
    }
    let u = hash_secret("VWXZBCDF");
    assert_eq!(
        s.get_device_by_user_code("t1", &u, NOW + 100)
            .await
            .unwrap(),
        Some(other)
    );
}

/// A claim is held until its expiry: a second claim of the key fails until then, succeeds
/// after, and namespaces and tenants do not share keys.
pub async fn claim_once_is_single_use_until_expiry(f: Fixture) {
    let s = f.store();
    let k = hash_secret("jti-1");
    let until = NOW + 60;
    assert!(s.claim_once("t1", "iss-a", &k, until, NOW).await.unwrap());
    assert!(!s.claim_once("t1", "iss-a", &k, until, NOW).await.unwrap());
    // A later claim with a longer expiry does not extend or replace a live one.
    assert!(
        !s.claim_once("t1", "iss-a", &k, until + 600, NOW + 59)
            .await
            .unwrap()
    );
    assert!(s.claim_once("t1", "iss-b", &k, until, NOW).await.unwrap());
    assert!(s.claim_once("t2", "iss-a", &k, until, NOW).await.unwrap());
    // Expired: the key may be claimed again, and is then held until the new expiry.
    assert!(
        s.claim_once("t1", "iss-a", &k, until + 60, until)
            .await
            .unwrap()
    );
    assert!(
        !s.claim_once("t1", "iss-a", &k, until + 60, until + 59)
            .await
            .unwrap()
    );
    let other = hash_secret("jti-2");
    assert!(
        s.claim_once("t1", "iss-a", &other, until, NOW)
            .await
            .unwrap()
    );
}

/// Of [`RACERS`] concurrent claims of one key, exactly one succeeds.
pub async fn claim_once_concurrent_has_one_winner(f: Fixture) {
    let s = f.store().clone();
    let k = hash_secret("jti-race");
    let results = race(&s, |s| {
        let k = k.clone();
        async move { s.claim_once("t1", "iss-a", &k, NOW + 60, NOW).await }
    })
    .await;
    let winners = results.iter().filter(|won| **won).count();
    assert_eq!(winners, 1, "{results:?}");
}

/// A sweep deletes expired claims and keeps live ones.
pub async fn sweep_removes_expired_claims(f: Fixture) {
    let s = f.store();
    let later = NOW + 1_000;
    let gone = hash_secret("jti-gone");
    let kept = hash_secret("jti-kept");
    assert!(
        s.claim_once("t1", "iss-a", &gone, later, NOW)
            .await
            .unwrap()
    );
    assert!(
        s.claim_once("t1", "iss-a", &kept, later + 1, NOW)
            .await
            .unwrap()
    );
    assert_eq!(s.sweep(NOW).await.unwrap(), 0);
    assert_eq!(s.sweep(later).await.unwrap(), 1);
    assert!(
        !s.claim_once("t1", "iss-a", &kept, later + 60, later)
            .await
            .unwrap()
    );
    assert!(
        s.claim_once("t1", "iss-a", &gone, later + 60, later)
            .await
            .unwrap()
    );
}

/// Runs [`RACERS`] copies of `op` at once (released together by a barrier) and returns
/// their results, panicking on any error.
async fn race<T, E, Fut>(
    store: &Arc<dyn Store>,
    mut op: impl FnMut(Arc<dyn Store>) -> Fut,
) -> Vec<T>
where
    T: Send + 'static,
    E: std::fmt::Debug + Send + 'static,
    Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::with_capacity(RACERS);
    for _ in 0..RACERS {
        let fut = op(store.clone());
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            fut.await
        }));
    }
    let mut results = Vec::with_capacity(RACERS);
    for task in tasks {
        results.push(task.await.expect("racer panicked").expect("store failed"));
    }
    results
}
