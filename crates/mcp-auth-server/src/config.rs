//! Server configuration: issuer, lifetimes, what the server offers.

use std::time::Duration;

use mcp_auth_types::ScopeSet;

/// Token and code lifetimes. The defaults are the predecessor project's, and each can be
/// set from the environment variable named on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ttls {
    /// `OAUTH_AUTH_CODE_TTL`, default 300 s.
    pub auth_code: Duration,
    /// `OAUTH_ACCESS_TOKEN_TTL`, default 900 s.
    pub access_token: Duration,
    /// `OAUTH_REFRESH_TOKEN_TTL`, default 86400 s.
    pub refresh_token: Duration,
    /// `OAUTH_CLIENT_REGISTRATION_TTL`, default 31536000 s (a year).
    pub client_registration: Duration,
    /// How long a started authorization may wait for the user's login and consent.
    pub pending_authorization: Duration,
    /// `OAUTH_EXTERNAL_TOKEN_TTL`, default 86400 s: how long the server keeps a user's
    /// upstream tokens (proxy-provider mode) after their upstream login, refreshed or not;
    /// then the user logs in again.
    pub external_token: Duration,
    /// `OAUTH_DEVICE_CODE_TTL`, default 600 s: how long a device authorization's
    /// `device_code` and `user_code` stay valid (RFC 8628 §3.2 `expires_in`).
    pub device_code: Duration,
}

impl Default for Ttls {
    fn default() -> Self {
        Self {
            auth_code: Duration::from_secs(300),
            access_token: Duration::from_secs(900),
            refresh_token: Duration::from_secs(86400),
            client_registration: Duration::from_secs(31_536_000),
            pending_authorization: Duration::from_secs(600),
            external_token: Duration::from_secs(86400),
            device_code: Duration::from_secs(600),
        }
    }
}

impl Ttls {
    /// The defaults, overridden by `OAUTH_*_TTL` environment variables (seconds). A value
    /// that is not a positive integer is an error naming the variable.
    pub fn from_env() -> Result<Self, String> {
        let mut t = Self::default();
        for (var, slot) in [
            ("OAUTH_AUTH_CODE_TTL", &mut t.auth_code),
            ("OAUTH_ACCESS_TOKEN_TTL", &mut t.access_token),
            ("OAUTH_REFRESH_TOKEN_TTL", &mut t.refresh_token),
            ("OAUTH_CLIENT_REGISTRATION_TTL", &mut t.client_registration),
            ("OAUTH_EXTERNAL_TOKEN_TTL", &mut t.external_token),
            ("OAUTH_DEVICE_CODE_TTL", &mut t.device_code),
        ] {
            if let Ok(v) = std::env::var(var) {
                let secs: u64 =
                    v.trim().parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("{var}={v:?} is not a positive number of seconds")
                    })?;
                *slot = Duration::from_secs(secs);
            }
        }
        Ok(t)
    }
}

/// How the server treats a `client_id` that is an HTTPS URL: a client ID metadata document
/// (draft-ietf-oauth-client-id-metadata-document-00, the version the MCP authorization
/// specification 2025-11-25 cites; see [`crate::cimd`]).
///
/// The defaults are safe for a server on the internet. The two switches that widen what
/// the server fetches, [`allow_private_addresses`](Self::allow_private_addresses) and
/// [`allow_http`](Self::allow_http), exist for tests and closed networks only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CimdConfig {
    /// Accept URL client ids and advertise `client_id_metadata_document_supported`
    /// (draft §5). Default `true`.
    pub enabled: bool,
    /// Fetch documents from hosts that resolve to loopback, private, link-local, CGNAT,
    /// unique-local and other non-public addresses. Default `false`: draft §6.5, "SHOULD
    /// avoid fetching any URLs using private or loopback addresses". Turning it on lets any
    /// client make this server send GET requests into its own network.
    pub allow_private_addresses: bool,
    /// Accept `http://` client ids as well as `https://` ones. Default `false` (draft §3:
    /// "MUST have an https scheme"); for tests against a plain loopback server.
    pub allow_http: bool,
    /// The largest document read, in bytes; the connection is dropped beyond it. Default
    /// 16 KiB. Draft §6.6 recommends 5 kilobytes; the default leaves room for an inline
    /// `jwks`.
    pub max_bytes: usize,
    /// Time allowed for the whole fetch: name resolution, connection, TLS, headers and
    /// body. Default 5 s.
    pub timeout: Duration,
    /// How long a document is cached when its response says nothing about freshness
    /// (draft §4.4). Default 300 s.
    pub default_cache: Duration,
    /// The shortest time a document is kept, even with `no-store`, `no-cache` or
    /// `max-age=0`, so one authorization (request, consent, code exchange) sees one
    /// document; anything later fetches it again. Default 10 s.
    pub min_cache: Duration,
    /// The longest time a document is cached, whatever its `max-age`. Default 86400 s.
    pub max_cache: Duration,
}

impl Default for CimdConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_private_addresses: false,
            allow_http: false,
            max_bytes: 16 * 1024,
            timeout: Duration::from_secs(5),
            default_cache: Duration::from_secs(300),
            min_cache: Duration::from_secs(10),
            max_cache: Duration::from_secs(86_400),
        }
    }
}

/// What the authorization server is and offers.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The issuer identifier, exactly as clients will compare it (RFC 8414 §2: no query, no
    /// fragment; this crate adds no trailing slash). Endpoints are `{issuer}/authorize` etc.
    pub issuer: String,
    /// The tenant this issuer serves (every stored row carries it).
    pub tenant: String,
    /// Lifetimes.
    pub ttls: Ttls,
    /// Scopes clients may ask for; `None` accepts any syntactically valid scope.
    pub scopes_supported: Option<ScopeSet>,
    /// Scopes granted when a client asks for none.
    pub default_scopes: ScopeSet,
    /// The audience of access tokens issued without an RFC 8707 `resource`.
    pub default_audience: Option<String>,
    /// Resources tokens may be issued for (RFC 8707 `invalid_target` otherwise); empty:
    /// any absolute URI.
    pub resources: Vec<String>,
    /// Approve every authorization request without a login page (tests and benchmarks
    /// only; refused unless the issuer is on loopback).
    pub dev_auto_approve: bool,
    /// The subject used by `dev_auto_approve`.
    pub dev_subject: String,
    /// Accept RFC 7591 dynamic registration.
    pub allow_dynamic_registration: bool,
    /// Accept refresh tokens at all.
    pub issue_refresh_tokens: bool,
    /// Per-address rate limits on registration, token and login.
    pub rate_limits: crate::ratelimit::RateLimits,
    /// Client ID metadata documents: URL client ids fetched on first use.
    pub client_id_metadata_documents: CimdConfig,
    /// DPoP (RFC 9449): accept proofs at the token endpoint and bind tokens to the client's
    /// key; `None` (the default): bearer tokens only, `DPoP` headers ignored.
    pub dpop: Option<mcp_auth_resource::dpop::DpopOptions>,
}

impl ServerConfig {
    /// A configuration with defaults for `issuer`.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            tenant: "default".into(),
            ttls: Ttls::default(),
            scopes_supported: None,
            default_scopes: ScopeSet::new(),
            default_audience: None,
            resources: Vec::new(),
            dev_auto_approve: false,
            dev_subject: "dev:user".into(),
            allow_dynamic_registration: true,
            issue_refresh_tokens: true,
            rate_limits: crate::ratelimit::RateLimits::default(),
            client_id_metadata_documents: CimdConfig::default(),
            dpop: None,
        }
    }

    /// `{issuer}{path}`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.trim_end_matches('/'))
    }
}
