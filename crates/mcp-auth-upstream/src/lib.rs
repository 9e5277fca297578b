//! # mcp-auth-upstream
//!
//! The relying-party side of upstream identity providers: the authorization server sends
//! the user to an OpenID Connect provider, GitHub or Google to log in, redeems the code it
//! gets back, learns who the user is, and keeps the user's upstream tokens server-side
//! (to refresh, revoke, and call the provider for MCP tools acting on the user's behalf).
//!
//! A short tour:
//! - [`Upstream`]: the one trait the server talks to, implemented by [`OidcProvider`] and
//!   [`GithubProvider`]; [`UpstreamConfig::build`] makes an `Arc<dyn Upstream>` from
//!   configuration.
//! - [`OidcConfig`] (any OpenID Connect provider; [`google`] is a preset) and
//!   [`GithubConfig`] (github.com or GitHub Enterprise Server).
//! - [`id_token`]: ID token verification as a pure function (OpenID Connect Core §3.1.3.7),
//!   unit- and property-tested on its own.
//! - [`UpstreamTokens`], [`UpstreamLogin`] and [`UpstreamError`]. Secrets never print.
//!
//! The server owns the login state: it generates `state`, the PKCE verifier and the
//! `nonce` for each login, keeps them until the browser comes back, and hands them to
//! [`Upstream::authorization_url`] and [`Upstream::complete`].
//!
//! ```no_run
//! use mcp_auth_types::{PkceVerifier, SecretString};
//! use mcp_auth_upstream::{AuthorizationRequest, Completion, UpstreamConfig, google, http_client};
//!
//! # async fn run() -> Result<(), mcp_auth_upstream::UpstreamError> {
//! let config = UpstreamConfig::Oidc(google("my-client-id", SecretString::new("my-secret")));
//! let upstream = config.build(http_client()?)?;
//!
//! let verifier = PkceVerifier::generate();
//! let challenge = verifier.challenge();
//! let url = upstream
//!     .authorization_url(&AuthorizationRequest {
//!         redirect_uri: "https://auth.example.com/upstream/google/callback",
//!         state: "random-state",
//!         code_challenge: challenge.as_str(),
//!         nonce: "random-nonce",
//!     })
//!     .await?;
//! // ... redirect the browser to `url`; it comes back with `code` and `state` ...
//! let login = upstream
//!     .complete(&Completion {
//!         redirect_uri: "https://auth.example.com/upstream/google/callback",
//!         code: "the-code",
//!         code_verifier: verifier.secret(),
//!         nonce: "random-nonce",
//!     })
//!     .await?;
//! let account = format!("{}:{}", upstream.id(), login.subject);
//! # let _ = (url, account); Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod github;
mod http;
pub mod id_token;
mod oidc;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mcp_auth_types::SecretString;
use serde::{Deserialize, Serialize};

pub use error::UpstreamError;
pub use github::{GithubConfig, GithubProvider};
pub use id_token::SigningAlgorithm;
pub use oidc::{OidcConfig, OidcProvider, google};

/// The default deadline of one request to a provider.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// An upstream identity provider the authorization server logs users in with.
#[async_trait]
pub trait Upstream: Send + Sync + std::fmt::Debug {
    /// Provider id, used as the account prefix (`<id>:<subject>`): `"oidc"`, `"github"`,
    /// `"google"`, or a configured name.
    fn id(&self) -> &str;

    /// Label for a "Continue with …" button ("GitHub", "Google", "Example SSO").
    fn label(&self) -> &str;

    /// The URL to send the browser to: `response_type=code`, `client_id`, `redirect_uri`,
    /// `scope`, `state`, `code_challenge` with `code_challenge_method=S256`, `nonce` for
    /// OpenID Connect, and the configured extra parameters.
    ///
    /// OpenID Connect: the discovery document is fetched on first use and cached.
    async fn authorization_url(
        &self,
        req: &AuthorizationRequest<'_>,
    ) -> Result<url::Url, UpstreamError>;

