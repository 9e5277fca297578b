//! Misbehaving and malicious servers: every one must be refused before the user's browser
//! is sent anywhere (or, for a mix-up `iss`, before the code is exchanged), and credentials
//! stay bound to the authorization server that issued them.

mod common;

use std::time::Duration;

use common::*;
use mcp_auth_client::registration::PreRegistered;
use mcp_auth_client::store::Registration;
use mcp_auth_client::{ClientIdentity, ClientOptions, Error, OAuthClient};
use mcp_auth_testkit::{ClientConfig, Config, Stats, TestServer};
use mcp_auth_types::IssCheck;
use mcp_auth_types::metadata::MetadataError;

/// Logs in to a server started with `config` through a "browser" that only leaves a marker,
/// and checks that nothing reached the authorization endpoint and no browser was started.
async fn refused_before_authorize(config: Config) -> (Error, Stats) {
    let server = TestServer::start(config).await;
    let (_dir, marker) = marker();
    let oauth = memory_client(options(marker_browser(&marker)));
    let result = oauth.login(&server.mcp_url(), None, None).await;
    // Give a wrongly started browser time to leave its marker.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = result.expect_err("a hostile server must be refused");
    assert!(!marker.exists(), "the browser was started for {err}");
    let stats = server.stats();
    assert_eq!(stats.authorizations, 0, "{err}");
    assert!(stats.authorization_requests.is_empty(), "{err}");
    assert!(stats.token_requests.is_empty(), "{err}");
    assert!(oauth.store().list().await.unwrap().is_empty());
    (err, stats)
}

fn assert_bad_authorization_endpoint(err: &Error) {
    match err {
        Error::Metadata {
            source: MetadataError::BadEndpoint { field, .. },
            ..
        } => assert_eq!(*field, "authorization_endpoint"),
        Error::Url { what, .. } => assert!(what.contains("authorization endpoint"), "{what}"),
        other => panic!("expected a refused authorization_endpoint, got {other:?}"),
    }
}

#[tokio::test]
async fn marker_browser_control_leaves_its_marker_when_started() {
    // The other tests assert the marker's absence; this shows it would be there.
    let server = TestServer::start(Config::default()).await;
    let (_dir, marker) = marker();
    let oauth = memory_client(ClientOptions {
        flow_timeout: Duration::from_millis(500),
        ..options(marker_browser(&marker))
    });
    let result = oauth.login(&server.mcp_url(), None, None).await;
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert!(marker.exists());
}

#[tokio::test]
async fn javascript_authorization_endpoint_is_never_opened() {
    let (err, _) = refused_before_authorize(Config {
        authorization_endpoint_override: Some("javascript:alert(1)".into()),
        ..Config::default()
    })
    .await;
    assert_bad_authorization_endpoint(&err);
}

#[tokio::test]
async fn file_authorization_endpoint_is_never_opened() {
    let (err, _) = refused_before_authorize(Config {
        authorization_endpoint_override: Some("file:///etc/passwd".into()),
        ..Config::default()
    })
    .await;
    assert_bad_authorization_endpoint(&err);
}

#[tokio::test]
async fn plain_http_authorization_endpoint_on_a_remote_host_is_refused() {
    let (err, _) = refused_before_authorize(Config {
        authorization_endpoint_override: Some("http://evil.example.com/authorize".into()),
        ..Config::default()
    })
    .await;
    assert_bad_authorization_endpoint(&err);
}

#[tokio::test]
async fn metadata_naming_another_issuer_is_refused() {
    let (err, stats) = refused_before_authorize(Config {
        metadata_issuer_override: Some("https://evil.example.com".into()),
        ..Config::default()
    })
    .await;
    match err {
        Error::Metadata {
            source: MetadataError::IssuerMismatch { found, .. },
            ..
        } => assert_eq!(found, "https://evil.example.com"),
        other => panic!("expected IssuerMismatch, got {other:?}"),
    }
    assert_eq!(stats.registrations, 0);
}

#[tokio::test]
async fn resource_metadata_for_another_resource_is_refused_before_the_as_is_contacted() {
    let (err, stats) = refused_before_authorize(Config {
        prm_resource_override: Some("https://evil.example.com/mcp".into()),
        ..Config::default()
    })
    .await;
    match err {
        Error::Metadata {
            source: MetadataError::ResourceMismatch { found, .. },
            ..
        } => assert_eq!(found, "https://evil.example.com/mcp"),
        other => panic!("expected ResourceMismatch, got {other:?}"),
    }
    let discovery = stats.discovery_requests();
    assert!(
        discovery
            .iter()
            .all(|(p, _)| p.starts_with("/.well-known/oauth-protected-resource")),
        "the AS metadata must not be fetched: {discovery:?}"
    );
    assert!(stats.registration_requests.is_empty());
}

#[tokio::test]
async fn authorization_server_with_a_javascript_issuer_is_refused() {
    let (err, _) = refused_before_authorize(Config {
        prm_authorization_servers_override: Some(vec!["javascript:alert(1)".into()]),
        ..Config::default()
    })
    .await;
    assert!(matches!(err, Error::Url { .. }), "{err:?}");
}

