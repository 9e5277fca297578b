//! # mcp-auth-server
//!
//! An OAuth 2.1 authorization server for the Model Context Protocol. So far this crate holds
//! its storage layer; the HTTP endpoints (authorize, token, registration, revocation, JWKS)
//! are built on top of it.
//!
//! The device authorization grant (RFC 8628, [`device`]) serves devices without a browser
//! (a CLI over SSH, a TV): `POST {issuer}/device_authorization` hands a client a
//! `device_code` and a `user_code`; the user enters the code at `{issuer}/device` (the same
//! login, session, consent and CSRF protections as `/authorize`, with a phishing warning;
//! guesses rate limited and locked out per [`ratelimit::RateLimits`]); the client polls
//! `/token` with `grant_type=urn:ietf:params:oauth:grant-type:device_code`. The codes live
//! [`Ttls::device_code`] (`OAUTH_DEVICE_CODE_TTL`, default 600 s); the metadata advertises
//! `device_authorization_endpoint`.
//!
//! A short tour of [`store`]:
//! - [`store::Store`]: the one storage trait every backend implements. Every call names a
//!   tenant, and the operations that must be atomic (single-use authorization codes, refresh
//!   token rotation with reuse detection, single-use pending authorization requests, device
//!   authorization decisions and polls) are one call each, so the server never has to build
//!   them out of reads and writes.
//! - Row types ([`store::ClientRow`], [`store::CodeRow`], [`store::RefreshRow`], ...): secrets
//!   are kept only as SHA-256 hashes made by [`store::hash_secret`], and never print.
//! - [`store::MemoryStore`]: a backend for tests and single-process demos.
//! - `store::suite` (cargo feature `store-test-suite`): the conformance suite that every
//!   backend runs from its tests through the `store_suite!` macro.
//!
//! ```
//! use mcp_auth_server::store::{CodeRow, MemoryStore, Store, TakeCode, hash_secret};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let code = "a-random-authorization-code";
//! store
//!     .put_code(&CodeRow {
//!         tenant: "acme".into(),
//!         code_hash: hash_secret(code),
//!         client_id: "client-1".into(),
//!         redirect_uri: "http://127.0.0.1:4242/callback".into(),
//!         code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
//!         scope: "files:read".into(),
//!         resource: Some("https://mcp.example.com/mcp".into()),
//!         subject: "alice".into(),
//!         nonce: None,
//!         expires_at: 1_000_060,
//!         family_id: "family-1".into(),
//!     })
//!     .await
//!     .unwrap();
//!
//! let now = 1_000_000;
//! let first = store.take_code("acme", &hash_secret(code), now).await.unwrap();
//! assert!(matches!(first, TakeCode::Taken(_)));
//! // A second redemption is a replay: the server must revoke what the code issued.
//! let second = store.take_code("acme", &hash_secret(code), now).await.unwrap();
//! assert!(matches!(second, TakeCode::Replayed { .. }));
//! # });
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod cimd;
mod client_cache;
pub mod config;
pub mod device;
pub mod error;
pub mod flow;
pub mod handlers;
pub mod jwt_bearer;
pub mod keys;
#[cfg(feature = "resource")]
pub mod local_verifier;
pub mod login;
pub mod oidc;
pub mod pages;
pub mod ratelimit;
pub mod router;
pub mod store;
pub mod upstream;

pub use config::{CimdConfig, ServerConfig, SubjectMapping, TrustKind, TrustedIssuer, Ttls};
pub use keys::{AccessClaims, Keys};
pub use login::{IdentityProvider, LocalAccounts, UpstreamIdentity};
pub use router::AuthorizationServer;
pub use upstream::{SealKeys, UpstreamVault};
