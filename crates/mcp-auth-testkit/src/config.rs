//! What the test server does: every knob, with defaults that make a well-behaved server of
//! the MCP 2025-11-25 authorization spec.

use std::time::Duration;

use mcp_auth_types::{AuthMethod, ClientMetadata, ClientSecret};

/// RFC 9728 §3: the well-known suffix of protected resource metadata.
pub(crate) const PRM_WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The server's behaviour. [`Config::default`] is a well-behaved MCP 2025-11-25 server: an
/// OAuth 2.1 authorization server with dynamic registration, PKCE S256, RFC 9207 `iss`,
/// refresh token rotation, and an MCP endpoint that advertises its protected resource
/// metadata (RFC 9728) in its `401` challenges.
///
/// Fields are public so a test changes only what it is about:
///
/// ```
/// use mcp_auth_testkit::Config;
///
/// let config = Config {
///     issue_refresh_tokens: false,
///     access_token_ttl: 5,
///     ..Config::default()
/// };
/// # let _ = config;
/// ```
///
/// Most fields can also be changed while the server runs, with
/// [`TestServer::configure`](crate::TestServer::configure); `port` cannot.
#[derive(Debug, Clone)]
pub struct Config {
    // --- where things are -------------------------------------------------------------------
    /// Port to bind on 127.0.0.1; `0` (the default) lets the OS choose.
    pub port: u16,
    /// Path of the MCP endpoint, with a leading `/` (default `/mcp`).
    pub mcp_path: String,
    /// Path part of the issuer identifier: `""` (the default) makes the issuer the bare
    /// origin `http://127.0.0.1:PORT`; `"/tenant1"` makes it `http://127.0.0.1:PORT/tenant1`
    /// and moves the metadata documents accordingly (RFC 8414 §3.1 path insertion). The
    /// endpoints stay at the origin (`/authorize`, `/token`, …).
    pub issuer_path: String,

    // --- protected resource metadata (RFC 9728) and the MCP endpoint's challenges ------------
    /// Serve the metadata at `/.well-known/oauth-protected-resource{mcp_path}` (RFC 9728 §3.1
    /// path insertion). Default `true`.
    pub prm_at_path: bool,
    /// Serve the metadata at `/.well-known/oauth-protected-resource` (the origin form). Default
    /// `false`.
    pub prm_at_root: bool,
    /// Put `resource_metadata="<url>"` in `WWW-Authenticate` challenges (RFC 9728 §5.1);
    /// the URL is the path-inserted one when `prm_at_path`, else the root one. Default `true`.
    pub challenge_resource_metadata: bool,
    /// Put `scope="…"` in `WWW-Authenticate` challenges (MCP 2025-11-25 "Scope Selection
    /// Strategy"); the value is `required_scopes`. Default `true`.
    pub challenge_scope: bool,
    /// The `resource` the protected resource metadata announces; `None` (the default) means
    /// the MCP URL. Set it to another server's URL to play a malicious resource (RFC 9728 §3.3
    /// says clients must refuse such metadata).
    pub prm_resource_override: Option<String>,
    /// The `authorization_servers` of the protected resource metadata; `None` (the default)
    /// means `[issuer]`.
    pub prm_authorization_servers_override: Option<Vec<String>>,
    /// `scopes_supported` of the protected resource metadata (`None` omits it). Default
    /// `["mcp:read", "mcp:write"]`.
    pub scopes_supported: Option<Vec<String>>,
    /// MCP 2025-03-26 behaviour: no protected resource metadata at all (every PRM URL answers
    /// `404` and challenges carry no `resource_metadata`), so clients fall back to the
    /// authorization server metadata at the MCP server's origin. Default `false`.
    pub legacy_2025_03_26: bool,

