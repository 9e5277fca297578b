//! One test suite for the [`CredentialStore`] contract, run against every backend by
//! [`conformance_tests!`], so the backends cannot drift apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mcp_auth_types::{AccessToken, AuthMethod, ClientSecret, RefreshToken, SecretString};

use super::{
    ClientRecord, CredentialStore, Registration, ServerRecord, StoreError, TokenRecord, server_key,
};

/// A record with every secret field filled, the access token being `token`.
pub(crate) fn sample_record(server_url: &str, token: &str) -> ServerRecord {
    ServerRecord {
        server_url: server_url.to_owned(),
        name: Some("sample".to_owned()),
        resource: Some(server_url.to_owned()),
        issuer: "https://as.example".to_owned(),
        token_endpoint: "https://as.example/token".to_owned(),
        revocation_endpoint: None,
        authorization_endpoint: Some("https://as.example/authorize".to_owned()),
        requested_scope: Some("read write".to_owned()),
        client: Some(ClientRecord {
            issuer: "https://as.example".to_owned(),
            client_id: "client-1".to_owned(),
            client_secret: Some(ClientSecret::new("client-secret-VALUE")),
            client_secret_expires_at: None,
            auth_method: AuthMethod::ClientSecretBasic,
            private_key_pem: None,
            signing_alg: None,
            redirect_uri: Some("http://127.0.0.1:33418/callback".to_owned()),
            registration: Registration::Dynamic,
            registration_access_token: None,
            registration_client_uri: None,
        }),
        tokens: Some(TokenRecord {
            access_token: AccessToken::new(token),
            token_type: "Bearer".to_owned(),
            expires_at: Some(2_000_000_000),
            refresh_token: Some(RefreshToken::new("refresh-token-VALUE")),
            scope: Some("read write".to_owned()),
            obtained_at: 1_700_000_000,
        }),
        grant: Some("authorization_code".to_owned()),
        dpop_key: Some(SecretString::new("dpop-key-VALUE")),
        updated_at: 1_700_000_000,
    }
}

/// The access token of a record, for assertions.
pub(crate) fn token_of(record: &ServerRecord) -> &str {
    record
        .tokens
        .as_ref()
        .map(|t| t.access_token.secret())
        .unwrap_or_default()
}

pub(crate) async fn roundtrip(store: &dyn CredentialStore) {
    let key = server_key("https://mcp.example/a");
    assert!(store.get(&key).await.unwrap().is_none());
    let record = sample_record("https://mcp.example/a", "access-1");
    store.put(&key, &record).await.unwrap();
    let back = store.get(&key).await.unwrap().unwrap();
    assert_eq!(back.server_url, record.server_url);
    assert_eq!(token_of(&back), "access-1");
    let client = back.client.unwrap();
    assert_eq!(
        client.client_secret.unwrap().secret(),
        "client-secret-VALUE"
    );
    assert_eq!(client.registration, Registration::Dynamic);
    let tokens = back.tokens.unwrap();
    assert_eq!(
        tokens.refresh_token.unwrap().secret(),
        "refresh-token-VALUE"
    );
    assert_eq!(tokens.expires_at, Some(2_000_000_000));
    assert_eq!(
        back.dpop_key.as_ref().map(SecretString::secret),
        Some("dpop-key-VALUE")
    );
}

pub(crate) async fn put_replaces(store: &dyn CredentialStore) {
    let key = server_key("https://mcp.example/b");
    store
        .put(&key, &sample_record("https://mcp.example/b", "old"))
        .await
        .unwrap();
    store
        .put(&key, &sample_record("https://mcp.example/b", "new"))
        .await
        .unwrap();
    assert_eq!(token_of(&store.get(&key).await.unwrap().unwrap()), "new");
    assert_eq!(store.list().await.unwrap().len(), 1);
}

pub(crate) async fn delete_forgets_and_is_idempotent(store: &dyn CredentialStore) {
    let key = server_key("https://mcp.example/c");
    store.delete(&key).await.unwrap();
    store
        .put(&key, &sample_record("https://mcp.example/c", "t"))
        .await
        .unwrap();
    store.delete(&key).await.unwrap();
    assert!(store.get(&key).await.unwrap().is_none());
    assert!(store.list().await.unwrap().is_empty());
    store.delete(&key).await.unwrap();
}

