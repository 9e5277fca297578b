//! The checks: pure functions from parsed responses to [`Finding`]s. Each names the spec
//! section it enforces in its `spec` field; the probe (`crate::probe`) does the requests and
//! attaches what was sent and received.

use mcp_auth_types::challenge::{Challenge, find_bearer};
use mcp_auth_types::metadata::MetadataError;
use mcp_auth_types::{
    AuthorizationServerMetadata, HttpUrl, ProtectedResourceMetadata, ResourceUrl,
};
use serde_json::Value;

use crate::report::{Finding, Severity, Step};

/// Spec references, one place so the report's wording stays consistent.
pub mod spec {
    /// MCP 2025-11-25: servers answer 401 with a `WWW-Authenticate` challenge.
    pub const MCP_AS_LOCATION: &str = "MCP 2025-11-25 Authorization §Authorization Server Location";
    /// MCP 2025-11-25: the PRM discovery mechanisms (challenge or well-known URIs).
    pub const MCP_PRM_DISCOVERY: &str =
        "MCP 2025-11-25 Authorization §Protected Resource Metadata Discovery Requirements";
    /// MCP 2025-11-25: AS metadata discovery order.
    pub const MCP_AS_DISCOVERY: &str =
        "MCP 2025-11-25 Authorization §Authorization Server Metadata Discovery";
    /// MCP 2025-11-25: PKCE S256.
    pub const MCP_PKCE: &str = "MCP 2025-11-25 Authorization §Authorization Code Protection";
    /// MCP 2025-11-25: registration approaches.
    pub const MCP_REGISTRATION: &str =
        "MCP 2025-11-25 Authorization §Client Registration Approaches";
    /// MCP 2025-11-25: HTTPS everywhere.
    pub const MCP_TLS: &str = "MCP 2025-11-25 Authorization §Communication Security";
    /// MCP 2025-11-25: the 2025-03-26 fallback is for old servers only.
    pub const MCP_LEGACY: &str =
        "MCP 2025-03-26 Authorization §Fallbacks for Servers without Metadata Discovery";
    /// RFC 6750 §3: the Bearer challenge.
    pub const RFC6750_CHALLENGE: &str = "RFC 6750 §3";
    /// RFC 9728 §5.1: `resource_metadata` in the challenge.
    pub const RFC9728_CHALLENGE: &str = "RFC 9728 §5.1";
    /// RFC 9728 §3.2: the metadata response.
    pub const RFC9728_RESPONSE: &str = "RFC 9728 §3.2";
    /// RFC 9728 §3.3: `resource` must be the server accessed.
    pub const RFC9728_VALIDATION: &str = "RFC 9728 §3.3";
    /// RFC 9728 §2: `authorization_servers`.
    pub const RFC9728_AS: &str = "RFC 9728 §2";
    /// RFC 8414 §3.2: the metadata response.
    pub const RFC8414_RESPONSE: &str = "RFC 8414 §3.2";
    /// RFC 8414 §3.3: issuer equality.
    pub const RFC8414_ISSUER: &str = "RFC 8414 §3.3";
    /// RFC 8414 §2: the fields.
    pub const RFC8414_FIELDS: &str = "RFC 8414 §2";
    /// RFC 9207 §3 (required by MCP 2026-07-28).
    pub const RFC9207: &str = "RFC 9207 §3; MCP 2026-07-28 Authorization";
    /// RFC 7009: revocation.
    pub const RFC7009: &str = "RFC 7009 §2; RFC 8414 §2";
    /// OAuth 2.1 refresh tokens.
    pub const REFRESH: &str = "OAuth 2.1 §4.3; RFC 8414 §2 grant_types_supported";
    /// RFC 7591 §3.2: the registration response.
    pub const RFC7591_RESPONSE: &str = "RFC 7591 §3.2";
    /// RFC 8628 §4: the device authorization endpoint in the metadata.
    pub const RFC8628: &str = "RFC 8628 §4; MCP extension: device authorization";
    /// RFC 9449 §5.1: DPoP algorithms in the metadata.
    pub const RFC9449: &str = "RFC 9449 §5.1; MCP extension SEP-1932 (DPoP)";
    /// RFC 7523 §2.1: the JWT-bearer grant (workload identity, enterprise-managed authorization).
    pub const RFC7523: &str = "RFC 7523 §2.1; MCP extensions: workload identity federation, enterprise-managed authorization";
    /// Client ID metadata documents.
    pub const CIMD: &str = "MCP 2025-11-25 Authorization §Client ID Metadata Documents";
    /// Fetch standard CORS.
    pub const CORS: &str = "Fetch Standard §CORS protocol; MCP 2025-11-25 Transports";
    /// MCP 2025-11-25: the whole authorization flow.
    pub const MCP_FLOW: &str = "MCP 2025-11-25 Authorization §Authorization Flow Steps";
    /// MCP 2025-11-25: access tokens on every request, audience-bound.
    pub const MCP_TOKEN_USAGE: &str = "MCP 2025-11-25 Authorization §Access Token Usage";
    /// MCP tool calls.
    pub const MCP_TOOLS: &str = "MCP 2025-11-25 Server Features §Tools";
}

fn f_pass(
    id: &'static str,
    step: Step,
    sev: Severity,
    spec: &'static str,
    s: impl Into<String>,
) -> Finding {
    Finding::pass(id, step, sev, spec, s)
}