    // --- authorization server metadata (RFC 8414 / OpenID Connect Discovery) ---------------
    /// Serve RFC 8414 metadata at `/.well-known/oauth-authorization-server{issuer_path}`.
    /// Default `true`.
    pub as_metadata_oauth: bool,
    /// Serve OpenID Connect discovery at `/.well-known/openid-configuration{issuer_path}`.
    /// Default `true`.
    pub as_metadata_oidc: bool,
    /// Also serve OpenID Connect discovery at `{issuer_path}/.well-known/openid-configuration`
    /// (the form OpenID Connect Discovery §4 itself defines; only differs when `issuer_path` is
    /// not empty). Default `false`.
    pub as_metadata_oidc_appended: bool,
    /// No authorization server metadata at all (every metadata URL answers `404`), so
    /// 2025-03-26 clients use the default endpoints `/authorize`, `/token`, `/register`.
    /// Default `false`.
    pub no_as_metadata: bool,
    /// `scopes_supported` of the authorization server metadata (`None` omits it); also the
    /// scopes `/authorize` and the token endpoint accept (`None`: any). Default
    /// `["mcp:read", "mcp:write", "admin", "offline_access"]`.
    pub as_scopes_supported: Option<Vec<String>>,
    /// Advertise and serve `/register` (RFC 7591). Default `true`; when `false` the endpoint
    /// answers `404` and the metadata omits `registration_endpoint`.
    pub registration_enabled: bool,
    /// `token_endpoint_auth_methods_supported`; also what `/register` accepts. Default
    /// `["none", "client_secret_basic", "client_secret_post"]`.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// `code_challenge_methods_supported` (`None` omits it: MCP clients must then refuse to
    /// proceed). The server itself accepts only `S256` whatever this says. Default
    /// `["S256"]`.
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// Advertise `authorization_response_iss_parameter_supported: true` (RFC 9207 §3). Default
    /// `true`.
    pub authorization_response_iss_parameter_supported: bool,
    /// Send `iss` in authorization responses (RFC 9207 §2). Default `true`. Turning it off
    /// while still advertising support plays a server the client must reject (RFC 9207 §2.4).
    pub send_iss: bool,
    /// The `iss` value sent in authorization responses; `None` (the default) is the issuer.
    /// Set it to play the mix-up attack of RFC 9207.
    pub iss_override: Option<String>,
    /// Advertise `client_id_metadata_document_supported` and accept `https` URL client ids
    /// found in `client_metadata_documents`. Default `false`.
    pub client_id_metadata_document_supported: bool,
    /// Client ID metadata documents, as if fetched from their URL: `(url, document)`. The
    /// document's `client_id` must equal the URL. The server never fetches anything.
    pub client_metadata_documents: Vec<(String, ClientMetadata)>,
    /// Malicious: the metadata's `issuer` claims this instead of the real issuer (RFC 8414
    /// §3.3 says clients must refuse the document).
    pub metadata_issuer_override: Option<String>,
    /// Malicious: the metadata's `authorization_endpoint` (for example `file:///etc/passwd`
    /// or `javascript:alert(1)`; clients must never open such a URL).
    pub authorization_endpoint_override: Option<String>,

    // --- clients ------------------------------------------------------------------------------
    /// Pre-registered clients. Dynamically registered ones are added at run time.
    pub clients: Vec<ClientConfig>,
    /// `/register` ignores the requested `token_endpoint_auth_method` and registers the client
    /// with this one instead (RFC 7591 §3.2.1 allows the server to substitute values; clients
    /// must use what the response says). Default `None`.
    pub registration_forced_auth_method: Option<AuthMethod>,

    // --- the authorization endpoint ---------------------------------------------------------
    /// The "user" refuses consent: `/authorize` redirects with `error=access_denied`.
    /// Default `false`.
    pub deny_authorization: bool,
    /// How long `/authorize` takes before answering. Default zero.
    pub authorize_delay: Duration,
    /// Scopes granted when a request names none. Default `["mcp:read", "mcp:write"]`.
    pub default_scopes: Vec<String>,

    // --- the token endpoint ------------------------------------------------------------------
    /// Access token lifetime in seconds, sent as `expires_in`. Default 3600.
    pub access_token_ttl: u64,
    /// Issue refresh tokens. Default `true`.
    pub issue_refresh_tokens: bool,
    /// Issue a refresh token only when the grant includes `offline_access`. Default `false`.
    pub refresh_requires_offline_access: bool,
    /// Rotate refresh tokens (OAuth 2.1 §4.3.1): every refresh returns a new refresh token
    /// and invalidates the old one; presenting a rotated token again revokes the whole
    /// family. Default `true`. When `false`, refresh responses carry no refresh token and the
    /// old one stays valid.
    pub rotate_refresh_tokens: bool,
    /// How long a refresh takes, to widen race windows in concurrency tests. Default zero.
    pub refresh_delay: Duration,

    // --- the MCP endpoint --------------------------------------------------------------------
    /// Scopes every MCP request needs (a token without them gets `403 insufficient_scope`);
    /// also the `scope` of `401` challenges. Default `["mcp:read"]`.
    pub required_scopes: Vec<String>,
    /// The scope the `admin-op` tool needs (step-up authorization). Default `"admin"`.
    pub step_up_scope: String,
    /// Reject tokens whose RFC 8707 audience (`resource`) does not cover the MCP URL.
    /// Default `true`.
    pub check_audience: bool,
    /// Reject tokens issued without a `resource` parameter (MCP clients must send one).
    /// Default `false`.
    pub require_resource: bool,
    /// Answer JSON-RPC requests with a one-event `text/event-stream` instead of JSON.
    /// Default `false`.
    pub sse_responses: bool,
    /// Require an `Accept` header listing both `application/json` and `text/event-stream`
    /// (MCP streamable HTTP), else `406`. Default `false`.
    pub strict_accept: bool,
    /// Require `Mcp-Session-Id` (from `initialize`) on every other request: `400` when
    /// missing, `404` when unknown. Default `true`.
    pub require_session: bool,
}

