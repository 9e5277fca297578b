//! Server configuration: issuer, lifetimes, what the server offers.

use std::collections::BTreeMap;
use std::time::Duration;

use mcp_auth_types::ScopeSet;
pub use mcp_auth_upstream::id_token::SigningAlgorithm;
use serde::{Deserialize, Deserializer};

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
    /// Issuers whose JWTs the token endpoint accepts as RFC 7523 authorization grants
    /// (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`); empty: the grant is off
    /// and not advertised. See [`crate::jwt_bearer`].
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// How long a client looked up in the store is answered from memory (default 5 s; zero
    /// turns the cache off). Writes through this server invalidate at once; other processes
    /// sharing the store see a client's update or deletion within this time.
    pub client_cache_ttl: Duration,
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
            trusted_issuers: Vec::new(),
            client_cache_ttl: Duration::from_secs(5),
        }
    }

    /// Checks every [`TrustedIssuer`] ([`TrustedIssuer::check`]) and that their ids are
    /// unique. The server refuses to start otherwise.
    pub fn check_trusted_issuers(&self) -> Result<(), TrustConfigError> {
        let mut seen = std::collections::HashSet::new();
        for t in &self.trusted_issuers {
            t.check()?;
            if !seen.insert(t.id.as_str()) {
                return Err(TrustConfigError::new(
                    &t.id,
                    "two trusted issuers have this id",
                ));
            }
        }
        Ok(())
    }

    /// `{issuer}{path}`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.trim_end_matches('/'))
    }
}

/// What a trusted issuer's assertions stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustKind {
    /// An enterprise identity provider issuing Identity Assertion JWT Authorization Grants
    /// (ID-JAG, MCP "enterprise-managed authorization", SEP-990): `typ` must be
    /// `oauth-id-jag+jwt`, and the assertion names the client (`client_id`) and the
    /// resource it is for. The enterprise's trust configuration is the user's consent.
    Enterprise,
    /// A workload identity platform (Kubernetes service account tokens, GitHub Actions
    /// OIDC tokens, cloud workload identity; MCP workload identity federation, SEP-1933):
    /// the assertion identifies the workload; which subjects may use it is configured.
    Workload,
}

impl TrustKind {
    /// `enterprise` or `workload`: also the default account prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enterprise => "enterprise",
            Self::Workload => "workload",
        }
    }
}

/// How an assertion's subject becomes the subject of the tokens issued for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectMapping {
    /// `{kind}:{id}:{subject}` (`enterprise:acme:00u1abc`, `workload:ci:repo:org/app:ref:…`):
    /// accounts of their own, which no other login can produce.
    #[default]
    Prefixed,
    /// The local account with that username (`local:{subject}`), which must exist
    /// (`mcp-auth users add`): for an enterprise whose users already have accounts here,
    /// usually with `subject_claim = "email"`.
    LocalAccount,
}

/// An issuer whose JWTs the token endpoint accepts as authorization grants (RFC 7523 §2.1,
/// §3), and what it may grant. `[[trusted_issuer]]` in `server.toml` has the same fields.
///
/// Nothing is trusted by default: an issuer must be configured, its keys come only from its
/// `jwks_uri` (or its discovery document), and a workload issuer must name the subjects it
/// may speak for ([`check`](Self::check) enforces both).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// A short name (`[a-z0-9_-]`, at most 64), used in account names and logs.
    pub id: String,
    /// Enterprise IdP or workload platform.
    pub kind: TrustKind,
    /// The issuer, compared exactly with the assertion's `iss` (RFC 7523 §3 point 1).
    pub issuer: String,
    /// Where its keys are; absent: the `jwks_uri` of its discovery document
    /// (`{issuer}/.well-known/openid-configuration`, then RFC 8414's
    /// `oauth-authorization-server`).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// An `aud` accepted besides this server's issuer (RFC 7523 §3 point 3), for platforms
    /// whose token audience is configured separately (a Kubernetes projected token's
    /// `audience`).
    #[serde(default)]
    pub audience: Option<String>,
    /// The claim naming the subject (default `sub`; `email` to map users by address).
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// How the subject becomes an account here.
    #[serde(default)]
    pub subject_mapping: SubjectMapping,
    /// Workload: the subjects that may use this issuer, as globs (`*` any run of
    /// characters, `?` one): `repo:acme/deploy:ref:refs/heads/main`,
    /// `system:serviceaccount:tools:*`. Required for workloads. Enterprise: empty means any.
    #[serde(default)]
    pub allowed_subjects: Vec<String>,
    /// The client ids (of this server) that may present this issuer's assertions. Required
    /// for enterprise issuers; for workloads, empty means any client allowed the grant.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// Claims the assertion must carry with these values (`repository = "acme/app"`). A
    /// string also matches an array claim containing it.
    #[serde(default)]
    pub required_claims: BTreeMap<String, serde_json::Value>,
    /// The most a grant from this issuer may carry; absent: whatever the server and client
    /// allow. Also the scope granted when neither the request nor the assertion names one.
    #[serde(default, deserialize_with = "scope_list")]
    pub scopes: Option<ScopeSet>,
    /// The signature algorithms accepted (default ES256, ES384, RS256, PS256, EdDSA);
    /// `none` and `HS*` cannot be named.
    #[serde(default = "default_algorithms", deserialize_with = "algorithm_list")]
    pub algorithms: Vec<SigningAlgorithm>,
    /// The longest `exp - iat` accepted, in seconds (default 3600): a long-lived token is
    /// not a grant.
    #[serde(default = "default_max_lifetime", rename = "max_assertion_lifetime")]
    pub max_assertion_lifetime_secs: u64,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds (default 60).
    #[serde(default = "default_leeway", rename = "leeway")]
    pub leeway_secs: u64,
    /// Accept plain-http `issuer` and `jwks_uri` on loopback (tests only; default false).
    #[serde(default)]
    pub allow_http: bool,
    /// Issue refresh tokens with grants from this issuer (default false: RFC 7523 §3.1
    /// does not call for them; the client presents a fresh assertion instead).
    #[serde(default)]
    pub issue_refresh_tokens: bool,
}