/// The unauthenticated MCP request: a `401` (RFC 6750 §3, MCP "Authorization Server
/// Location") whose `Bearer` challenge names the protected resource metadata (RFC 9728 §5.1).
/// Returns the findings and the challenge, when there is one.
pub fn check_challenge(
    status: u16,
    www_authenticate: &[String],
) -> (Vec<Finding>, Option<Challenge>) {
    let step = Step::Challenge;
    let mut out = Vec::new();
    match status {
        401 => out.push(f_pass(
            "challenge.status",
            step,
            Severity::Must,
            spec::MCP_AS_LOCATION,
            "a request without a token gets 401 Unauthorized",
        )),
        200..=299 => out.push(Finding::warn(
            "challenge.status",
            step,
            Severity::Should,
            spec::MCP_AS_LOCATION,
            format!("a request without a token was answered {status}: the server does not ask for authorization"),
            "if the server is meant to be protected, answer requests without a valid token with 401 and a Bearer challenge",
        )),
        _ => out.push(Finding::fail(
            "challenge.status",
            step,
            Severity::Must,
            spec::MCP_AS_LOCATION,
            format!("a request without a token was answered {status}, not 401"),
            "answer requests that carry no token with 401 Unauthorized and a WWW-Authenticate: Bearer challenge",
        )),
    }
    let challenge = find_bearer(www_authenticate.iter().map(String::as_str));
    if status != 401 && www_authenticate.is_empty() {
        return (out, None);
    }
    let Some(ch) = challenge else {
        out.push(if www_authenticate.is_empty() {
            Finding::fail(
                "challenge.bearer",
                step,
                Severity::Must,
                spec::RFC6750_CHALLENGE,
                "the 401 carries no WWW-Authenticate header",
                "add `WWW-Authenticate: Bearer resource_metadata=\"<PRM URL>\"` to every 401",
            )
        } else {
            Finding::fail(
                "challenge.bearer",
                step,
                Severity::Must,
                spec::RFC6750_CHALLENGE,
                format!("no parsable Bearer challenge in WWW-Authenticate {www_authenticate:?}"),
                "send a Bearer challenge with quoted parameter values (RFC 9110 §11.6.1)",
            )
        });
        return (out, None);
    };
    out.push(f_pass(
        "challenge.bearer",
        step,
        Severity::Must,
        spec::RFC6750_CHALLENGE,
        format!("{} challenge", ch.scheme),
    ));
    match ch.resource_metadata() {
        Some(url) => match HttpUrl::parse(url) {
            Ok(_) => out.push(f_pass(
                "challenge.resource-metadata",
                step,
                Severity::Should,
                spec::RFC9728_CHALLENGE,
                format!("resource_metadata={url}"),
            )),
            Err(e) => out.push(Finding::fail(
                "challenge.resource-metadata",
                step,
                Severity::Must,
                spec::RFC9728_CHALLENGE,
                format!("resource_metadata {url:?} is not an http(s) URL: {e}"),
                "make resource_metadata the absolute URL of the protected resource metadata document",
            )),
        },
        None => out.push(Finding::warn(
            "challenge.resource-metadata",
            step,
            Severity::Should,
            spec::MCP_PRM_DISCOVERY,
            "the challenge has no resource_metadata parameter; clients must fall back to the well-known URLs",
            "add resource_metadata=\"<PRM URL>\" to the Bearer challenge (RFC 9728 §5.1)",
        )),
    }
    match ch.param("scope") {
        Some(s) => out.push(f_pass(
            "challenge.scope",
            step,
            Severity::Info,
            "MCP 2025-11-25 Authorization §Scope Selection Strategy",
            format!("scope=\"{s}\""),
        )),
        None => out.push(Finding::skip(
            "challenge.scope",
            step,
            Severity::Info,
            "MCP 2025-11-25 Authorization §Scope Selection Strategy",
            "no scope in the challenge; clients use the metadata's scopes_supported",
        )),
    }
    (out, Some(ch))
}

fn json_content_type(ct: Option<&str>) -> bool {
    ct.and_then(|c| c.split(';').next())
        .map(|c| c.trim().eq_ignore_ascii_case("application/json"))
        .unwrap_or(false)
}

