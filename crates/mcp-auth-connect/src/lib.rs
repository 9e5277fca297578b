//! # mcp-auth-connect
//!
//! Lets each user of a multi-user web app connect their own account on a remote MCP server:
//! what `mcp-auth login` does for one person, per user, behind the app's own sign-in.
//!
//! - [`Connector`]: the routes an app mounts (`GET /connect/{server}/login`, `…/callback`,
//!   `…/status`, `POST …/logout`), told who is signed in by a [`CurrentUser`], and
//!   [`Connector::client_for`]: an HTTP client and MCP session with the user's token.
//! - [`vault`]: the per-user token vault, encrypted at rest ([`vault::Vault`] over a
//!   [`vault::VaultBackend`]: SQLite by default, PostgreSQL for apps that run it). Each
//!   user's view is a [`mcp_auth_client::store::CredentialStore`], so discovery,
//!   registration, PKCE, token requests and refresh with rotation are the client library's,
//!   written once.
//! - [`steps`]: the stateless building blocks, for apps with their own routes.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub use connect::{
    ConnectError, Connection, Connector, ConnectorConfig, CurrentUser, McpServer, Status,
};

mod connect;
pub mod postgres;
pub mod sqlite;
pub mod steps;
pub mod vault;
