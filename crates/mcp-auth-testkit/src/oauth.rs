//! The authorization server: discovery documents, registration, authorization, token and
//! revocation endpoints.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use mcp_auth_types::{
    AccessToken, AuthMethod, AuthorizationServerMetadata, ClientId, ClientInformation,
    ClientMetadata, ClientSecret, ErrorCode, PkceChallenge, PkceVerifier,
    ProtectedResourceMetadata, RefreshToken, ScopeSet, TokenResponse, TokenType,
};
use url::Url;

use crate::config::{Config, PRM_WELL_KNOWN};
use crate::http::{self, Params, Repeated, Req};
use crate::state::{CODE_TTL, Client, CodeRecord, Inner, Shared, random_token};
use crate::stats::RecordedTokenRequest;

// ---------------------------------------------------------------------------------------------
// Discovery

/// The discovery document served at `path`, if any.
pub(crate) fn well_known(base: &str, cfg: &Config, path: &str) -> Option<Response> {
    if !cfg.legacy_2025_03_26
        && ((cfg.prm_at_path && path == cfg.prm_path())
            || (cfg.prm_at_root && path == PRM_WELL_KNOWN))
    {
        return Some(http::json(
            StatusCode::OK,
            &protected_resource_metadata(base, cfg),
        ));
    }
    if cfg.no_as_metadata {
        return None;
    }
    let ip = &cfg.issuer_path;
    let served = (cfg.as_metadata_oauth
        && path == format!("/.well-known/oauth-authorization-server{ip}"))
        || (cfg.as_metadata_oidc && path == format!("/.well-known/openid-configuration{ip}"))
        || (cfg.as_metadata_oidc_appended
            && !ip.is_empty()
            && path == format!("{ip}/.well-known/openid-configuration"));
    served.then(|| http::json(StatusCode::OK, &authorization_server_metadata(base, cfg)))
}

/// RFC 9728 §2.
fn protected_resource_metadata(base: &str, cfg: &Config) -> ProtectedResourceMetadata {
    ProtectedResourceMetadata {
        resource: cfg
            .prm_resource_override
            .clone()
            .unwrap_or_else(|| cfg.mcp_url_at(base)),
        authorization_servers: cfg
            .prm_authorization_servers_override
            .clone()
            .unwrap_or_else(|| vec![cfg.issuer_at(base)]),
        scopes_supported: cfg.scopes_supported.clone(),
        bearer_methods_supported: Some(vec!["header".to_owned()]),
        resource_name: Some("mcp-auth-testkit".to_owned()),
        ..Default::default()
    }
}