/// A protected resource metadata document (RFC 9728): JSON, `resource` identifying the
/// server (§3.3), `authorization_servers` present (MCP) and usable URLs.
pub fn check_prm(
    body: &[u8],
    content_type: Option<&str>,
    server: &ResourceUrl,
    allow_http: bool,
) -> (Vec<Finding>, Option<ProtectedResourceMetadata>) {
    let step = Step::ResourceMetadata;
    let mut out = Vec::new();
    let doc: ProtectedResourceMetadata = match serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .and_then(|v| serde_json::from_value(v).ok())
    {
        Some(d) => d,
        None => {
            out.push(Finding::fail(
                "prm.json",
                step,
                Severity::Must,
                spec::RFC9728_RESPONSE,
                "the protected resource metadata is not a JSON object of RFC 9728 fields",
                "serve the document as a JSON object (Content-Type: application/json)",
            ));
            return (out, None);
        }
    };
    if !json_content_type(content_type) {
        out.push(Finding::warn(
            "prm.content-type",
            step,
            Severity::Should,
            spec::RFC9728_RESPONSE,
            format!(
                "Content-Type is {:?}, not application/json",
                content_type.unwrap_or("(none)")
            ),
            "serve the document with Content-Type: application/json",
        ));
    }
    match doc.check_resource(server) {
        Ok(r) if r.as_str() == server.as_str() => out.push(f_pass(
            "prm.resource-match",
            step,
            Severity::Must,
            spec::RFC9728_VALIDATION,
            format!("resource {:?} is the server's canonical URL", doc.resource),
        )),
        Ok(_) => out.push(f_pass(
            "prm.resource-match",
            step,
            Severity::Must,
            spec::RFC9728_VALIDATION,
            format!(
                "resource {:?} covers {} (a parent path on the same origin)",
                doc.resource,
                server.as_str()
            ),
        )),
        Err(MetadataError::Missing(_)) => out.push(Finding::fail(
            "prm.resource-match",
            step,
            Severity::Must,
            spec::RFC9728_VALIDATION,
            "the document has no resource field",
            format!("set \"resource\": \"{}\"", server.as_str()),
        )),
        Err(_) => out.push(Finding::fail(
            "prm.resource-match",
            step,
            Severity::Must,
            spec::RFC9728_VALIDATION,
            format!(
                "resource {:?} is not the server being accessed ({}); clients must not use this document",
                doc.resource,
                server.as_str()
            ),
            format!("set \"resource\": \"{}\" (the exact URL clients connect to)", server.as_str()),
        )),
    }
    if doc.authorization_servers.is_empty() {
        out.push(Finding::fail(
            "prm.authorization-servers",
            step,
            Severity::Must,
            spec::MCP_AS_LOCATION,
            "authorization_servers is missing or empty",
            "list the issuer identifier of your authorization server in \"authorization_servers\"",
        ));
    } else {
        let bad: Vec<String> = doc
            .authorization_servers
            .iter()
            .filter_map(|i| {
                HttpUrl::parse_secure(i, allow_http)
                    .err()
                    .map(|e| format!("{i:?}: {e}"))
            })
            .collect();
        if bad.is_empty() {
            out.push(f_pass(
                "prm.authorization-servers",
                step,
                Severity::Must,
                spec::RFC9728_AS,
                format!(
                    "authorization_servers: {}",
                    doc.authorization_servers.join(", ")
                ),
            ));
        } else {
            out.push(Finding::fail(
                "prm.authorization-servers",
                step,
                Severity::Must,
                spec::MCP_TLS,
                format!("unusable issuer identifiers: {}", bad.join("; ")),
                "use https issuer identifiers (http only on loopback)",
            ));
        }
    }
    match &doc.scopes_supported {
        Some(s) => out.push(f_pass(
            "prm.scopes",
            step,
            Severity::Info,
            spec::RFC9728_AS,
            format!(
                "scopes_supported: {}",
                if s.is_empty() {
                    "(empty)".into()
                } else {
                    s.join(" ")
                }
            ),
        )),
        None => out.push(Finding::skip(
            "prm.scopes",
            step,
            Severity::Info,
            spec::RFC9728_AS,
            "no scopes_supported",
        )),
    }
    (out, Some(doc))
}

