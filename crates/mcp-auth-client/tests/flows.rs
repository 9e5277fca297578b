//! End-to-end flows against the testkit: interactive login, the middleware driving the whole
//! dance, logout, the 2025-03-26 fallbacks, the callback port, and client credentials.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mcp_auth_client::registration::PreRegistered;
use mcp_auth_client::store::Registration;
use mcp_auth_client::{ClientIdentity, ClientOptions, Error, GrantKind, RedirectConfig};
use mcp_auth_testkit::{ClientConfig, Config, TestServer};
use mcp_auth_types::ClientSecret;
use serde_json::{Value, json};

#[tokio::test]
async fn login_registers_a_native_client_and_the_token_serves_mcp_calls() {
    let server = TestServer::start(Config::default()).await;
    let url = server.mcp_url();
    let oauth = memory_client(options(curl_browser()));

    let token = oauth.login(&url, None, None).await.expect("login");

    let rec = record(&oauth, &url).await;
    assert_eq!(rec.server_url, url);
    assert_eq!(rec.resource.as_deref(), Some(url.as_str()));
    assert_eq!(rec.issuer, server.issuer());
    assert_eq!(rec.grant.as_deref(), Some("authorization_code"));
    let client = rec.client.as_ref().expect("stored client");
    assert_eq!(client.issuer, server.issuer());
    assert_eq!(client.registration, Registration::Dynamic);
    let tokens = rec.tokens.as_ref().expect("stored tokens");
    assert_eq!(
        tokens.access_token.secret(),
        token.record.access_token.secret()
    );
    assert!(tokens.refresh_token.is_some());
    assert_eq!(token.authorization_header().split(' ').next(), Some("Bearer"));

    let stats = server.stats();
    assert_eq!(stats.registrations, 1);
    let registration: Value =
        serde_json::from_str(&stats.registration_requests[0]).expect("registration JSON");
    assert_eq!(registration["application_type"], "native");
    assert_eq!(registration["token_endpoint_auth_method"], "none");
    let redirect = registration["redirect_uris"][0].as_str().unwrap();
    assert!(
        redirect.starts_with("http://127.0.0.1:") && redirect.ends_with("/callback"),
        "{redirect}"
    );
    assert_eq!(client.redirect_uri.as_deref(), Some(redirect));

    assert_eq!(stats.authorizations, 1);
    let auth = &stats.authorization_requests[0];
    assert_eq!(param(auth, "client_id"), Some(client.client_id.as_str()));
    assert_eq!(param(auth, "resource"), Some(url.as_str()));
    assert_eq!(param(auth, "code_challenge_method"), Some("S256"));
    assert_eq!(param(auth, "redirect_uri"), Some(redirect));
    assert_eq!(stats.code_exchanges, 1);
    let exchange = &stats.token_requests_for("authorization_code")[0];
    assert_eq!(exchange.param("resource"), Some(url.as_str()));
    assert_eq!(exchange.client_id.as_deref(), Some(client.client_id.as_str()));

    let mcp = session(&oauth, &url);
    mcp.connect().await.expect("connect");
    let tools = mcp.list_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["echo", "whoami", "admin-op"]);
    let echoed = mcp
        .call_tool("echo", json!({"text": "hello"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&echoed), "hello");
    let who = mcp.call_tool("whoami", json!({})).await.expect("whoami");
    let who: Value = serde_json::from_str(tool_text(&who)).unwrap();
    assert_eq!(who["client_id"], client.client_id.as_str());
    assert_eq!(who["resource"], url.as_str());

    let again = oauth.token(&url).await.expect("token");
    assert_eq!(
        again.record.access_token.secret(),
        token.record.access_token.secret()
    );
    let stats = server.stats();
    assert_eq!(stats.token_requests.len(), 1, "no token request after login");
    assert_eq!(stats.authorization_requests.len(), 1);
    assert_eq!(stats.unauthorized_responses, 1, "only the login's probe");
}

#[tokio::test]
async fn middleware_alone_discovers_logs_in_and_retries() {
    let server = TestServer::start(Config::default()).await;
    let url = server.mcp_url();
    let oauth = memory_client(options(curl_browser()));
    assert!(oauth.store().list().await.unwrap().is_empty());

    let mcp = session(&oauth, &url);
    let echoed = mcp
        .call_tool("echo", json!({"text": "from the middleware"}))
        .await
        .expect("echo through the middleware");
    assert_eq!(tool_text(&echoed), "from the middleware");

    let stats = server.stats();
    assert_eq!(stats.unauthorized_responses, 1);
    assert_eq!(stats.registrations, 1);
    assert_eq!(stats.authorizations, 1);
    assert_eq!(stats.code_exchanges, 1);
    assert!(
        stats
            .discovery_requests()
            .contains(&("/.well-known/oauth-protected-resource/mcp".to_owned(), 200)),
        "{:?}",
        stats.discovery_requests()
    );
    assert_eq!(
        stats.mcp_methods.last().map(String::as_str),
        Some("tools/call")
    );
    let rec = record(&oauth, &url).await;
    assert!(rec.tokens.is_some());
    assert_eq!(rec.issuer, server.issuer());
}

#[tokio::test]
async fn logout_revokes_at_the_authorization_server_and_forgets_the_server() {
    let server = TestServer::start(Config::default()).await;
    let url = server.mcp_url();
    let oauth = memory_client(options(curl_browser()));
    let token = oauth.login(&url, None, None).await.expect("login");

    let problems = oauth.logout(&url).await.expect("logout");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(server.stats().revocations, 2, "refresh token, then access token");
    assert!(oauth.store().get(&key_of(&url)).await.unwrap().is_none());
    assert!(oauth.store().list().await.unwrap().is_empty());

    // The revoked token no longer opens the MCP endpoint.
    let resp = reqwest::Client::new()
        .post(&url)
        .header("authorization", token.authorization_header())
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(matches!(
        oauth.token(&url).await,
        Err(Error::LoginRequired { .. })
    ));
}

