//! The endpoints: metadata (RFC 8414, OIDC discovery), `/authorize` with login and consent,
//! `/token`, `/register` (RFC 7591) and `/register/{client_id}` (RFC 7592), `/revoke`
//! (RFC 7009), `/introspect` (RFC 7662), `/jwks`. The device authorization grant's
//! endpoints (RFC 8628) are in [`crate::device`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawForm, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use mcp_auth_types::{ClientMetadata, ErrorCode, PkceChallenge, ScopeSet};
use serde::Deserialize as _;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;

use crate::cimd::{self, CimdError, DocumentFetcher};
use crate::config::ServerConfig;
use crate::error::OAuthError;
use crate::keys::{AccessClaims, Keys};
use crate::login::IdentityProvider;
use crate::pages::error_page;
use crate::store::{
    ClientRow, CodeRow, NewRefresh, PendingAuthRow, RefreshRow, RegistrationKind, Rotate, Store,
    StoreError, TakeCode, hash_secret, unix_now,
};

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Configuration.
    pub config: Arc<ServerConfig>,
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Signing keys.
    pub keys: Keys,
    /// The ways to log in, in the order the provider-choice page lists them.
    pub idps: Arc<[Arc<dyn IdentityProvider>]>,
    /// The users' upstream tokens (proxy-provider mode), when an upstream login is offered.
    pub vault: Option<crate::upstream::UpstreamVault>,
    /// Fetches client ID metadata documents (URL client ids).
    pub cimd: DocumentFetcher,
    /// Checks DPoP proofs at the token endpoint, when DPoP is on.
    pub dpop: Option<mcp_auth_resource::dpop::DpopGuard>,
    /// The trusted issuers' key sets (the jwt-bearer grant, [`crate::jwt_bearer`]).
    pub issuer_keys: Arc<crate::jwt_bearer::IssuerKeys>,
    /// The configured resources (`ServerConfig::resources`) that are valid resource
    /// indicators, exactly as configured: a request naming one of them needs no parsing.
    pub(crate) known_resources: Arc<Vec<String>>,
    /// Clients read from the store lately (`ServerConfig::client_cache_ttl`).
    pub(crate) clients: Arc<crate::client_cache::ClientCache>,
    /// Stops the signing keys' periodic reload when the last clone of the state goes.
    pub(crate) _reloader: Arc<AbortOnDrop>,
}

/// Aborts a background task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// 256 random bits, base64url, after the time they were made
/// ([`time_prefix`](crate::store::time_prefix)): codes, tokens, ids, CSRF tokens. The
/// prefix makes their storage keys sort by creation time (see
/// [`hash_secret`](crate::store::hash_secret)); the secret is the random part.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    // No safe way to continue without the OS's randomness.
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    let mut t = crate::store::time_prefix();
    URL_SAFE_NO_PAD.encode_string(b, &mut t);
    t
}

pub(crate) fn tenant(s: &AppState) -> &str {
    &s.config.tenant
}

/// The client `client_id`: a stored client, or, for a URL client id, its metadata document
/// (cached in the store by [`DocumentFetcher::resolve`]). `Ok(None)`: unknown.
pub(crate) async fn find_client(
    s: &AppState,
    client_id: &str,
    now: u64,
) -> Result<Option<Arc<ClientRow>>, CimdError> {
    let c = &s.config.client_id_metadata_documents;
    let document = c.enabled && cimd::is_document_url(client_id, c.allow_http);
    let row = match s.clients.get(client_id, now) {
        Some(row) => row,
        None => {
            let generation = s.clients.generation();
            let row = if document {
                s.cimd
                    .resolve(s.store.as_ref(), tenant(s), client_id, now)
                    .await?
            } else {
                match s.store.get_client(tenant(s), client_id, now).await? {
                    Some(row) => row,
                    None => return Ok(None),
                }
            };
            let row = Arc::new(row);
            s.clients.insert(row.clone(), generation);
            row
        }
    };
    // A document cached while the feature was on is not a registration.
    Ok(
        (document || c.enabled || row.registration_kind != RegistrationKind::MetadataDocument)
            .then_some(row),
    )
}

/// The error page for a client that cannot be found (authorization endpoint).
pub(crate) fn client_error_page(client_id: &str, e: CimdError) -> Response {
    if let CimdError::Store(e) = e {
        return OAuthError::from(e).into_response();
    }
    tracing::warn!(client_id = ?client_id, error = %e, "client metadata document refused");
    error_page(
        StatusCode::BAD_REQUEST,
        &format!("the client cannot be used: {}", e.public_message()),
    )
}

// ---------------------------------------------------------------- metadata

/// RFC 8414 §2 metadata (also served as OpenID Connect discovery).
pub fn metadata_document(c: &ServerConfig, oidc: bool) -> Value {
    let mut m = json!({
        "issuer": c.issuer,
        "authorization_endpoint": c.endpoint("/authorize"),
        "token_endpoint": c.endpoint("/token"),
        "revocation_endpoint": c.endpoint("/revoke"),
        "introspection_endpoint": c.endpoint("/introspect"),
        "jwks_uri": c.endpoint("/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", crate::device::DEVICE_CODE_GRANT],
        // RFC 8628 §4.
        "device_authorization_endpoint": c.endpoint("/device_authorization"),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        // RFC 9207: every authorization response carries `iss`.
        "authorization_response_iss_parameter_supported": true,
        // draft-ietf-oauth-client-id-metadata-document §5.
        "client_id_metadata_document_supported": c.client_id_metadata_documents.enabled,
    });
    if c.allow_dynamic_registration {
        m["registration_endpoint"] = json!(c.endpoint("/register"));
    }
    if c.dpop.is_some() {
        // RFC 9449 §5.1.
        m["dpop_signing_alg_values_supported"] = json!(mcp_auth_types::dpop::ACCEPTED_ALGS);
    }
    // RFC 7523 §2.1: offered only when some issuer is trusted to sign grants.
    if !c.trusted_issuers.is_empty()
        && let Some(g) = m["grant_types_supported"].as_array_mut()
    {
        g.push(json!(crate::jwt_bearer::GRANT_TYPE));
    }
    if let Some(s) = &c.scopes_supported {
        m["scopes_supported"] = json!(s.iter().map(|x| x.as_str()).collect::<Vec<_>>());
    }
    // The server is also a minimal OpenID Provider (see `crate::oidc`).
    m["userinfo_endpoint"] = json!(c.endpoint("/userinfo"));
    if oidc {
        m["subject_types_supported"] = json!(["public"]);
        m["id_token_signing_alg_values_supported"] = json!(["ES256"]);
        m["claims_supported"] = json!([
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "nonce",
            "azp",
            "at_hash",
            "preferred_username"
        ]);
        m["scopes_supported"] = json!(
            std::iter::once("openid")
                .chain(
                    c.scopes_supported
                        .iter()
                        .flat_map(|s| s.iter().map(|x| x.as_str()))
                        .filter(|x| *x != "openid")
                )
                .collect::<Vec<_>>()
        );
    }
    m
}

/// `GET /.well-known/oauth-authorization-server`.
pub async fn metadata(State(s): State<AppState>) -> Response {
    cached_json(metadata_document(&s.config, false))
}

/// `GET /.well-known/openid-configuration`.
pub async fn openid_configuration(State(s): State<AppState>) -> Response {
    cached_json(metadata_document(&s.config, true))
}

