//! The requests: the unauthenticated MCP call, every protected resource metadata and
//! authorization server metadata candidate in the spec's order, a registration, and CORS
//! preflights. Each response is handed to the pure checks in [`crate::checks`] and the
//! exchange is attached to the findings it produced.

use http::HeaderMap;
use mcp_auth_client::http::{Http, read_capped};
use mcp_auth_types::discovery::{
    authorization_server_metadata_urls, protected_resource_metadata_urls,
};
use mcp_auth_types::{
    AuthorizationServerMetadata, HttpUrl, ProtectedResourceMetadata, ResourceUrl, UrlError,
};
use serde_json::{Value, json};

use crate::checks::{self, spec};
use crate::report::{Exchange, Finding, Report, Severity, Step};

/// The origin of the MCP Inspector, the browser-based client CORS is checked for.
pub const INSPECTOR_ORIGIN: &str = "http://localhost:6274";

/// The redirect URI of doctor's test registration: loopback, never listened on.
const PROBE_REDIRECT_URI: &str = "http://127.0.0.1:9/callback";

/// Redirects followed on metadata GETs, as the client library does.
const MAX_REDIRECTS: usize = 5;

/// Response headers shown in the report.
const SHOWN_HEADERS: &[&str] = &[
    "www-authenticate",
    "content-type",
    "location",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "mcp-session-id",
];

/// JSON members whose values are never shown (a registration answer carries a client secret).
const SECRET_FIELDS: &[&str] = &[
    "client_secret",
    "registration_access_token",
    "access_token",
    "refresh_token",
    "id_token",
];

/// How to examine a server.
#[derive(Debug, Clone)]
pub struct Options {
    /// The HTTP layer (timeouts, extra CA certificates); doctor uses its non-redirecting
    /// client and follows metadata redirects itself, so each hop can be reported.
    pub http: Http,
    /// Headers sent to the MCP server (`--header`).
    pub server_headers: Vec<(String, String)>,
    /// Allow plain http to hosts other than loopback.
    pub allow_http: bool,
    /// The user has pre-registered credentials (`--client-id`): registration is optional.
    pub pre_registered: bool,
    /// The browser origin CORS is checked for.
    pub cors_origin: String,
}

impl Options {
    /// Defaults over `http`: no extra headers, https required, CORS for the MCP Inspector.
    pub fn new(http: Http) -> Self {
        Self {
            http,
            server_headers: Vec::new(),
            allow_http: false,
            pre_registered: false,
            cors_origin: INSPECTOR_ORIGIN.to_owned(),
        }
    }
}

/// Why doctor could not examine a server at all (everything else is a finding).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DoctorError {
    /// The URL given is not one doctor may contact.
    #[error("{url:?} is not a usable MCP server URL: {source}")]
    InvalidTarget {
        /// The URL as given.
        url: String,
        /// Why.
        #[source]
        source: UrlError,
    },
    /// The HTTP layer could not be set up.
    #[error(transparent)]
    Client(#[from] mcp_auth_client::Error),
}

/// A response, read and summarized.
struct Answer {
    exchange: Exchange,
    status: Option<u16>,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn headers_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }
}

/// The start of a body for the report: secrets replaced, at most 2 KiB.
pub fn excerpt(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            redact(&mut v);
            v.to_string()
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let mut cut = Exchange::BODY_EXCERPT.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = text[..cut].to_owned();
    if cut < text.len() {
        out.push('…');
    }
    out
}

fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if SECRET_FIELDS.contains(&k.as_str()) || k.ends_with("_secret") {
                    *val = Value::String("[redacted]".into());
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

struct Prober<'a> {
    opts: &'a Options,
    client: reqwest::Client,
    findings: Vec<Finding>,
}