impl Default for Config {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Self {
            port: 0,
            mcp_path: "/mcp".to_owned(),
            issuer_path: String::new(),
            prm_at_path: true,
            prm_at_root: false,
            challenge_resource_metadata: true,
            challenge_scope: true,
            prm_resource_override: None,
            prm_authorization_servers_override: None,
            scopes_supported: Some(strings(&["mcp:read", "mcp:write"])),
            legacy_2025_03_26: false,
            as_metadata_oauth: true,
            as_metadata_oidc: true,
            as_metadata_oidc_appended: false,
            no_as_metadata: false,
            as_scopes_supported: Some(strings(&[
                "mcp:read",
                "mcp:write",
                "admin",
                "offline_access",
            ])),
            registration_enabled: true,
            token_endpoint_auth_methods_supported: strings(&[
                "none",
                "client_secret_basic",
                "client_secret_post",
            ]),
            code_challenge_methods_supported: Some(strings(&["S256"])),
            authorization_response_iss_parameter_supported: true,
            send_iss: true,
            iss_override: None,
            client_id_metadata_document_supported: false,
            client_metadata_documents: Vec::new(),
            metadata_issuer_override: None,
            authorization_endpoint_override: None,
            clients: Vec::new(),
            registration_forced_auth_method: None,
            deny_authorization: false,
            authorize_delay: Duration::ZERO,
            default_scopes: strings(&["mcp:read", "mcp:write"]),
            access_token_ttl: 3600,
            issue_refresh_tokens: true,
            refresh_requires_offline_access: false,
            rotate_refresh_tokens: true,
            refresh_delay: Duration::ZERO,
            required_scopes: strings(&["mcp:read"]),
            step_up_scope: "admin".to_owned(),
            check_audience: true,
            require_resource: false,
            sse_responses: false,
            strict_accept: false,
            require_session: true,
        }
    }
}

impl Config {
    /// The issuer identifier for a server at `base` (`http://127.0.0.1:PORT`).
    pub(crate) fn issuer_at(&self, base: &str) -> String {
        format!("{base}{}", self.issuer_path)
    }

    /// The MCP endpoint's URL for a server at `base`.
    pub(crate) fn mcp_url_at(&self, base: &str) -> String {
        format!("{base}{}", self.mcp_path)
    }

    /// The path-inserted protected resource metadata path (RFC 9728 §3.1).
    pub(crate) fn prm_path(&self) -> String {
        let suffix = if self.mcp_path == "/" {
            ""
        } else {
            self.mcp_path.as_str()
        };
        format!("{PRM_WELL_KNOWN}{suffix}")
    }

    /// The `resource_metadata` URL the challenges name, if any.
    pub(crate) fn resource_metadata_url_at(&self, base: &str) -> Option<String> {
        if self.legacy_2025_03_26 || !self.challenge_resource_metadata {
            return None;
        }
        if self.prm_at_root && !self.prm_at_path {
            Some(format!("{base}{PRM_WELL_KNOWN}"))
        } else {
            Some(format!("{base}{}", self.prm_path()))
        }
    }

    /// A server of the MCP 2025-03-26 era: no protected resource metadata, authorization
    /// server metadata at the MCP server's origin.
    pub fn legacy_2025_03_26() -> Self {
        Self {
            legacy_2025_03_26: true,
            ..Self::default()
        }
    }
}

/// A pre-registered client (one known to the server without dynamic registration).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The client id.
    pub client_id: String,
    /// The client secret; `None` makes a public client.
    pub client_secret: Option<ClientSecret>,
    /// Registered redirect URIs, compared exactly, except that for loopback URIs
    /// (`http://127.0.0.1`, `http://[::1]`, `http://localhost`) the port is ignored
    /// (RFC 8252 §7.3).
    pub redirect_uris: Vec<String>,
    /// The token endpoint authentication method the client must use. `None` (what the
    /// constructors set): `none` for public clients, and either `client_secret_basic` or
    /// `client_secret_post` for confidential ones.
    pub token_endpoint_auth_method: Option<AuthMethod>,
}

impl ClientConfig {
    /// A public client (no secret).
    pub fn public(client_id: impl Into<String>, redirect_uris: &[&str]) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: None,
            redirect_uris: redirect_uris.iter().map(|s| (*s).to_owned()).collect(),
            token_endpoint_auth_method: None,
        }
    }

    /// A confidential client, which may also use the `client_credentials` grant.
    pub fn confidential(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        redirect_uris: &[&str],
    ) -> Self {
        Self {
            client_secret: Some(ClientSecret::new(client_secret)),
            ..Self::public(client_id, redirect_uris)
        }
    }
}
