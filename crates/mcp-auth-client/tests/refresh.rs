//! Refresh with rotation: on expiry, on a 401, under concurrency (tasks of one process and
//! store handles that stand for separate processes), and when the grant is gone.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mcp_auth_client::store::{CredentialStore, FileStore};
use mcp_auth_client::{Error, OAuthClient};
use mcp_auth_testkit::{Config, TestServer};
use serde_json::json;

/// A server with a logged-in client.
async fn logged_in(oauth: &OAuthClient) -> (TestServer, String) {
    let server = TestServer::start(Config::default()).await;
    let url = server.mcp_url();
    oauth.login(&url, None, None).await.expect("login");
    (server, url)
}

/// Presents `refresh_token` at the token endpoint as `client_id` would.
async fn present_refresh_token(
    server: &TestServer,
    client_id: &str,
    refresh_token: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/token", server.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn expired_token_is_refreshed_once_and_the_refresh_token_rotates() {
    let oauth = memory_client(options(curl_browser()));
    let (server, url) = logged_in(&oauth).await;
    let before = record(&oauth, &url).await;
    let old_tokens = before.tokens.clone().unwrap();
    let old_refresh = old_tokens.refresh_token.clone().unwrap();

    server.expire_access_tokens();
    expire_stored_token(&oauth, &url).await;
    let token = oauth.token(&url).await.expect("refreshed token");

    let stats = server.stats();
    assert_eq!(stats.refreshes, 1);
    assert_eq!(stats.authorizations, 1, "no new authorization");
    assert_eq!(stats.refresh_reuse_detected, 0);
    let refresh_request = &stats.token_requests_for("refresh_token")[0];
    assert_eq!(refresh_request.param("resource"), Some(url.as_str()));
    let after = record(&oauth, &url).await;
    let new_tokens = after.tokens.unwrap();
    assert_ne!(
        new_tokens.access_token.secret(),
        old_tokens.access_token.secret()
    );
    assert_eq!(
        new_tokens.access_token.secret(),
        token.record.access_token.secret()
    );
    let new_refresh = new_tokens.refresh_token.unwrap();
    assert_ne!(new_refresh.secret(), old_refresh.secret(), "rotated");
    assert!(new_tokens.expires_at.unwrap() > mcp_auth_client::store::now_secs());

    // The new token works, and asking again costs nothing.
    let echoed = session(&oauth, &url)
        .call_tool("echo", json!({"text": "after refresh"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&echoed), "after refresh");
    oauth.token(&url).await.expect("token");
    let stats = server.stats();
    assert_eq!(stats.refreshes, 1);
    assert_eq!(stats.refresh_reuse_detected, 0);

    // The old refresh token is dead at the server: presenting it is reuse.
    let client_id = after.client.unwrap().client_id;
    let resp = present_refresh_token(&server, &client_id, old_refresh.secret()).await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(server.stats().refresh_reuse_detected, 1);
}

#[tokio::test]
async fn unauthorized_mcp_call_with_a_fresh_looking_token_refreshes_and_succeeds() {
    let oauth = memory_client(options(curl_browser()));
    let (server, url) = logged_in(&oauth).await;
    let before = record(&oauth, &url).await.tokens.unwrap();
    let mcp = session(&oauth, &url);
    mcp.connect().await.expect("connect");

    // The server forgets the token's validity; the store still thinks it has an hour.
    server.expire_access_tokens();
    let echoed = mcp
        .call_tool("echo", json!({"text": "after 401"}))
        .await
        .expect("echo after refresh");
    assert_eq!(tool_text(&echoed), "after 401");

    let stats = server.stats();
    assert_eq!(stats.refreshes, 1);
    assert_eq!(stats.authorizations, 1, "a refresh, not a new login");
    assert_eq!(stats.refresh_reuse_detected, 0);
    assert_eq!(
        stats.unauthorized_responses, 2,
        "the login's probe, then the 401"
    );
    let after = record(&oauth, &url).await.tokens.unwrap();
    assert_ne!(after.access_token.secret(), before.access_token.secret());
    assert_ne!(
        after.refresh_token.unwrap().secret(),
        before.refresh_token.unwrap().secret()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_token_calls_refresh_once() {
    let oauth = memory_client(options(curl_browser()));
    let (server, url) = logged_in(&oauth).await;
    server.expire_access_tokens();
    expire_stored_token(&oauth, &url).await;
    // Slow refreshes keep every caller inside the race window.
    server.set_refresh_delay(Duration::from_millis(200));

    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let oauth = oauth.clone();
            let url = url.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                oauth.token(&url).await
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        let token = t.await.unwrap().expect("token");
        tokens.push(token.record.access_token.secret().to_owned());
    }

    let stats = server.stats();
    assert_eq!(stats.refreshes, 1);
    assert_eq!(stats.token_requests_for("refresh_token").len(), 1);
    assert_eq!(stats.refresh_reuse_detected, 0);
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
    let stored = record(&oauth, &url).await.tokens.unwrap();
    assert_eq!(stored.access_token.secret(), tokens[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_store_handles_sharing_a_directory_refresh_once() {
    let dir = tempfile::tempdir().unwrap();
    let first: Arc<dyn CredentialStore> = Arc::new(FileStore::open(dir.path()).unwrap());
    let oauth = client_over(first, options(curl_browser()));
    let (server, url) = logged_in(&oauth).await;
    server.expire_access_tokens();
    expire_stored_token(&oauth, &url).await;
    server.set_refresh_delay(Duration::from_millis(200));

    // Each client opens the directory itself, as separate processes would.
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store: Arc<dyn CredentialStore> = Arc::new(FileStore::open(dir.path()).unwrap());
            let oauth = client_over(store, options(curl_browser()));
            let url = url.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                oauth.token(&url).await
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        let token = t.await.unwrap().expect("token");
        tokens.push(token.record.access_token.secret().to_owned());
    }

    let stats = server.stats();
    assert_eq!(stats.refreshes, 1);
    assert_eq!(stats.refresh_reuse_detected, 0);
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
}

#[tokio::test]
async fn invalid_grant_keeps_the_client_and_drops_the_tokens() {
    let oauth = memory_client(options(curl_browser()));
    let (server, url) = logged_in(&oauth).await;
    let client_id = record(&oauth, &url).await.client.unwrap().client_id;

    server.revoke_all_tokens();
    expire_stored_token(&oauth, &url).await;
    match oauth.token(&url).await {
        Err(Error::LoginRequired { server: s, .. }) => assert_eq!(s, url),
        other => panic!("expected LoginRequired, got {other:?}"),
    }

    let stats = server.stats();
    let refresh = stats.token_requests_for("refresh_token");
    assert_eq!(refresh.len(), 1);
    assert_eq!(refresh[0].error.as_deref(), Some("invalid_grant"));
    assert_eq!(stats.refreshes, 0);
    let rec = record(&oauth, &url).await;
    assert!(rec.tokens.is_none());
    assert_eq!(rec.client.expect("client kept").client_id, client_id);
    assert_eq!(rec.issuer, server.issuer());

    // Nothing left to refresh: no more requests to the AS.
    assert!(matches!(
        oauth.token(&url).await,
        Err(Error::LoginRequired { .. })
    ));
    assert_eq!(server.stats().token_requests.len(), 2);
}

#[tokio::test]
async fn middleware_logs_in_again_after_invalid_grant() {
    let oauth = memory_client(options(curl_browser()));
    let (server, url) = logged_in(&oauth).await;
    server.revoke_all_tokens();
    expire_stored_token(&oauth, &url).await;
    assert!(matches!(
        oauth.token(&url).await,
        Err(Error::LoginRequired { .. })
    ));

    // The middleware's token lookup fails, the 401 drives a new login, the call succeeds.
    let echoed = session(&oauth, &url)
        .call_tool("echo", json!({"text": "again"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&echoed), "again");
    let stats = server.stats();
    assert_eq!(stats.authorizations, 2);
    assert!(record(&oauth, &url).await.tokens.is_some());
}

#[tokio::test]
async fn refresh_without_rotation_keeps_the_refresh_token() {
    let server = TestServer::start(Config {
        rotate_refresh_tokens: false,
        ..Config::default()
    })
    .await;
    let url = server.mcp_url();
    let oauth = memory_client(options(curl_browser()));
    oauth.login(&url, None, None).await.expect("login");
    let before = record(&oauth, &url).await.tokens.unwrap();

    for round in 1..=2 {
        server.expire_access_tokens();
        expire_stored_token(&oauth, &url).await;
        oauth.token(&url).await.expect("refresh");
        assert_eq!(server.stats().refreshes, round);
    }
    let after = record(&oauth, &url).await.tokens.unwrap();
    assert_ne!(after.access_token.secret(), before.access_token.secret());
    assert_eq!(
        after.refresh_token.unwrap().secret(),
        before.refresh_token.unwrap().secret(),
        "a refresh response without a refresh token keeps the old one (RFC 6749 §6)"
    );
    assert_eq!(server.stats().refresh_reuse_detected, 0);
}