fn cached_json(v: Value) -> Response {
    let mut r = Json(v).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// `GET /jwks`.
pub async fn jwks(State(s): State<AppState>) -> Response {
    match s.keys.jwks().await {
        Ok(v) => cached_json(v),
        Err(e) => OAuthError::internal(&e).into_response(),
    }
}

// ---------------------------------------------------------------- redirect URIs

pub(crate) fn is_loopback_host(h: &str) -> bool {
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Exact redirect URI matching, except that for loopback redirect URIs the port may differ
/// (RFC 8252 §7.3; OAuth 2.1 §2.3.1, §8.4.2).
pub fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(a), Ok(b)) = (url::Url::parse(registered), url::Url::parse(requested)) else {
        return false;
    };
    a.scheme() == "http"
        && b.scheme() == "http"
        && a.host_str().is_some_and(is_loopback_host)
        && a.host_str() == b.host_str()
        && a.path() == b.path()
        && a.query() == b.query()
        && b.fragment().is_none()
        && a.username() == b.username()
        && b.password().is_none()
}

fn registered_redirects(c: &ClientRow) -> Vec<String> {
    c.metadata
        .get("redirect_uris")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------- scopes and resources

pub(crate) fn check_scope(
    s: &AppState,
    client: &ClientRow,
    requested: Option<&str>,
) -> Result<ScopeSet, (ErrorCode, String)> {
    let invalid = |m: String| (ErrorCode::InvalidScope, m);
    let requested = match requested.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => r.parse::<ScopeSet>().map_err(|e| invalid(e.to_string()))?,
        None => s.config.default_scopes.clone(),
    };
    if let Some(supported) = &s.config.scopes_supported
        && let Some(bad) = requested
            .iter()
            .find(|x| x.as_str() != crate::oidc::OPENID && !supported.contains(x.as_str()))
    {
        return Err(invalid(format!("unknown scope {bad}")));
    }
    if let Some(allowed) = client.metadata.get("scope").and_then(Value::as_str)
        && let Ok(allowed) = allowed.parse::<ScopeSet>()
        && !allowed.is_superset(&requested)
    {
        return Err(invalid(
            "a scope was requested that the client did not register".into(),
        ));
    }
    Ok(requested)
}

/// RFC 8707 §2: an absolute URI without a fragment, and (when the server is configured with
/// its resources) one of them.
pub(crate) fn check_resource(
    s: &AppState,
    resource: Option<&str>,
) -> Result<Option<String>, (ErrorCode, String)> {
    let Some(r) = resource else { return Ok(None) };
    // The usual request names a configured resource exactly, which passed these checks when
    // the server started.
    if s.known_resources.iter().any(|k| k == r) {
        return Ok(Some(r.to_owned()));
    }
    match resource_problem(r, &s.config.resources) {
        Some(problem) => Err((ErrorCode::InvalidTarget, problem.to_owned())),
        None => Ok(Some(r.to_owned())),
    }
}

/// Why `r` is not a resource indicator this server issues tokens for (RFC 8707 §2: an
/// absolute URI without a fragment; one of `configured` when any are configured), if it is
/// not.
pub(crate) fn resource_problem(r: &str, configured: &[String]) -> Option<&'static str> {
    let Ok(u) = url::Url::parse(r) else {
        return Some("resource is not an absolute URI");
    };
    if u.fragment().is_some() {
        return Some("resource must not contain a fragment");
    }
    if configured.is_empty() {
        return None;
    }
    let Ok(canon) = mcp_auth_types::ResourceUrl::canonicalize(r) else {
        return Some("resource is not an http(s) URI");
    };
    let known = configured.iter().any(|k| {
        mcp_auth_types::ResourceUrl::canonicalize(k).is_ok_and(|k| k.as_str() == canon.as_str())
    });
    if known {
        None
    } else {
        Some("this authorization server does not issue tokens for that resource")
    }
}

/// [`check_resource`] for the token endpoint's grants.
pub(crate) fn checked_resource(
    s: &AppState,
    resource: Option<&String>,
) -> Result<Option<String>, OAuthError> {
    check_resource(s, resource.map(String::as_str)).map_err(|(c, d)| OAuthError::new(c, d))
}

/// [`check_scope`] for the token endpoint's grants.
pub(crate) fn checked_scope(
    s: &AppState,
    client: &ClientRow,
    requested: Option<&str>,
) -> Result<ScopeSet, OAuthError> {
    check_scope(s, client, requested).map_err(|(c, d)| OAuthError::new(c, d))
}

// ---------------------------------------------------------------- /authorize

/// `GET /authorize` (RFC 6749 §4.1.1, OAuth 2.1 §4.1.1, RFC 7636, RFC 8707, RFC 9207).
pub async fn authorize(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match unique_params(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(k) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("the parameter {k} appears more than once"),
            );
        }
    };
    let get = |k: &str| params.get(k).map(String::as_str);
    let Some(client_id) = get("client_id") else {
        return error_page(StatusCode::BAD_REQUEST, "client_id is missing");
    };
    let client = match find_client(&s, client_id, unix_now()).await {
        Ok(Some(c)) => c,
        Ok(None) => return error_page(StatusCode::BAD_REQUEST, "unknown client_id"),
        Err(e) => return client_error_page(client_id, e),
    };
    let registered = registered_redirects(&client);
    let redirect_sent = get("redirect_uri").is_some();
    let redirect_uri = match get("redirect_uri") {
        Some(r) if registered.iter().any(|x| redirect_matches(x, r)) => r.to_owned(),
        Some(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "redirect_uri is not registered for this client",
            );
        }
        None if registered.len() == 1 => registered[0].clone(),
        None => return error_page(StatusCode::BAD_REQUEST, "redirect_uri is missing"),
    };
    // From here on the redirect URI is trusted: errors go back to the client (§4.1.2.1).
    let state = get("state").map(str::to_owned);
    let fail = |code: ErrorCode, desc: &str| {
        error_redirect(&s.config, &redirect_uri, state.as_deref(), code, desc)
    };
    if !client_allows_grant(&client, "authorization_code") {
        return fail(
            ErrorCode::UnauthorizedClient,
            "this client did not register the authorization_code grant",
        );
    }
    if get("response_type") != Some("code") {
        return fail(
            ErrorCode::UnsupportedResponseType,
            "only response_type=code is supported",
        );
    }
    let Some(challenge) = get("code_challenge").filter(|c| !c.is_empty()) else {
        return fail(
            ErrorCode::InvalidRequest,
            "PKCE is required: code_challenge is missing",
        );
    };
    if get("code_challenge_method") != Some("S256") {
        return fail(
            ErrorCode::InvalidRequest,
            "code_challenge_method must be S256",
        );
    }
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return fail(
            ErrorCode::InvalidRequest,
            "code_challenge is not a base64url SHA-256 value",
        );
    }
    let scope = match check_scope(&s, &client, get("scope")) {
        Ok(sc) => sc,
        Err((code, d)) => return fail(code, &d),
    };
    let resource = match check_resource(&s, get("resource")) {
        Ok(r) => r,
        Err((code, d)) => return fail(code, &d),
    };
    let now = unix_now();
    if s.config.dev_auto_approve {
        return issue_code(
            &s,
            &client.client_id,
            &redirect_uri,
            redirect_sent,
            state.as_deref(),
            challenge,
            &scope,
            resource,
            &s.config.dev_subject,
            get("nonce"),
        )
        .await;
    }
    let pending = PendingAuthRow {
        id: random_token(),
        tenant: tenant(&s).to_owned(),
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        response_type: "code".into(),
        scope: Some(scope.to_string()).filter(|x| !x.is_empty()),
        state: state.clone(),
        code_challenge: challenge.to_owned(),
        code_challenge_method: "S256".into(),
        resource: resource.clone(),
        nonce: get("nonce").map(str::to_owned),
        prompt: get("prompt").map(str::to_owned),
        login_hint: get("login_hint").map(str::to_owned),
        extra: [("redirect_uri_sent".to_owned(), json!(redirect_sent))]
            .into_iter()
            .collect(),
        subject: None,
        csrf_hash: String::new(),
        created_at: now,
        expires_at: now + s.config.ttls.pending_authorization.as_secs(),
    };
    crate::flow::begin(&s, &headers, &client, pending).await
}

