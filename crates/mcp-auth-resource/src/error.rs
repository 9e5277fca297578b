//! Errors: why a token was refused ([`VerifyError`]), why a request was refused
//! ([`AuthError`]), why the authorization server could not be asked ([`FetchError`]), and why
//! a configuration is unusable ([`ConfigError`]).
//!
//! These carry the detail for logs. What reaches the client is decided in one place,
//! [`crate::Rejection`], and is only ever a status and an RFC 6750 error code.

use mcp_auth_types::{ScopeSet, UrlError};

/// Why a token was not accepted.
///
/// Every variant except [`VerifyError::Unavailable`] and [`VerifyError::Backend`] means "this
/// token is not good here" and becomes `401` with `error="invalid_token"` (RFC 6750 §3.1).
/// Those two mean "we could not find out" and become `503`, so a client does not throw away
/// a good token (and start a new authorization) because the authorization server blinked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a compact JWS with three base64url parts and JSON header and payload (or, for
    /// any verifier, longer than 16 KiB).
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// RFC 9068 §4: the JOSE header's `typ` must be `at+jwt` (or `application/at+jwt`); this
    /// is what keeps an ID token or another JWT from the same issuer from passing as an
    /// access token.
    #[error("JWT header typ is {found:?}, not \"at+jwt\" (RFC 9068 §4)")]
    WrongType {
        /// The `typ` found, if any.
        found: Option<String>,
    },
    /// The header's `alg` is not in the configured allow-list (RFC 8725 §3.1). Symmetric
    /// algorithms (`HS256` …) and `none` never are.
    #[error("JWT algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    /// RFC 7515 §4.1.11: the header lists critical extensions, and this verifier understands
    /// none.
    #[error("JWT header marks extensions {0:?} critical; none is understood (RFC 7515 §4.1.11)")]
    UnsupportedCritical(Vec<String>),
    /// No key with the token's `kid` in the authorization server's key set, even after
    /// refetching it (or a refetch was not allowed yet).
    #[error("no key {kid:?} in the authorization server's key set")]
    UnknownKey {
        /// The token's `kid`.
        kid: Option<String>,
    },
    /// The token has no `kid` and the key set has several keys for its algorithm.
    #[error("the token has no kid and several keys could have signed it")]
    AmbiguousKey,
    /// The key named by `kid` is not a key for the token's algorithm (wrong type or curve, or
    /// the JWK's own `alg` differs).
    #[error("key {kid:?} is not a key for {alg}")]
    KeyAlgorithmMismatch {
        /// The key id.
        kid: Option<String>,
        /// The token's algorithm.
        alg: String,
    },
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// `iss` is not the configured issuer (RFC 9068 §4; compared as exact strings, RFC 8414
    /// §3.3).
    #[error("token issuer {found:?} is not {expected:?}")]
    WrongIssuer {
        /// The issuer this resource trusts.
        expected: String,
        /// The issuer in the token.
        found: String,
    },
    /// `aud` does not contain this resource's identifier: the token was minted for another
    /// resource (RFC 8707 §2, RFC 9068 §4, MCP "Token Audience Binding and Validation").
    #[error("token audience {found:?} does not include this resource {expected:?}")]
    WrongAudience {
        /// This resource's identifier.
        expected: String,
        /// The audience in the token.
        found: Vec<String>,
    },
    /// `exp` has passed, beyond the configured leeway.
    #[error("token expired at {expired_at} (now {now})")]
    Expired {
        /// The token's `exp`.
        expired_at: u64,
        /// The current time.
        now: u64,
    },
    /// `nbf` is in the future, beyond the leeway.
    #[error("token not valid before {not_before} (now {now})")]
    NotYetValid {
        /// The token's `nbf`.
        not_before: u64,
        /// The current time.
        now: u64,
    },
    /// `iat` is in the future, beyond the leeway.
    #[error("token issued in the future at {issued_at} (now {now})")]
    IssuedInFuture {
        /// The token's `iat`.
        issued_at: u64,
        /// The current time.
        now: u64,
    },
    /// A claim that must be present is missing (RFC 9068 §2.2).
    #[error("token lacks the required claim {0:?}")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or an invalid value.
    #[error("token claim {claim:?} is malformed: {reason}")]
    InvalidClaim {
        /// The claim's name.
        claim: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// RFC 7662 §2.2: the authorization server says the token is not active (revoked,
    /// expired, unknown, or not for us).
    #[error("the authorization server reports the token inactive (RFC 7662 §2.2)")]
    Inactive,
    /// Introspection reports another kind of token (a refresh token sent as a bearer token).
    #[error("introspection reports token_type {0:?}, not an access token")]
    NotAnAccessToken(String),
    /// A custom [`crate::TokenVerifier`] refused the token; the text is for logs.
    #[error("token rejected: {0}")]
    Rejected(String),
    /// The authorization server's key set or introspection endpoint could not be used.
    #[error("cannot verify tokens right now: {0}")]
    Unavailable(#[source] FetchError),
    /// A custom [`crate::TokenVerifier`] could not reach its own backend (a database …).
    #[error("cannot verify tokens right now: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl VerifyError {
    /// Whether the failure is ours or the authorization server's rather than the token's
    /// (answered with `503`, not `401`).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Backend(_))
    }
}

