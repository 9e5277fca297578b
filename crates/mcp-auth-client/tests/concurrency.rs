//! Several requests needing authorization at the same time: the user should see one browser
//! authorization per need, not one per request, and a token another process just obtained
//! should be used rather than refreshed away.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mcp_auth_client::store::MemoryStore;
use mcp_auth_client::{Interaction, OAuthClient};
use mcp_auth_testkit::{Config, TestServer};
use serde_json::{Value, json};

/// Calls `tool` from `n` MCP sessions at once (all through `oauth`), returning the results.
async fn call_in_parallel(n: usize, oauth: &OAuthClient, url: &str, tool: &str) -> Vec<Value> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mcp = session(oauth, url);
            let barrier = barrier.clone();
            let tool = tool.to_owned();
            tokio::spawn(async move {
                barrier.wait().await;
                let args = if tool == "echo" {
                    json!({"text": format!("call {i}")})
                } else {
                    json!({})
                };
                mcp.call_tool(&tool, args).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().expect("tool call"));
    }
    results
}

/// A server whose `/authorize` is slow enough that every parallel request has had its
/// 401/403 before the first authorization completes.
async fn slow_authorize_server() -> TestServer {
    TestServer::start(Config {
        authorize_delay: Duration::from_millis(300),
        ..Config::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_calls_log_in_once() {
    let server = slow_authorize_server().await;
    let url = server.mcp_url();
    let oauth = memory_client(options(curl_browser()));

    let results = call_in_parallel(8, &oauth, &url, "echo").await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(tool_text(r), format!("call {i}"));
    }
    let stats = server.stats();
    assert_eq!(stats.unauthorized_responses, 8);
    assert_eq!(
        stats.authorization_requests.len(),
        1,
        "one browser authorization"
    );
    assert_eq!(stats.refreshes, 0);
    assert_eq!(stats.refresh_reuse_detected, 0);
}

/// Regression: every request answered `403 insufficient_scope` ran its own step-up, so the
/// user was sent through the browser once per request although the first step-up already
/// stored a token with the scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_insufficient_scope_answers_step_up_once() {
    let server = slow_authorize_server().await;
    let url = server.mcp_url();
    let oauth = memory_client(options(curl_browser()));
    oauth.login(&url, None, None).await.expect("login");

    let results = call_in_parallel(4, &oauth, &url, "admin-op").await;
    assert!(results.iter().all(|r| tool_text(r) == "admin-op done"));
    let stats = server.stats();
    assert_eq!(stats.insufficient_scope_responses, 4);
    assert_eq!(
        stats.authorization_requests.len(),
        2,
        "the login and ONE step-up; every waiter should use the stepped-up token"
    );
}

/// Regression: a 401 to a request sent without any token (`rejected` = `None`) forced a
/// refresh of the token another process had just stored, instead of using it.
#[tokio::test]
async fn unauthorized_without_a_token_uses_the_token_another_process_just_stored() {
    let server = TestServer::start(Config::default()).await;
    let url = server.mcp_url();
    let store = Arc::new(MemoryStore::new());
    // "Process" B starts without credentials and sends its request without a token …
    let b = client_over(store.clone(), options(Interaction::NonInteractive));
    assert!(b.token(&url).await.is_err());
    // … while "process" A logs in.
    let a = client_over(store, options(curl_browser()));
    let stored = a.login(&url, None, None).await.expect("login by A");

    // B's request was answered 401; it reacts as the middleware does.
    let token = b
        .on_unauthorized(&url, None, None)
        .await
        .expect("a token for B");
    assert_eq!(
        token.record.access_token.secret(),
        stored.record.access_token.secret(),
        "B should use A's fresh token"
    );
    let stats = server.stats();
    assert_eq!(
        stats.refreshes, 0,
        "nothing was rejected; nothing to refresh"
    );
    assert_eq!(stats.authorizations, 1);
}
