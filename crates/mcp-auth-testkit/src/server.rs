//! The running server: binding, routing, shutdown, and the test-facing handle.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mcp_auth_types::ScopeSet;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{ClientConfig, Config};
use crate::http::{self, Req};
use crate::state::Shared;
use crate::stats::{RecordedRequest, Stats};
use crate::{mcp, oauth};

/// Request bodies larger than this are refused with `413`.
const MAX_BODY: usize = 1 << 20;

/// A running authorization server + MCP server on one loopback port.
///
/// It stops when dropped (it stops accepting at once and closes idle connections), or with
/// [`TestServer::shutdown`], which also waits until the port is free.
///
/// ```no_run
/// # async fn demo() {
/// use mcp_auth_testkit::{Config, TestServer};
///
/// let server = TestServer::start(Config::default()).await;
/// println!("MCP server at {}", server.mcp_url());
/// // … point the client under test at server.mcp_url() …
/// assert_eq!(server.stats().code_exchanges, 0);
/// # }
/// ```
pub struct TestServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Binds `127.0.0.1:{config.port}` (port `0`: any free port) and starts serving.
    ///
    /// # Panics
    ///
    /// When the port cannot be bound; use [`TestServer::try_start`] to handle that.
    pub async fn start(config: Config) -> TestServer {
        let port = config.port;
        match Self::try_start(config).await {
            Ok(s) => s,
            Err(e) => panic!("mcp-auth-testkit: cannot bind 127.0.0.1:{port}: {e}"),
        }
    }

    /// Like [`TestServer::start`], returning the bind error.
    pub async fn try_start(config: Config) -> io::Result<TestServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port)).await?;
        Self::from_listener(listener, config)
    }

    /// Serves on an already bound listener (`config.port` is ignored). Must be called inside
    /// a Tokio runtime.
    pub fn from_listener(listener: TcpListener, config: Config) -> io::Result<TestServer> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(format!("http://{addr}"), config));
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                // Either an explicit stop or the handle being dropped.
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!("mcp-auth-testkit server stopped: {e}");
            }
        });
        Ok(TestServer {
            shared,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The socket address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MCP endpoint: base URL + `mcp_path`.
    pub fn mcp_url(&self) -> String {
        self.shared.config().mcp_url_at(&self.shared.base_url)
    }

    /// The issuer identifier: base URL + `issuer_path` (no trailing slash by default).
    pub fn issuer(&self) -> String {
        self.shared.config().issuer_at(&self.shared.base_url)
    }

    /// The path-inserted protected resource metadata URL (RFC 9728 §3.1), whether or not it
    /// is currently served.
    pub fn resource_metadata_url(&self) -> String {
        format!(
            "{}{}",
            self.shared.base_url,
            self.shared.config().prm_path()
        )
    }

    /// A snapshot of the counters and logs.
    pub fn stats(&self) -> Stats {
        let inner = self.shared.lock();
        let mut stats = inner.stats.clone();
        stats.active_sessions = inner.sessions.len();
        stats
    }

    /// Zeroes the counters and clears the logs.
    pub fn reset_stats(&self) {
        self.shared.lock().stats = Stats::default();
    }

    /// Changes the configuration of the running server; every later request sees the
    /// change. `port` cannot change. Changing `mcp_path` or `issuer_path` moves the endpoints
    /// and documents.
    ///
    /// ```no_run
    /// # async fn demo(server: mcp_auth_testkit::TestServer) {
    /// server.configure(|c| c.deny_authorization = true);
    /// # }
    /// ```
    pub fn configure(&self, change: impl FnOnce(&mut Config)) {
        change(&mut self.shared.lock().config);
    }

    /// Registers a client as if pre-registered in [`Config::clients`].
    pub fn add_client(&self, client: ClientConfig) {
        self.shared.lock().config.clients.push(client);
    }

    /// Issues an access token without any flow, for tests of the MCP side. `scope` is
    /// space-separated; `resource` is the token's audience (`None`: not audience-bound).
    /// The token lives `access_token_ttl` seconds and has no refresh token.
    ///
    /// # Panics
    ///
    /// When `scope` is not a valid scope string (RFC 6749 §3.3).
    pub fn issue_access_token(
        &self,
        client_id: &str,
        scope: &str,
        resource: Option<&str>,
    ) -> String {
        let scopes: ScopeSet = match scope.parse() {
            Ok(s) => s,
            Err(e) => panic!("mcp-auth-testkit: issue_access_token: {e}"),
        };
        let mut inner = self.shared.lock();
        let now = self.shared.now(&inner);
        inner.issue_access(now, client_id, &scopes, resource, None)
    }

    /// Makes every access token issued so far expire now (refresh tokens stay valid). Tokens
    /// issued later get the normal lifetime.
    pub fn expire_access_tokens(&self) {
        let mut inner = self.shared.lock();
        let now = self.shared.now(&inner);
        for a in inner.access.values_mut() {
            a.expires_at = a.expires_at.min(now);
        }
    }

    /// Revokes every access and refresh token issued so far, as an administrator would.
    pub fn revoke_all_tokens(&self) {
        let mut inner = self.shared.lock();
        let families: Vec<u64> = inner.families.keys().copied().collect();
        for f in families {
            inner.revoke_family(f);
        }
        for a in inner.access.values_mut() {
            a.revoked = true;
        }
        for r in inner.refresh.values_mut() {
            r.active = false;
        }
    }

    /// Moves the server's clock forward: tokens and codes expire as if `by` had passed.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.lock().clock_offset += by;
    }

    /// Shorthand for `configure(|c| c.deny_authorization = deny)`.
    pub fn set_deny_authorization(&self, deny: bool) {
        self.configure(|c| c.deny_authorization = deny);
    }

    /// Shorthand for `configure(|c| c.access_token_ttl = seconds)`; affects tokens issued
    /// from now on.
    pub fn set_access_token_ttl(&self, seconds: u64) {
        self.configure(|c| c.access_token_ttl = seconds);
    }

    /// Shorthand for `configure(|c| c.refresh_delay = delay)`.
    pub fn set_refresh_delay(&self, delay: Duration) {
        self.configure(|c| c.refresh_delay = delay);
    }

    /// Stops the server and waits (up to five seconds, then aborts) until it has released its
    /// port and finished its connections.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One router for everything. Routing is done by hand, against the live configuration, so
/// that [`TestServer::configure`] can move or remove endpoints while the server runs.
fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

async fn dispatch(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let response = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => {
            let req = Req {
                method: parts.method.clone(),
                path: path.clone(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                headers: parts.headers,
                body,
            };
            route(&shared, &req).await
        }
        Err(_) => http::text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    shared.lock().stats.requests.push(RecordedRequest {
        method: parts.method.to_string(),
        path,
        status: response.status().as_u16(),
    });
    response
}

async fn route(shared: &Shared, req: &Req) -> Response {
    let cfg = shared.config();
    let path = req.path.as_str();
    let only = |allowed: Method| {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, allowed.to_string())],
        )
            .into_response()
    };
    if path == cfg.mcp_path {
        return mcp::handle(shared, req);
    }
    if let Some(document) = oauth::well_known(&shared.base_url, &cfg, path) {
        return if req.method == Method::GET {
            document
        } else {
            only(Method::GET)
        };
    }
    let post = req.method == Method::POST;
    match path {
        "/authorize" if req.method == Method::GET => oauth::authorize(shared, req).await,
        "/authorize" => only(Method::GET),
        "/token" if post => oauth::token(shared, req).await,
        "/register" if post && cfg.registration_enabled => oauth::register(shared, req),
        "/revoke" if post => oauth::revoke(shared, req),
        "/token" | "/revoke" => only(Method::POST),
        "/register" if cfg.registration_enabled => only(Method::POST),
        _ => http::text(StatusCode::NOT_FOUND, "not found"),
    }
}
