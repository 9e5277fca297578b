//! Errors, each saying which step of the flow failed and what the peer sent.

use std::fmt;

use mcp_auth_types::metadata::MetadataError;
use mcp_auth_types::redirect::{IssCheck, RedirectError};
use mcp_auth_types::{ErrorCode, ErrorResponse, UrlError};

use crate::store::StoreError;

/// The step of the OAuth dance an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Probing the MCP server for its 401 challenge.
    Probe,
    /// Fetching protected resource metadata (RFC 9728).
    ResourceMetadata,
    /// Fetching authorization server metadata (RFC 8414 / OIDC).
    AuthorizationServerMetadata,
    /// Registering the client (RFC 7591) or resolving its identity.
    Registration,
    /// The browser part: authorization request and redirect.
    Authorization,
    /// Exchanging the code for tokens.
    CodeExchange,
    /// Refreshing tokens.
    Refresh,
    /// The client credentials grant.
    ClientCredentials,
    /// The JWT-bearer grant (RFC 7523, workload identity).
    JwtBearer,
    /// Token exchange at an enterprise identity provider (RFC 8693).
    TokenExchange,
    /// Signing the user in at an enterprise identity provider (OpenID Connect) or
    /// refreshing that session.
    IdpLogin,
    /// The device authorization grant (RFC 8628): codes, and polling for the decision.
    DeviceAuthorization,
    /// Revoking tokens (RFC 7009).
    Revocation,
    /// Talking MCP to the server.
    Mcp,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Probe => "probing the MCP server",
            Step::ResourceMetadata => "fetching protected resource metadata",
            Step::AuthorizationServerMetadata => "fetching authorization server metadata",
            Step::Registration => "client registration",
            Step::Authorization => "authorization",
            Step::CodeExchange => "exchanging the authorization code",
            Step::Refresh => "refreshing the token",
            Step::ClientCredentials => "client credentials grant",
            Step::JwtBearer => "JWT-bearer grant",
            Step::TokenExchange => "token exchange at the identity provider",
            Step::IdpLogin => "single sign-on at the identity provider",
            Step::DeviceAuthorization => "device authorization",
            Step::Revocation => "token revocation",
            Step::Mcp => "MCP request",
        })
    }
}

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The network failed (DNS, connection, TLS, timeout of one request).
    #[error("{step}: request to {url} failed: {source}")]
    Network {
        /// Step.
        step: Step,
        /// The URL (never carries secrets: they travel in bodies and headers).
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The peer answered with an unexpected HTTP status.
    #[error("{step}: {url} answered HTTP {status}{}", body_suffix(.body))]
    Status {
        /// Step.
        step: Step,
        /// URL.
        url: String,
        /// Status code.
        status: u16,
        /// The start of the body, control characters removed.
        body: String,
    },
    /// The authorization server answered with an OAuth error (RFC 6749 §5.2).
    #[error("{step}: the authorization server refused: {error}")]
    OAuth {
        /// Step.
        step: Step,
        /// The error response (boxed: it is large and rare).
        error: Box<ErrorResponse>,
    },
    /// A body was larger than the limit.
    #[error("{step}: the response from {url} exceeds {limit} bytes")]
    BodyTooLarge {
        /// Step.
        step: Step,
        /// URL.
        url: String,
        /// Limit in bytes.
        limit: usize,
    },
    /// A body was not the JSON expected.
    #[error("{step}: {url} sent an invalid response: {message}")]
    InvalidResponse {
        /// Step.
        step: Step,
        /// URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// A metadata document cannot be used (issuer or resource mismatch, bad endpoint).
    #[error("{step}: {source}")]
    Metadata {
        /// Step.
        step: Step,
        /// Cause.
        #[source]
        source: MetadataError,
    },
    /// A URL given by the user or a server is not acceptable.
    #[error("{what} is not acceptable: {source}")]
    Url {
        /// Which URL.
        what: String,
        /// Cause.
        #[source]
        source: UrlError,
    },
    /// No authorization server could be found for the server.
    #[error("no authorization server metadata found for {server} (tried: {tried})")]
    NoAuthorizationServer {
        /// The MCP server.
        server: String,
        /// URLs tried, comma-separated.
        tried: String,
    },
    /// The AS does not advertise PKCE S256; the MCP spec forbids proceeding.
    #[error(
        "the authorization server {issuer} does not advertise PKCE S256 (code_challenge_methods_supported); refusing to proceed as the MCP spec requires"
    )]
    PkceNotSupported {
        /// The issuer.
        issuer: String,
    },
    /// No way to obtain a client identity at this AS.
    #[error(
        "cannot register with {issuer}: it offers no registration endpoint and no client ID metadata document support; pass --client-id"
    )]
    NoRegistration {
        /// The issuer.
        issuer: String,
    },
    /// The token response had a token type this client cannot use.
    #[error("{step}: unsupported token_type {token_type:?} (this client uses Bearer)")]
    UnsupportedTokenType {
        /// Step.
        step: Step,
        /// What came back.
        token_type: String,
    },
    /// The redirect's `state` did not match (a CSRF or a stale tab).
    #[error(
        "authorization: the redirect's state does not match the request (possible CSRF); ignored"
    )]
    StateMismatch,
    /// RFC 9207 issuer check failed.
    #[error("authorization: {0}")]
    Iss(#[from] IssCheck),
    /// The redirect was malformed.
    #[error("authorization: {0}")]
    Redirect(#[from] RedirectError),
    /// The user or the AS refused.
    #[error("authorization refused: {error}{}", body_suffix(.description.as_deref().unwrap_or("")))]
    AuthorizationDenied {
        /// `error`
        error: ErrorCode,
        /// `error_description`
        description: Option<String>,
    },
    /// The callback port is taken.
    #[error(
        "cannot listen for the OAuth redirect on {addr}: {source}. Another login may be running; pass --callback-port to use another port"
    )]
    CallbackPort {
        /// Address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A deadline passed.
    #[error("{step}: no answer within {seconds} s")]
    Timeout {
        /// Step.
        step: Step,
        /// The deadline.
        seconds: u64,
    },
    /// The browser could not be started.
    #[error("cannot start the browser {command:?}: {message}")]
    Browser {
        /// The command.
        command: String,
        /// Cause.
        message: String,
    },
    /// The credential store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A fresh authorization is needed but this call may not interact with the user.
    #[error(
        "{server}: not logged in or the session expired ({reason}); run `mcp-auth login {server}`"
    )]
    LoginRequired {
        /// The server.
        server: String,
        /// Why.
        reason: String,
    },
    /// The server keeps asking for more scopes.
    #[error(
        "the server still answers insufficient_scope after {attempts} authorizations (scopes requested: {scopes})"
    )]
    StepUpExhausted {
        /// Attempts made.
        attempts: u32,
        /// Last scope set requested.
        scopes: String,
    },
    /// The storm brake: this server was sent through too many authorizations recently.
    #[error(
        "{server}: {count} authorizations in the last {seconds} s and the server still refuses; not opening another (check the server's configuration, or wait)"
    )]
    AuthorizationStorm {
        /// The server.
        server: String,
        /// Authorizations in the window.
        count: usize,
        /// The window.
        seconds: u64,
    },
    /// The identity provider's ID token cannot be used (OpenID Connect Core §3.1.3.7).
    #[error("single sign-on at {issuer}: {source}")]
    IdToken {
        /// The identity provider.
        issuer: String,
        /// What was wrong.
        #[source]
        source: crate::sso::IdTokenError,
    },
    /// A configuration value is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The MCP server answered with a JSON-RPC error.
    #[error("MCP error {code}: {message}")]
    JsonRpc {
        /// Code.
        code: i64,
        /// Message.
        message: String,
    },
}

fn body_suffix(b: &str) -> String {
    if b.is_empty() {
        String::new()
    } else {
        format!(": {b}")
    }
}

/// Removes control characters and shortens server-provided text before it reaches a
/// terminal or a log.
pub(crate) fn sanitize(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out.trim().to_owned()
}

impl Error {
    /// The OAuth error code, when the authorization server sent one.
    pub fn oauth_code(&self) -> Option<&ErrorCode> {
        match self {
            Error::OAuth { error, .. } => Some(&error.error),
            _ => None,
        }
    }

    /// Whether the error means the stored grant is gone and a new authorization is needed.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self.oauth_code(), Some(ErrorCode::InvalidGrant))
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
