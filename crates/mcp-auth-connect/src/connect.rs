//! [`Connector`]: the routes a web app mounts, and `client_for(user, server)`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_auth_client::store::{CredentialStore, StoreError, server_key};
use mcp_auth_client::{
    ClientOptions, HttpOptions, Interaction, McpSession, OAuthClient, OAuthMiddleware,
    PendingAuthorization, ResourceMode,
};
use mcp_auth_types::ScopeSet;
use mcp_auth_types::seal::SealKeys;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;

use crate::steps::ClientIdentity;
use crate::vault::Vault;

/// How long a started connection may take (the state cookie's lifetime).
const PENDING_SECS: u64 = 600;

/// Who is signed in to the app: the app answers from its own session or authentication.
#[async_trait]
pub trait CurrentUser: Send + Sync {
    /// The signed-in user's stable id, or `None`.
    async fn current_user(&self, parts: &Parts) -> Option<String>;
}

/// One remote MCP server users can connect.
#[derive(Clone, Debug)]
pub struct McpServer {
    /// Its id in the routes (`/connect/{id}/…`): 1–64 of `a-z`, `0-9`, `-`, `_`.
    pub id: String,
    /// What the app shows.
    pub label: String,
    /// The MCP endpoint URL.
    pub url: String,
    /// How the app identifies itself to the server's authorization server: pre-registered
    /// credentials, a client ID metadata document URL, or (the default) dynamic
    /// registration under `client_name`.
    pub identity: ClientIdentity,
    /// Scopes to ask for (default: what the server advertises).
    pub scopes: Option<ScopeSet>,
    /// Extra authorization parameters (`prompt=consent`, …).
    pub authorize_params: Vec<(String, String)>,
    /// RFC 8707 `resource`: the server's (default), omitted, or another.
    pub resource: ResourceMode,
    /// Allow plain http to non-loopback hosts (never on the internet).
    pub allow_http: bool,
}

impl McpServer {
    /// A server with the defaults: dynamic registration as `client_name`.
    pub fn new(id: impl Into<String>, label: impl Into<String>, url: impl Into<String>) -> Self {
        let identity = ClientIdentity {
            client_name: "mcp-auth-connect".into(),
            ..ClientIdentity::default()
        };
        Self {
            id: id.into(),
            label: label.into(),
            url: url.into(),
            identity,
            scopes: None,
            authorize_params: Vec::new(),
            resource: ResourceMode::Auto,
            allow_http: false,
        }
    }
}

/// What the connector needs.
pub struct ConnectorConfig {
    /// The app's public URL where the router is mounted (scheme, host, and the prefix, no
    /// trailing slash): callbacks are `{base_url}/connect/{server}/callback`.
    pub base_url: String,
    /// The servers users can connect.
    pub servers: Vec<McpServer>,
    /// Seal the short-lived state cookies (keep them secret; rotate like any key).
    pub cookie_keys: SealKeys,
    /// Where the browser goes after a callback or a disconnect (default `/`).
    pub return_to: String,
    /// HTTP settings for discovery, token and MCP requests.
    pub http: HttpOptions,
}

/// What went wrong, for the app.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No server with this id is configured.
    #[error("unknown MCP server {0:?}")]
    UnknownServer(String),
    /// The user has no usable connection: never connected, disconnected, or the refresh
    /// token was refused (`invalid_grant`); send them through `/connect/{server}/login`.
    #[error("{server} needs to be connected (again): {reason}")]
    NeedsReconnect {
        /// The server id.
        server: String,
        /// Why.
        reason: String,
    },
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The vault failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// OAuth or MCP failed.
    #[error(transparent)]
    Client(mcp_auth_client::Error),
}

impl From<mcp_auth_client::Error> for ConnectError {
    fn from(e: mcp_auth_client::Error) -> Self {
        Self::Client(e)
    }
}