pub(crate) fn with_params(redirect_uri: &str, params: &[(&str, &str)]) -> Option<String> {
    let mut u = url::Url::parse(redirect_uri).ok()?;
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    Some(u.to_string())
}

pub(crate) fn redirect_to(url: Option<String>) -> Response {
    match url {
        Some(u) => {
            let mut r = Redirect::to(&u).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            r
        }
        None => error_page(
            StatusCode::BAD_REQUEST,
            "the redirect URI is not a valid URL",
        ),
    }
}

/// An error sent back to the client's redirect URI, with `state` and `iss` (RFC 9207 §2).
pub(crate) fn error_redirect(
    c: &ServerConfig,
    redirect_uri: &str,
    state: Option<&str>,
    code: ErrorCode,
    desc: &str,
) -> Response {
    let mut p = vec![("error", code.as_str()), ("error_description", desc)];
    if let Some(st) = state {
        p.push(("state", st));
    }
    p.push(("iss", &c.issuer));
    redirect_to(with_params(redirect_uri, &p))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn issue_code(
    s: &AppState,
    client_id: &str,
    redirect_uri: &str,
    redirect_sent: bool,
    state: Option<&str>,
    challenge: &str,
    scope: &ScopeSet,
    resource: Option<String>,
    subject: &str,
    nonce: Option<&str>,
) -> Response {
    let code = random_token();
    let row = CodeRow {
        tenant: tenant(s).to_owned(),
        code_hash: hash_secret(&code),
        client_id: client_id.to_owned(),
        // RFC 6749 §4.1.3: the token request must repeat redirect_uri only when the
        // authorization request included it; empty records that it did not.
        redirect_uri: if redirect_sent {
            redirect_uri.to_owned()
        } else {
            String::new()
        },
        code_challenge: challenge.to_owned(),
        scope: scope.to_string(),
        resource,
        subject: subject.to_owned(),
        nonce: nonce.map(str::to_owned),
        expires_at: unix_now() + s.config.ttls.auth_code.as_secs(),
        family_id: random_token(),
    };
    if let Err(e) = s.store.put_code(&row).await {
        return OAuthError::from(e).into_response();
    }
    let mut p = vec![("code", code.as_str())];
    if let Some(st) = state {
        p.push(("state", st));
    }
    p.push(("iss", &s.config.issuer));
    redirect_to(with_params(redirect_uri, &p))
}

// ---------------------------------------------------------------- client authentication

/// How a client authenticated at the token, revocation or introspection endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// Identified only (public client).
    None,
    /// A secret (Basic or body).
    Secret,
    /// A signed assertion.
    PrivateKeyJwt,
}

fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| OAuthError::invalid_client("malformed Authorization header"))?;
    let Some((scheme, b64)) = v.split_once(' ') else {
        return Err(OAuthError::invalid_client("malformed Authorization header"));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let raw = STANDARD
        .decode(b64.trim())
        .map_err(|_| OAuthError::invalid_client("malformed Basic credentials"))?;
    let raw = String::from_utf8(raw)
        .map_err(|_| OAuthError::invalid_client("malformed Basic credentials"))?;
    let (id, secret) = raw
        .split_once(':')
        .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded.
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((dec(id), dec(secret))))
}

/// Authenticates the client of a token-endpoint style request (RFC 6749 §2.3, RFC 7523 §2.2).
/// Exactly one method may be used (RFC 6749 §2.3).
pub async fn authenticate_client(
    s: &AppState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(Arc<ClientRow>, ClientAuthMethod), OAuthError> {
    let basic = basic_credentials(headers)?;
    let body_secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let used = [basic.is_some(), body_secret.is_some(), assertion.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if used > 1 {
        return Err(OAuthError::invalid_request(
            "more than one client authentication method was used",
        ));
    }
    let (client_id, secret) = match (&basic, body_secret) {
        (Some((id, sec)), _) => {
            if form.get("client_id").is_some_and(|f| f != id) {
                return Err(OAuthError::invalid_client(
                    "client_id does not match the credentials",
                ));
            }
            (id.clone(), Some(sec.clone()))
        }
        (None, Some(sec)) => (
            form.get("client_id")
                .cloned()
                .ok_or_else(|| OAuthError::invalid_client("client_id is missing"))?,
            Some(sec.clone()),
        ),
        (None, None) => (
            form.get("client_id")
                .cloned()
                .ok_or_else(|| OAuthError::invalid_client("client authentication is missing"))?,
            None,
        ),
    };
    let now = unix_now();
    let client = match find_client(s, &client_id, now).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(OAuthError::invalid_client("unknown client")),
        Err(CimdError::Store(e)) => return Err(e.into()),
        Err(e) => {
            tracing::warn!(client_id = ?client_id, error = %e, "client metadata document refused");
            return Err(OAuthError::invalid_client(format!(
                "the client cannot be used: {}",
                e.public_message()
            )));
        }
    };
    if let Some(jwt) = assertion {
        if form.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return Err(OAuthError::invalid_client(
                "unsupported client_assertion_type",
            ));
        }
        verify_client_assertion(s, &client, jwt).await?;
        return Ok((client, ClientAuthMethod::PrivateKeyJwt));
    }
    match (&client.secret_hash, secret) {
        (Some(hash), Some(sec)) => {
            let ok: bool = hash_secret(&sec).as_bytes().ct_eq(hash.as_bytes()).into();
            if !ok {
                return Err(OAuthError::invalid_client("client authentication failed"));
            }
            Ok((client, ClientAuthMethod::Secret))
        }
        (Some(_), None) => Err(OAuthError::invalid_client("this client must authenticate")),
        (None, Some(_)) => Err(OAuthError::invalid_client("client authentication failed")),
        (None, None) => {
            let method = client
                .metadata
                .get("token_endpoint_auth_method")
                .and_then(Value::as_str);
            if method == Some("private_key_jwt") {
                return Err(OAuthError::invalid_client(
                    "this client must authenticate with private_key_jwt",
                ));
            }
            Ok((client, ClientAuthMethod::None))
        }
    }
}

/// RFC 7523 §3: `iss` = `sub` = client id, `aud` names this AS (issuer or token endpoint),
/// `exp` present, signed by a key in the client's registered `jwks`; a `jti` is accepted once.
async fn verify_client_assertion(
    s: &AppState,
    client: &ClientRow,
    jwt: &str,
) -> Result<(), OAuthError> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
    let fail = || OAuthError::invalid_client("client assertion rejected");
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| fail())?;
    if !matches!(
        header.alg,
        Algorithm::ES256
            | Algorithm::RS256
            | Algorithm::EdDSA
            | Algorithm::PS256
            | Algorithm::ES384
    ) {
        return Err(fail());
    }
    let mut jwks = client.metadata.get("jwks").cloned();
    // A metadata document may name its keys by URL (draft-ietf-oauth-client-id-metadata-
    // document §6.2); they are fetched under the same guards as the document.
    if jwks.is_none()
        && client.registration_kind == RegistrationKind::MetadataDocument
        && let Some(uri) = client.metadata.get("jwks_uri").and_then(Value::as_str)
    {
        match s.cimd.fetch_jwks(uri).await {
            Ok(v) => jwks = Some(v),
            Err(e) => {
                tracing::warn!(client_id = ?client.client_id, error = %e, "client jwks_uri refused");
                return Err(OAuthError::invalid_client(format!(
                    "the client's jwks_uri cannot be used: {}",
                    e.public_message()
                )));
            }
        }
    }
    let jwks: JwkSet = jwks
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| OAuthError::invalid_client("the client has no registered jwks"))?;
    let candidates: Vec<_> = jwks
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
        .collect();
    let mut v = Validation::new(header.alg);
    v.set_audience(&[
        s.config.issuer.clone(),
        s.config.endpoint("/token"),
        format!("{}/", s.config.issuer),
    ]);
    v.set_issuer(std::slice::from_ref(&client.client_id));
    v.sub = Some(client.client_id.clone());
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    v.leeway = 30;
    for k in candidates {
        let Ok(key) = DecodingKey::from_jwk(k) else {
            continue;
        };
        if let Ok(data) = jsonwebtoken::decode::<Value>(jwt, &key, &v) {
            if let Some(jti) = data.claims.get("jti").and_then(Value::as_str) {
                // RFC 7523 §3: a client assertion is single use. One atomic claim, so two
                // concurrent requests with the same assertion cannot both pass.
                let now = unix_now();
                let exp = data
                    .claims
                    .get("exp")
                    .and_then(Value::as_u64)
                    .unwrap_or(now + 300);
                let namespace = format!("client-assertion:{}", client.client_id);
                if !s
                    .store
                    .claim_once(tenant(s), &namespace, &hash_secret(jti), exp + 60, now)
                    .await?
                {
                    return Err(fail());
                }
            }
            return Ok(());
        }
    }
    Err(fail())
}