/// An authorization server metadata document (RFC 8414): `issuer` equal to the issuer it was
/// fetched for (§3.3; `expected_issuer` is `None` in the 2025-03-26 fallback, where there is
/// none to compare with), the endpoints, https, and what MCP clients need: PKCE S256,
/// `iss` in responses (RFC 9207), auth methods, refresh, revocation.
pub fn check_as_metadata(
    body: &[u8],
    content_type: Option<&str>,
    expected_issuer: Option<&str>,
    allow_http: bool,
) -> (Vec<Finding>, Option<AuthorizationServerMetadata>) {
    let step = Step::AuthorizationServer;
    let mut out = Vec::new();
    let m: AuthorizationServerMetadata = match serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .and_then(|v| serde_json::from_value(v).ok())
    {
        Some(m) => m,
        None => {
            out.push(Finding::fail(
                "as.json",
                step,
                Severity::Must,
                spec::RFC8414_RESPONSE,
                "the authorization server metadata is not a JSON object of RFC 8414 fields",
                "serve the metadata as a JSON object (Content-Type: application/json)",
            ));
            return (out, None);
        }
    };
    if !json_content_type(content_type) {
        out.push(Finding::warn(
            "as.content-type",
            step,
            Severity::Should,
            spec::RFC8414_RESPONSE,
            format!(
                "Content-Type is {:?}, not application/json",
                content_type.unwrap_or("(none)")
            ),
            "serve the metadata with Content-Type: application/json",
        ));
    }
    match expected_issuer {
        Some(expected) if m.issuer == expected => out.push(f_pass(
            "as.issuer-match",
            step,
            Severity::Must,
            spec::RFC8414_ISSUER,
            format!("issuer {:?} is the issuer the metadata was fetched for", m.issuer),
        )),
        Some(expected) => out.push(Finding::fail(
            "as.issuer-match",
            step,
            Severity::Must,
            spec::RFC8414_ISSUER,
            format!(
                "issuer {:?} differs from {expected:?}, the issuer the metadata was fetched for; clients must stop here",
                m.issuer
            ),
            format!(
                "make \"issuer\" exactly {expected:?} (or list the real issuer in the resource's authorization_servers)"
            ),
        )),
        None => out.push(Finding::skip(
            "as.issuer-match",
            step,
            Severity::Must,
            spec::RFC8414_ISSUER,
            format!("2025-03-26 fallback: no issuer to compare with (the document says {:?})", m.issuer),
        )),
    }
    let missing: Vec<&str> = [
        ("authorization_endpoint", m.authorization_endpoint.is_none()),
        ("token_endpoint", m.token_endpoint.is_none()),
    ]
    .into_iter()
    .filter_map(|(f, gone)| gone.then_some(f))
    .collect();
    if missing.is_empty() {
        out.push(f_pass(
            "as.endpoints",
            step,
            Severity::Must,
            spec::RFC8414_FIELDS,
            "authorization_endpoint and token_endpoint present",
        ));
    } else {
        out.push(Finding::fail(
            "as.endpoints",
            step,
            Severity::Must,
            spec::RFC8414_FIELDS,
            format!("missing {}", missing.join(" and ")),
            format!("add {} to the metadata", missing.join(" and ")),
        ));
    }
    let endpoints = [
        ("authorization_endpoint", &m.authorization_endpoint),
        ("token_endpoint", &m.token_endpoint),
        ("registration_endpoint", &m.registration_endpoint),
        ("revocation_endpoint", &m.revocation_endpoint),
        ("introspection_endpoint", &m.introspection_endpoint),
        ("jwks_uri", &m.jwks_uri),
    ];
    let insecure: Vec<String> = endpoints
        .iter()
        .filter_map(|(f, v)| {
            let v = v.as_ref()?;
            HttpUrl::parse_secure(v, allow_http)
                .err()
                .map(|e| format!("{f} {v:?}: {e}"))
        })
        .collect();
    if insecure.is_empty() {
        out.push(f_pass(
            "as.https",
            step,
            Severity::Must,
            spec::MCP_TLS,
            "every endpoint is https (or http on loopback)",
        ));
    } else {
        out.push(Finding::fail(
            "as.https",
            step,
            Severity::Must,
            spec::MCP_TLS,
            insecure.join("; "),
            "serve every authorization server endpoint over https",
        ));
    }
    if m.supports_s256() {
        out.push(f_pass(
            "as.pkce-s256",
            step,
            Severity::Must,
            spec::MCP_PKCE,
            "code_challenge_methods_supported includes S256",
        ));
    } else {
        out.push(Finding::fail(
            "as.pkce-s256",
            step,
            Severity::Must,
            spec::MCP_PKCE,
            match &m.code_challenge_methods_supported {
                None => "code_challenge_methods_supported is absent; MCP clients must refuse to proceed".to_owned(),
                Some(v) => format!(
                    "code_challenge_methods_supported is {v:?}, without S256; MCP clients must refuse to proceed"
                ),
            },
            "support PKCE with S256 and advertise \"code_challenge_methods_supported\": [\"S256\"]",
        ));
    }
    match &m.response_types_supported {
        Some(v) if v.iter().any(|t| t == "code") => out.push(f_pass(
            "as.response-type-code",
            step,
            Severity::Must,
            spec::RFC8414_FIELDS,
            "response_types_supported includes code",
        )),
        Some(v) => out.push(Finding::fail(
            "as.response-type-code",
            step,
            Severity::Must,
            spec::RFC8414_FIELDS,
            format!("response_types_supported is {v:?}, without code"),
            "support the authorization code flow and list \"code\" in response_types_supported",
        )),
        None => out.push(Finding::warn(
            "as.response-type-code",
            step,
            Severity::Should,
            spec::RFC8414_FIELDS,
            "response_types_supported (a required field) is absent",
            "add \"response_types_supported\": [\"code\"]",
        )),
    }
    if m.sends_iss() {
        out.push(f_pass(
            "as.iss-parameter",
            step,
            Severity::Should,
            spec::RFC9207,
            "authorization_response_iss_parameter_supported is true",
        ));
    } else {
        out.push(Finding::warn(
            "as.iss-parameter",
            step,
            Severity::Should,
            spec::RFC9207,
            "authorization responses do not announce iss (RFC 9207); the 2026-07-28 revision requires it",
            "send iss in authorization responses and advertise \"authorization_response_iss_parameter_supported\": true",
        ));
    }
    let methods: Vec<String> = m
        .auth_methods()
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect();
    let explicit = m.token_endpoint_auth_methods_supported.is_some();
    if !explicit {
        out.push(Finding::warn(
            "as.token-auth-methods",
            step,
            Severity::Should,
            spec::RFC8414_FIELDS,
            "token_endpoint_auth_methods_supported is absent (RFC 8414 default: client_secret_basic only, so no public clients)",
            "list the methods, including \"none\" for public (native and browser) MCP clients",
        ));
    } else if methods.iter().any(|a| a == "none") {
        out.push(f_pass(
            "as.token-auth-methods",
            step,
            Severity::Info,
            spec::RFC8414_FIELDS,
            format!(
                "token_endpoint_auth_methods_supported: {}",
                methods.join(", ")
            ),
        ));
    } else {
        out.push(Finding::warn(
            "as.token-auth-methods",
            step,
            Severity::Info,
            spec::RFC8414_FIELDS,
            format!(
                "token_endpoint_auth_methods_supported: {} (no \"none\": public clients cannot authenticate)",
                methods.join(", ")
            ),
            "accept \"none\" for public clients if native or browser MCP clients should connect",
        ));
    }
    if m.supports_grant("refresh_token") {
        out.push(f_pass(
            "as.refresh-token",
            step,
            Severity::Should,
            spec::REFRESH,
            "grant_types_supported includes refresh_token",
        ));
    } else {
        out.push(Finding::warn(
            "as.refresh-token",
            step,
            Severity::Should,
            spec::REFRESH,
            "grant_types_supported does not include refresh_token: users log in again whenever a token expires",
            "issue refresh tokens and list \"refresh_token\" in grant_types_supported",
        ));
    }
    out.extend(check_extensions(&m, allow_http));
    match &m.revocation_endpoint {
        Some(r) => out.push(f_pass(
            "as.revocation",
            step,
            Severity::Info,
            spec::RFC7009,
            format!("revocation_endpoint {r}"),
        )),
        None => out.push(Finding::warn(
            "as.revocation",
            step,
            Severity::Info,
            spec::RFC7009,
            "no revocation_endpoint: logging out cannot revoke tokens",
            "implement RFC 7009 and advertise revocation_endpoint",
        )),
    }
    (out, Some(m))
}

