//! Several requests of one process needing authorization at the same time.

mod common;

use std::sync::Arc;

use common::*;
use mcp_auth_testkit::{Config, TestServer};
use serde_json::json;

async fn run_parallel(n: usize, oauth: &mcp_auth_client::OAuthClient, url: &str, tool: &'static str) {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mcp = session(oauth, url);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let args = if tool == "echo" { json!({"text": format!("{i}")}) } else { json!({}) };
                mcp.call_tool(tool, args).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("call");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_calls() {
    let server = TestServer::start(Config::default()).await;
    let url = server.mcp_url();
    let oauth = memory_client(options(curl_browser()));
    run_parallel(8, &oauth, &url, "echo").await;
    let s = server.stats();
    eprintln!("auth={} refreshes={} reuse={} unauth={}", s.authorizations, s.refreshes, s.refresh_reuse_detected, s.unauthorized_responses);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn step_ups() {
    let server = TestServer::start(Config::default()).await;
    let url = server.mcp_url();
    let oauth = memory_client(options(curl_browser()));
    oauth.login(&url, None, None).await.unwrap();
    run_parallel(4, &oauth, &url, "admin-op").await;
    let s = server.stats();
    eprintln!("auth={} refreshes={} reuse={} insuff={}", s.authorizations, s.refreshes, s.refresh_reuse_detected, s.insufficient_scope_responses);
}