#[tokio::test]
async fn authorization_server_without_s256_is_refused() {
    let (err, stats) = refused_before_authorize(Config {
        code_challenge_methods_supported: Some(vec!["plain".into()]),
        ..Config::default()
    })
    .await;
    assert!(matches!(err, Error::PkceNotSupported { .. }), "{err:?}");
    assert!(stats.registration_requests.is_empty());
}

#[tokio::test]
async fn authorization_server_silent_about_pkce_is_refused() {
    let (err, _) = refused_before_authorize(Config {
        code_challenge_methods_supported: None,
        ..Config::default()
    })
    .await;
    assert!(matches!(err, Error::PkceNotSupported { .. }), "{err:?}");
}

/// Logs in through curl to a server whose redirect carries a bad `iss`, and checks the code
/// was never exchanged.
async fn refused_after_redirect(config: Config) -> Error {
    let server = TestServer::start(config).await;
    let oauth = memory_client(options(curl_browser()));
    let err = oauth
        .login(&server.mcp_url(), None, None)
        .await
        .expect_err("a bad iss must be refused");
    let stats = server.stats();
    assert_eq!(stats.authorizations, 1, "{err}");
    assert_eq!(stats.code_exchanges, 0, "{err}");
    assert!(stats.token_requests.is_empty(), "{err}");
    assert!(oauth.store().list().await.unwrap().is_empty());
    err
}

#[tokio::test]
async fn mix_up_iss_is_refused_and_the_code_never_exchanged() {
    let err = refused_after_redirect(Config {
        iss_override: Some("https://evil.example.com".into()),
        ..Config::default()
    })
    .await;
    match err {
        Error::Iss(IssCheck::Mismatch { found, .. }) => {
            assert_eq!(found, "https://evil.example.com");
        }
        other => panic!("expected Iss mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_iss_from_a_server_that_promised_it_is_refused() {
    let err = refused_after_redirect(Config {
        send_iss: false,
        ..Config::default()
    })
    .await;
    assert!(matches!(err, Error::Iss(IssCheck::Missing)), "{err:?}");
}

/// Moves `server`'s protected resource metadata to name `other` as its authorization server.
fn move_to(server: &TestServer, other: &TestServer) {
    let issuer = other.issuer();
    server.configure(|c| c.prm_authorization_servers_override = Some(vec![issuer]));
}

/// The client ids an authorization server has seen, in any request.
fn client_ids_seen(stats: &Stats) -> Vec<String> {
    let mut seen: Vec<String> = stats
        .authorization_requests
        .iter()
        .filter_map(|r| param(r, "client_id").map(str::to_owned))
        .chain(
            stats
                .token_requests
                .iter()
                .filter_map(|r| r.client_id.clone()),
        )
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

async fn relogin_after_move(oauth: &OAuthClient, server: &TestServer, other: &TestServer) {
    let url = server.mcp_url();
    move_to(server, other);
    oauth.login(&url, None, None).await.expect("login at B");
}

#[tokio::test]
async fn dynamic_client_is_not_reused_at_another_authorization_server() {
    let a = TestServer::start(Config::default()).await;
    let b = TestServer::start(Config::default()).await;
    let url = a.mcp_url();
    let oauth = memory_client(options(curl_browser()));
    oauth.login(&url, None, None).await.expect("login at A");
    let old = record(&oauth, &url).await.client.unwrap();
    assert_eq!(old.issuer, a.issuer());

    relogin_after_move(&oauth, &a, &b).await;

    let rec = record(&oauth, &url).await;
    assert_eq!(rec.issuer, b.issuer());
    assert_eq!(rec.token_endpoint, format!("{}/token", b.base_url()));
    let new = rec.client.unwrap();
    assert_eq!(new.issuer, b.issuer());
    assert_eq!(new.registration, Registration::Dynamic);
    assert_ne!(new.client_id, old.client_id);
    let stats = b.stats();
    assert_eq!(stats.registrations, 1);
    assert_eq!(client_ids_seen(&stats), [new.client_id]);
    assert_eq!(a.stats().authorizations, 1, "nothing more went to A");
}

#[tokio::test]
async fn pre_registered_client_is_only_sent_to_its_issuer() {
    let a = TestServer::start(Config::default()).await;
    let b = TestServer::start(Config::default()).await;
    a.add_client(ClientConfig::public(
        "pre-registered-at-a",
        &["http://127.0.0.1/callback"],
    ));
    let url = a.mcp_url();
    let oauth = memory_client(ClientOptions {
        identity: ClientIdentity {
            pre_registered: Some(PreRegistered {
                client_id: "pre-registered-at-a".into(),
                issuer: Some(a.issuer()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..options(curl_browser())
    });
    oauth.login(&url, None, None).await.expect("login at A");
    assert_eq!(a.stats().registrations, 0);
    assert_eq!(
        client_ids_seen(&a.stats()),
        ["pre-registered-at-a".to_owned()]
    );

    relogin_after_move(&oauth, &a, &b).await;

    let stats = b.stats();
    assert_eq!(stats.registrations, 1);
    let seen = client_ids_seen(&stats);
    assert!(
        !seen.iter().any(|c| c == "pre-registered-at-a"),
        "the pre-registered id went to another AS: {seen:?}"
    );
    let client = record(&oauth, &url).await.client.unwrap();
    assert_eq!(client.issuer, b.issuer());
    assert_eq!(client.registration, Registration::Dynamic);
}