/// What the metadata says of the MCP authorization extensions: the device flow, DPoP and
/// the JWT-bearer grant (informational when absent; a misconfiguration when advertised
/// wrongly).
fn check_extensions(m: &AuthorizationServerMetadata, allow_http: bool) -> Vec<Finding> {
    let step = Step::AuthorizationServer;
    let mut out = Vec::new();
    match &m.device_authorization_endpoint {
        Some(e) if HttpUrl::parse_secure(e, allow_http).is_ok() => out.push(f_pass(
            "as.device-flow",
            step,
            Severity::Info,
            spec::RFC8628,
            format!("device authorization endpoint {e}: clients without a browser can log in"),
        )),
        Some(e) => out.push(Finding::fail(
            "as.device-flow",
            step,
            Severity::Must,
            spec::RFC8628,
            format!("device_authorization_endpoint {e:?} is not an https URL"),
            "serve the device authorization endpoint over https",
        )),
        None => out.push(f_pass(
            "as.device-flow",
            step,
            Severity::Info,
            spec::RFC8628,
            "no device_authorization_endpoint: clients without a browser cannot log in by the device flow",
        )),
    }
    match &m.dpop_signing_alg_values_supported {
        None => out.push(f_pass(
            "as.dpop",
            step,
            Severity::Info,
            spec::RFC9449,
            "no dpop_signing_alg_values_supported: tokens are bearer tokens (DPoP not offered)",
        )),
        Some(algs) => {
            let unsafe_algs: Vec<&String> = algs
                .iter()
                .filter(|a| {
                    a.eq_ignore_ascii_case("none") || a.to_ascii_uppercase().starts_with("HS")
                })
                .collect();
            if algs.is_empty() {
                out.push(Finding::fail(
                    "as.dpop",
                    step,
                    Severity::Must,
                    spec::RFC9449,
                    "dpop_signing_alg_values_supported is an empty list: no client can make a proof",
                    "list the asymmetric algorithms accepted in proofs (e.g. ES256), or omit the member",
                ));
            } else if !unsafe_algs.is_empty() {
                out.push(Finding::fail(
                    "as.dpop",
                    step,
                    Severity::Must,
                    spec::RFC9449,
                    format!(
                        "dpop_signing_alg_values_supported lists {unsafe_algs:?}: proofs must use asymmetric algorithms, never none or HMAC"
                    ),
                    "remove none and HS* from dpop_signing_alg_values_supported",
                ));
            } else {
                out.push(f_pass(
                    "as.dpop",
                    step,
                    Severity::Info,
                    spec::RFC9449,
                    format!("DPoP offered with {}", algs.join(", ")),
                ));
            }
        }
    }
    out.push(f_pass(
        "as.jwt-bearer",
        step,
        Severity::Info,
        spec::RFC7523,
        if m.supports_grant("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            "the JWT-bearer grant is offered (workload identity, enterprise-managed authorization)"
        } else {
            "the JWT-bearer grant is not offered (no workload identity or enterprise-managed authorization)"
        },
    ));
    out
}

/// Which registration approaches the server offers (MCP "Client Registration Approaches"):
/// client ID metadata documents, RFC 7591, or pre-registration only.
pub fn check_registration_options(
    m: &AuthorizationServerMetadata,
    pre_registered: bool,
) -> Vec<Finding> {
    let step = Step::Registration;
    let cimd = m.supports_client_id_metadata_document();
    let dcr = m.registration_endpoint.is_some();
    let mut offered = Vec::new();
    if cimd {
        offered.push("client ID metadata documents");
    }
    if dcr {
        offered.push("dynamic client registration (RFC 7591)");
    }
    if pre_registered {
        offered.push("pre-registered credentials (--client-id)");
    }
    let mut out = Vec::new();
    if offered.is_empty() {
        out.push(Finding::warn(
            "registration.options",
            step,
            Severity::Should,
            spec::MCP_REGISTRATION,
            "neither client_id_metadata_document_supported nor registration_endpoint: only clients registered out of band can connect",
            "support client ID metadata documents (\"client_id_metadata_document_supported\": true) or RFC 7591 (\"registration_endpoint\"); with pre-registered credentials, run doctor with --client-id",
        ));
    } else {
        out.push(f_pass(
            "registration.options",
            step,
            Severity::Should,
            spec::MCP_REGISTRATION,
            offered.join(", "),
        ));
    }
    if !cimd {
        out.push(Finding::warn(
            "registration.cimd",
            step,
            Severity::Should,
            spec::CIMD,
            "client ID metadata documents are not advertised (authorization servers SHOULD support them)",
            "accept URL client_ids and advertise \"client_id_metadata_document_supported\": true",
        ));
    } else {
        out.push(f_pass(
            "registration.cimd",
            step,
            Severity::Should,
            spec::CIMD,
            "client_id_metadata_document_supported is true",
        ));
    }
    out
}

