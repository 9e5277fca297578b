//! Step-up authorization (MCP 2025-11-25 "Step-Up Authorization Flow"): a
//! `403 insufficient_scope` leads to a new authorization for the union of the scopes held and
//! the scopes the challenge names, and a server that never accepts stops the loop.

mod common;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::*;
use mcp_auth_client::Error;
use mcp_auth_testkit::{Config, TestServer};
use mcp_auth_types::ErrorCode;
use serde_json::json;

#[tokio::test]
async fn insufficient_scope_steps_up_to_the_union_and_succeeds() {
    let server = TestServer::start(Config::default()).await;
    let url = server.mcp_url();
    let oauth = memory_client(options(curl_browser()));
    oauth.login(&url, None, None).await.expect("login");
    let first = server.stats().authorization_requests[0].clone();
    let first_scopes = scopes_of(param(&first, "scope"));
    assert!(
        first_scopes.contains(&"mcp:read".to_owned()),
        "{first_scopes:?}"
    );
    assert!(!first_scopes.contains(&"admin".to_owned()));

    let mcp = session(&oauth, &url);
    let done = mcp
        .call_tool("admin-op", json!({}))
        .await
        .expect("admin-op after step-up");
    assert_eq!(tool_text(&done), "admin-op done");

    let stats = server.stats();
    assert_eq!(stats.insufficient_scope_responses, 1);
    assert_eq!(stats.authorizations, 2);
    let second = scopes_of(param(&stats.authorization_requests[1], "scope"));
    for s in first_scopes.iter().map(String::as_str).chain(["admin"]) {
        assert!(second.iter().any(|x| x == s), "{s} missing from {second:?}");
    }
    let rec = record(&oauth, &url).await;
    let held = scopes_of(rec.tokens.unwrap().scope.as_deref());
    assert!(held.contains(&"admin".to_owned()), "{held:?}");
    assert_eq!(scopes_of(rec.requested_scope.as_deref()), second);

    // The stepped-up token keeps working for the other tools.
    let echoed = mcp
        .call_tool("echo", json!({"text": "still here"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&echoed), "still here");
    assert_eq!(server.stats().authorizations, 2);
}

#[tokio::test]
async fn step_up_refused_by_the_authorization_server_stops_at_once() {
    // The AS does not know `admin`, so it refuses the step-up request.
    let server = TestServer::start(Config {
        as_scopes_supported: Some(
            ["mcp:read", "mcp:write", "offline_access"]
                .map(str::to_owned)
                .to_vec(),
        ),
        ..Config::default()
    })
    .await;
    let url = server.mcp_url();
    let oauth = memory_client(options(curl_browser()));
    oauth.login(&url, None, None).await.expect("login");
    let token_before = record(&oauth, &url).await.tokens.unwrap();

    let err = session(&oauth, &url)
        .call_tool("admin-op", json!({}))
        .await
        .expect_err("admin-op cannot succeed");
    match err {
        Error::AuthorizationDenied { error, .. } => assert_eq!(error, ErrorCode::InvalidScope),
        other => panic!("expected AuthorizationDenied, got {other:?}"),
    }
    let stats = server.stats();
    assert_eq!(stats.authorization_requests.len(), 2);
    assert_eq!(stats.authorizations, 1);
    assert_eq!(stats.code_exchanges, 1);
    // The refused step-up leaves the working token in place.
    let token_after = record(&oauth, &url).await.tokens.unwrap();
    assert_eq!(
        token_after.access_token.secret(),
        token_before.access_token.secret()
    );
}

/// An MCP server that authenticates with the testkit's authorization server but answers
/// every authorized request with `403 insufficient_scope` naming only `admin`: a server that
/// keeps asking for a scope it will never accept.
struct NeverSatisfied {
    base: String,
    issuer: String,
}

async fn never_satisfied(State(s): State<Arc<NeverSatisfied>>, req: Request) -> Response {
    let prm_url = format!("{}/.well-known/oauth-protected-resource/mcp", s.base);
    match req.uri().path() {
        "/.well-known/oauth-protected-resource/mcp" => axum::Json(json!({
            "resource": format!("{}/mcp", s.base),
            "authorization_servers": [s.issuer],
            "scopes_supported": ["mcp:read", "admin"],
        }))
        .into_response(),
        "/mcp" if req.headers().contains_key(header::AUTHORIZATION) => (
            StatusCode::FORBIDDEN,
            [(
                header::WWW_AUTHENTICATE,
                format!(
                    r#"Bearer error="insufficient_scope", scope="admin", resource_metadata="{prm_url}""#
                ),
            )],
        )
            .into_response(),
        "/mcp" => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                format!(r#"Bearer resource_metadata="{prm_url}", scope="mcp:read""#),
            )],
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::test]
async fn server_that_never_accepts_the_scope_exhausts_step_up_after_three_authorizations() {
    let auth = TestServer::start(Config::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(never_satisfied)
        .with_state(Arc::new(NeverSatisfied {
            base: base.clone(),
            issuer: auth.issuer(),
        }));
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("{base}/mcp");
    let oauth = memory_client(options(curl_browser()));

    let err = session(&oauth, &url)
        .call_tool("echo", json!({"text": "never"}))
        .await
        .expect_err("the server never accepts");
    match err {
        Error::StepUpExhausted { attempts, scopes } => {
            assert_eq!(attempts, 3);
            assert_eq!(scopes, "admin");
        }
        other => panic!("expected StepUpExhausted, got {other:?}"),
    }
    let stats = auth.stats();
    assert_eq!(stats.authorizations, 3, "the 401 login and two step-ups");
    assert_eq!(stats.code_exchanges, 3);
    // The challenge named only `admin`; the step-up still keeps what was held (the union).
    let first = scopes_of(param(&stats.authorization_requests[0], "scope"));
    assert!(first.contains(&"mcp:read".to_owned()), "{first:?}");
    for request in &stats.authorization_requests[1..] {
        let scopes = scopes_of(param(request, "scope"));
        for s in first.iter().map(String::as_str).chain(["admin"]) {
            assert!(scopes.iter().any(|x| x == s), "{s} missing from {scopes:?}");
        }
    }
    serving.abort();
}