/// RFC 8414 §2 (the same document answers OpenID Connect discovery).
fn authorization_server_metadata(base: &str, cfg: &Config) -> AuthorizationServerMetadata {
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut extra = serde_json::Map::new();
    extra.insert(
        "revocation_endpoint_auth_methods_supported".to_owned(),
        cfg.token_endpoint_auth_methods_supported.clone().into(),
    );
    // Required by OpenID Connect Discovery §3; harmless for OAuth clients.
    extra.insert("subject_types_supported".to_owned(), vec!["public"].into());
    AuthorizationServerMetadata {
        issuer: cfg
            .metadata_issuer_override
            .clone()
            .unwrap_or_else(|| cfg.issuer_at(base)),
        authorization_endpoint: Some(
            cfg.authorization_endpoint_override
                .clone()
                .unwrap_or_else(|| format!("{base}/authorize")),
        ),
        token_endpoint: Some(format!("{base}/token")),
        registration_endpoint: cfg.registration_enabled.then(|| format!("{base}/register")),
        revocation_endpoint: Some(format!("{base}/revoke")),
        scopes_supported: cfg.as_scopes_supported.clone(),
        response_types_supported: Some(strings(&["code"])),
        grant_types_supported: Some(strings(&[
            "authorization_code",
            "refresh_token",
            "client_credentials",
        ])),
        token_endpoint_auth_methods_supported: Some(
            cfg.token_endpoint_auth_methods_supported.clone(),
        ),
        code_challenge_methods_supported: cfg.code_challenge_methods_supported.clone(),
        authorization_response_iss_parameter_supported: cfg
            .authorization_response_iss_parameter_supported
            .then_some(true),
        client_id_metadata_document_supported: cfg
            .client_id_metadata_document_supported
            .then_some(true),
        extra,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Redirect URIs

/// Checks a redirect URI a client registers or sends: absolute, no fragment (RFC 6749
/// §3.1.2), no scheme a browser would execute, and plain `http` only to loopback (OAuth 2.1
/// §2.3.1, RFC 8252 §8.3). Private-use schemes (RFC 8252 §7.1) are accepted.
fn check_redirect_uri(s: &str) -> Result<Url, &'static str> {
    let u = Url::parse(s).map_err(|_| "the redirect URI is not an absolute URI")?;
    if u.fragment().is_some() {
        return Err("the redirect URI must not contain a fragment (RFC 6749 §3.1.2)");
    }
    match u.scheme() {
        "javascript" | "data" | "file" | "vbscript" | "about" | "blob" => {
            Err("the redirect URI's scheme is not allowed")
        }
        "http" if !is_loopback(&u) => {
            Err("plain http redirect URIs must be loopback (OAuth 2.1 §2.3.1)")
        }
        _ => Ok(u),
    }
}

fn is_loopback(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Exact string match, except that loopback `http` URIs match on any port (RFC 8252 §7.3:
/// "The authorization server MUST allow any port to be specified at the time of the
/// request for loopback IP redirect URIs").
fn redirect_matches(registered: &str, given: &str) -> bool {
    if registered == given {
        return true;
    }
    let (Ok(r), Ok(g)) = (Url::parse(registered), Url::parse(given)) else {
        return false;
    };
    r.scheme() == "http"
        && g.scheme() == "http"
        && is_loopback(&r)
        && r.host_str() == g.host_str()
        && r.path() == g.path()
        && r.query() == g.query()
        && g.fragment().is_none()
        && r.username() == g.username()
        && r.password() == g.password()
}

// ---------------------------------------------------------------------------------------------
// Scopes and resources

/// Parses requested scopes (RFC 6749 §3.3), refusing any the server does not support;
/// none requested means the configured default.
fn grant_scopes(cfg: &Config, requested: Option<&str>) -> Result<ScopeSet, String> {
    let Some(requested) = requested else {
        return ScopeSet::from_strs(&cfg.default_scopes).map_err(|e| e.to_string());
    };
    let scopes: ScopeSet = requested.parse().map_err(|e| format!("{e}"))?;
    if let Some(supported) = &cfg.as_scopes_supported
        && let Some(bad) = scopes
            .iter()
            .find(|s| !supported.iter().any(|x| x == s.as_str()))
    {
        return Err(format!("scope {bad} is not supported"));
    }
    if scopes.is_empty() {
        return ScopeSet::from_strs(&cfg.default_scopes).map_err(|e| e.to_string());
    }
    Ok(scopes)
}

/// RFC 8707 §2: "an absolute URI … MUST NOT include a fragment component".
fn check_resource(s: &str) -> Result<(), &'static str> {
    let u = Url::parse(s).map_err(|_| "resource must be an absolute URI (RFC 8707 §2)")?;
    if u.fragment().is_some() {
        return Err("resource must not include a fragment (RFC 8707 §2)");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Registration (RFC 7591)

fn unix_now(inner: &Inner) -> u64 {
    (SystemTime::now() + inner.clock_offset)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST /register`.
pub(crate) fn register(shared: &Shared, req: &Req) -> Response {
    let mut inner = shared.lock();
    inner
        .stats
        .registration_requests
        .push(String::from_utf8_lossy(&req.body).into_owned());
    let bad_metadata =
        |d: &str| http::oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidClientMetadata, d);
    let bad_redirect =
        |d: &str| http::oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidRedirectUri, d);

    let mut meta: ClientMetadata = match serde_json::from_slice(&req.body) {
        Ok(m) => m,
        Err(e) => return bad_metadata(&format!("the body is not client metadata JSON: {e}")),
    };
    // RFC 7591 §2 defaults.
    if meta.grant_types.is_empty() {
        meta.grant_types = vec!["authorization_code".to_owned()];
    }
    if meta.response_types.is_empty() {
        meta.response_types = vec!["code".to_owned()];
    }
    if let Some(g) = meta.grant_types.iter().find(|g| {
        !matches!(
            g.as_str(),
            "authorization_code" | "refresh_token" | "client_credentials"
        )
    }) {
        return bad_metadata(&format!("grant type {g:?} is not supported"));
    }
    if meta.response_types.iter().any(|r| r != "code") {
        return bad_metadata("only the response type \"code\" is supported");
    }
    let uses_code = meta.grant_types.iter().any(|g| g == "authorization_code");
    if uses_code && meta.redirect_uris.is_empty() {
        return bad_redirect("redirect_uris is required for the authorization_code grant");
    }
    for uri in &meta.redirect_uris {
        if let Err(why) = check_redirect_uri(uri) {
            return bad_redirect(why);
        }
    }
    let cfg = &inner.config;
    let method = cfg
        .registration_forced_auth_method
        .clone()
        .or_else(|| meta.token_endpoint_auth_method.clone())
        // RFC 7591 §2: "If unspecified or omitted, the default is client_secret_basic".
        .unwrap_or(AuthMethod::ClientSecretBasic);
    let supported_here = matches!(
        method,
        AuthMethod::None | AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost
    );
    if !supported_here
        || !cfg
            .token_endpoint_auth_methods_supported
            .iter()
            .any(|m| m == method.as_str())
    {
        return bad_metadata(&format!(
            "token_endpoint_auth_method {method} is not supported"
        ));
    }
    let confidential = method != AuthMethod::None;
    let wants_cc = meta.grant_types.iter().any(|g| g == "client_credentials");
    if wants_cc && !confidential {
        return bad_metadata("the client_credentials grant needs a confidential client");
    }

    let client_id = random_token("client_");
    let secret = confidential.then(|| ClientSecret::new(random_token("secret_")));
    meta.token_endpoint_auth_method = Some(method.clone());
    meta.client_id = None;
    let Ok(id) = ClientId::new(client_id.clone()) else {
        return http::text(StatusCode::INTERNAL_SERVER_ERROR, "bad generated client id");
    };
    let info = ClientInformation {
        client_id: id,
        client_secret: secret.clone(),
        client_id_issued_at: Some(unix_now(&inner)),
        client_secret_expires_at: confidential.then_some(0),
        registration_access_token: None,
        registration_client_uri: None,
        metadata: meta.clone(),
    };
    inner.registered.insert(
        client_id.clone(),
        Client {
            id: client_id,
            secret,
            auth_method: Some(method),
            redirect_uris: meta.redirect_uris,
            client_credentials_allowed: wants_cc,
        },
    );
    inner.stats.registrations += 1;
    http::no_store(http::json(StatusCode::CREATED, &info))
}

// ---------------------------------------------------------------------------------------------
// Authorization endpoint (RFC 6749 §4.1.1, OAuth 2.1 §4.1)

/// `GET /authorize`. The "user" always consents (unless `deny_authorization`).
pub(crate) async fn authorize(shared: &Shared, req: &Req) -> Response {
    let params = Params::parse(req.query.as_bytes());
    let delay = {
        let mut inner = shared.lock();
        inner.stats.authorization_requests.push(params.0.clone());
        inner.config.authorize_delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut inner = shared.lock();
    let now = shared.now(&inner);

    // Until the client and its redirect URI are known good, errors are shown to the user and
    // never redirected (RFC 6749 §4.1.2.1), or the server would be an open redirector.
    let client_id = match params.get("client_id") {
        Ok(Some(id)) => id,
        Ok(None) => return http::error_page("The request has no client_id."),
        Err(Repeated(_)) => return http::error_page("client_id appears more than once."),
    };
    let Some(client) = inner.client(client_id) else {
        return http::error_page("Unknown client_id.");
    };
    let redirect_uri = match params.get("redirect_uri") {
        Ok(Some(u)) => u,
        Ok(None) => return http::error_page("The request has no redirect_uri."),
        Err(Repeated(_)) => return http::error_page("redirect_uri appears more than once."),
    };
    if let Err(why) = check_redirect_uri(redirect_uri) {
        return http::error_page(why);
    }
    if !client
        .redirect_uris
        .iter()
        .any(|r| redirect_matches(r, redirect_uri))
    {
        return http::error_page("The redirect_uri is not registered for this client.");
    }

    // From here on errors go back to the client, with `state` and `iss` (RFC 9207 §2).
    let cfg = &inner.config;
    let iss = cfg.send_iss.then(|| {
        cfg.iss_override
            .clone()
            .unwrap_or_else(|| cfg.issuer_at(&shared.base_url))
    });
    let state = params.get("state").ok().flatten().map(str::to_owned);
    let back = |pairs: &[(&str, &str)]| {
        let Ok(mut url) = Url::parse(redirect_uri) else {
            return http::error_page("The redirect_uri cannot be parsed.");
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
            if let Some(s) = &state {
                q.append_pair("state", s);
            }
            if let Some(i) = &iss {
                q.append_pair("iss", i);
            }
        }
        http::redirect(url.as_str())
    };
    let error = |code: ErrorCode, description: &str| {
        back(&[("error", code.as_str()), ("error_description", description)])
    };

    let request = (|| -> Result<CodeRecord, (ErrorCode, String)> {
        let one = |name: &str| {
            params.get(name).map_err(|Repeated(n)| {
                (
                    ErrorCode::InvalidRequest,
                    format!("{n} appears more than once"),
                )
            })
        };
        if params.get("state").is_err() {
            return Err((
                ErrorCode::InvalidRequest,
                "state appears more than once".into(),
            ));
        }
        match one("response_type")? {
            Some("code") => {}
            Some(_) => {
                return Err((
                    ErrorCode::UnsupportedResponseType,
                    "only response_type=code is supported".into(),
                ));
            }
            None => return Err((ErrorCode::InvalidRequest, "response_type is missing".into())),
        }
        // OAuth 2.1 §4.1.1 and MCP "Authorization Code Protection": PKCE is mandatory, and
        // this server accepts S256 only (an absent method means `plain`, RFC 7636 §4.3).
        let Some(challenge) = one("code_challenge")? else {
            return Err((
                ErrorCode::InvalidRequest,
                "code_challenge is required (PKCE)".into(),
            ));
        };
        if one("code_challenge_method")? != Some(PkceChallenge::METHOD) {
            return Err((
                ErrorCode::InvalidRequest,
                "code_challenge_method must be S256".into(),
            ));
        }
        // RFC 7636 §4.2: BASE64URL(SHA256(verifier)) is 43 characters.
        let well_formed = challenge.len() == 43
            && challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err((
                ErrorCode::InvalidRequest,
                "code_challenge is not an S256 challenge".into(),
            ));
        }
        let scopes = grant_scopes(cfg, one("scope")?).map_err(|d| (ErrorCode::InvalidScope, d))?;
        let resource = params
            .get("resource")
            .map_err(|_| {
                (
                    ErrorCode::InvalidTarget,
                    "this server accepts one resource per request".to_owned(),
                )
            })?
            .map(str::to_owned);
        if let Some(r) = &resource {
            check_resource(r).map_err(|d| (ErrorCode::InvalidTarget, d.to_owned()))?;
        }
        if cfg.deny_authorization {
            return Err((
                ErrorCode::AccessDenied,
                "the user denied the request".into(),
            ));
        }
        Ok(CodeRecord {
            client_id: client.id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            challenge: challenge.to_owned(),
            scopes,
            resource,
            expires_at: now + CODE_TTL,
            spent_family: None,
        })
    })();

    match request {
        Err((code, description)) => error(code, &description),
        Ok(record) => {
            let code = random_token("code_");
            let response = back(&[("code", &code)]);
            inner.codes.insert(code, record);
            inner.stats.authorizations += 1;
            response
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client authentication (RFC 6749 §2.3)

/// A failed token or revocation request.
struct Failure {
    status: StatusCode,
    error: ErrorCode,
    description: String,
    /// Answer `WWW-Authenticate: Basic` (RFC 6749 §5.2, when the client used the header).
    basic_challenge: bool,
}

impl Failure {
    fn bad(error: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
            basic_challenge: false,
        }
    }

    fn client(description: impl Into<String>, basic: bool) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: ErrorCode::InvalidClient,
            description: description.into(),
            basic_challenge: basic,
        }
    }

    fn into_response(self) -> Response {
        let mut r = http::oauth_error(self.status, self.error, &self.description);
        if self.basic_challenge {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mcp-auth-testkit\""),
            );
        }
        r
    }
}

impl From<Repeated> for Failure {
    fn from(Repeated(name): Repeated) -> Self {
        Self::bad(
            ErrorCode::InvalidRequest,
            format!("{name} appears more than once"),
        )
    }
}

/// Decodes one `application/x-www-form-urlencoded` component (RFC 6749 §2.3.1 encodes the
/// client id and secret this way before base64).
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`.
fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// Who is calling, as far as the request says (for the log, before authentication).
fn presented(req: &Req, params: &Params) -> (Option<String>, String) {
    if let Some(h) = req.header("authorization") {
        let id = parse_basic(h).map(|(id, _)| id);
        return (id, AuthMethod::ClientSecretBasic.as_str().to_owned());
    }
    let id = params.get("client_id").ok().flatten().map(str::to_owned);
    let method = if params.get("client_secret").ok().flatten().is_some() {
        AuthMethod::ClientSecretPost
    } else {
        AuthMethod::None
    };
    (id, method.as_str().to_owned())
}

/// Authenticates the client with the method it registered (RFC 6749 §2.3; OAuth 2.1 §2.4).
fn authenticate(
    inner: &Inner,
    req: &Req,
    params: &Params,
) -> Result<(Client, AuthMethod), Failure> {
    let form_id = params.get("client_id")?;
    let form_secret = params.get("client_secret")?;
    let basic = match req.header("authorization") {
        None => None,
        Some(h) => match parse_basic(h) {
            Some(pair) => Some(pair),
            None => {
                return Err(Failure::client(
                    "the Authorization header is not valid client_secret_basic credentials",
                    true,
                ));
            }
        },
    };
    let (id, method, secret) = match basic {
        Some((id, secret)) => {
            // RFC 6749 §2.3: "The client MUST NOT use more than one authentication method
            // in each request."
            if form_secret.is_some() {
                return Err(Failure::bad(
                    ErrorCode::InvalidRequest,
                    "the client used more than one authentication method",
                ));
            }
            if form_id.is_some_and(|f| f != id) {
                return Err(Failure::bad(
                    ErrorCode::InvalidRequest,
                    "client_id in the body differs from the Authorization header",
                ));
            }
            (id, AuthMethod::ClientSecretBasic, Some(secret))
        }
        None => {
            let Some(id) = form_id else {
                return Err(Failure::client("client_id is missing", false));
            };
            match form_secret {
                Some(s) => (
                    id.to_owned(),
                    AuthMethod::ClientSecretPost,
                    Some(s.to_owned()),
                ),
                None => (id.to_owned(), AuthMethod::None, None),
            }
        }
    };
    let basic_used = method == AuthMethod::ClientSecretBasic;
    let Some(client) = inner.client(&id) else {
        return Err(Failure::client("unknown client", basic_used));
    };
    let method_ok = match &client.auth_method {
        Some(registered) => *registered == method,
        None => matches!(
            method,
            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost
        ),
    };
    if !method_ok {
        let registered = client
            .auth_method
            .as_ref()
            .map_or("client_secret_basic or client_secret_post", |m| m.as_str());
        return Err(Failure::client(
            format!("the client authenticated with {method} but is registered for {registered}"),
            basic_used,
        ));
    }
    if let Some(given) = secret {
        let ok = client
            .secret
            .as_ref()
            .is_some_and(|s| s.ct_eq(&ClientSecret::new(given)));
        if !ok {
            return Err(Failure::client("wrong client secret", basic_used));
        }
    }
    Ok((client, method))
}

// ---------------------------------------------------------------------------------------------
// Token endpoint (RFC 6749 §3.2, §4.1.3, §4.4, §6)

/// Parameters never written to the log.
const SECRET_PARAMS: [&str; 5] = [
    "code",
    "code_verifier",
    "refresh_token",
    "client_secret",
    "client_assertion",
];

/// `POST /token`.
pub(crate) async fn token(shared: &Shared, req: &Req) -> Response {
    let params = Params::parse(&req.body);
    let is_refresh = params.get("grant_type").ok().flatten() == Some("refresh_token");
    let delay = shared.lock().config.refresh_delay;
    if is_refresh && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let mut inner = shared.lock();
    let now = shared.now(&inner);
    let outcome = token_grant(&mut inner, req, &params, now);
    let (client_id, auth_method) = presented(req, &params);
    let (response, status, error) = match outcome {
        Ok(body) => (http::no_store(http::json(StatusCode::OK, &body)), 200, None),
        Err(f) => {
            let (status, error) = (f.status.as_u16(), Some(f.error.as_str().to_owned()));
            (f.into_response(), status, error)
        }
    };
    let recorded = RecordedTokenRequest {
        grant_type: params.get("grant_type").ok().flatten().map(str::to_owned),
        client_id,
        auth_method,
        params: params
            .0
            .iter()
            .map(|(k, v)| {
                let v = if SECRET_PARAMS.contains(&k.as_str()) {
                    "[redacted]".to_owned()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect(),
        status,
        error,
    };
    inner.stats.token_requests.push(recorded);
    response
}

fn token_grant(
    inner: &mut Inner,
    req: &Req,
    params: &Params,
    now: Duration,
) -> Result<TokenResponse, Failure> {
    // RFC 6749 §3.2: the token endpoint takes application/x-www-form-urlencoded.
    let form = req.header("content-type").is_some_and(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if !form {
        return Err(Failure::bad(
            ErrorCode::InvalidRequest,
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let grant = params.get("grant_type")?;
    let (client, method) = authenticate(inner, req, params)?;
    match grant {
        None => Err(Failure::bad(
            ErrorCode::InvalidRequest,
            "grant_type is missing",
        )),
        Some("authorization_code") => code_grant(inner, &client, params, now),
        Some("refresh_token") => refresh_grant(inner, &client, params, now),
        Some("client_credentials") => {
            client_credentials_grant(inner, &client, &method, params, now)
        }
        Some(other) => Err(Failure::bad(
            ErrorCode::UnsupportedGrantType,
            format!("grant type {other:?} is not supported"),
        )),
    }
}

fn token_response(
    inner: &Inner,
    access: String,
    refresh: Option<String>,
    scopes: &ScopeSet,
) -> TokenResponse {
    TokenResponse {
        access_token: AccessToken::new(access),
        token_type: TokenType::Bearer,
        expires_in: Some(inner.config.access_token_ttl),
        refresh_token: refresh.map(RefreshToken::new),
        scope: Some(scopes.clone()),
        id_token: None,
        extra: Default::default(),
    }
}

fn wants_refresh(cfg: &Config, scopes: &ScopeSet) -> bool {
    cfg.issue_refresh_tokens
        && (!cfg.refresh_requires_offline_access || scopes.contains("offline_access"))
}

fn one_resource(params: &Params) -> Result<Option<&str>, Failure> {
    let r = params.get("resource").map_err(|_| {
        Failure::bad(
            ErrorCode::InvalidTarget,
            "this server accepts one resource per request",
        )
    })?;
    if let Some(r) = r {
        check_resource(r).map_err(|d| Failure::bad(ErrorCode::InvalidTarget, d))?;
    }
    Ok(r)
}

/// RFC 6749 §4.1.3 with PKCE (RFC 7636 §4.6) and RFC 8707 §2.2.
fn code_grant(
    inner: &mut Inner,
    client: &Client,
    params: &Params,
    now: Duration,
) -> Result<TokenResponse, Failure> {
    let invalid_grant = |d: &str| Failure::bad(ErrorCode::InvalidGrant, d);
    let Some(code) = params.get("code")? else {
        return Err(Failure::bad(ErrorCode::InvalidRequest, "code is missing"));
    };
    let Some(record) = inner.codes.get(code).cloned() else {
        return Err(invalid_grant("unknown authorization code"));
    };
    if record.client_id != client.id {
        return Err(invalid_grant("the code was issued to another client"));
    }
    // OAuth 2.1 §4.1.3: a code used twice must be refused, and the tokens issued for it
    // should be revoked.
    if let Some(family) = record.spent_family {
        inner.revoke_family(family);
        return Err(invalid_grant(
            "the authorization code was already used; its tokens are revoked",
        ));
    }
    if now >= record.expires_at {
        return Err(invalid_grant("the authorization code has expired"));
    }
    if params.get("redirect_uri")? != Some(record.redirect_uri.as_str()) {
        return Err(invalid_grant(
            "redirect_uri differs from the authorization request's",
        ));
    }
    let Some(verifier) = params.get("code_verifier")? else {
        return Err(Failure::bad(
            ErrorCode::InvalidRequest,
            "code_verifier is missing (PKCE)",
        ));
    };
    let verified = PkceVerifier::from_string(verifier.to_owned()).is_some()
        && PkceChallenge::from_string(record.challenge.clone()).verify(verifier);
    if !verified {
        return Err(invalid_grant("PKCE verification failed"));
    }
    let resource = match (one_resource(params)?, &record.resource) {
        (Some(given), Some(authorized)) if given != authorized => {
            return Err(Failure::bad(
                ErrorCode::InvalidTarget,
                "resource differs from the authorization request's",
            ));
        }
        (given, authorized) => given.map(str::to_owned).or_else(|| authorized.clone()),
    };

    let family = inner.new_family();
    if let Some(r) = inner.codes.get_mut(code) {
        r.spent_family = Some(family);
    }
    let access = inner.issue_access(
        now,
        &client.id,
        &record.scopes,
        resource.as_deref(),
        Some(family),
    );
    let refresh = wants_refresh(&inner.config, &record.scopes)
        .then(|| inner.issue_refresh(&client.id, &record.scopes, resource.as_deref(), family));
    inner.stats.code_exchanges += 1;
    Ok(token_response(inner, access, refresh, &record.scopes))
}

/// RFC 6749 §6 with rotation and reuse detection (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2).
fn refresh_grant(
    inner: &mut Inner,
    client: &Client,
    params: &Params,
    now: Duration,
) -> Result<TokenResponse, Failure> {
    let invalid_grant = |d: &str| Failure::bad(ErrorCode::InvalidGrant, d);
    let Some(token) = params.get("refresh_token")? else {
        return Err(Failure::bad(
            ErrorCode::InvalidRequest,
            "refresh_token is missing",
        ));
    };
    let Some(record) = inner.refresh.get(token).cloned() else {
        return Err(invalid_grant("unknown refresh token"));
    };
    if record.client_id != client.id {
        return Err(invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if inner.family_revoked(record.family) {
        return Err(invalid_grant("the refresh token has been revoked"));
    }
    if !record.active {
        // A rotated token came back: either the client lost track, or it was stolen. The
        // server cannot tell which, so the whole grant goes.
        inner.revoke_family(record.family);
        inner.stats.refresh_reuse_detected += 1;
        return Err(invalid_grant(
            "refresh token reuse detected; the grant is revoked",
        ));
    }
    // RFC 6749 §6: a narrower scope may be asked for, never a wider one.
    let scopes = match params.get("scope")? {
        None => record.scopes.clone(),
        Some(s) => {
            let asked: ScopeSet = s
                .parse()
                .map_err(|e| Failure::bad(ErrorCode::InvalidScope, format!("{e}")))?;
            if !record.scopes.is_superset(&asked) {
                return Err(Failure::bad(
                    ErrorCode::InvalidScope,
                    "the requested scope exceeds the original grant",
                ));
            }
            if asked.is_empty() {
                record.scopes.clone()
            } else {
                asked
            }
        }
    };
    let resource = match (one_resource(params)?, &record.resource) {
        (Some(given), Some(granted)) if given != granted => {
            return Err(Failure::bad(
                ErrorCode::InvalidTarget,
                "resource differs from the original grant's",
            ));
        }
        (given, granted) => given.map(str::to_owned).or_else(|| granted.clone()),
    };

    let new_refresh = if inner.config.rotate_refresh_tokens {
        if let Some(r) = inner.refresh.get_mut(token) {
            r.active = false;
        }
        Some(inner.issue_refresh(
            &client.id,
            &record.scopes,
            record.resource.as_deref(),
            record.family,
        ))
    } else {
        None
    };
    let access = inner.issue_access(
        now,
        &client.id,
        &scopes,
        resource.as_deref(),
        Some(record.family),
    );
    inner.stats.refreshes += 1;
    Ok(token_response(inner, access, new_refresh, &scopes))
}

/// RFC 6749 §4.4: confidential clients only; no refresh token (§4.4.3).
fn client_credentials_grant(
    inner: &mut Inner,
    client: &Client,
    method: &AuthMethod,
    params: &Params,
    now: Duration,
) -> Result<TokenResponse, Failure> {
    if !client.client_credentials_allowed
        || !client.is_confidential()
        || *method == AuthMethod::None
    {
        return Err(Failure::bad(
            ErrorCode::UnauthorizedClient,
            "this client may not use the client_credentials grant",
        ));
    }
    let scopes = grant_scopes(&inner.config, params.get("scope")?)
        .map_err(|d| Failure::bad(ErrorCode::InvalidScope, d))?;
    let resource = one_resource(params)?.map(str::to_owned);
    let access = inner.issue_access(now, &client.id, &scopes, resource.as_deref(), None);
    inner.stats.client_credentials += 1;
    Ok(token_response(inner, access, None, &scopes))
}

// ---------------------------------------------------------------------------------------------
// Revocation (RFC 7009)

/// `POST /revoke`: `200` whether or not the token was known (RFC 7009 §2.2).
pub(crate) fn revoke(shared: &Shared, req: &Req) -> Response {
    let params = Params::parse(&req.body);
    let mut inner = shared.lock();
    let result = (|| -> Result<(), Failure> {
        let (client, _) = authenticate(&inner, req, &params)?;
        let Some(token) = params.get("token")? else {
            return Err(Failure::bad(ErrorCode::InvalidRequest, "token is missing"));
        };
        // RFC 7009 §2.1: only the client the token was issued to may revoke it; revoking a
        // refresh token revokes its grant's access tokens too.
        if let Some(family) = inner
            .refresh
            .get(token)
            .filter(|r| r.client_id == client.id)
            .map(|r| r.family)
        {
            inner.revoke_family(family);
        }
        if let Some(a) = inner
            .access
            .get_mut(token)
            .filter(|a| a.client_id == client.id)
        {
            a.revoked = true;
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            inner.stats.revocations += 1;
            http::no_store(StatusCode::OK.into_response())
        }
        Err(f) => f.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_ignore_the_port() {
        let reg = "http://127.0.0.1/callback";
        assert!(redirect_matches(reg, "http://127.0.0.1:54321/callback"));
        assert!(redirect_matches(
            "http://127.0.0.1:8000/callback",
            "http://127.0.0.1:9/callback"
        ));
        assert!(redirect_matches("http://[::1]/cb", "http://[::1]:4000/cb"));
        assert!(redirect_matches(
            "http://localhost/cb",
            "http://localhost:4000/cb"
        ));
        assert!(!redirect_matches(reg, "http://127.0.0.1:54321/other"));
        assert!(!redirect_matches(reg, "http://localhost:54321/callback"));
        assert!(!redirect_matches(reg, "http://127.0.0.1:1/callback?x=1"));
        assert!(!redirect_matches(
            "https://app.example/cb",
            "https://app.example:8443/cb"
        ));
        assert!(redirect_matches(
            "https://app.example/cb",
            "https://app.example/cb"
        ));
    }

    #[test]
    fn redirect_uri_rules() {
        assert!(check_redirect_uri("http://127.0.0.1:3/cb").is_ok());
        assert!(check_redirect_uri("com.example.app:/cb").is_ok());
        assert!(check_redirect_uri("https://app.example/cb").is_ok());
        assert!(check_redirect_uri("http://app.example/cb").is_err());
        assert!(check_redirect_uri("javascript:alert(1)").is_err());
        assert!(check_redirect_uri("http://127.0.0.1/cb#x").is_err());
        assert!(check_redirect_uri("/relative").is_err());
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let raw = base64::engine::general_purpose::STANDARD.encode("id%3A1:s+e%2Bcret");
        assert_eq!(
            parse_basic(&format!("Basic {raw}")),
            Some(("id:1".to_owned(), "s e+cret".to_owned()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        let bad = base64::engine::general_purpose::STANDARD.encode("a%zz:b");
        assert_eq!(parse_basic(&format!("Basic {bad}")), None);
        assert_eq!(form_decode("%"), None);
        assert_eq!(form_decode("%e2%82%ac"), Some("€".to_owned()));
    }
}
