//! # mcp-auth-resource
//!
//! What an MCP server needs to be an OAuth 2.1 protected resource, as the MCP authorization
//! specification describes it: publish protected resource metadata (RFC 9728), accept only
//! bearer tokens issued for this server (RFC 8707, RFC 9068), and answer everything else with
//! the challenge that lets a client find its way (RFC 6750 §3, RFC 9728 §5.1). It depends on
//! `mcp-auth-types` and nothing from the authorization-server side: no database, no storage.
//!
//! A short tour:
//! - [`ResourceConfig`]: the resource identifier, its authorization servers and scopes, and
//!   the [`Verifier`]: JWT access tokens checked against the issuer's JWKS ([`JwtConfig`]),
//!   opaque tokens checked by introspection ([`IntrospectionConfig`]), or any
//!   [`TokenVerifier`] (an authorization server in the same process).
//! - [`ResourceServer`]: built once from the configuration; verifies tokens and caches the
//!   result by a hash of the token, so the signature check or introspection call is not on
//!   every request's path.
//! - [`ProtectedLayer`]: the tower layer for routes, with per-route required scopes;
//!   [`ProtectedLayer::protect`] applies the same checks inside one handler, without the
//!   extra route axum puts around a layer (the cheaper way for a single MCP endpoint).
//! - [`Authenticated`]: the axum extractor with the verified [`Claims`].
//! - [`Rejection`]: the one place refusals become `400`/`401`/`403`/`503` with their
//!   `WWW-Authenticate` challenges.
//! - [`prm_router`]: the metadata documents at both well-known URLs.
//! - [`Clock`], [`SystemClock`], [`ManualClock`]: time is injected.
//!
//! ```no_run
//! use axum::{Json, Router, routing::post};
//! use mcp_auth_resource::{
//!     Authenticated, JwtConfig, ProtectedLayer, ResourceConfig, ResourceServer, Verifier,
//! };
//! use mcp_auth_types::{HttpUrl, Issuer, ResourceUrl};
//!
//! async fn mcp(auth: Authenticated, Json(call): Json<serde_json::Value>) -> Json<serde_json::Value> {
//!     // `auth.subject`, `auth.client_id`, `auth.scopes` are verified claims.
//!     Json(serde_json::json!({ "caller": auth.subject, "echo": call }))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let issuer = Issuer::parse("https://auth.example.com")?;
//! let jwks = HttpUrl::parse("https://auth.example.com/jwks")?;
//! let mut config = ResourceConfig::new(
//!     ResourceUrl::parse_exact("https://mcp.example.com/mcp")?,
//!     vec![issuer.clone()],
//!     Verifier::Jwt(JwtConfig::new(issuer, jwks)),
//! );
//! config.scopes_supported = Some("mcp:read mcp:write".parse()?);
//! let server = ResourceServer::new(config)?;
//!
//! let app: Router = Router::new()
//!     .route(
//!         "/mcp",
//!         post(ProtectedLayer::new(server.clone()).require_scopes(["mcp:read"]).protect(mcp)),
//!     )
//!     .merge(server.metadata_router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod cache;
mod challenge;
mod claims;
mod clock;
mod config;
pub mod dpop;
mod error;
mod extract;
mod fetch;
mod introspection;
mod jwt;
mod layer;
mod metadata;
mod server;
mod siphash;
mod verifier;

pub use challenge::Rejection;
pub use claims::Claims;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{IntrospectionConfig, JwtConfig, ResourceConfig, SigningAlgorithm, Verifier};
pub use error::{AuthError, ConfigError, FetchError, VerifyError};
pub use extract::Authenticated;
pub use layer::{HandlerFuture, Protected, ProtectedHandler, ProtectedLayer, ResponseFuture};
pub use metadata::prm_router;
pub use server::ResourceServer;
pub use verifier::TokenVerifier;