/// The answer to doctor's RFC 7591 registration of a harmless public client. A refusal is
/// named exactly (status and error code). It is a MUST violation when it leaves an unknown
/// client no way in (`alternatives` false: no client ID metadata documents, no
/// pre-registered credentials), a SHOULD otherwise: RFC 7591 lets an AS refuse by policy.
pub fn check_registration_response(status: u16, body: &[u8], alternatives: bool) -> Finding {
    let step = Step::Registration;
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        let client_id = json
            .as_ref()
            .and_then(|v| v.get("client_id"))
            .and_then(Value::as_str);
        return match client_id {
            Some(id) if !id.is_empty() => f_pass(
                "registration.dcr",
                step,
                Severity::Must,
                spec::RFC7591_RESPONSE,
                format!(
                    "HTTP {status}: a public client with a loopback redirect URI was registered (client_id {id})"
                ),
            ),
            _ => Finding::fail(
                "registration.dcr",
                step,
                Severity::Must,
                spec::RFC7591_RESPONSE,
                format!("HTTP {status} without a client_id in a JSON body"),
                "answer a successful registration with 201 and the client information, client_id included (RFC 7591 §3.2.1)",
            ),
        };
    }
    let error = json
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str);
    let description = json
        .as_ref()
        .and_then(|v| v.get("error_description"))
        .and_then(Value::as_str);
    let what = match (error, description) {
        (Some(e), Some(d)) => format!("registration refused: HTTP {status}, error {e} ({d})"),
        (Some(e), None) => format!("registration refused: HTTP {status}, error {e}"),
        _ => format!("registration refused: HTTP {status} without an RFC 7591 error body"),
    };
    let severity = if alternatives {
        Severity::Should
    } else {
        Severity::Must
    };
    let summary = if alternatives {
        what
    } else {
        format!("{what}; with no client ID metadata documents either, no MCP client can register")
    };
    Finding::fail(
        "registration.dcr",
        step,
        severity,
        if alternatives {
            spec::RFC7591_RESPONSE
        } else {
            spec::MCP_REGISTRATION
        },
        summary,
        "accept registrations of public clients (token_endpoint_auth_method none) with loopback redirect URIs, or remove registration_endpoint and support client ID metadata documents",
    )
}