pub(crate) async fn list_returns_every_record(store: &dyn CredentialStore) {
    assert!(store.list().await.unwrap().is_empty());
    for i in 0..3 {
        let url = format!("https://mcp.example/{i}");
        store
            .put(&server_key(&url), &sample_record(&url, &format!("t{i}")))
            .await
            .unwrap();
    }
    let mut urls: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.server_url)
        .collect();
    urls.sort();
    assert_eq!(
        urls,
        [
            "https://mcp.example/0",
            "https://mcp.example/1",
            "https://mcp.example/2"
        ]
    );
}

pub(crate) async fn unsafe_keys_are_refused(store: &dyn CredentialStore) {
    let record = sample_record("https://mcp.example/d", "t");
    let long = "a".repeat(super::MAX_KEY_LEN + 1);
    for bad in [
        "",
        "../escape",
        "a/b",
        ".hidden",
        "a b",
        "k\0",
        long.as_str(),
    ] {
        assert!(
            matches!(
                store.put(bad, &record).await,
                Err(StoreError::InvalidKey(_))
            ),
            "put accepted {bad:?}"
        );
        assert!(matches!(
            store.get(bad).await,
            Err(StoreError::InvalidKey(_))
        ));
        assert!(matches!(
            store.delete(bad).await,
            Err(StoreError::InvalidKey(_))
        ));
        assert!(matches!(
            store.lock(bad).await,
            Err(StoreError::InvalidKey(_))
        ));
    }
    // The longest allowed key works.
    let max = "a".repeat(super::MAX_KEY_LEN);
    store.put(&max, &record).await.unwrap();
    assert!(store.get(&max).await.unwrap().is_some());
}

/// A second taker of a lock waits until the first drops it; other keys are not held up.
pub(crate) async fn lock_excludes(store: Arc<dyn CredentialStore>) {
    let first = store.lock("k").await.unwrap();

    let acquired = Arc::new(AtomicBool::new(false));
    let second = tokio::spawn({
        let store = Arc::clone(&store);
        let acquired = Arc::clone(&acquired);
        async move {
            let _guard = store.lock("k").await.unwrap();
            acquired.store(true, Ordering::SeqCst);
        }
    });

    // Another key is free meanwhile.
    let other = tokio::time::timeout(Duration::from_secs(5), store.lock("other")).await;
    assert!(other.is_ok(), "an unrelated key was blocked");

    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !acquired.load(Ordering::SeqCst),
        "second taker got the lock while the first held it"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("second taker never got the lock")
        .unwrap();
    assert!(acquired.load(Ordering::SeqCst));
}

/// Generates `#[tokio::test]`s running the suite against the store `$make` builds. `$make`
/// evaluates to `(store, keep)`, where `keep` (a temporary directory, say) must outlive the
/// test.
macro_rules! conformance_tests {
    ($make:expr) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            use $crate::store::conformance as suite;

            #[tokio::test]
            async fn roundtrip() {
                let (store, _keep) = $make;
                suite::roundtrip(&store).await;
            }

            #[tokio::test]
            async fn put_replaces() {
                let (store, _keep) = $make;
                suite::put_replaces(&store).await;
            }

            #[tokio::test]
            async fn delete_forgets_and_is_idempotent() {
                let (store, _keep) = $make;
                suite::delete_forgets_and_is_idempotent(&store).await;
            }

            #[tokio::test]
            async fn list_returns_every_record() {
                let (store, _keep) = $make;
                suite::list_returns_every_record(&store).await;
            }

            #[tokio::test]
            async fn unsafe_keys_are_refused() {
                let (store, _keep) = $make;
                suite::unsafe_keys_are_refused(&store).await;
            }

            #[tokio::test]
            async fn lock_excludes() {
                let (store, _keep) = $make;
                suite::lock_excludes(std::sync::Arc::new(store)).await;
            }
        }
    };
}

pub(crate) use conformance_tests;