// ---------------------------------------------------------------- /token

fn token_json(v: Value) -> Response {
    let mut r = Json(v).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

pub(crate) fn client_allows_grant(client: &ClientRow, grant: &str) -> bool {
    match client.metadata.get("grant_types").and_then(Value::as_array) {
        Some(g) => g.iter().any(|x| x.as_str() == Some(grant)),
        // RFC 7591 §2: without grant_types a client uses the code grant; its refresh tokens
        // come with it.
        None => grant == "authorization_code" || grant == "refresh_token",
    }
}

/// The revocation-list entry that revokes every access token of a grant (its `sid`).
/// Access token IDs are [`random_token`]s (hex, `.` and base64url), so they never contain
/// the `:` of this prefix.
pub(crate) fn grant_marker(family_id: &str) -> String {
    format!("grant:{family_id}")
}

/// Withdraws `subject`'s consent for `client_id` and revokes every grant the client holds
/// for them: refresh tokens and, through their grant markers, access tokens (issued with
/// lifetimes up to `access_ttl`). Returns whether there was a consent, and how many grants
/// went (`mcp-auth consents revoke`).
pub async fn withdraw_consent(
    store: &dyn Store,
    tenant: &str,
    subject: &str,
    client_id: &str,
    access_ttl: std::time::Duration,
    now: u64,
) -> Result<(bool, usize), StoreError> {
    let existed = store.delete_consent(tenant, subject, client_id).await?;
    let families = store
        .revoke_client_grants(tenant, subject, client_id, now)
        .await?;
    for f in &families {
        store
            .revoke_access(tenant, &grant_marker(f), now + access_ttl.as_secs() + 60)
            .await?;
    }
    Ok((existed, families.len()))
}

/// Whether an access token was revoked, by itself or with its grant.
pub(crate) async fn access_revoked(
    store: &dyn Store,
    tenant: &str,
    claims: &AccessClaims,
) -> Result<bool, StoreError> {
    if store.is_access_revoked(tenant, &claims.jti).await? {
        return Ok(true);
    }
    match &claims.sid {
        Some(grant) => store.is_access_revoked(tenant, &grant_marker(grant)).await,
        None => Ok(false),
    }
}

/// Revokes the access tokens of a grant (a token family) whose refresh tokens the store has
/// revoked: a marker that lives as long as the longest-lived of them, plus a minute of
/// clock-skew leeway.
async fn revoke_grant_access(s: &AppState, family_id: &str, now: u64) -> Result<(), StoreError> {
    let until = now + s.config.ttls.access_token.as_secs() + 60;
    s.store
        .revoke_access(tenant(s), &grant_marker(family_id), until)
        .await
}

/// Revokes a whole grant: its refresh tokens and its access tokens. RFC 6749 §4.1.2 (a
/// replayed code: "SHOULD revoke ... all tokens previously issued based on that
/// authorization code"), RFC 7009 §2.1 (revoking a refresh token "SHOULD also invalidate all
/// access tokens based on the same authorization grant").
async fn revoke_grant(s: &AppState, family_id: &str, now: u64) -> Result<(), StoreError> {
    s.store.revoke_family(tenant(s), family_id, now).await?;
    revoke_grant_access(s, family_id, now).await
}

/// What a token request proved with DPoP (RFC 9449 §5): the key's thumbprint, and whether
/// refresh tokens are bound to it too (public clients, §5).
#[derive(Debug, Clone)]
pub(crate) struct DpopBinding {
    /// `cnf.jkt` of the access token.
    pub jkt: String,
    /// Bind the refresh token as well.
    pub bind_refresh: bool,
}

/// Separates a bound refresh token's random part from the thumbprint it is bound to. The
/// whole string is what is hashed and stored, so the binding cannot be altered or removed.
const REFRESH_BINDING: char = '~';

/// A new refresh token, bound to `binding`'s key when it says so.
pub(crate) fn new_refresh_token(binding: Option<&DpopBinding>) -> String {
    match binding.filter(|b| b.bind_refresh) {
        Some(b) => format!("{}{REFRESH_BINDING}{}", random_token(), b.jkt),
        None => random_token(),
    }
}

/// The key thumbprint a refresh token is bound to, if any (RFC 9449 §5).
pub(crate) fn refresh_binding(rt: &str) -> Option<&str> {
    rt.split_once(REFRESH_BINDING).map(|(_, jkt)| jkt)
}

/// Mints an access token in the grant `family` (when given), bound to the DPoP key the
/// request proved (if any), and a refresh token in the family when `with_refresh`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn mint(
    s: &AppState,
    client_id: &str,
    subject: &str,
    scope: &str,
    resource: Option<&str>,
    family: Option<&str>,
    with_refresh: bool,
    dpop: Option<&DpopBinding>,
) -> Result<Value, OAuthError> {
    let now = unix_now();
    let ttl = s.config.ttls.access_token.as_secs();
    let aud = resource
        .map(str::to_owned)
        .or_else(|| s.config.default_audience.clone())
        .unwrap_or_else(|| s.config.issuer.clone());
    let claims = AccessClaims {
        iss: s.config.issuer.clone(),
        sub: subject.to_owned(),
        aud,
        exp: now + ttl,
        iat: now,
        jti: random_token(),
        client_id: client_id.to_owned(),
        scope: scope.to_owned(),
        sid: family.map(str::to_owned),
        cnf: dpop.map(|d| crate::keys::Confirmation { jkt: d.jkt.clone() }),
    };
    let at = s
        .keys
        .sign(&claims)
        .await
        .map_err(|e| OAuthError::internal(&e))?;
    let token_type = if dpop.is_some() { "DPoP" } else { "Bearer" };
    let mut out = json!({"access_token": at, "token_type": token_type, "expires_in": ttl});
    if !scope.is_empty() {
        out["scope"] = json!(scope);
    }
    if let Some(fam) = family.filter(|_| with_refresh) {
        let rt = new_refresh_token(dpop);
        s.store
            .put_refresh(&RefreshRow {
                tenant: tenant(s).to_owned(),
                token_hash: hash_secret(&rt),
                family_id: fam.to_owned(),
                client_id: client_id.to_owned(),
                subject: subject.to_owned(),
                scope: scope.to_owned(),
                resource: resource.map(str::to_owned),
                expires_at: now + s.config.ttls.refresh_token.as_secs(),
                created_at: now,
            })
            .await?;
        out["refresh_token"] = json!(rt);
    }
    Ok(out)
}

