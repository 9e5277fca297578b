//! Shared setup for the integration tests: a client whose "browser" is curl (or a command
//! that only leaves a marker file behind), MCP sessions through the middleware, and helpers
//! that reach into the store the way another process would.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcp_auth_client::store::{CredentialStore, MemoryStore, ServerRecord, now_secs, server_key};
use mcp_auth_client::{
    ClientOptions, HttpOptions, Interaction, McpSession, OAuthClient, OAuthMiddleware,
    RedirectConfig,
};
use mcp_auth_types::ResourceUrl;

/// Deadline of one interactive authorization in these tests: long enough for a loaded
/// machine, short enough that a lost redirect fails the test instead of hanging it.
pub const FLOW_TIMEOUT: Duration = Duration::from_secs(10);

/// curl plays the user's browser: it fetches the authorization URL (appended as the last
/// argument) and follows the testkit's auto-approving 302 to the client's loopback listener.
pub fn curl_browser() -> Interaction {
    Interaction::Browser(Some(
        ["curl", "-sS", "-L", "-o", "/dev/null"]
            .map(str::to_owned)
            .to_vec(),
    ))
}

/// A "browser" that only creates `marker` when started. It goes through `sh` so the URL
/// (appended as `$1`) is never used as a file name, whatever it is.
pub fn marker_browser(marker: &Path) -> Interaction {
    Interaction::Browser(Some(vec![
        "sh".to_owned(),
        "-c".to_owned(),
        "touch \"$0\"".to_owned(),
        marker.to_string_lossy().into_owned(),
    ]))
}

/// A marker path in a fresh temporary directory (kept alive by the returned guard).
pub fn marker() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("browser-was-started");
    (dir, path)
}

/// Options for tests: the given interaction, an OS-chosen callback port (tests run in
/// parallel), and a short flow deadline.
pub fn options(interaction: Interaction) -> ClientOptions {
    ClientOptions {
        interaction,
        redirect: RedirectConfig {
            port: Some(0),
            ..Default::default()
        },
        flow_timeout: FLOW_TIMEOUT,
        ..Default::default()
    }
}

/// A client over a fresh in-memory store.
pub fn memory_client(opts: ClientOptions) -> OAuthClient {
    client_over(Arc::new(MemoryStore::new()), opts)
}

/// A client over `store`.
pub fn client_over(store: Arc<dyn CredentialStore>, opts: ClientOptions) -> OAuthClient {
    OAuthClient::new(store, opts, HttpOptions::default()).expect("client")
}

/// An MCP session to `url` whose HTTP client carries the OAuth middleware.
pub fn session(oauth: &OAuthClient, url: &str) -> McpSession {
    let base = oauth.http().client().expect("http client").clone();
    let http = reqwest_middleware::ClientBuilder::new(base)
        .with(OAuthMiddleware::new(oauth.clone(), url))
        .build();
    McpSession::new(http, url)
}

/// The store key of an MCP server URL, as the library computes it.
pub fn key_of(url: &str) -> String {
    let canonical = ResourceUrl::canonicalize(url).expect("canonical server URL");
    server_key(canonical.as_str())
}

/// The stored record of `url` (panics when there is none).
pub async fn record(oauth: &OAuthClient, url: &str) -> ServerRecord {
    oauth
        .store()
        .get(&key_of(url))
        .await
        .expect("store read")
        .expect("a stored record")
}

/// Makes the stored access token look expired, the way another process sharing the store
/// would write: under the server's lock.
pub async fn expire_stored_token(oauth: &OAuthClient, url: &str) {
    let store = oauth.store();
    let key = key_of(url);
    let _lock = store.lock(&key).await.expect("store lock");
    let mut rec = store.get(&key).await.expect("store read").expect("record");
    let tokens = rec.tokens.as_mut().expect("stored tokens");
    tokens.expires_at = Some(now_secs().saturating_sub(10));
    store.put(&key, &rec).await.expect("store write");
}

/// The first value of a query or form parameter.
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The space-separated scopes of a parameter value, as a sorted list.
pub fn scopes_of(value: Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = value
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// The text of the first content item of a `tools/call` result.
pub fn tool_text(result: &serde_json::Value) -> &str {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content in {result}"))
}
