//! End-to-end flows against the testkit: interactive login, the middleware driving the whole
//! dance, logout, the 2025-03-26 fallbacks, the callback port, and client credentials.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mcp_auth_client::registration::PreRegistered;
use mcp_auth_client::store::Registration;
use mcp_auth_client::{
    ClientIdentity, ClientOptions, Error, GrantKind, Interaction, OAuthClient, RedirectConfig,
};
use mcp_auth_testkit::{ClientConfig, Config, TestServer};
use mcp_auth_types::{AuthMethod, ClientMetadata, ClientSecret};
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
    assert_eq!(
        token.authorization_header().split(' ').next(),
        Some("Bearer")
    );

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
    assert_eq!(
        exchange.client_id.as_deref(),
        Some(client.client_id.as_str())
    );

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
    assert_eq!(
        stats.token_requests.len(),
        1,
        "no token request after login"
    );
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
    assert_eq!(
        server.stats().revocations,
        2,
        "refresh token, then access token"
    );
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

    let token = oauth
        .login(&url, None, None)
        .await
        .expect("client credentials");
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

/// Logs in to a server started with `config` through the middleware and calls `echo`.
async fn echo_through(config: Config, opts: ClientOptions) -> (TestServer, OAuthClient, String) {
    let server = TestServer::start(config).await;
    let url = server.mcp_url();
    let oauth = memory_client(opts);
    let echoed = session(&oauth, &url)
        .call_tool("echo", json!({"text": "variant"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&echoed), "variant");
    assert_eq!(server.stats().authorizations, 1);
    (server, oauth, url)
}

#[tokio::test]
async fn issuer_with_a_path_is_found_by_path_insertion() {
    let (server, oauth, url) = echo_through(
        Config {
            issuer_path: "/tenant1".into(),
            ..Config::default()
        },
        options(curl_browser()),
    )
    .await;
    assert_eq!(record(&oauth, &url).await.issuer, server.issuer());
    assert!(server.issuer().ends_with("/tenant1"));
}

#[tokio::test]
async fn root_resource_metadata_without_a_challenge_pointer_is_found() {
    let (server, oauth, url) = echo_through(
        Config {
            prm_at_path: false,
            prm_at_root: true,
            challenge_resource_metadata: false,
            ..Config::default()
        },
        options(curl_browser()),
    )
    .await;
    assert_eq!(record(&oauth, &url).await.issuer, server.issuer());
}

#[tokio::test]
async fn sse_answers_and_strict_accept_are_handled() {
    echo_through(
        Config {
            sse_responses: true,
            strict_accept: true,
            ..Config::default()
        },
        options(curl_browser()),
    )
    .await;
}

#[tokio::test]
async fn oidc_only_metadata_is_found() {
    echo_through(
        Config {
            as_metadata_oauth: false,
            ..Config::default()
        },
        options(curl_browser()),
    )
    .await;
}

#[tokio::test]
async fn oidc_discovery_appended_to_the_issuer_path_is_found() {
    let (server, oauth, url) = echo_through(
        Config {
            issuer_path: "/tenant1".into(),
            as_metadata_oauth: false,
            as_metadata_oidc: false,
            as_metadata_oidc_appended: true,
            ..Config::default()
        },
        options(curl_browser()),
    )
    .await;
    assert_eq!(record(&oauth, &url).await.issuer, server.issuer());
}

#[tokio::test]
async fn registration_answer_decides_the_token_endpoint_auth_method() {
    let (server, oauth, url) = echo_through(
        Config {
            registration_forced_auth_method: Some(AuthMethod::ClientSecretPost),
            ..Config::default()
        },
        options(curl_browser()),
    )
    .await;
    let client = record(&oauth, &url).await.client.unwrap();
    assert_eq!(client.auth_method, AuthMethod::ClientSecretPost);
    assert!(client.client_secret.is_some());
    expire_stored_token(&oauth, &url).await;
    oauth.token(&url).await.expect("refresh");
    let stats = server.stats();
    assert_eq!(stats.refreshes, 1);
    assert!(
        stats
            .token_requests
            .iter()
            .all(|r| r.auth_method == "client_secret_post" && r.status == 200),
        "{:?}",
        stats.token_requests
    );
}

#[tokio::test]
async fn pre_registered_public_client_logs_in_without_registration() {
    let config = Config {
        registration_enabled: false,
        clients: vec![ClientConfig::public(
            "pre-public",
            &["http://127.0.0.1/callback"],
        )],
        ..Config::default()
    };
    let opts = ClientOptions {
        identity: ClientIdentity {
            pre_registered: Some(PreRegistered {
                client_id: "pre-public".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..options(curl_browser())
    };
    let (server, oauth, url) = echo_through(config, opts).await;
    let stats = server.stats();
    assert!(stats.registration_requests.is_empty());
    assert_eq!(
        param(&stats.authorization_requests[0], "client_id"),
        Some("pre-public")
    );
    let client = record(&oauth, &url).await.client.unwrap();
    assert_eq!(client.registration, Registration::PreRegistered);
}

#[tokio::test]
async fn client_id_metadata_document_is_used_when_the_as_accepts_it() {
    let doc_url = "https://client.example.com/mcp-auth.json";
    let document = ClientMetadata {
        client_id: Some(doc_url.into()),
        redirect_uris: vec!["http://127.0.0.1/callback".into()],
        token_endpoint_auth_method: Some(AuthMethod::None),
        ..Default::default()
    };
    let config = Config {
        client_id_metadata_document_supported: true,
        client_metadata_documents: vec![(doc_url.into(), document)],
        ..Config::default()
    };
    let opts = ClientOptions {
        identity: ClientIdentity {
            metadata_document_url: Some(doc_url.into()),
            ..Default::default()
        },
        ..options(curl_browser())
    };
    let (server, oauth, url) = echo_through(config, opts).await;
    let stats = server.stats();
    assert!(stats.registration_requests.is_empty());
    assert_eq!(
        param(&stats.authorization_requests[0], "client_id"),
        Some(doc_url)
    );
    let client = record(&oauth, &url).await.client.unwrap();
    assert_eq!(client.registration, Registration::MetadataDocument);
}

/// Regression: a client that may not interact with the user still registered a new client
/// at the authorization server (and bound a callback port) on every call before reporting
/// `LoginRequired`, so an agent polling without a login flooded the AS with registrations.
#[tokio::test]
async fn non_interactive_middleware_reports_login_required_without_registering() {
    let server = TestServer::start(Config::default()).await;
    let url = server.mcp_url();
    let oauth = memory_client(options(Interaction::NonInteractive));
    for _ in 0..2 {
        let err = session(&oauth, &url)
            .call_tool("echo", json!({"text": "x"}))
            .await
            .expect_err("no user to log in");
        assert!(matches!(err, Error::LoginRequired { .. }), "{err:?}");
    }
    let stats = server.stats();
    assert!(stats.authorization_requests.is_empty());
    assert_eq!(
        stats.registration_requests.len(),
        0,
        "nothing to register for: no authorization can follow"
    );
}

/// Regression: a non-interactive call whose (derived or fixed) callback port is held by an
/// interactive login in progress failed with `CallbackPort` instead of `LoginRequired`.
#[tokio::test]
async fn non_interactive_login_does_not_need_the_callback_port() {
    let server = TestServer::start(Config::default()).await;
    let url = server.mcp_url();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let oauth = memory_client(ClientOptions {
        redirect: RedirectConfig {
            port: Some(port),
            ..Default::default()
        },
        ..options(Interaction::NonInteractive)
    });
    let result = oauth.token_or_login(&url).await;
    assert!(
        matches!(result, Err(Error::LoginRequired { .. })),
        "expected LoginRequired, got {result:?}"
    );
    drop(taken);
}