/// A user's connection to a server, ready for requests: `http` attaches a valid token to
/// every request to the server (refreshing first when needed, once for all concurrent
/// callers), `mcp` speaks MCP over it.
pub struct Connection {
    /// An HTTP client for the server, with the user's token.
    pub http: reqwest_middleware::ClientWithMiddleware,
    /// An MCP session on it.
    pub mcp: McpSession,
}

/// A user's connection state (`GET /connect/{server}/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The server id.
    pub server: String,
    /// Its label.
    pub label: String,
    /// Whether the user has a usable token (current or refreshable).
    pub connected: bool,
    /// The user connected once but must connect again (refresh refused, no refresh token).
    pub needs_reconnect: bool,
    /// Granted scopes.
    pub scopes: Option<String>,
    /// Seconds until the access token expires (it is refreshed before).
    pub expires_in: Option<u64>,
    /// The account at the server, when the access token says (a JWT's `sub`).
    pub account: Option<String>,
}

/// The routes and `client_for`, over a [`Vault`]. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    config: ConnectorConfig,
    servers: HashMap<String, McpServer>,
    vault: Vault,
    users: Arc<dyn CurrentUser>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("base_url", &self.inner.config.base_url)
            .field("servers", &self.inner.servers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What the state cookie holds, sealed.
#[derive(Serialize, Deserialize)]
struct StateCookie {
    user: String,
    server: String,
    id: String,
    expires_at: u64,
    pending: PendingAuthorization,
}

fn now_secs() -> u64 {
    mcp_auth_client::store::now_secs()
}

fn random_id() -> Result<String, ConnectError> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| ConnectError::Config(format!("no randomness: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Connector {
    /// A connector over `vault`, asking `users` who is signed in.
    pub fn new(
        config: ConnectorConfig,
        vault: Vault,
        users: Arc<dyn CurrentUser>,
    ) -> Result<Self, ConnectError> {
        let base = url::Url::parse(&config.base_url)
            .map_err(|e| ConnectError::Config(format!("base_url: {e}")))?;
        if config.base_url.ends_with('/') || base.query().is_some() {
            return Err(ConnectError::Config(
                "base_url must have no trailing slash and no query".into(),
            ));
        }
        let mut servers = HashMap::new();
        for s in &config.servers {
            if !valid_id(&s.id) {
                return Err(ConnectError::Config(format!(
                    "server id {:?}: use 1-64 of a-z, 0-9, '-', '_'",
                    s.id
                )));
            }
            if servers.insert(s.id.clone(), s.clone()).is_some() {
                return Err(ConnectError::Config(format!("server id {:?} twice", s.id)));
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                servers,
                vault,
                users,
            }),
        })
    }

    /// The vault.
    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// The configured servers.
    pub fn servers(&self) -> impl Iterator<Item = &McpServer> {
        self.inner.config.servers.iter()
    }

    fn server(&self, id: &str) -> Result<&McpServer, ConnectError> {
        self.inner
            .servers
            .get(id)
            .ok_or_else(|| ConnectError::UnknownServer(id.to_owned()))
    }

    /// The callback URL of a server.
    pub fn callback_url(&self, server: &str) -> String {
        format!("{}/connect/{server}/callback", self.inner.config.base_url)
    }

    /// The client library's OAuth client for `user` and `server`, over the user's part of
    /// the vault; it never opens a browser (a login is the routes' job).
    pub fn oauth_for(&self, user: &str, server: &str) -> Result<OAuthClient, ConnectError> {
        let s = self.server(server)?;
        if user.is_empty() {
            return Err(ConnectError::Config("an empty user id".into()));
        }
        let store: Arc<dyn CredentialStore> = Arc::new(self.inner.vault.for_user(user));
        let opts = ClientOptions {
            interaction: Interaction::NonInteractive,
            identity: s.identity.clone(),
            scopes: s.scopes.clone(),
            resource: s.resource.clone(),
            authorize_params: s.authorize_params.clone(),
            allow_http: s.allow_http,
            ..ClientOptions::default()
        };
        Ok(OAuthClient::new(
            store,
            opts,
            self.inner.config.http.clone(),
        )?)
    }

    /// An HTTP client and MCP session for `user` on `server`, with a valid token
    /// (refreshed when needed, single-flight per user and server across every instance
    /// sharing the vault). [`ConnectError::NeedsReconnect`] when there is none to be had.
    pub async fn client_for(&self, user: &str, server: &str) -> Result<Connection, ConnectError> {
        let s = self.server(server)?;
        let oauth = self.oauth_for(user, server)?;
        match oauth.token(&s.url).await {
            Ok(_) => {}
            Err(mcp_auth_client::Error::LoginRequired { reason, .. }) => {
                return Err(ConnectError::NeedsReconnect {
                    server: server.to_owned(),
                    reason,
                });
            }
            Err(e) => return Err(e.into()),
        }
        let base = oauth.http().client()?.clone();
        let http = reqwest_middleware::ClientBuilder::new(base)
            .with(OAuthMiddleware::new(oauth, s.url.clone()))
            .build();
        let mcp = McpSession::new(http.clone(), s.url.clone());
        Ok(Connection { http, mcp })
    }

    /// The user's connection state.
    pub async fn status(&self, user: &str, server: &str) -> Result<Status, ConnectError> {
        let s = self.server(server)?;
        let store = self.inner.vault.for_user(user);
        let canonical = mcp_auth_types::ResourceUrl::canonicalize(&s.url)
            .map_err(|e| ConnectError::Config(format!("server URL: {e}")))?;
        let rec = store.get(&server_key(canonical.as_str())).await?;
        let tokens = rec.as_ref().and_then(|r| r.tokens.as_ref());
        let now = now_secs();
        let usable = tokens
            .is_some_and(|t| t.refresh_token.is_some() || t.expires_at.is_none_or(|e| e > now));
        Ok(Status {
            server: s.id.clone(),
            label: s.label.clone(),
            connected: usable,
            // Connected once (a grant was recorded), no usable token now.
            needs_reconnect: rec.as_ref().is_some_and(|r| r.grant.is_some()) && !usable,
            scopes: tokens.and_then(|t| t.scope.clone()),
            expires_in: tokens
                .filter(|_| usable)
                .and_then(|t| t.expires_at)
                .map(|e| e.saturating_sub(now)),
            account: tokens.and_then(|t| jwt_subject(t.access_token.secret())),
        })
    }

    /// Revokes the user's tokens at the authorization server (RFC 7009), then forgets them.
    /// Revocation failures are logged; the tokens are forgotten whatever the server says.
    pub async fn disconnect(&self, user: &str, server: &str) -> Result<(), ConnectError> {
        let s = self.server(server)?;
        let oauth = self.oauth_for(user, server)?;
        match oauth.logout(&s.url).await {
            Ok(problems) => {
                for p in problems {
                    tracing::warn!(server = %server, error = %p, "revocation failed; tokens forgotten anyway");
                }
                Ok(())
            }
            Err(mcp_auth_client::Error::LoginRequired { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The routes, to mount at the prefix of `base_url`: `GET /connect/{server}/login`,
    /// `GET /connect/{server}/callback`, `GET /connect/{server}/status`,
    /// `POST /connect/{server}/logout`.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .route("/connect/{server}/login", get(login))
            .route("/connect/{server}/callback", get(callback))
            .route("/connect/{server}/status", get(status))
            .route("/connect/{server}/logout", post(logout))
            .with_state(self.clone())
    }

    fn cookie_name(server: &str) -> String {
        format!("mcp_connect_{server}")
    }

    fn cookie_path(&self, server: &str) -> String {
        let path = url::Url::parse(&self.inner.config.base_url)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        format!("{path}/connect/{server}")
    }

    fn secure(&self) -> &'static str {
        if self.inner.config.base_url.starts_with("https://") {
            "; Secure"
        } else {
            ""
        }
    }

    fn aad(server: &str) -> Vec<u8> {
        format!("mcp-auth-connect state v1\0{server}").into_bytes()
    }
}

/// The `sub` of a JWT access token, for display only (not verified: the app is the
/// token's client, not its audience).
fn jwt_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("sub").and_then(Value::as_str).map(str::to_owned)
}

fn page(status: StatusCode, message: &str) -> Response {
    let esc = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    let mut r = (
        status,
        Html(format!(
            "<!doctype html><html lang=en><meta charset=utf-8><title>Connection</title><p role=alert>{esc}</p><p><a href=\"/\">Back</a></p></html>"
        )),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    r
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

async fn user_of(c: &Connector, parts: &Parts) -> Option<String> {
    c.inner
        .users
        .current_user(parts)
        .await
        .filter(|u| !u.is_empty())
}

fn not_signed_in() -> Response {
    page(StatusCode::UNAUTHORIZED, "Sign in to the app first.")
}

/// The signed-in user and the server a route names, or the page that says which is missing.
async fn signed_in_for(
    c: &Connector,
    parts: &Parts,
    server: &str,
) -> Result<(String, McpServer), Response> {
    let Some(user) = user_of(c, parts).await else {
        return Err(not_signed_in());
    };
    match c.server(server) {
        Ok(s) => Ok((user, s.clone())),
        Err(_) => Err(page(StatusCode::NOT_FOUND, "Unknown server.")),
    }
}

async fn login(
    State(c): State<Connector>,
    Path(server): Path<String>,
    req: axum::extract::Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let (user, s) = match signed_in_for(&c, &parts, &server).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let oauth = match c.oauth_for(&user, &server) {
        Ok(o) => o,
        Err(e) => return page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let (url, pending) = match oauth
        .begin_authorization(&s.url, &c.callback_url(&server))
        .await
    {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(server = %server, error = %e, "starting a connection failed");
            return page(
                StatusCode::BAD_GATEWAY,
                &format!("{} cannot be connected right now: {e}", s.label),
            );
        }
    };
    let id = match random_id() {
        Ok(i) => i,
        Err(e) => return page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let state = StateCookie {
        user,
        server: server.clone(),
        id,
        expires_at: now_secs() + PENDING_SECS,
        pending,
    };
    let sealed = serde_json::to_vec(&state)
        .map_err(|e| e.to_string())
        .and_then(|json| {
            c.inner
                .config
                .cookie_keys
                .seal(&Connector::aad(&server), &json)
                .map_err(|e| e.to_string())
        });
    let sealed = match sealed {
        Ok(s) => s,
        Err(e) => return page(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let mut resp = Redirect::to(&url).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}={sealed}; Path={}; HttpOnly; SameSite=Lax; Max-Age={PENDING_SECS}{}",
        Connector::cookie_name(&server),
        c.cookie_path(&server),
        c.secure()
    )) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn clear_state(c: &Connector, server: &str, mut resp: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}=; Path={}; HttpOnly; SameSite=Lax; Max-Age=0{}",
        Connector::cookie_name(server),
        c.cookie_path(server),
        c.secure()
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

fn back_to(c: &Connector, params: &[(&str, &str)]) -> Response {
    let base = &c.inner.config.return_to;
    let target = if params.is_empty() {
        base.clone()
    } else {
        let q = serde_urlencoded::to_string(params).unwrap_or_default();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}{q}")
    };
    let mut r = Redirect::to(&target).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn callback(
    State(c): State<Connector>,
    Path(server): Path<String>,
    RawQuery(query): RawQuery,
    req: axum::extract::Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let (user, s) = match signed_in_for(&c, &parts, &server).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let refused = |status, msg: &str| clear_state(&c, &server, page(status, msg));
    let Some(sealed) = cookie(&parts.headers, &Connector::cookie_name(&server)) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "No connection is in progress in this browser (it expired, was already finished, or was started elsewhere).",
        );
    };
    let state: StateCookie = match c
        .inner
        .config
        .cookie_keys
        .open(&Connector::aad(&server), &sealed)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(s) => s,
        None => return refused(StatusCode::BAD_REQUEST, "The connection state is invalid."),
    };
    let same_user: bool = state.user.as_bytes().ct_eq(user.as_bytes()).into();
    if !same_user || state.server != server {
        tracing::warn!(server = %server, "connection callback for another user refused");
        return refused(
            StatusCode::FORBIDDEN,
            "This connection was started by another user of this browser.",
        );
    }
    if state.expires_at <= now_secs() {
        return refused(
            StatusCode::BAD_REQUEST,
            "The connection took too long; start again.",
        );
    }
    match c
        .inner
        .vault
        .backend()
        .use_once(&format!("connect-state:{}", state.id), state.expires_at)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(server = %server, "replayed connection callback refused");
            return refused(
                StatusCode::BAD_REQUEST,
                "This connection response was already used.",
            );
        }
        Err(e) => return refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
    let oauth = match c.oauth_for(&user, &server) {
        Ok(o) => o,
        Err(e) => return refused(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    match oauth
        .complete_authorization(&state.pending, query.as_deref().unwrap_or(""))
        .await
    {
        Ok(_) => {
            tracing::info!(server = %server, "connected");
            clear_state(&c, &server, back_to(&c, &[("connected", &server)]))
        }
        Err(mcp_auth_client::Error::AuthorizationDenied { error, .. }) => clear_state(
            &c,
            &server,
            back_to(
                &c,
                &[("connect_error", error.as_str()), ("server", &server)],
            ),
        ),
        Err(e) => {
            tracing::warn!(server = %server, error = %e, "finishing a connection failed");
            refused(
                StatusCode::BAD_REQUEST,
                &format!("Connecting {} failed: {e}", s.label),
            )
        }
    }
}

async fn status(
    State(c): State<Connector>,
    Path(server): Path<String>,
    req: axum::extract::Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let Some(user) = user_of(&c, &parts).await else {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "not signed in"})),
        )
            .into_response();
    };
    match c.status(&user, &server).await {
        Ok(st) => {
            let mut r = axum::Json(st).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(ConnectError::UnknownServer(_)) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

/// Whether a state-changing request comes from the app's own pages: an `Origin` (or, without
/// one, a `Referer`) on the app's origin. Browsers send `Origin` on cross-site posts.
fn same_origin(c: &Connector, headers: &HeaderMap) -> bool {
    let ours = url::Url::parse(&c.inner.config.base_url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let from = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| url::Url::parse(v).ok())
            .map(|u| u.origin().ascii_serialization())
    };
    match from(header::ORIGIN).or_else(|| from(header::REFERER)) {
        Some(o) => o == ours,
        // Not a browser (no Origin, no Referer): the app's own server-side call.
        None => true,
    }
}

async fn logout(
    State(c): State<Connector>,
    Path(server): Path<String>,
    req: axum::extract::Request,
) -> Response {
    let (parts, _) = req.into_parts();
    if !same_origin(&c, &parts.headers) {
        return page(StatusCode::FORBIDDEN, "Cross-site request refused.");
    }
    let Some(user) = user_of(&c, &parts).await else {
        return not_signed_in();
    };
    if let Err(e) = c.disconnect(&user, &server).await {
        return match e {
            ConnectError::UnknownServer(_) => page(StatusCode::NOT_FOUND, "Unknown server."),
            e => page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
    }
    let wants_html = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return back_to(&c, &[("disconnected", &server)]);
    }
    match c.status(&user, &server).await {
        Ok(st) => axum::Json(st).into_response(),
        Err(e) => page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