/// The checks of a redeemed code against the token request (RFC 6749 §4.1.3, RFC 7636
/// §4.6, RFC 8707 §2.2): the same client, the same redirect URI, the PKCE verifier, the
/// same resource.
fn check_redemption(
    client: &ClientRow,
    form: &HashMap<String, String>,
    row: &CodeRow,
) -> Result<(), OAuthError> {
    if row.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    let sent = form.get("redirect_uri").map(String::as_str);
    let matches = if row.redirect_uri.is_empty() {
        // Not sent at /authorize: optional here, and if sent it must be registered.
        sent.is_none_or(|r| {
            registered_redirects(client)
                .iter()
                .any(|x| redirect_matches(x, r))
        })
    } else {
        sent == Some(row.redirect_uri.as_str())
    };
    if !matches {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    let verifier = form
        .get("code_verifier")
        .ok_or_else(|| OAuthError::invalid_grant("code_verifier is missing (PKCE)"))?;
    if !PkceChallenge::from_string(row.code_challenge.clone()).verify(verifier) {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    if let (Some(r), Some(orig)) = (form.get("resource"), &row.resource)
        && r != orig
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "resource differs from the authorization request",
        ));
    }
    Ok(())
}

/// The parameters of a query or a form body, decoded (`application/x-www-form-urlencoded`),
/// each at most once (RFC 6749 §3.1: "Request and response parameters MUST NOT be included
/// more than once"); else the name of one that came twice.
pub(crate) fn unique_params(input: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut params = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(input) {
        match params.entry(k.into_owned()) {
            std::collections::hash_map::Entry::Occupied(e) => return Err(e.key().clone()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(v.into_owned());
            }
        }
    }
    Ok(params)
}

/// `POST /token` (RFC 6749 §3.2, §4.1.3, §4.4, §6).
pub async fn token(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawForm(form): RawForm,
) -> Response {
    // RFC 9449 §5: a proof, when sent, is checked before anything else.
    let proved = match dpop_proof(&s, &headers) {
        Ok(p) => p,
        Err(refusal) => return dpop_refused(&s, &refusal),
    };
    // Replays are refused by this instance's memory above, and across instances sharing the
    // store here (RFC 9449 §11.1): the proof's `jti` is claimed once for its lifetime.
    if let (Some((_, jti, iat)), Some(guard)) = (&proved, &s.dpop) {
        let now = unix_now();
        let o = guard.options();
        let until = iat.saturating_add(o.max_age.as_secs()).max(now) + o.leeway.as_secs() + 1;
        match s
            .store
            .claim_once(tenant(&s), "dpop-proof", &hash_secret(jti), until, now)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return dpop_refused(&s, &mcp_auth_resource::dpop::DpopRefusal::Replayed);
            }
            Err(e) => return OAuthError::from(e).into_response(),
        }
    }
    let proved = proved.map(|(jkt, _, _)| jkt);
    match token_inner(&s, &headers, form, proved).await {
        Ok(v) => token_json(v),
        Err(e) => e.into_response(),
    }
}