    /// Redeems the authorization code (with the PKCE verifier) and establishes who the
    /// user is. OpenID Connect verifies the `id_token` (and calls userinfo when configured,
    /// requiring its `sub` to equal the `id_token`'s); GitHub calls its user API.
    async fn complete(&self, req: &Completion<'_>) -> Result<UpstreamLogin, UpstreamError>;

    /// The `refresh_token` grant (RFC 6749 §6). Keeps the old refresh token when the
    /// provider returns none (no rotation), else the new one.
    async fn refresh(&self, refresh_token: &str) -> Result<UpstreamTokens, UpstreamError>;

    /// Revokes the grant upstream: RFC 7009 for OpenID Connect (the refresh token if any,
    /// else the access token); GitHub's "delete an app authorization". `Ok(false)` when
    /// the provider offers no revocation.
    async fn revoke(&self, tokens: &UpstreamTokens) -> Result<bool, UpstreamError>;

    /// The user's profile, fetched with their access token: OpenID Connect userinfo (an
    /// [`UpstreamError::Unsupported`] error when the provider has none), GitHub's
    /// `GET /user`. For MCP tools that act upstream for the user.
    async fn profile(&self, access_token: &str) -> Result<serde_json::Value, UpstreamError>;
}

/// What the server chose for one login: where the browser comes back, and the values that
/// bind the response to this login.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizationRequest<'a> {
    /// The server's callback URL, registered with the provider.
    pub redirect_uri: &'a str,
    /// The CSRF `state` (RFC 6749 §10.12).
    pub state: &'a str,
    /// The PKCE S256 challenge (RFC 7636 §4.2).
    pub code_challenge: &'a str,
    /// The OpenID Connect `nonce` (Core §3.1.2.1), checked in the `id_token`. Ignored by
    /// GitHub.
    pub nonce: &'a str,
}

/// The browser came back with a code: what is needed to redeem it.
///
/// `Debug` shows only the redirect URI: the code, verifier and nonce are secrets.
#[derive(Clone, Copy)]
pub struct Completion<'a> {
    /// The same `redirect_uri` as in the authorization request (RFC 6749 §4.1.3).
    pub redirect_uri: &'a str,
    /// The authorization code from the callback.
    pub code: &'a str,
    /// The PKCE verifier whose challenge was sent.
    pub code_verifier: &'a str,
    /// The nonce sent with the authorization request.
    pub nonce: &'a str,
}

impl std::fmt::Debug for Completion<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// Who logged in, and the tokens the provider issued for them.
#[derive(Debug, Clone)]
pub struct UpstreamLogin {
    /// The user's stable identifier at the provider: the OpenID Connect `sub`, GitHub's
    /// numeric user id as a decimal string (never the login, which can change).
    pub subject: String,
    /// A JSON object with `name`, `email`, `email_verified`, `login`, `picture` when known.
    /// Never tokens.
    pub profile: serde_json::Value,
    /// The user's upstream tokens, to keep server-side.
    pub tokens: UpstreamTokens,
}

/// A user's upstream tokens. `Debug` redacts the tokens; serialization does not (store the
/// serialized form encrypted).
#[derive(Clone, Serialize, Deserialize)]
pub struct UpstreamTokens {
    /// The access token, to call the provider's APIs as the user.
    pub access_token: SecretString,
    /// Always `"Bearer"` (other token types are refused).
    pub token_type: String,
    /// The refresh token, when the provider issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<SecretString>,
    /// When the access token expires (Unix seconds, from `expires_in`); `None` when the
    /// provider did not say (GitHub OAuth-app tokens do not expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// The granted scopes, as the provider wrote them (GitHub separates them with commas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// When the refresh token expires (Unix seconds, from GitHub's
    /// `refresh_token_expires_in`), when the provider said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_expires_at: Option<u64>,
}

impl UpstreamTokens {
    /// True when the access token has expired or expires within `margin_secs` of `now`.
    pub fn expires_within(&self, now: u64, margin_secs: u64) -> bool {
        self.expires_at
            .is_some_and(|at| at <= now.saturating_add(margin_secs))
    }
}