#[tokio::test]
async fn legacy_2025_03_26_server_logs_in_from_the_origin_metadata() {
    let server = TestServer::start(Config::legacy_2025_03_26()).await;
    let url = server.mcp_url();
    let oauth = memory_client(options(curl_browser()));

    let mcp = session(&oauth, &url);
    let echoed = mcp
        .call_tool("echo", json!({"text": "legacy"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&echoed), "legacy");

    let rec = record(&oauth, &url).await;
    assert_eq!(rec.issuer, server.issuer());
    assert_eq!(rec.resource.as_deref(), Some(url.as_str()));
    let stats = server.stats();
    assert_eq!(stats.authorizations, 1);
    let discovery = stats.discovery_requests();
    assert!(
        discovery
            .iter()
            .any(|(p, s)| p.starts_with("/.well-known/oauth-protected-resource") && *s == 404),
        "{discovery:?}"
    );
    assert!(
        discovery.contains(&("/.well-known/oauth-authorization-server".to_owned(), 200)),
        "{discovery:?}"
    );
}

#[tokio::test]
async fn legacy_server_without_any_metadata_uses_the_default_endpoints() {
    let server = TestServer::start(Config {
        no_as_metadata: true,
        ..Config::legacy_2025_03_26()
    })
    .await;
    let url = server.mcp_url();
    let oauth = memory_client(options(curl_browser()));

    oauth.login(&url, None, None).await.expect("login");
    let rec = record(&oauth, &url).await;
    let base = server.base_url();
    assert_eq!(rec.issuer, base);
    assert_eq!(rec.token_endpoint, format!("{base}/token"));
    assert_eq!(
        rec.authorization_endpoint.as_deref(),
        Some(format!("{base}/authorize").as_str())
    );
    assert!(rec.revocation_endpoint.is_none());

    let stats = server.stats();
    assert!(
        stats.discovery_requests().iter().all(|(_, s)| *s == 404),
        "{:?}",
        stats.discovery_requests()
    );
    assert_eq!(stats.registrations, 1);
    assert_eq!(stats.code_exchanges, 1);

    let echoed = session(&oauth, &url)
        .call_tool("echo", json!({"text": "defaults"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&echoed), "defaults");
    assert_eq!(server.stats().authorizations, 1);
}

#[tokio::test]
async fn busy_callback_port_fails_fast_without_starting_the_browser() {
    let server = TestServer::start(Config::default()).await;
    let url = server.mcp_url();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (_dir, marker) = marker();
    let oauth = memory_client(ClientOptions {
        redirect: RedirectConfig {
            port: Some(port),
            ..Default::default()
        },
        ..options(marker_browser(&marker))
    });

    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), oauth.login(&url, None, None))
        .await
        .expect("login must not hang on a busy port");
    match result {
        Err(Error::CallbackPort { addr, .. }) => assert_eq!(addr, format!("127.0.0.1:{port}")),
        other => panic!("expected CallbackPort, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!marker.exists(), "the browser must not be started");
    let stats = server.stats();
    assert_eq!(stats.registrations, 0);
    assert!(stats.authorization_requests.is_empty());
    drop(taken);
}

#[tokio::test]
async fn client_credentials_get_a_token_without_any_authorization_request() {
    let server = TestServer::start(Config::default()).await;
    server.add_client(ClientConfig::confidential("machine-1", "s3cret-value", &[]));
    let url = server.mcp_url();
    let (_dir, marker) = marker();
    let oauth = memory_client(ClientOptions {
        grant: GrantKind::ClientCredentials,
        identity: ClientIdentity {
            pre_registered: Some(PreRegistered {
                client_id: "machine-1".into(),
                client_secret: Some(ClientSecret::new("s3cret-value")),
                issuer: Some(server.issuer()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..options(marker_browser(&marker))
    });

    let token = oauth.login(&url, None, None).await.expect("client credentials");
    assert!(token.record.refresh_token.is_none());
    let stats = server.stats();
    assert_eq!(stats.client_credentials, 1);
    assert_eq!(stats.authorizations, 0);
    assert!(stats.authorization_requests.is_empty());
    assert_eq!(stats.registrations, 0);
    let request = &stats.token_requests[0];
    assert_eq!(request.grant_type.as_deref(), Some("client_credentials"));
    assert_eq!(request.client_id.as_deref(), Some("machine-1"));
    assert_eq!(request.auth_method, "client_secret_basic");
    assert_eq!(request.param("resource"), Some(url.as_str()));
    assert!(!marker.exists());

    let rec = record(&oauth, &url).await;
    assert_eq!(rec.grant.as_deref(), Some("client_credentials"));
    let client = rec.client.as_ref().unwrap();
    assert_eq!(client.registration, Registration::PreRegistered);

    let who = session(&oauth, &url)
        .call_tool("whoami", json!({}))
        .await
        .expect("whoami");
    let who: Value = serde_json::from_str(tool_text(&who)).unwrap();
    assert_eq!(who["client_id"], "machine-1");

    // Without a refresh token, an expired client-credentials token is renewed by the same
    // grant, still without a browser.
    expire_stored_token(&oauth, &url).await;
    let renewed = oauth.token(&url).await.expect("renewed");
    assert_ne!(
        renewed.record.access_token.secret(),
        token.record.access_token.secret()
    );
    let stats = server.stats();
    assert_eq!(stats.client_credentials, 2);
    assert_eq!(stats.authorizations, 0);
    assert!(!marker.exists());
}