/// The key thumbprint, `jti` and `iat` of the proof a token request sent, if it sent one
/// and DPoP is on.
fn dpop_proof(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(String, String, u64)>, mcp_auth_resource::dpop::DpopRefusal> {
    let Some(guard) = &s.dpop else {
        return Ok(None);
    };
    let Some(proof) = mcp_auth_resource::dpop::DpopGuard::proof_header(headers)? else {
        return Ok(None);
    };
    let v = guard.check(proof, "POST", &s.config.endpoint("/token"), None)?;
    Ok(Some((v.jkt, v.jti, v.iat)))
}

/// `400` with `invalid_dpop_proof`, or `use_dpop_nonce` and the nonce (RFC 9449 §8).
fn dpop_refused(s: &AppState, refusal: &mcp_auth_resource::dpop::DpopRefusal) -> Response {
    tracing::debug!(error = %refusal, "DPoP proof refused at the token endpoint");
    let mut r = OAuthError::new(
        ErrorCode::Extension(refusal.error_code().to_owned()),
        refusal.to_string(),
    )
    .into_response();
    if let Some(guard) = &s.dpop
        && let mcp_auth_resource::dpop::DpopRefusal::UseNonce { .. } = refusal
        && let Ok(v) = axum::http::HeaderValue::try_from(guard.current_nonce())
    {
        r.headers_mut().insert("dpop-nonce", v);
    }
    r
}

async fn token_inner(
    s: &AppState,
    headers: &HeaderMap,
    body: Bytes,
    proved_jkt: Option<String>,
) -> Result<Value, OAuthError> {
    let form = unique_params(&body).map_err(|k| {
        OAuthError::invalid_request(format!("the parameter {k} appears more than once"))
    })?;
    let (client, method) = authenticate_client(s, headers, &form).await?;
    // RFC 9449 §5: the access token is bound to the proved key; so is the refresh token of
    // a public client, which has no other proof of being the client.
    let binding = proved_jkt.map(|jkt| DpopBinding {
        jkt,
        bind_refresh: method == ClientAuthMethod::None,
    });
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    if !grant.is_empty() && !client_allows_grant(&client, grant) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            format!("the client may not use {grant}"),
        ));
    }
    let now = unix_now();
    match grant {
        "authorization_code" => {
            let code = form
                .get("code")
                .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
            // A resource named only here (RFC 8707 §2.2) must be one we serve; one that
            // differs from the authorization request's is refused below.
            let form_resource = match form.get("resource") {
                Some(r) => check_resource(s, Some(r)).map_err(|(c, d)| OAuthError::new(c, d))?,
                None => None,
            };
            let with_refresh =
                s.config.issue_refresh_tokens && client_allows_grant(&client, "refresh_token");
            // The refresh token is stored with the redemption, in one step (see
            // `Store::redeem_code`): a replay cannot come between them.
            let new_rt = with_refresh.then(|| new_refresh_token(binding.as_ref()));
            let new = new_rt.as_ref().map(|rt| NewRefresh {
                token_hash: hash_secret(rt),
                resource: form_resource.clone(),
                expires_at: now + s.config.ttls.refresh_token.as_secs(),
                created_at: now,
            });
            let row = match s
                .store
                .redeem_code(tenant(s), &hash_secret(code), new.as_ref(), now)
                .await
            {
                Ok(TakeCode::Taken(r)) => r,
                Ok(TakeCode::Replayed { family_id, .. }) => {
                    // RFC 6749 §4.1.2: a code used twice revokes what it issued.
                    revoke_grant(s, &family_id, now).await?;
                    tracing::warn!(client = %client.client_id, "authorization code replayed; its tokens were revoked");
                    return Err(OAuthError::invalid_grant(
                        "the authorization code was already used",
                    ));
                }
                Ok(TakeCode::Missing) => {
                    return Err(OAuthError::invalid_grant(
                        "the authorization code is invalid or expired",
                    ));
                }
                Err(StoreError::FamilyRevoked) => {
                    return Err(OAuthError::invalid_grant(
                        "the authorization code's grant was revoked",
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            if let Err(e) = check_redemption(&client, &form, &row) {
                // The code is spent; what went in with it goes too.
                if with_refresh {
                    s.store
                        .revoke_family(tenant(s), &row.family_id, now)
                        .await?;
                }
                return Err(e);
            }
            let resource = row.resource.clone().or(form_resource);
            let mut out = mint(
                s,
                &client.client_id,
                &row.subject,
                &row.scope,
                resource.as_deref(),
                Some(&row.family_id),
                false,
                binding.as_ref(),
            )
            .await?;
            if let Some(rt) = new_rt {
                out["refresh_token"] = json!(rt);
            }
            if crate::oidc::wants_id_token(&row.scope) {
                crate::oidc::add_id_token(
                    s,
                    &mut out,
                    &client.client_id,
                    &row.subject,
                    row.nonce.as_deref(),
                )
                .await?;
            }
            Ok(out)
        }
        "refresh_token" => {
            let rt = form
                .get("refresh_token")
                .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
            let old_hash = hash_secret(rt);
            // Check the owner before rotating: a stolen token presented by another client
            // must not rotate the real client's token away.
            let Some(current) = s.store.get_refresh(tenant(s), &old_hash, now).await? else {
                // Unknown, expired, or already rotated: rotate_refresh tells reuse apart and
                // revokes the family (RFC 9700 §4.14.2).
                let placeholder = RefreshRow {
                    tenant: tenant(s).to_owned(),
                    token_hash: hash_secret(&random_token()),
                    family_id: String::new(),
                    client_id: client.client_id.clone(),
                    subject: String::new(),
                    scope: String::new(),
                    resource: None,
                    expires_at: now + 1,
                    created_at: now,
                };
                if let Rotate::Reused { family_id } = s
                    .store
                    .rotate_refresh(tenant(s), &old_hash, &placeholder, now)
                    .await?
                {
                    revoke_grant_access(s, &family_id, now).await?;
                    tracing::warn!(client = %client.client_id, "rotated refresh token reused; family revoked");
                }
                return Err(OAuthError::invalid_grant(
                    "the refresh token is invalid, expired or revoked",
                ));
            };
            if current.client_id != client.client_id {
                return Err(OAuthError::invalid_grant(
                    "the refresh token was issued to another client",
                ));
            }
            // RFC 9449 §5: a bound refresh token is good only with a proof of its key.
            if let Some(bound) = refresh_binding(rt) {
                let proved = binding.as_ref().map(|b| b.jkt.as_str()).unwrap_or("");
                if !bool::from(proved.as_bytes().ct_eq(bound.as_bytes())) {
                    return Err(OAuthError::new(
                        ErrorCode::Extension("invalid_dpop_proof".into()),
                        "the refresh token is bound to a DPoP key, and the request does not prove it",
                    ));
                }
            }
            let scope = match form.get("scope") {
                Some(req) => {
                    let req: ScopeSet = req
                        .parse()
                        .map_err(|_| OAuthError::new(ErrorCode::InvalidScope, "invalid scope"))?;
                    let held: ScopeSet = current.scope.parse().unwrap_or_default();
                    if !held.is_superset(&req) {
                        return Err(OAuthError::new(
                            ErrorCode::InvalidScope,
                            "a refresh may not widen the scope",
                        ));
                    }
                    req.to_string()
                }
                None => current.scope.clone(),
            };
            if let Some(r) = form.get("resource")
                && current.resource.as_deref() != Some(r.as_str())
            {
                return Err(OAuthError::new(
                    ErrorCode::InvalidTarget,
                    "resource differs from the original grant",
                ));
            }
            // A bound token's successor is bound to the same key.
            let new_rt = match refresh_binding(rt) {
                Some(jkt) => format!("{}{REFRESH_BINDING}{jkt}", random_token()),
                None => random_token(),
            };
            let new_row = RefreshRow {
                tenant: tenant(s).to_owned(),
                token_hash: hash_secret(&new_rt),
                family_id: current.family_id.clone(),
                client_id: current.client_id.clone(),
                subject: current.subject.clone(),
                scope: current.scope.clone(),
                resource: current.resource.clone(),
                expires_at: now + s.config.ttls.refresh_token.as_secs(),
                created_at: now,
            };
            match s
                .store
                .rotate_refresh(tenant(s), &old_hash, &new_row, now)
                .await?
            {
                Rotate::Rotated(_) => {}
                Rotate::Reused { family_id } => {
                    revoke_grant_access(s, &family_id, now).await?;
                    tracing::warn!(client = %client.client_id, "rotated refresh token reused; family revoked");
                    return Err(OAuthError::invalid_grant(
                        "the refresh token was already used",
                    ));
                }
                Rotate::Invalid => {
                    return Err(OAuthError::invalid_grant(
                        "the refresh token is invalid, expired or revoked",
                    ));
                }
            }
            let mut out = mint(
                s,
                &client.client_id,
                &current.subject,
                &scope,
                current.resource.as_deref(),
                Some(&current.family_id),
                false,
                binding.as_ref(),
            )
            .await?;
            out["refresh_token"] = json!(new_rt);
            if crate::oidc::wants_id_token(&scope) {
                // OIDC Core §12.2: no nonce in an ID token from a refresh.
                crate::oidc::add_id_token(s, &mut out, &client.client_id, &current.subject, None)
                    .await?;
            }
            Ok(out)
        }
        "client_credentials" => {
            if method == ClientAuthMethod::None {
                return Err(OAuthError::new(
                    ErrorCode::UnauthorizedClient,
                    "client credentials need a confidential client",
                ));
            }
            let scope = check_scope(s, &client, form.get("scope").map(String::as_str))
                .map_err(|(c, d)| OAuthError::new(c, d))?;
            let resource = check_resource(s, form.get("resource").map(String::as_str))
                .map_err(|(c, d)| OAuthError::new(c, d))?;
            mint(
                s,
                &client.client_id,
                &client.client_id,
                &scope.to_string(),
                resource.as_deref(),
                None,
                false,
                binding.as_ref(),
            )
            .await
        }
        crate::device::DEVICE_CODE_GRANT => {
            crate::device::token_grant(s, &client, &form, binding.as_ref()).await
        }
        crate::jwt_bearer::GRANT_TYPE if !s.config.trusted_issuers.is_empty() => {
            crate::jwt_bearer::grant(s, &client, &form, binding.as_ref()).await
        }
        "" => Err(OAuthError::invalid_request("grant_type is missing")),
        other => Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            format!("unsupported grant_type {other}"),
        )),
    }
}

// ---------------------------------------------------------------- /register

/// `Cache-Control: no-store` (and `Pragma: no-cache`) on a response that carries, or answers
/// a request that carried, credentials (RFC 7591 §3.2.1, RFC 7592 §2).
fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// `POST /register` (RFC 7591 §3). The response also carries the client's registration
/// access token and configuration endpoint (RFC 7592 §3).
pub async fn register(State(s): State<AppState>, Json(body): Json<Value>) -> Response {
    if !s.config.allow_dynamic_registration {
        return OAuthError::new(ErrorCode::AccessDenied, "dynamic registration is disabled")
            .into_response();
    }
    no_store(match register_inner(&s, body).await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    })
}

fn bad_metadata(d: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, d)
}

/// The fields the server issues (RFC 7591 §3.2.1, RFC 7592 §3). They are answers, never
/// metadata: a request's values are not stored.
const ISSUED_FIELDS: [&str; 6] = [
    "client_id",
    "client_secret",
    "client_id_issued_at",
    "client_secret_expires_at",
    "registration_access_token",
    "registration_client_uri",
];

/// Client metadata that passed the registration rules.
struct CheckedMetadata {
    /// What to store: the request with the defaults filled in and the issued fields removed.
    stored: Value,
    /// Whether the token endpoint authentication method needs a client secret.
    uses_secret: bool,
}

