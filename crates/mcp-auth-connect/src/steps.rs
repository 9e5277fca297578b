//! The stateless building blocks, for apps that keep their own routes: each a plain async
//! function over explicit inputs, and each the client library's own (nothing here is
//! written twice).
//!
//! The order of a connection, by hand:
//! 1. [`probe`] the MCP server for its `401` challenge, then [`discover`] its protected
//!    resource metadata and authorization server metadata (every fallback of the MCP
//!    specification);
//! 2. [`register`] a client (pre-registered, a client ID metadata document, or RFC 7591
//!    dynamic registration) with the app's callback as redirect URI;
//! 3. [`new_request_secrets`] (PKCE S256 verifier and challenge, `state`) and
//!    [`authorization_url`] (with `resource`, and extra parameters such as
//!    `prompt=consent`); keep the verifier and state server-side or sealed, never in a URL;
//! 4. on the callback, [`check_redirect`] (state in constant time, RFC 9207 `iss`, errors)
//!    and [`exchange_code`];
//! 5. later, [`refresh`] (keep the rotated refresh token: store the result whole) and
//!    [`revoke`].
//!
//! [`crate::Connector`] does all of it, per user, with the vault and single-flight refresh.

use mcp_auth_client::Result;
pub use mcp_auth_client::authorize::{
    AuthorizationRequest, authorization_url, check_redirect, new_request_secrets,
};
pub use mcp_auth_client::discovery::{Discovered, DiscoveryOptions, discover};
pub use mcp_auth_client::http::{Http, HttpOptions};
pub use mcp_auth_client::registration::{ClientIdentity, PreRegistered};
use mcp_auth_client::store::{ClientRecord, TokenRecord};
pub use mcp_auth_client::token::revoke;
use mcp_auth_client::token::{request_token, to_record};
use mcp_auth_client::{ClientOptions, OAuthClient, Step};
use mcp_auth_types::challenge::Challenge;
use mcp_auth_types::{AuthorizationCode, HttpUrl, PkceVerifier, RefreshToken, TokenRequest};

/// The server's challenge to an unauthenticated MCP `initialize` (`None`: it asks for no
/// authorization).
pub async fn probe(http: HttpOptions, server: &HttpUrl) -> Result<Option<Challenge>> {
    let store = std::sync::Arc::new(mcp_auth_client::store::MemoryStore::new());
    OAuthClient::new(store, ClientOptions::default(), http)?
        .probe(server)
        .await
}

/// Registers (or reuses `stored`) a client at the discovered authorization server, with
/// `redirect_uri` as its redirect URI.
pub async fn register(
    http: &Http,
    disc: &Discovered,
    identity: &ClientIdentity,
    stored: Option<&ClientRecord>,
    redirect_uri: &str,
    scope: Option<&str>,
) -> Result<ClientRecord> {
    mcp_auth_client::registration::ensure_client(
        http,
        disc,
        identity,
        stored,
        Some(redirect_uri),
        scope,
    )
    .await
}

/// Exchanges an authorization code (RFC 6749 §4.1.3 with the PKCE verifier, RFC 7636, and
/// the RFC 8707 `resource` of the authorization request).
#[allow(clippy::too_many_arguments)]
pub async fn exchange_code(
    http: &Http,
    token_endpoint: &str,
    issuer: &str,
    client: &ClientRecord,
    code: &AuthorizationCode,
    redirect_uri: &str,
    verifier: &PkceVerifier,
    resource: Option<&str>,
) -> Result<TokenRecord> {
    let grant = TokenRequest::AuthorizationCode {
        code,
        redirect_uri,
        verifier,
        resource,
    };
    let resp = request_token(
        http,
        Step::CodeExchange,
        token_endpoint,
        issuer,
        client,
        &grant,
    )
    .await?;
    Ok(to_record(resp, None, None))
}

/// Refreshes (RFC 6749 §6). The result carries the rotated refresh token when the server
/// rotated it, else `previous`'s: store it whole, at once, in place of `previous`.
pub async fn refresh(
    http: &Http,
    token_endpoint: &str,
    issuer: &str,
    client: &ClientRecord,
    previous: &TokenRecord,
    resource: Option<&str>,
) -> Result<TokenRecord> {
    let Some(rt) = previous.refresh_token.as_ref() else {
        return Err(mcp_auth_client::Error::Config(
            "there is no refresh token to refresh with".into(),
        ));
    };
    let rt: &RefreshToken = rt;
    let grant = TokenRequest::RefreshToken {
        refresh_token: rt,
        scope: None,
        resource,
    };
    let resp = request_token(http, Step::Refresh, token_endpoint, issuer, client, &grant).await?;
    Ok(to_record(resp, Some(previous), None))
}