/// A call to the authorization server (JWKS download, introspection) that did not give a
/// usable answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Connecting, sending or receiving failed (including the timeout).
    #[error("request to {url} failed: {source}")]
    Network {
        /// The URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A status other than `200`.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body, control characters removed, for the log.
        body: String,
    },
    /// The body is larger than the limit (1 MiB).
    #[error("{url} sent more than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not the JSON document expected.
    #[error("{url} sent a body that is not the expected JSON: {source}")]
    Parse {
        /// The URL.
        url: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
        /// The start of the body, control characters removed.
        body: String,
    },
    /// The last attempt to fetch the key set failed moments ago, and refetching is
    /// rate-limited, so there are no keys to verify with yet.
    #[error("the key set at {url} could not be fetched recently; retrying later")]
    Backoff {
        /// The URL.
        url: String,
    },
}

/// Why a request was refused; [`crate::Rejection`] turns it into the response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No bearer token: no `Authorization` header, or one with another scheme (RFC 6750 §3.1:
    /// no error code then).
    #[error("the request carries no bearer token")]
    MissingToken,
    /// A malformed request (RFC 6750 §3.1 `invalid_request`): two `Authorization` headers,
    /// an `access_token` query parameter, a `Bearer` header without a well-formed token.
    #[error("malformed request: {0}")]
    InvalidRequest(&'static str),
    /// The token was refused (or could not be checked; see [`VerifyError::is_unavailable`]).
    #[error(transparent)]
    Token(#[from] VerifyError),
    /// The token is good but lacks scopes the operation needs (RFC 6750 §3.1
    /// `insufficient_scope`).
    #[error("insufficient scope: the operation needs {required}, the token grants {granted}")]
    InsufficientScope {
        /// Every scope the operation needs.
        required: ScopeSet,
        /// The scopes the token grants.
        granted: ScopeSet,
    },
    /// The DPoP proof of a DPoP-bound token was refused (RFC 9449 §7.1, §9):
    /// `invalid_dpop_proof`, or `use_dpop_nonce` with the nonce to retry with.
    #[error("DPoP: {0}")]
    Dpop(#[from] crate::dpop::DpopRefusal),
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// RFC 9728 §2 / MCP: the metadata must name at least one authorization server.
    #[error("no authorization server configured")]
    NoAuthorizationServer,
    /// The verifier's issuer is not among `authorization_servers`, so clients would get
    /// tokens from a server whose tokens are then refused (or the reverse).
    #[error("issuer {0:?} is not listed in authorization_servers")]
    IssuerNotListed(String),
    /// An empty algorithm allow-list accepts nothing.
    #[error("the JWT algorithm allow-list is empty")]
    NoAlgorithms,
    /// A URL that must use TLS does not (OAuth 2.1 §1.5), or is otherwise unusable.
    #[error("{field}: {source}")]
    Url {
        /// Which setting.
        field: &'static str,
        /// Why.
        #[source]
        source: UrlError,
    },
    /// The introspection client credentials cannot be put in an `Authorization` header.
    #[error("the introspection client credentials cannot be sent in a header")]
    Credentials,
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// The first `max` characters of a peer's body, without control characters, for logs.
pub(crate) fn sanitize(body: &[u8], max: usize) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}
