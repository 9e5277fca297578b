//! # mcp-auth-client
//!
//! OAuth 2.1 for MCP clients, as the MCP authorization specification (2025-11-25 and
//! 2026-07-28, with the 2025-03-26 fallbacks) describes it: discovery from the server's
//! `401`, client registration (pre-registered, client ID metadata documents, RFC 7591),
//! authorization code with PKCE through the user's browser and a loopback redirect,
//! client credentials, refresh with rotation, step-up on `403 insufficient_scope`,
//! revocation, and tokens kept encrypted in a store that several processes share safely.
//!
//! The main types:
//! - [`OAuthClient`]: logs in to servers and keeps their tokens valid.
//! - [`OAuthMiddleware`]: a `reqwest-middleware` layer that attaches tokens and runs the
//!   dance on `401`/`403`, so any reqwest user gets OAuth by adding one layer.
//! - [`store::FileStore`] (default), [`store::MemoryStore`], and the OS keyring store
//!   (feature `keyring`), behind [`store::CredentialStore`].
//! - [`McpSession`]: a small MCP streamable-HTTP client (both wire formats).
//!
//! ```no_run
//! use std::sync::Arc;
//! use mcp_auth_client::{ClientOptions, HttpOptions, Interaction, McpSession, OAuthClient, OAuthMiddleware};
//! use mcp_auth_client::store::FileStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(FileStore::open("/tmp/mcp-auth-demo")?);
//! let opts = ClientOptions { interaction: Interaction::Browser(None), ..Default::default() };
//! let oauth = OAuthClient::new(store, opts, HttpOptions::default())?;
//!
//! let server = "https://mcp.example.com/mcp";
//! let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(OAuthMiddleware::new(oauth.clone(), server))
//!     .build();
//! let mcp = McpSession::new(http, server);
//! for tool in mcp.list_tools().await? {
//!     println!("{}", tool["name"]);
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod authorize;
mod client;
pub mod device;
pub mod discovery;
pub mod dpop;
pub mod enterprise;
mod error;
pub mod http;
pub mod mcp;
mod middleware;
pub mod registration;
pub mod sso;
pub mod store;
pub mod token;

pub use authorize::{Interaction, RedirectConfig};
pub use client::{
    ClientOptions, GrantKind, OAuthClient, PendingAuthorization, ResourceMode, Token,
    WorkloadToken, challenge_of,
};
pub use device::{DeviceAuthorization, DevicePrompt};
pub use dpop::DpopPolicy;
pub use enterprise::{EnterpriseIdp, IdTokenSource};
pub use error::{Error, Result, Step};
pub use http::HttpOptions;
pub use mcp::{McpSession, WireFormat};
pub use middleware::OAuthMiddleware;
pub use registration::{ClientIdentity, PreRegistered};

/// A random identifier (128 bits, base64url) for `jti` values and the like.
pub(crate) fn random_id() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 16];
    // See mcp_auth_types' PKCE generation: no safe way to continue without randomness.
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