impl std::fmt::Debug for UpstreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTokens")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("refresh_token_expires_at", &self.refresh_token_expires_at)
            .finish()
    }
}

/// The configuration of one upstream provider, for building it without naming its type.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum UpstreamConfig {
    /// An OpenID Connect provider (Google included, see [`google`]).
    Oidc(OidcConfig),
    /// GitHub or GitHub Enterprise Server.
    Github(GithubConfig),
}

impl UpstreamConfig {
    /// The provider id (the account prefix).
    pub fn id(&self) -> &str {
        match self {
            Self::Oidc(c) => &c.id,
            Self::Github(c) => &c.id,
        }
    }

    /// Checks the configuration and builds the provider. Nothing is fetched yet (OpenID
    /// Connect discovery happens on first use). `http` should not follow redirects; see
    /// [`http_client`].
    pub fn build(self, http: reqwest::Client) -> Result<Arc<dyn Upstream>, UpstreamError> {
        Ok(match self {
            Self::Oidc(c) => Arc::new(OidcProvider::new(c, http)?),
            Self::Github(c) => Arc::new(GithubProvider::new(c, http)?),
        })
    }
}

impl From<OidcConfig> for UpstreamConfig {
    fn from(c: OidcConfig) -> Self {
        Self::Oidc(c)
    }
}

impl From<GithubConfig> for UpstreamConfig {
    fn from(c: GithubConfig) -> Self {
        Self::Github(c)
    }
}

/// A reqwest client suited to talking to providers: rustls, no redirects (a redirected
/// token request could carry the client secret and the code elsewhere), a connect timeout.
/// Per-request deadlines come from each provider's `timeout`.
pub fn http_client() -> Result<reqwest::Client, UpstreamError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .user_agent(http::USER_AGENT)
        .build()
        .map_err(|e| UpstreamError::config(format!("cannot build the HTTP client: {e}")))
}

/// Provider ids become account prefixes (`<id>:<subject>`): non-empty, at most 64
/// characters of `[a-z0-9_-]`.
pub(crate) fn check_id(id: &str) -> Result<(), UpstreamError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(UpstreamError::config(format!(
            "provider id {id:?} must be 1-64 characters of a-z, 0-9, '-' and '_'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_debug_redacts_secrets() {
        let t = UpstreamTokens {
            access_token: SecretString::new("at-very-secret"),
            token_type: "Bearer".into(),
            refresh_token: Some(SecretString::new("rt-very-secret")),
            expires_at: Some(10),
            scope: Some("openid".into()),
            refresh_token_expires_at: None,
        };
        let d = format!("{t:?}");
        assert!(!d.contains("very-secret"), "{d}");
        assert!(d.contains("[redacted]") && d.contains("openid"));
        // Serialization keeps the values (the server stores them).
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["access_token"], "at-very-secret");
        let back: UpstreamTokens = serde_json::from_value(json).unwrap();
        assert_eq!(back.refresh_token.unwrap().secret(), "rt-very-secret");
    }

    #[test]
    fn completion_debug_redacts_secrets() {
        let c = Completion {
            redirect_uri: "https://as.example.com/cb",
            code: "code-very-secret",
            code_verifier: "verifier-very-secret",
            nonce: "nonce-very-secret",
        };
        assert!(!format!("{c:?}").contains("very-secret"));
    }

    #[test]
    fn expiry_margin() {
        let mut t = UpstreamTokens {
            access_token: SecretString::new("a"),
            token_type: "Bearer".into(),
            refresh_token: None,
            expires_at: Some(100),
            scope: None,
            refresh_token_expires_at: None,
        };
        assert!(!t.expires_within(50, 10));
        assert!(t.expires_within(95, 10));
        t.expires_at = None;
        assert!(!t.expires_within(u64::MAX, 10));
    }

    #[test]
    fn provider_ids() {
        for ok in ["oidc", "github", "google", "corp-sso_2"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a:b", "Upper", "with space", &"x".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
