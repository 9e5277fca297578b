//! # mcp-auth-testkit
//!
//! A loopback OAuth 2.1 authorization server and an OAuth-protected MCP server on one port,
//! for integration tests of MCP OAuth clients (and for demos). Not for production: it keeps
//! everything in memory, auto-approves every authorization request, and has switches that
//! make it misbehave on purpose.
//!
//! A short tour:
//! - [`TestServer::start`] binds `127.0.0.1:0` and serves, until dropped:
//!   - the MCP endpoint (`/mcp`, streamable HTTP, MCP 2025-11-25) with tools `echo`,
//!     `whoami` and `admin-op` (the last needs a step-up scope), answering `401`/`403` with
//!     RFC 6750 / RFC 9728 challenges;
//!   - protected resource metadata (RFC 9728) and authorization server metadata (RFC 8414,
//!     OpenID Connect discovery);
//!   - `/register` (RFC 7591), `/authorize` (auto-consent, PKCE S256 only, RFC 9207 `iss`),
//!     `/token` (authorization code, refresh with rotation and reuse detection, client
//!     credentials) and `/revoke` (RFC 7009).
//! - [`Config`]: every behaviour, with defaults that make a well-behaved server, and knobs for
//!   the older 2025-03-26 discovery and for malicious servers (wrong issuer, foreign
//!   resource, `javascript:` authorization endpoint, mix-up `iss`).
//! - [`Stats`]: what the server saw — counters and request logs with secrets redacted.
//!
//! Tests play the user's browser by fetching the authorization URL without following the
//! redirect (or with `curl -sL`, which follows it to the client's loopback listener).
//!
//! ```
//! use mcp_auth_testkit::{Config, TestServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = TestServer::start(Config::default()).await;
//!
//! // No token: a 401 that tells the client where to start discovery.
//! let response = reqwest::Client::new()
//!     .post(server.mcp_url())
//!     .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
//!     .send()
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), 401);
//! let challenge = response.headers()["www-authenticate"].to_str().unwrap();
//! assert!(challenge.contains(&server.resource_metadata_url()));
//!
//! // A token minted directly, for tests of the resource-server side.
//! let token = server.issue_access_token("some-client", "mcp:read", Some(&server.mcp_url()));
//! assert!(token.starts_with("at_"));
//! assert_eq!(server.stats().unauthorized_responses, 1);
//! # }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod http;
mod mcp;
mod oauth;
mod server;
mod state;
mod stats;

pub use config::{ClientConfig, Config};
pub use server::TestServer;
pub use stats::{RecordedRequest, RecordedTokenRequest, Stats};

/// MCP protocol versions the test server accepts in `initialize`, newest first; an
/// unsupported request gets the newest.
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 3] = mcp::SUPPORTED_VERSIONS;