fn default_subject_claim() -> String {
    "sub".into()
}

/// The default algorithm allow-list of a trusted issuer.
pub const DEFAULT_TRUSTED_ALGORITHMS: &[SigningAlgorithm] = &[
    SigningAlgorithm::ES256,
    SigningAlgorithm::ES384,
    SigningAlgorithm::RS256,
    SigningAlgorithm::PS256,
    SigningAlgorithm::EdDSA,
];

fn default_algorithms() -> Vec<SigningAlgorithm> {
    DEFAULT_TRUSTED_ALGORITHMS.to_vec()
}

fn default_max_lifetime() -> u64 {
    3600
}

fn default_leeway() -> u64 {
    60
}

fn scope_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ScopeSet>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    ScopeSet::from_strs(&items)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn algorithm_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SigningAlgorithm>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|name| {
            SigningAlgorithm::from_name(name).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "algorithm {name:?} is unknown or not allowed (none and HS* never are)"
                ))
            })
        })
        .collect()
}

/// A [`TrustedIssuer`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trusted issuer {id:?}: {reason}")]
pub struct TrustConfigError {
    /// The issuer's id.
    pub id: String,
    /// What is wrong.
    pub reason: String,
}

impl TrustConfigError {
    fn new(id: &str, reason: impl Into<String>) -> Self {
        Self {
            id: id.to_owned(),
            reason: reason.into(),
        }
    }
}

impl TrustedIssuer {
    /// A trusted issuer of `kind` with the defaults: subjects from `sub`, prefixed; the
    /// default algorithms; assertions of at most an hour; no refresh tokens. A workload
    /// issuer still needs [`allowed_subjects`](Self::allowed_subjects), an enterprise one
    /// [`allowed_clients`](Self::allowed_clients).
    pub fn new(id: impl Into<String>, kind: TrustKind, issuer: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind,
            issuer: issuer.into(),
            jwks_uri: None,
            audience: None,
            subject_claim: default_subject_claim(),
            subject_mapping: SubjectMapping::Prefixed,
            allowed_subjects: Vec::new(),
            allowed_clients: Vec::new(),
            required_claims: BTreeMap::new(),
            scopes: None,
            algorithms: default_algorithms(),
            max_assertion_lifetime_secs: default_max_lifetime(),
            leeway_secs: default_leeway(),
            allow_http: false,
            issue_refresh_tokens: false,
        }
    }

    /// Checks the configuration: a usable id; `issuer` and `jwks_uri` https URLs (http
    /// only on loopback with [`allow_http`](Self::allow_http)); at least one algorithm; a
    /// positive lifetime bound; a subject claim; a workload issuer with allowed subjects
    /// and an enterprise issuer with allowed clients.
    pub fn check(&self) -> Result<(), TrustConfigError> {
        let bad = |reason: &str| Err(TrustConfigError::new(&self.id, reason));
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !id_ok {
            return bad("the id must be 1 to 64 characters of a-z, 0-9, - and _");
        }
        check_url(&self.issuer, "issuer", self.allow_http)
            .map_err(|r| TrustConfigError::new(&self.id, r))?;
        if let Some(u) = &self.jwks_uri {
            check_url(u, "jwks_uri", self.allow_http)
                .map_err(|r| TrustConfigError::new(&self.id, r))?;
        }
        if self.audience.as_deref().is_some_and(str::is_empty) {
            return bad("audience must not be empty");
        }
        if self.subject_claim.is_empty() {
            return bad("subject_claim must not be empty");
        }
        if self.algorithms.is_empty() {
            return bad("no algorithm is allowed");
        }
        if self.max_assertion_lifetime_secs == 0 {
            return bad("max_assertion_lifetime must be positive");
        }
        if self.leeway_secs > 600 {
            return bad("leeway is at most 600 seconds");
        }
        if self.allowed_subjects.iter().any(String::is_empty) {
            return bad("an allowed subject pattern is empty");
        }
        match self.kind {
            TrustKind::Workload if self.allowed_subjects.is_empty() => bad(
                "a workload issuer needs allowed_subjects: a platform's issuer signs tokens for \
                 every workload it runs, not only yours",
            ),
            TrustKind::Enterprise if self.allowed_clients.is_empty() => {
                bad("an enterprise issuer needs allowed_clients: the clients it may grant to")
            }
            _ => Ok(()),
        }
    }
}

/// An https URL without a fragment, or an http one on loopback when allowed.
fn check_url(raw: &str, what: &str, allow_http: bool) -> Result<(), String> {
    let u = url::Url::parse(raw).map_err(|_| format!("{what} is not an absolute URL"))?;
    if u.fragment().is_some() || u.query().is_some() {
        return Err(format!("{what} must have no query or fragment"));
    }
    let loopback = u.host_str().is_some_and(crate::handlers::is_loopback_host);
    match u.scheme() {
        "https" => Ok(()),
        "http" if allow_http && loopback => Ok(()),
        "http" if allow_http => Err(format!("{what} may use http only on loopback")),
        _ => Err(format!(
            "{what} must be an https URL (allow_http for loopback tests)"
        )),
    }
}