/// The rules a registration (RFC 7591 §2) and an update (RFC 7592 §2.2) must both pass: an
/// update is a new registration of the same client.
fn check_metadata(s: &AppState, body: Value) -> Result<CheckedMetadata, OAuthError> {
    let meta = ClientMetadata::deserialize(&body)
        .map_err(|_| bad_metadata("the body is not valid client metadata"))?;
    let Value::Object(mut stored) = body else {
        return Err(bad_metadata("the body is not a JSON object"));
    };
    let grants: Vec<String> = if meta.grant_types.is_empty() {
        vec!["authorization_code".into()]
    } else {
        meta.grant_types.clone()
    };
    for g in &grants {
        // The jwt-bearer grant only where some issuer is trusted to sign grants.
        let offered = match g.as_str() {
            "authorization_code" | "refresh_token" | "client_credentials" => true,
            crate::device::DEVICE_CODE_GRANT => true,
            crate::jwt_bearer::GRANT_TYPE => !s.config.trusted_issuers.is_empty(),
            _ => false,
        };
        if !offered {
            return Err(bad_metadata(format!("unsupported grant type {g}")));
        }
    }
    if !meta.response_types.is_empty() && meta.response_types.iter().any(|r| r != "code") {
        return Err(bad_metadata("only the code response type is supported"));
    }
    if grants.iter().any(|g| g == "authorization_code") && meta.redirect_uris.is_empty() {
        return Err(OAuthError::new(
            ErrorCode::InvalidRedirectUri,
            "redirect_uris is required",
        ));
    }
    for r in &meta.redirect_uris {
        let u = url::Url::parse(r).map_err(|_| {
            OAuthError::new(
                ErrorCode::InvalidRedirectUri,
                format!("{r} is not an absolute URI"),
            )
        })?;
        if u.fragment().is_some() {
            return Err(OAuthError::new(
                ErrorCode::InvalidRedirectUri,
                "redirect URIs must not contain a fragment",
            ));
        }
        let loopback = u.host_str().is_some_and(is_loopback_host);
        match u.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(OAuthError::new(
                    ErrorCode::InvalidRedirectUri,
                    "plain http redirect URIs are only allowed for loopback",
                ));
            }
            // Private-use schemes for native apps (RFC 8252 §7.1) must look like a reversed
            // domain; `javascript:` and friends are refused.
            scheme if scheme.contains('.') => {}
            _ => {
                return Err(OAuthError::new(
                    ErrorCode::InvalidRedirectUri,
                    format!("redirect URI scheme of {r} is not allowed"),
                ));
            }
        }
    }
    let method = meta
        .token_endpoint_auth_method
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "client_secret_basic".into());
    if !matches!(
        method.as_str(),
        "none" | "client_secret_basic" | "client_secret_post" | "private_key_jwt"
    ) {
        return Err(bad_metadata(format!(
            "unsupported token_endpoint_auth_method {method}"
        )));
    }
    if method == "private_key_jwt" && meta.jwks.is_none() {
        return Err(bad_metadata("private_key_jwt needs an inline jwks"));
    }
    if let Some(sc) = &meta.scope {
        check_scope_syntax(s, sc)?;
    }
    let uses_secret = matches!(
        method.as_str(),
        "client_secret_basic" | "client_secret_post"
    );
    stored.insert("token_endpoint_auth_method".into(), json!(method));
    stored.insert("grant_types".into(), json!(grants));
    stored.insert("response_types".into(), json!(["code"]));
    for f in ISSUED_FIELDS {
        stored.remove(f);
    }
    Ok(CheckedMetadata {
        stored: Value::Object(stored),
        uses_secret,
    })
}

async fn register_inner(s: &AppState, body: Value) -> Result<Value, OAuthError> {
    let checked = check_metadata(s, body)?;
    let now = unix_now();
    let secret = checked.uses_secret.then(random_token);
    let registration_token = random_token();
    let row = ClientRow {
        tenant: tenant(s).to_owned(),
        client_id: random_token(),
        secret_hash: secret.as_deref().map(hash_secret),
        metadata: checked.stored,
        registration_kind: RegistrationKind::Dynamic,
        registration_token_hash: Some(hash_secret(&registration_token)),
        created_at: now,
        expires_at: Some(now + s.config.ttls.client_registration.as_secs()),
    };
    s.store.put_client(&row).await?;
    let mut out = client_information(s, &row);
    if let Some(sec) = secret {
        out.insert("client_secret".into(), json!(sec));
    }
    out.insert(
        "registration_access_token".into(),
        json!(registration_token),
    );
    Ok(Value::Object(out))
}

/// `{issuer}/register/{client_id}`: the client configuration endpoint (RFC 7592 §1.2). The
/// ids this server issues are [`random_token`]s (hex, `.` and base64url: unreserved
/// characters), so they need no escaping in a path.
fn registration_client_uri(s: &AppState, client_id: &str) -> String {
    s.config.endpoint(&format!("/register/{client_id}"))
}

/// The client information response (RFC 7591 §3.2.1, RFC 7592 §3) without its secrets:
/// the stored metadata plus what the server issued. The client secret and the registration
/// access token are stored only as hashes, so only the responses that mint them carry them.
fn client_information(s: &AppState, c: &ClientRow) -> serde_json::Map<String, Value> {
    let mut out = match &c.metadata {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    out.insert("client_id".into(), json!(c.client_id));
    out.insert("client_id_issued_at".into(), json!(c.created_at));
    if c.secret_hash.is_some() {
        // RFC 7591 §3.2.1: 0 means the secret does not expire.
        out.insert(
            "client_secret_expires_at".into(),
            json!(c.expires_at.unwrap_or(0)),
        );
    }
    out.insert(
        "registration_client_uri".into(),
        json!(registration_client_uri(s, &c.client_id)),
    );
    out
}

// ---------------------------------------------------------------- /register/{client_id}

/// Whether `secret` hashes to `hash`, in constant time.
fn secret_matches(secret: &str, hash: &str) -> bool {
    hash_secret(secret).as_bytes().ct_eq(hash.as_bytes()).into()
}

/// The bearer token of `Authorization: Bearer <token>` (RFC 6750 §2.1), if that is how the
/// request authenticated.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A 401 from the client configuration endpoint (RFC 7592 §2, RFC 6750 §3.1): with
/// `error="invalid_token"` when a token was presented, bare when none was ("the resource
/// server SHOULD NOT include an error code" for a request without authentication).
fn registration_token_refused(presented: bool) -> Response {
    if !presented {
        return no_store(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
            )
                .into_response(),
        );
    }
    let mut r = OAuthError::new(
        ErrorCode::Extension("invalid_token".into()),
        "the registration access token is not valid for this client",
    )
    .into_response();
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    no_store(r)
}

/// The client whose registration access token the request presents (RFC 7592 §2).
///
/// An unknown client, a token for another client, and a client that was never given a token
/// (a metadata document, an operator's client) are all the same 401: RFC 7592 §2.1 answers
/// an unknown client with 401, like a bad token, so the endpoint does not reveal which ids
/// exist. The store is
/// read directly rather than through [`find_client`], so a URL in the path never makes the
/// server fetch a metadata document.
async fn registered_client(
    s: &AppState,
    headers: &HeaderMap,
    client_id: &str,
) -> Result<ClientRow, Response> {
    let Some(token) = bearer_token(headers) else {
        return Err(registration_token_refused(false));
    };
    let client = s
        .store
        .get_client(tenant(s), client_id, unix_now())
        .await
        .map_err(|e| no_store(OAuthError::from(e).into_response()))?;
    match client {
        Some(c)
            if c.registration_token_hash
                .as_deref()
                .is_some_and(|h| secret_matches(token, h)) =>
        {
            Ok(c)
        }
        _ => {
            tracing::debug!(client_id = ?client_id, "registration access token refused");
            Err(registration_token_refused(true))
        }
    }
}

/// `GET /register/{client_id}` (RFC 7592 §2.1): the client's current information.
pub async fn read_registration(
    State(s): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match registered_client(&s, &headers, &client_id).await {
        Ok(c) => no_store(Json(client_information(&s, &c)).into_response()),
        Err(r) => r,
    }
}

/// `PUT /register/{client_id}` (RFC 7592 §2.2): replaces the client's metadata.
pub async fn update_registration(
    State(s): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Authenticate before looking at the body, so an unauthenticated caller learns nothing
    // from how its body is judged.
    let current = match registered_client(&s, &headers, &client_id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    no_store(match update_inner(&s, current, &body).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    })
}