impl Prober<'_> {
    /// Sends `req` and reads the answer; a failure to get one is recorded in the exchange.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        method: &str,
        url: &str,
        sent: Option<String>,
    ) -> Answer {
        let mut exchange = Exchange {
            method: method.to_owned(),
            url: url.to_owned(),
            sent,
            ..Default::default()
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                exchange.error = Some(error_chain(&e));
                return Answer {
                    exchange,
                    status: None,
                    headers: HeaderMap::new(),
                    body: Vec::new(),
                };
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = match read_capped(
            mcp_auth_client::Step::Probe,
            url,
            resp,
            self.opts.http.options().max_body_bytes,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => {
                exchange.error = Some(e.to_string());
                Vec::new()
            }
        };
        exchange.status = Some(status);
        exchange.headers = SHOWN_HEADERS
            .iter()
            .flat_map(|h| {
                headers
                    .get_all(*h)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(|v| ((*h).to_owned(), v.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        if !body.is_empty() {
            exchange.body = Some(excerpt(&body));
        }
        Answer {
            exchange,
            status: Some(status),
            headers,
            body,
        }
    }

    /// GET a metadata document, following up to five redirects as clients do; every hop
    /// is named in the exchange.
    async fn get_document(&self, url: &str, origin: Option<&str>) -> Answer {
        let mut current = url.to_owned();
        let mut hops = Vec::new();
        loop {
            let mut req = self
                .client
                .get(&current)
                .header("accept", "application/json");
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            let sent = if hops.is_empty() {
                origin.map(|o| format!("Origin: {o}"))
            } else {
                Some(format!("after redirects from {}", hops.join(" → ")))
            };
            let answer = self.send(req, "GET", &current, sent).await;
            let location = answer.header("location").map(str::to_owned);
            match (answer.status, location) {
                (Some(301 | 302 | 303 | 307 | 308), Some(loc)) if hops.len() < MAX_REDIRECTS => {
                    let Ok(next) = HttpUrl::parse(&current).and_then(|u| u.join(&loc)) else {
                        return answer;
                    };
                    hops.push(current);
                    current = next.as_str().to_owned();
                }
                _ => return answer,
            }
        }
    }

    fn push(&mut self, f: Finding) {
        self.findings.push(f);
    }

    /// Adds `fs`, the first carrying `exchange`.
    fn push_with(&mut self, fs: Vec<Finding>, exchange: Exchange) {
        let mut exchange = Some(exchange);
        for f in fs {
            match exchange.take() {
                Some(x) => self.findings.push(f.with_exchange(x)),
                None => self.findings.push(f),
            }
        }
    }

    fn mcp_initialize(&self, target: &str, origin: Option<&str>) -> reqwest::RequestBuilder {
        let body = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": mcp_auth_client::mcp::SESSION_PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "mcp-auth-doctor", "version": env!("CARGO_PKG_VERSION")}
            }
        });
        let mut req = self
            .client
            .post(target)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        for (k, v) in &self.opts.server_headers {
            req = req.header(k, v);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req
    }

    async fn preflight(&self, url: &str, request_headers: &str) -> Answer {
        let origin = self.opts.cors_origin.as_str();
        let req = self
            .client
            .request(reqwest::Method::OPTIONS, url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", request_headers);
        self.send(
            req,
            "OPTIONS",
            url,
            Some(format!(
                "CORS preflight from {origin} for POST with {request_headers}"
            )),
        )
        .await
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

/// Examines the server at `target`: every step of discovery and registration, without
/// logging in. Failures of the server are findings; only an unusable `target` or HTTP setup
/// is an error.
pub async fn diagnose(target: &str, opts: &Options) -> Result<Report, DoctorError> {
    let invalid = |source| DoctorError::InvalidTarget {
        url: target.to_owned(),
        source,
    };
    let server = HttpUrl::parse_secure(target, opts.allow_http).map_err(invalid)?;
    let canonical = ResourceUrl::canonicalize(target).map_err(invalid)?;
    let mut p = Prober {
        opts,
        client: opts.http.client()?.clone(),
        findings: Vec::new(),
    };

    // 1. The unauthenticated request.
    let answer = p
        .send(
            p.mcp_initialize(server.as_str(), None),
            "POST",
            server.as_str(),
            Some("MCP initialize without an Authorization header".into()),
        )
        .await;
    let Some(status) = answer.status else {
        p.push(
            Finding::fail(
                "challenge.status",
                Step::Challenge,
                Severity::Must,
                spec::MCP_AS_LOCATION,
                "the MCP server did not answer",
                "check the URL and that the server is running and reachable",
            )
            .with_exchange(answer.exchange),
        );
        return Ok(Report::new(target, p.findings));
    };
    let (fs, challenge) = checks::check_challenge(status, &answer.headers_all("www-authenticate"));
    p.push_with(fs, answer.exchange);

    // 2. Protected resource metadata: the challenge's URL, then the well-known URLs.
    let challenge_url = challenge
        .as_ref()
        .and_then(|c| c.resource_metadata())
        .and_then(|u| HttpUrl::parse_secure(u, opts.allow_http).ok());
    let mut candidates: Vec<(HttpUrl, &'static str)> = Vec::new();
    if let Some(u) = &challenge_url {
        candidates.push((u.clone(), "the challenge's resource_metadata URL"));
    }
    let well_known = protected_resource_metadata_urls(&server);
    let n = well_known.len();
    for (i, u) in well_known.into_iter().enumerate() {
        let what = if i + 1 < n {
            "the path-inserted well-known URL"
        } else {
            "the root well-known URL"
        };
        if !candidates.iter().any(|(c, _)| c.as_str() == u.as_str()) {
            candidates.push((u, what));
        }
    }
    let mut prm: Option<(ProtectedResourceMetadata, String)> = None;
    let mut tried = Vec::new();
    for (i, (url, what)) in candidates.iter().enumerate() {
        let answer = p.get_document(url.as_str(), None).await;
        tried.push(url.as_str().to_owned());
        if answer.status == Some(200) {
            let found = Finding::pass(
                "prm.found",
                Step::ResourceMetadata,
                Severity::Must,
                spec::MCP_PRM_DISCOVERY,
                format!("found at {what}"),
            );
            let (fs, doc) = checks::check_prm(
                &answer.body,
                answer.header("content-type"),
                &canonical,
                opts.allow_http,
            );
            let mut all = vec![found];
            all.extend(fs);
            p.push_with(all, answer.exchange.clone());
            if let Some(d) = doc {
                prm = Some((d, answer.exchange.url.clone()));
            }
            break;
        }
        let outcome = match (answer.status, &answer.exchange.error) {
            (Some(s), _) => format!("HTTP {s}"),
            (None, Some(e)) => format!("no response ({e})"),
            (None, None) => "no response".into(),
        };
        if i == 0 && challenge_url.is_some() {
            p.push(
                Finding::fail(
                    "prm.challenge-url",
                    Step::ResourceMetadata,
                    Severity::Must,
                    spec::RFC9728_CHALLENGE,
                    format!("the challenge's resource_metadata URL answered {outcome}"),
                    "serve the protected resource metadata at the URL the challenge names (or fix the URL)",
                )
                .with_exchange(answer.exchange),
            );
        } else {
            p.push(
                Finding::skip(
                    "prm.candidate",
                    Step::ResourceMetadata,
                    Severity::Info,
                    spec::MCP_PRM_DISCOVERY,
                    format!("not at {what}: {outcome}"),
                )
                .with_exchange(answer.exchange),
            );
        }
    }
    let prm_found = p.findings.iter().any(|f| f.id == "prm.found");
    if !prm_found && (200..300).contains(&status) {
        // Authorization is optional in MCP: a server that answers without a token and
        // publishes no metadata is open, not broken.
        p.push(Finding::skip(
            "prm.found",
            Step::ResourceMetadata,
            Severity::Must,
            spec::MCP_PRM_DISCOVERY,
            format!(
                "the server answered {status} without a token and publishes no metadata: it does not use authorization"
            ),
        ));
        return Ok(Report::new(target, p.findings));
    }
    if !prm_found {
        let path_inserted = protected_resource_metadata_urls(&server)
            .first()
            .map(|u| u.as_str().to_owned())
            .unwrap_or_default();
        p.push(Finding::fail(
            "prm.found",
            Step::ResourceMetadata,
            Severity::Must,
            spec::MCP_PRM_DISCOVERY,
            format!("no protected resource metadata at any of: {}", tried.join(", ")),
            format!(
                "serve RFC 9728 metadata (resource, authorization_servers) at {path_inserted} and name it in the 401's resource_metadata"
            ),
        ));
    }

    // 3. Authorization server metadata: the first listed issuer, or (no PRM) the 2025-03-26
    // fallback to the server's origin.
    let legacy = !prm_found;
    let issuer: Option<String> = match &prm {
        Some((d, _)) => d.authorization_servers.first().cloned(),
        None if legacy => Some(server.origin()),
        None => None,
    };
    let mut metadata: Option<(AuthorizationServerMetadata, String)> = None;
    let issuer_url = issuer
        .as_deref()
        .and_then(|i| HttpUrl::parse_secure(i, opts.allow_http).ok());
    if let (Some(issuer), Some(issuer_url)) = (issuer.as_deref(), issuer_url) {
        let urls = authorization_server_metadata_urls(&issuer_url);
        for url in &urls {
            let answer = p.get_document(url.as_str(), None).await;
            if answer.status == Some(200) {
                let found = if legacy {
                    Finding::warn(
                        "as.legacy-fallback",
                        Step::AuthorizationServer,
                        Severity::Should,
                        spec::MCP_LEGACY,
                        format!(
                            "no protected resource metadata: found metadata at the server's origin ({}), as 2025-03-26 clients look for it",
                            url.as_str()
                        ),
                        "publish protected resource metadata: 2025-06-18 and later clients do not use this fallback",
                    )
                } else {
                    Finding::pass(
                        "as.found",
                        Step::AuthorizationServer,
                        Severity::Must,
                        spec::MCP_AS_DISCOVERY,
                        format!("found for issuer {issuer} at {}", url.as_str()),
                    )
                };
                let (fs, m) = checks::check_as_metadata(
                    &answer.body,
                    answer.header("content-type"),
                    (!legacy).then_some(issuer),
                    opts.allow_http,
                );
                let mut all = vec![found];
                all.extend(fs);
                p.push_with(all, answer.exchange.clone());
                if let Some(m) = m {
                    metadata = Some((m, answer.exchange.url.clone()));
                }
                break;
            }
            let outcome = match (answer.status, &answer.exchange.error) {
                (Some(s), _) => format!("HTTP {s}"),
                (None, Some(e)) => format!("no response ({e})"),
                (None, None) => "no response".into(),
            };
            p.push(
                Finding::skip(
                    "as.candidate",
                    Step::AuthorizationServer,
                    Severity::Info,
                    spec::MCP_AS_DISCOVERY,
                    format!("not at {}: {outcome}", url.as_str()),
                )
                .with_exchange(answer.exchange),
            );
        }
        let found_any = p
            .findings
            .iter()
            .any(|f| f.id == "as.found" || f.id == "as.legacy-fallback");
        if !found_any {
            let list = urls
                .iter()
                .map(HttpUrl::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if legacy {
                p.push(Finding::warn(
                    "as.legacy-fallback",
                    Step::AuthorizationServer,
                    Severity::Should,
                    spec::MCP_LEGACY,
                    format!(
                        "no metadata anywhere: 2025-03-26 clients would assume {origin}/authorize, {origin}/token and {origin}/register",
                        origin = server.origin()
                    ),
                    "publish protected resource metadata and authorization server metadata",
                ));
            } else {
                p.push(Finding::fail(
                    "as.found",
                    Step::AuthorizationServer,
                    Severity::Must,
                    spec::MCP_AS_DISCOVERY,
                    format!(
                        "no authorization server metadata for issuer {issuer} at any of: {list}"
                    ),
                    format!(
                        "serve RFC 8414 metadata at {}",
                        urls.first().map(HttpUrl::as_str).unwrap_or("")
                    ),
                ));
            }
        }
    } else if let Some(i) = issuer {
        p.push(Finding::skip(
            "as.found",
            Step::AuthorizationServer,
            Severity::Must,
            spec::MCP_AS_DISCOVERY,
            format!("the issuer {i:?} is not a URL doctor may contact"),
        ));
    }

    // 4. Registration.
    if let Some((m, _)) = &metadata {
        let fs = checks::check_registration_options(m, opts.pre_registered);
        p.findings.extend(fs);
        if let Some(reg) = m
            .registration_endpoint
            .as_deref()
            .and_then(|r| HttpUrl::parse_secure(r, opts.allow_http).ok())
        {
            let method = if m.auth_methods().iter().any(|a| a.as_str() == "none") {
                "none".to_owned()
            } else {
                m.auth_methods()
                    .first()
                    .map(|a| a.as_str().to_owned())
                    .unwrap_or_else(|| "none".into())
            };
            let body = json!({
                "client_name": "mcp-auth doctor (test registration)",
                "redirect_uris": [PROBE_REDIRECT_URI],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": method,
                "application_type": "native",
            });
            let req = p
                .client
                .post(reg.as_str())
                .header("accept", "application/json")
                .json(&body);
            let answer = p
                .send(
                    req,
                    "POST",
                    reg.as_str(),
                    Some(format!(
                        "RFC 7591 registration: public client, token_endpoint_auth_method {method}, redirect_uri {PROBE_REDIRECT_URI}"
                    )),
                )
                .await;
            let alternatives = m.supports_client_id_metadata_document() || opts.pre_registered;
            let f = match answer.status {
                Some(s) => checks::check_registration_response(s, &answer.body, alternatives),
                None => Finding::fail(
                    "registration.dcr",
                    Step::Registration,
                    Severity::Should,
                    spec::RFC7591_RESPONSE,
                    "the registration endpoint did not answer",
                    "make the registration endpoint reachable",
                ),
            };
            p.push(f.with_exchange(answer.exchange));
        }
    }

    // 5. CORS, for browser-based clients.
    let origin = opts.cors_origin.clone();
    let answer = p
        .preflight(
            server.as_str(),
            "authorization, content-type, mcp-protocol-version, mcp-session-id",
        )
        .await;
    let f = checks::check_cors(
        "cors.mcp-preflight",
        "MCP endpoint preflight",
        &origin,
        answer.header("access-control-allow-origin"),
        None,
        &[],
    );
    p.push(f.with_exchange(answer.exchange));
    let req = p.mcp_initialize(server.as_str(), Some(&origin));
    let answer = p
        .send(
            req,
            "POST",
            server.as_str(),
            Some(format!("MCP initialize without a token, Origin: {origin}")),
        )
        .await;
    let f = checks::check_cors(
        "cors.mcp-expose",
        "MCP endpoint response",
        &origin,
        answer.header("access-control-allow-origin"),
        answer.header("access-control-expose-headers"),
        &["WWW-Authenticate", "Mcp-Session-Id"],
    );
    p.push(f.with_exchange(answer.exchange));
    if let Some((_, url)) = &prm {
        let answer = p.get_document(url, Some(&origin)).await;
        let f = checks::check_cors(
            "cors.prm",
            "protected resource metadata",
            &origin,
            answer.header("access-control-allow-origin"),
            None,
            &[],
        );
        p.push(f.with_exchange(answer.exchange));
    }
    if let Some((m, url)) = &metadata {
        let answer = p.get_document(url, Some(&origin)).await;
        let f = checks::check_cors(
            "cors.as-metadata",
            "authorization server metadata",
            &origin,
            answer.header("access-control-allow-origin"),
            None,
            &[],
        );
        p.push(f.with_exchange(answer.exchange));
        for (id, what, endpoint) in [
            ("cors.token", "token endpoint preflight", &m.token_endpoint),
            (
                "cors.registration",
                "registration endpoint preflight",
                &m.registration_endpoint,
            ),
        ] {
            let Some(e) = endpoint
                .as_deref()
                .and_then(|e| HttpUrl::parse_secure(e, opts.allow_http).ok())
            else {
                continue;
            };
            let answer = p.preflight(e.as_str(), "content-type").await;
            let f = checks::check_cors(
                id,
                what,
                &origin,
                answer.header("access-control-allow-origin"),
                None,
                &[],
            );
            p.push(f.with_exchange(answer.exchange));
        }
    }

    Ok(Report::new(target, p.findings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_hide_secrets_and_stay_short() {
        let e = excerpt(br#"{"client_id":"c","client_secret":"s3cret","nested":{"refresh_token":"r"},"token_endpoint":"https://a/t"}"#);
        assert!(!e.contains("s3cret") && !e.contains("\"r\""), "{e}");
        assert!(e.contains("https://a/t") && e.contains("[redacted]"), "{e}");
        let long = "é".repeat(5000);
        let e = excerpt(long.as_bytes());
        assert!(e.len() <= Exchange::BODY_EXCERPT + '…'.len_utf8());
    }
}
