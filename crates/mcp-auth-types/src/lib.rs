//! # mcp-auth-types
//!
//! The OAuth 2.1 side of the Model Context Protocol as plain Rust types and pure functions:
//! no sockets, no files, no clocks. Everything here can be unit-tested, property-tested and
//! fuzzed on its own; the network lives in `mcp-auth-client` (and later the server crates).
//!
//! A short tour:
//! - [`HttpUrl`], [`Issuer`], [`ResourceUrl`]: URLs that keep the exact string they were
//!   given, because issuer and resource matching are string comparisons (RFC 8414 §3.3,
//!   RFC 9728 §3.3).
//! - [`AuthorizationServerMetadata`] (RFC 8414 / OIDC discovery) and
//!   [`ProtectedResourceMetadata`] (RFC 9728), with the spec's ordered discovery URL lists in
//!   [`discovery`].
//! - [`ClientMetadata`] / [`ClientInformation`] (RFC 7591) and client ID metadata documents.
//! - [`TokenRequest`], [`TokenResponse`], [`ErrorResponse`] (RFC 6749).
//! - [`PkceVerifier`] / [`PkceChallenge`] (RFC 7636, S256 only).
//! - [`challenge::parse_www_authenticate`] (RFC 9110 §11.6.1 / RFC 6750 §3).
//! - [`ScopeSet`] and the MCP spec's scope selection.
//! - [`AuthorizationResponse`] with the RFC 9207 `iss` check.
//!
//! ```
//! use mcp_auth_types::{PkceVerifier, ResourceUrl, ScopeSet};
//!
//! let resource = ResourceUrl::canonicalize("HTTPS://MCP.Example.com:443/mcp#frag").unwrap();
//! assert_eq!(resource.as_str(), "https://mcp.example.com/mcp");
//!
//! let verifier = PkceVerifier::generate();
//! let challenge = verifier.challenge();
//! assert_eq!(challenge.as_str().len(), 43);
//!
//! let scopes: ScopeSet = "files:read  files:write".parse().unwrap();
//! assert_eq!(scopes.to_string(), "files:read files:write");
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod challenge;
pub mod discovery;
pub mod dpop;
mod ids;
pub mod metadata;
mod pkce;
pub mod redirect;
pub mod registration;
mod scope;
pub mod seal;
mod secret;
pub mod token;
mod urls;

pub use challenge::{Challenge, parse_www_authenticate};
pub use ids::{ClientId, CsrfState, check_identifier};
pub use metadata::{AuthorizationServerMetadata, ProtectedResourceMetadata};
pub use pkce::{PkceChallenge, PkceVerifier};
pub use redirect::{AuthorizationResponse, IssCheck};
pub use registration::{ClientInformation, ClientMetadata};
pub use scope::{Scope, ScopeSet, select_scopes};
pub use secret::{AccessToken, AuthorizationCode, ClientSecret, RefreshToken, SecretString};
pub use token::{
    AuthMethod, ErrorCode, ErrorResponse, GrantType, TokenRequest, TokenResponse, TokenType,
};
pub use urls::{HttpUrl, Issuer, ResourceUrl, UrlError, is_loopback as is_loopback_url};