/// CORS for browser-based clients (the MCP Inspector runs at `http://localhost:6274`):
/// the response allows `origin`, and exposes `expose` (when given) so the client can read
/// `WWW-Authenticate` and `Mcp-Session-Id`. Everything here is a SHOULD.
pub fn check_cors(
    id: &'static str,
    what: &str,
    origin: &str,
    allow_origin: Option<&str>,
    expose_headers: Option<&str>,
    expose: &[&str],
) -> Finding {
    let step = Step::Cors;
    let allowed = allow_origin.is_some_and(|a| a.trim() == "*" || a.trim() == origin);
    if !allowed {
        return Finding::warn(
            id,
            step,
            Severity::Should,
            spec::CORS,
            format!(
                "{what}: Access-Control-Allow-Origin is {}, so browser clients at {origin} cannot read it",
                allow_origin
                    .map(|a| format!("{a:?}"))
                    .unwrap_or_else(|| "absent".into())
            ),
            format!(
                "answer with Access-Control-Allow-Origin: {origin} (or *) for browser-based MCP clients"
            ),
        );
    }
    let exposed: Vec<String> = expose_headers
        .unwrap_or("")
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let missing: Vec<&str> = expose
        .iter()
        .copied()
        .filter(|h| {
            !exposed
                .iter()
                .any(|e| e == "*" || e == &h.to_ascii_lowercase())
        })
        .collect();
    if missing.is_empty() {
        Finding::pass(
            id,
            step,
            Severity::Should,
            spec::CORS,
            format!("{what}: allowed for {origin}"),
        )
    } else {
        Finding::warn(
            id,
            step,
            Severity::Should,
            spec::CORS,
            format!(
                "{what}: allowed for {origin}, but {} not exposed",
                missing.join(" and ")
            ),
            format!("add Access-Control-Expose-Headers: {}", missing.join(", ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    fn status_of<'a>(fs: &'a [Finding], id: &str) -> (&'a Finding, Status) {
        let f = fs
            .iter()
            .find(|f| f.id == id)
            .unwrap_or_else(|| panic!("no {id} in {fs:#?}"));
        (f, f.status)
    }

    #[test]
    fn challenge_with_resource_metadata_passes() {
        let (fs, ch) = check_challenge(
            401,
            &[r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", scope="files:read""#.into()],
        );
        assert!(ch.is_some());
        assert_eq!(status_of(&fs, "challenge.status").1, Status::Pass);
        assert_eq!(status_of(&fs, "challenge.bearer").1, Status::Pass);
        assert_eq!(
            status_of(&fs, "challenge.resource-metadata").1,
            Status::Pass
        );
        assert_eq!(status_of(&fs, "challenge.scope").1, Status::Pass);
    }

    #[test]
    fn challenge_without_header_is_a_must_violation() {
        let (fs, ch) = check_challenge(401, &[]);
        assert!(ch.is_none());
        let (f, s) = status_of(&fs, "challenge.bearer");
        assert_eq!((s, f.severity), (Status::Fail, Severity::Must));
    }

    #[test]
    fn challenge_without_resource_metadata_warns() {
        let (fs, _) = check_challenge(401, &["Bearer realm=\"x\"".into()]);
        assert_eq!(
            status_of(&fs, "challenge.resource-metadata").1,
            Status::Warn
        );
    }

    #[test]
    fn wrong_status_fails_and_open_server_warns() {
        let (fs, _) = check_challenge(500, &[]);
        assert_eq!(status_of(&fs, "challenge.status").1, Status::Fail);
        let (fs, _) = check_challenge(200, &[]);
        assert_eq!(status_of(&fs, "challenge.status").1, Status::Warn);
        assert!(fs.iter().all(|f| f.id != "challenge.bearer"));
    }

    fn server() -> ResourceUrl {
        ResourceUrl::canonicalize("https://mcp.example.com/mcp").unwrap()
    }

    #[test]
    fn prm_compliant() {
        let body = br#"{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://auth.example.com"]}"#;
        let (fs, doc) = check_prm(body, Some("application/json"), &server(), false);
        assert!(doc.is_some());
        assert_eq!(status_of(&fs, "prm.resource-match").1, Status::Pass);
        assert_eq!(status_of(&fs, "prm.authorization-servers").1, Status::Pass);
        assert!(fs.iter().all(|f| f.id != "prm.content-type"));
    }

    #[test]
    fn prm_resource_mismatch_is_named() {
        let body = br#"{"resource":"https://other.example.com/mcp","authorization_servers":["https://auth.example.com"]}"#;
        let (fs, _) = check_prm(body, Some("application/json"), &server(), false);
        let (f, s) = status_of(&fs, "prm.resource-match");
        assert_eq!((s, f.severity), (Status::Fail, Severity::Must));
        assert!(
            f.summary.contains("https://other.example.com/mcp"),
            "{}",
            f.summary
        );
        assert!(
            f.fix
                .as_deref()
                .unwrap()
                .contains("https://mcp.example.com/mcp")
        );
    }

    #[test]
    fn prm_without_authorization_servers_or_json_fails() {
        let (fs, _) = check_prm(
            br#"{"resource":"https://mcp.example.com/mcp"}"#,
            None,
            &server(),
            false,
        );
        assert_eq!(status_of(&fs, "prm.authorization-servers").1, Status::Fail);
        assert_eq!(status_of(&fs, "prm.content-type").1, Status::Warn);
        let (fs, doc) = check_prm(b"<html>", None, &server(), false);
        assert!(doc.is_none());
        assert_eq!(status_of(&fs, "prm.json").1, Status::Fail);
    }

    #[test]
    fn prm_plain_http_issuer_fails_unless_loopback() {
        let body = br#"{"resource":"https://mcp.example.com/mcp","authorization_servers":["http://auth.example.com"]}"#;
        let (fs, _) = check_prm(body, Some("application/json"), &server(), false);
        assert_eq!(status_of(&fs, "prm.authorization-servers").1, Status::Fail);
        let body = br#"{"resource":"https://mcp.example.com/mcp","authorization_servers":["http://127.0.0.1:9"]}"#;
        let (fs, _) = check_prm(body, Some("application/json"), &server(), false);
        assert_eq!(status_of(&fs, "prm.authorization-servers").1, Status::Pass);
    }

    const GOOD_AS: &str = r#"{
        "issuer": "https://auth.example.com",
        "authorization_endpoint": "https://auth.example.com/authorize",
        "token_endpoint": "https://auth.example.com/token",
        "registration_endpoint": "https://auth.example.com/register",
        "revocation_endpoint": "https://auth.example.com/revoke",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true
    }"#;

    fn with(field: &str, value: Value) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(GOOD_AS).unwrap();
        if value.is_null() {
            v.as_object_mut().unwrap().remove(field);
        } else {
            v[field] = value;
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn as_compliant_passes_everything() {
        let (fs, m) = check_as_metadata(
            GOOD_AS.as_bytes(),
            Some("application/json"),
            Some("https://auth.example.com"),
            false,
        );
        assert!(m.is_some());
        assert!(fs.iter().all(|f| f.status == Status::Pass), "{fs:#?}");
        let regs = check_registration_options(&m.unwrap(), false);
        assert!(regs.iter().all(|f| f.status == Status::Pass), "{regs:#?}");
    }

    #[test]
    fn as_wrong_issuer_is_a_must_violation() {
        let (fs, _) = check_as_metadata(
            GOOD_AS.as_bytes(),
            Some("application/json"),
            Some("https://auth.example.com/"),
            false,
        );
        let (f, s) = status_of(&fs, "as.issuer-match");
        assert_eq!((s, f.severity), (Status::Fail, Severity::Must));
        let (fs, _) = check_as_metadata(GOOD_AS.as_bytes(), Some("application/json"), None, false);
        assert_eq!(status_of(&fs, "as.issuer-match").1, Status::Skip);
    }

    #[test]
    fn as_without_s256_is_a_must_violation() {
        for methods in [serde_json::json!(["plain"]), Value::Null] {
            let body = with("code_challenge_methods_supported", methods);
            let (fs, _) = check_as_metadata(
                &body,
                Some("application/json"),
                Some("https://auth.example.com"),
                false,
            );
            let (f, s) = status_of(&fs, "as.pkce-s256");
            assert_eq!((s, f.severity), (Status::Fail, Severity::Must));
        }
    }

    #[test]
    fn as_plain_http_endpoint_fails() {
        let body = with("token_endpoint", "http://auth.example.com/token".into());
        let (fs, _) = check_as_metadata(
            &body,
            Some("application/json"),
            Some("https://auth.example.com"),
            false,
        );
        assert_eq!(status_of(&fs, "as.https").1, Status::Fail);
        let (fs, _) = check_as_metadata(
            &body,
            Some("application/json"),
            Some("https://auth.example.com"),
            true,
        );
        assert_eq!(status_of(&fs, "as.https").1, Status::Pass);
    }

    #[test]
    fn as_missing_endpoints_fail() {
        let body = with("token_endpoint", Value::Null);
        let (fs, _) = check_as_metadata(
            &body,
            Some("application/json"),
            Some("https://auth.example.com"),
            false,
        );
        let (f, s) = status_of(&fs, "as.endpoints");
        assert_eq!(s, Status::Fail);
        assert!(f.summary.contains("token_endpoint"));
    }

    #[test]
    fn as_optional_features_warn() {
        let mut v: Value = serde_json::from_str(GOOD_AS).unwrap();
        let o = v.as_object_mut().unwrap();
        for k in [
            "revocation_endpoint",
            "grant_types_supported",
            "authorization_response_iss_parameter_supported",
            "token_endpoint_auth_methods_supported",
            "response_types_supported",
        ] {
            o.remove(k);
        }
        let body = serde_json::to_vec(&v).unwrap();
        let (fs, _) = check_as_metadata(
            &body,
            Some("application/json"),
            Some("https://auth.example.com"),
            false,
        );
        for id in [
            "as.revocation",
            "as.refresh-token",
            "as.iss-parameter",
            "as.token-auth-methods",
            "as.response-type-code",
        ] {
            assert_eq!(status_of(&fs, id).1, Status::Warn, "{id}");
        }
        assert!(fs.iter().all(|f| !f.is_must_violation()), "{fs:#?}");
    }

    #[test]
    fn extensions_are_reported_and_unsafe_dpop_algorithms_fail() {
        use serde_json::json;
        let check = |extra: Value| {
            let mut v: Value = serde_json::from_str(GOOD_AS).unwrap();
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            let body = serde_json::to_vec(&v).unwrap();
            check_as_metadata(
                &body,
                Some("application/json"),
                Some("https://auth.example.com"),
                false,
            )
            .0
        };
        let fs = check(json!({}));
        for id in ["as.device-flow", "as.dpop", "as.jwt-bearer"] {
            assert_eq!(status_of(&fs, id).1, Status::Pass, "{id}");
        }
        let fs = check(json!({
            "device_authorization_endpoint": "https://auth.example.com/device_authorization",
            "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
        }));
        assert!(status_of(&fs, "as.dpop").0.summary.contains("ES256, EdDSA"));
        assert_eq!(status_of(&fs, "as.device-flow").1, Status::Pass);
        for bad in [json!([]), json!(["ES256", "none"]), json!(["HS256"])] {
            let fs = check(json!({"dpop_signing_alg_values_supported": bad}));
            assert_eq!(status_of(&fs, "as.dpop").1, Status::Fail, "{bad}");
        }
        let fs = check(json!({"device_authorization_endpoint": "http://auth.example.com/device"}));
        assert_eq!(status_of(&fs, "as.device-flow").1, Status::Fail);
    }

    #[test]
    fn registration_options() {
        let m: AuthorizationServerMetadata =
            serde_json::from_str(r#"{"issuer":"https://a"}"#).unwrap();
        let fs = check_registration_options(&m, false);
        assert_eq!(status_of(&fs, "registration.options").1, Status::Warn);
        let fs = check_registration_options(&m, true);
        assert_eq!(status_of(&fs, "registration.options").1, Status::Pass);
        let m: AuthorizationServerMetadata =
            serde_json::from_str(r#"{"issuer":"https://a","registration_endpoint":"https://a/r"}"#)
                .unwrap();
        let fs = check_registration_options(&m, false);
        assert_eq!(status_of(&fs, "registration.options").1, Status::Pass);
        assert_eq!(status_of(&fs, "registration.cimd").1, Status::Warn);
    }

    #[test]
    fn registration_response() {
        let f = check_registration_response(201, br#"{"client_id":"abc"}"#, false);
        assert_eq!(f.status, Status::Pass);
        let f = check_registration_response(201, b"{}", false);
        assert_eq!(f.status, Status::Fail);
        let f = check_registration_response(403, br#"{"error":"access_denied"}"#, false);
        assert_eq!((f.status, f.severity), (Status::Fail, Severity::Must));
        assert!(
            f.summary
                .starts_with("registration refused: HTTP 403, error access_denied"),
            "{}",
            f.summary
        );
        let f = check_registration_response(
            400,
            br#"{"error":"invalid_client_metadata","error_description":"no"}"#,
            true,
        );
        assert_eq!((f.status, f.severity), (Status::Fail, Severity::Should));
        assert!(f.summary.contains("invalid_client_metadata (no)"));
    }

    #[test]
    fn cors() {
        let o = "http://localhost:6274";
        let f = check_cors(
            "cors.mcp",
            "MCP",
            o,
            Some("*"),
            Some("WWW-Authenticate, Mcp-Session-Id"),
            &["WWW-Authenticate", "Mcp-Session-Id"],
        );
        assert_eq!(f.status, Status::Pass);
        let f = check_cors(
            "cors.mcp",
            "MCP",
            o,
            Some(o),
            Some("www-authenticate"),
            &["WWW-Authenticate", "Mcp-Session-Id"],
        );
        assert_eq!(f.status, Status::Warn);
        assert!(f.summary.contains("Mcp-Session-Id"));
        let f = check_cors("cors.prm", "PRM", o, None, None, &[]);
        assert_eq!(f.status, Status::Warn);
        let f = check_cors("cors.prm", "PRM", o, Some("http://other"), None, &[]);
        assert_eq!(f.status, Status::Warn);
    }
}