async fn update_inner(s: &AppState, current: ClientRow, body: &[u8]) -> Result<Value, OAuthError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|_| bad_metadata("the body is not valid client metadata"))?;
    let Some(fields) = body.as_object() else {
        return Err(bad_metadata("the body is not a JSON object"));
    };
    // "The authorization server MAY ignore any null or empty value in the request."
    let field = |name: &str| fields.get(name).filter(|v| !v.is_null());
    // "The client MUST include its 'client_id' field in the request, and it MUST be the same
    // as its currently issued client identifier."
    if field("client_id").and_then(Value::as_str) != Some(current.client_id.as_str()) {
        return Err(bad_metadata(
            "client_id must be present and equal to the client's identifier",
        ));
    }
    // The issued fields must not be sent; a client that echoes a read response back sends
    // them unchanged, which is harmless. A different value is an error.
    let issued = client_information(s, &current);
    for name in [
        "registration_client_uri",
        "client_id_issued_at",
        "client_secret_expires_at",
    ] {
        if let Some(v) = field(name)
            && issued.get(name) != Some(v)
        {
            return Err(bad_metadata(format!(
                "{name} differs from the value issued to the client"
            )));
        }
    }
    let matches_hash = |v: &Value, hash: Option<&str>| {
        v.as_str()
            .zip(hash)
            .is_some_and(|(v, h)| secret_matches(v, h))
    };
    if let Some(v) = field("registration_access_token")
        && !matches_hash(v, current.registration_token_hash.as_deref())
    {
        return Err(bad_metadata(
            "registration_access_token differs from the value issued to the client",
        ));
    }
    // "If the client includes the 'client_secret' field in the request, the value of this
    // field MUST match the currently issued client secret", so no client picks its own.
    if let Some(v) = field("client_secret")
        && !matches_hash(v, current.secret_hash.as_deref())
    {
        return Err(bad_metadata(
            "client_secret does not match the client's current secret",
        ));
    }
    let checked = check_metadata(s, body)?;
    // A client that moves to a secret-based authentication method gets a new secret (RFC 7592
    // §2.2 lets the server issue one); one that moves away from them loses its secret, so the
    // token endpoint does not keep demanding it.
    let mut new_secret = None;
    let secret_hash = match (checked.uses_secret, current.secret_hash.clone()) {
        (true, Some(h)) => Some(h),
        (true, None) => {
            let sec = random_token();
            let h = hash_secret(&sec);
            new_secret = Some(sec);
            Some(h)
        }
        (false, _) => None,
    };
    // The identity, the registration access token and the registration's lifetime stay.
    let row = ClientRow {
        secret_hash,
        metadata: checked.stored,
        ..current
    };
    let written = s.store.put_client(&row).await;
    // After the write, whatever its outcome: a lookup that read the old row is not cached.
    s.clients.invalidate(&row.client_id);
    written?;
    let mut out = client_information(s, &row);
    if let Some(sec) = new_secret {
        out.insert("client_secret".into(), json!(sec));
    }
    Ok(Value::Object(out))
}

/// `DELETE /register/{client_id}` (RFC 7592 §2.3): 204, and the client, its registration
/// access token and everything issued to it are gone ([`Store::delete_client`]).
pub async fn delete_registration(
    State(s): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let client = match registered_client(&s, &headers, &client_id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let deleted = s.store.delete_client(tenant(&s), &client.client_id).await;
    s.clients.invalidate(&client.client_id);
    no_store(match deleted {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => OAuthError::from(e).into_response(),
    })
}

fn check_scope_syntax(s: &AppState, sc: &str) -> Result<(), OAuthError> {
    let set: ScopeSet = sc.parse().map_err(|_| bad_metadata("invalid scope"))?;
    if let Some(supported) = &s.config.scopes_supported
        && let Some(bad) = set
            .iter()
            .find(|x| x.as_str() != crate::oidc::OPENID && !supported.contains(x.as_str()))
    {
        return Err(bad_metadata(format!("unknown scope {bad}")));
    }
    Ok(())
}

// ---------------------------------------------------------------- /revoke, /introspect

/// The form of `/revoke` and `/introspect`, each parameter at most once (RFC 6749 §3.1,
/// which RFC 7009 §2.1 and RFC 7662 §2.1 build on): with `token` twice, which one to revoke
/// or describe would be a guess.
fn endpoint_form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    unique_params(body).map_err(|k| {
        OAuthError::invalid_request(format!("the parameter {k} appears more than once"))
    })
}

/// `POST /revoke` (RFC 7009 §2): 200 whatever the token was, once the client authenticated.
pub async fn revoke(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    let form = match endpoint_form(&body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let (client, _) = match authenticate_client(&s, &headers, &form).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let Some(tok) = form.get("token") else {
        return OAuthError::invalid_request("token is missing").into_response();
    };
    let now = unix_now();
    let result: Result<(), OAuthError> = async {
        if let Some(r) = s
            .store
            .get_refresh(tenant(&s), &hash_secret(tok), now)
            .await?
        {
            if r.client_id == client.client_id {
                // RFC 7009 §2.1: the access tokens of the same grant go too.
                revoke_grant(&s, &r.family_id, now).await?;
                revoke_upstream(&s, &r.subject).await;
            }
            return Ok(());
        }
        if let Some(c) = s.keys.verify(tok, &s.config.issuer, None).await
            && c.client_id == client.client_id
        {
            s.store.revoke_access(tenant(&s), &c.jti, c.exp).await?;
            revoke_upstream(&s, &c.sub).await;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Proxy-provider mode: revoking our token for an upstream account revokes the user's
/// upstream grant too (where the provider supports it), and forgets the upstream tokens.
async fn revoke_upstream(s: &AppState, subject: &str) {
    if let Some(v) = &s.vault
        && v.provider_of(subject).is_some()
        && let Err(e) = v.revoke(subject).await
    {
        tracing::warn!(error = %e, "revoking the upstream grant failed");
    }
}

/// `POST /introspect` (RFC 7662 §2), for authenticated (confidential) clients.
pub async fn introspect(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    let form = match endpoint_form(&body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    match authenticate_client(&s, &headers, &form).await {
        Ok((_, ClientAuthMethod::None)) => {
            return OAuthError::invalid_client("introspection needs client authentication")
                .into_response();
        }
        Ok(_) => {}
        Err(e) => return e.into_response(),
    }
    let Some(tok) = form.get("token") else {
        return OAuthError::invalid_request("token is missing").into_response();
    };
    let now = unix_now();
    let inactive = || token_json(json!({"active": false}));
    if let Some(c) = s.keys.verify(tok, &s.config.issuer, None).await {
        return match access_revoked(s.store.as_ref(), tenant(&s), &c).await {
            Ok(true) => inactive(),
            Ok(false) => {
                let mut v = json!({
                    "active": true, "scope": c.scope, "client_id": c.client_id, "sub": c.sub,
                    "aud": c.aud, "iss": c.iss, "exp": c.exp, "iat": c.iat, "jti": c.jti,
                    "token_type": if c.cnf.is_some() { "DPoP" } else { "Bearer" },
                });
                // RFC 9449 §6.2: a resource that introspects must see the binding.
                if let Some(cnf) = &c.cnf {
                    v["cnf"] = json!({"jkt": cnf.jkt});
                }
                token_json(v)
            }
            Err(e) => OAuthError::from(e).into_response(),
        };
    }
    match s
        .store
        .get_refresh(tenant(&s), &hash_secret(tok), now)
        .await
    {
        Ok(Some(r)) => token_json(json!({
            "active": true, "scope": r.scope, "client_id": r.client_id, "sub": r.subject,
            "exp": r.expires_at, "iat": r.created_at, "iss": s.config.issuer, "token_type": "refresh_token",
        })),
        Ok(None) => inactive(),
        Err(e) => OAuthError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_may_change_only_the_port() {
        let reg = "http://127.0.0.1:1234/callback";
        assert!(redirect_matches(reg, "http://127.0.0.1:5555/callback"));
        assert!(redirect_matches(reg, reg));
        assert!(!redirect_matches(reg, "http://127.0.0.1:5555/other"));
        assert!(!redirect_matches(reg, "http://127.0.0.1:5555/callback?x=1"));
        assert!(!redirect_matches(reg, "http://localhost:5555/callback"));
        assert!(!redirect_matches(
            "https://app.example.com/cb",
            "https://app.example.com/cb/"
        ));
        assert!(!redirect_matches(
            "https://app.example.com/cb",
            "https://app.example.com:444/cb"
        ));
        assert!(!redirect_matches(
            reg,
            "http://127.0.0.1.evil.com:5555/callback"
        ));
    }
}
