//! The browser part of the authorization code flow: the authorization URL, the loopback
//! redirect listener (RFC 8252 §7.3), opening the browser without a shell, and the manual
//! (headless) path.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::{Html, IntoResponse};
use mcp_auth_types::redirect::{AuthorizationResponse, check_iss};
use mcp_auth_types::{CsrfState, HttpUrl, PkceChallenge, PkceVerifier, ScopeSet};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::{Error, Result, Step};

/// Receives the authorization URL (already checked to be http(s)) and brings the user
/// there: an embedded browser, a GUI's own window, a test driver.
pub type UrlHandler = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// How the user is sent to the authorization page.
#[derive(Clone, Default)]
pub enum Interaction {
    /// Open a browser: this command (program and leading arguments; the URL is appended as
    /// the last argument, no shell involved), or the platform's opener when `None`.
    Browser(Option<Vec<String>>),
    /// Print the URL and wait for the redirect on the loopback listener or, when `paste`,
    /// for the redirect URL to be pasted on standard input (for machines without a browser
    /// whose loopback the browser cannot reach).
    Manual {
        /// Also accept the pasted redirect URL.
        paste: bool,
    },
    /// Hand the URL to the application, then wait for the redirect on the loopback listener.
    Handler(UrlHandler),
    /// No user is present: fail with [`Error::LoginRequired`] when authorization is needed.
    #[default]
    NonInteractive,
}

impl std::fmt::Debug for Interaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Browser(cmd) => f.debug_tuple("Browser").field(cmd).finish(),
            Self::Manual { paste } => f.debug_struct("Manual").field("paste", paste).finish(),
            Self::Handler(_) => f.write_str("Handler(..)"),
            Self::NonInteractive => f.write_str("NonInteractive"),
        }
    }
}

/// The redirect URI policy.
#[derive(Debug, Clone)]
pub struct RedirectConfig {
    /// A fixed port. `None`: derive a stable port from the server URL, so a dynamically
    /// registered redirect URI stays valid across runs.
    pub port: Option<u16>,
    /// The path of the redirect URI.
    pub path: String,
    /// The host written in the redirect URI: `127.0.0.1` (RFC 8252 §8.3 recommends the
    /// literal) or `localhost` for servers that insist on it.
    pub host: String,
}

impl Default for RedirectConfig {
    fn default() -> Self {
        Self {
            port: None,
            path: "/callback".into(),
            host: "127.0.0.1".into(),
        }
    }
}

impl RedirectConfig {
    /// The port to use for a server: fixed, or derived from the server URL in 20000–29999
    /// (below Linux's ephemeral range, so the kernel rarely hands it to someone else).
    pub fn port_for(&self, server_url: &str) -> u16 {
        self.port.unwrap_or_else(|| {
            let h = Sha256::digest(server_url.as_bytes());
            20000 + (u16::from_be_bytes([h[0], h[1]]) % 10000)
        })
    }

    /// The redirect URI for a port.
    pub fn redirect_uri(&self, port: u16) -> String {
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("http://{host}:{port}{}", self.path)
    }
}

/// The parameters of one authorization request.
#[derive(Debug)]
pub struct AuthorizationRequest<'a> {
    /// The authorization endpoint (already checked to be http(s)).
    pub endpoint: &'a HttpUrl,
    /// `client_id`
    pub client_id: &'a str,
    /// `redirect_uri`
    pub redirect_uri: &'a str,
    /// `scope`, omitted when `None`.
    pub scope: Option<&'a ScopeSet>,
    /// RFC 8707 `resource`, omitted when `None`.
    pub resource: Option<&'a str>,
    /// Extra parameters (`prompt=consent`, an IdP hint …); they cannot override the
    /// protocol's own parameters.
    pub extra: &'a [(String, String)],
}

/// Builds the authorization URL (RFC 6749 §4.1.1 with PKCE, RFC 7636 §4.3; RFC 8707).
/// Query parameters already in the endpoint are kept (RFC 6749 §3.1).
pub fn authorization_url(
    req: &AuthorizationRequest<'_>,
    state: &CsrfState,
    challenge: &PkceChallenge,
) -> String {
    const OWN: [&str; 8] = [
        "response_type",
        "client_id",
        "redirect_uri",
        "code_challenge",
        "code_challenge_method",
        "state",
        "scope",
        "resource",
    ];
    let mut url = req.endpoint.url().clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", req.client_id)
            .append_pair("redirect_uri", req.redirect_uri)
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", PkceChallenge::METHOD)
            .append_pair("state", state.as_str());
        if let Some(s) = req.scope {
            q.append_pair("scope", &s.to_string());
        }
        if let Some(r) = req.resource {
            q.append_pair("resource", r);
        }
        for (k, v) in req.extra {
            if !OWN.contains(&k.as_str()) {
                q.append_pair(k, v);
            }
        }
    }
    url.to_string()
}

/// A bound loopback listener waiting for one redirect.
pub struct Listener {
    rx: mpsc::Receiver<String>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    port: u16,
}

impl Listener {
    /// Binds `127.0.0.1:port` (port 0 picks a free one). A busy port is an error: the
    /// redirect URI must stay what was registered, so there is no silent fallback. With
    /// `also_ipv6` (a redirect URI naming `localhost`, which browsers may resolve to `::1`)
    /// the same port on `[::1]` is served too, when the machine has IPv6 loopback.
    pub async fn bind(port: u16, path: &str) -> Result<Self> {
        Self::bind_dual(port, path, false).await
    }

    /// [`Listener::bind`] with the IPv6 choice explicit.
    pub async fn bind_dual(port: u16, path: &str, also_ipv6: bool) -> Result<Self> {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let busy = |source| Error::CallbackPort {
            addr: addr.to_string(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(busy)?;
        let port = listener.local_addr().map_err(busy)?.port();
        let v6 = if also_ipv6 {
            tokio::net::TcpListener::bind(SocketAddr::new(
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                port,
            ))
            .await
            .ok()
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(8);
        let app = axum::Router::new()
            .route(path, axum::routing::get(callback))
            .with_state(tx);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        for l in std::iter::once(listener).chain(v6) {
            let app = app.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let _ = axum::serve(l, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
            });
        }
        Ok(Self {
            rx,
            shutdown: Some(stop_tx),
            port,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next redirect's raw query string.
    pub async fn next(&mut self) -> Option<String> {
        self.rx.recv().await
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
    }
}

async fn callback(
    State(tx): State<mpsc::Sender<String>>,
    RawQuery(q): RawQuery,
) -> impl IntoResponse {
    let q = q.unwrap_or_default();
    let ok = q.contains("code=") && !q.contains("error=");
    let _ = tx.send(q).await;
    let page = if ok {
        "<!doctype html><meta charset=utf-8><title>mcp-auth</title><p>Authorization complete. You can close this window and return to the terminal.</p>"
    } else {
        "<!doctype html><meta charset=utf-8><title>mcp-auth</title><p>Authorization did not complete. Return to the terminal for details.</p>"
    };
    (
        [
            (http::header::CACHE_CONTROL, "no-store"),
            (
                http::header::HeaderName::from_static("referrer-policy"),
                "no-referrer",
            ),
        ],
        Html(page),
    )
}

/// Opens `url` in a browser without a shell. The URL must be http(s) (checked by the caller
/// and again here): handing an arbitrary string to an opener is how CVE-2025-6514 ran
/// commands on clients' machines.
pub fn open_browser(command: Option<&[String]>, url: &str) -> Result<()> {
    let parsed = HttpUrl::parse(url).map_err(|source| Error::Url {
        what: "the authorization URL".into(),
        source,
    })?;
    let (program, args): (String, Vec<String>) = match command {
        Some([program, args @ ..]) => (program.clone(), args.to_vec()),
        Some([]) | None => default_opener(),
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .arg(parsed.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().map_err(|e| Error::Browser {
        command: program.clone(),
        message: e.to_string(),
    })?;
    // Reap it in the background so no zombie is left; its exit status is only logged.
    tokio::spawn(async move {
        match child.wait().await {
            Ok(s) if !s.success() => tracing::debug!(status = ?s, "browser command exited"),
            _ => {}
        }
    });
    Ok(())
}

fn default_opener() -> (String, Vec<String>) {
    if cfg!(target_os = "macos") {
        ("open".into(), vec![])
    } else if cfg!(windows) {
        // Not `cmd /c start`: that is a shell.
        (
            "rundll32".into(),
            vec!["url.dll,FileProtocolHandler".into()],
        )
    } else {
        ("xdg-open".into(), vec![])
    }
}

/// Splits a browser command like a shell would (quotes, escapes), without running a shell.
pub fn split_command(cmd: &str) -> Result<Vec<String>> {
    shell_words::split(cmd).map_err(|e| Error::Config(format!("browser command {cmd:?}: {e}")))
}

/// What the redirect gave, checked: state (constant time), `iss` (RFC 9207), error.
pub fn check_redirect(
    query: &str,
    state: &CsrfState,
    issuer: &str,
    iss_supported: bool,
) -> Result<mcp_auth_types::AuthorizationCode> {
    let resp = AuthorizationResponse::from_query(query)?;
    if !resp.state().is_some_and(|s| state.matches(s)) {
        return Err(Error::StateMismatch);
    }
    check_iss(resp.iss(), issuer, iss_supported)?;
    match resp {
        AuthorizationResponse::Code { code, .. } => Ok(code),
        AuthorizationResponse::Error {
            error, description, ..
        } => Err(Error::AuthorizationDenied { error, description }),
    }
}

/// Waits for a redirect that carries our `state`, until `deadline`. Redirects with another
/// state (a stale tab, a local attacker) are ignored, not fatal.
pub async fn wait_for_code(
    listener: &mut Listener,
    paste: bool,
    state: &CsrfState,
    issuer: &str,
    iss_supported: bool,
    deadline: Duration,
) -> Result<mcp_auth_types::AuthorizationCode> {
    let (paste_tx, mut paste_rx) = mpsc::channel::<String>(1);
    if paste {
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line = line.trim().to_owned();
                let query = url::Url::parse(&line)
                    .ok()
                    .and_then(|u| u.query().map(str::to_owned))
                    .unwrap_or(line);
                if paste_tx.send(query).await.is_err() {
                    break;
                }
            }
        });
    }
    let wait = async {
        loop {
            let query = tokio::select! {
                q = listener.next() => q,
                q = paste_rx.recv(), if paste => q,
            };
            let Some(query) = query else {
                return Err(Error::Timeout {
                    step: Step::Authorization,
                    seconds: deadline.as_secs(),
                });
            };
            match check_redirect(&query, state, issuer, iss_supported) {
                Err(Error::StateMismatch) => {
                    tracing::warn!("ignored a redirect whose state does not match this login");
                    continue;
                }
                other => return other,
            }
        }
    };
    tokio::time::timeout(deadline, wait)
        .await
        .map_err(|_| Error::Timeout {
            step: Step::Authorization,
            seconds: deadline.as_secs(),
        })?
}

/// A PKCE pair and state for one request.
pub fn new_request_secrets() -> (PkceVerifier, PkceChallenge, CsrfState) {
    let v = PkceVerifier::generate();
    let c = v.challenge();
    (v, c, CsrfState::generate())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_keeps_endpoint_query_and_refuses_overrides() {
        let ep = HttpUrl::parse("https://as.example.com/authorize?tenant=x").unwrap();
        let scope: ScopeSet = "a b".parse().unwrap();
        let extra = vec![
            ("prompt".to_owned(), "consent".to_owned()),
            ("redirect_uri".to_owned(), "https://evil".to_owned()),
        ];
        let req = AuthorizationRequest {
            endpoint: &ep,
            client_id: "cid",
            redirect_uri: "http://127.0.0.1:1234/callback",
            scope: Some(&scope),
            resource: Some("https://mcp.example.com/mcp"),
            extra: &extra,
        };
        let (_v, c, s) = new_request_secrets();
        let url = url::Url::parse(&authorization_url(&req, &s, &c)).unwrap();
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |k: &str| {
            q.iter()
                .filter(|(a, _)| a == k)
                .map(|(_, b)| b.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("tenant"), ["x"]);
        assert_eq!(get("redirect_uri"), ["http://127.0.0.1:1234/callback"]);
        assert_eq!(get("code_challenge_method"), ["S256"]);
        assert_eq!(get("scope"), ["a b"]);
        assert_eq!(get("resource"), ["https://mcp.example.com/mcp"]);
        assert_eq!(get("prompt"), ["consent"]);
        assert_eq!(get("state"), [s.as_str()]);
    }

    #[test]
    fn stable_port() {
        let r = RedirectConfig::default();
        let a = r.port_for("https://a.example/mcp");
        assert_eq!(a, r.port_for("https://a.example/mcp"));
        assert!((20000..30000).contains(&a));
        assert_eq!(r.redirect_uri(5), "http://127.0.0.1:5/callback");
    }

    #[test]
    fn browser_refuses_non_http() {
        assert!(open_browser(Some(&["true".into()]), "file:///etc/passwd").is_err());
        assert!(open_browser(Some(&["true".into()]), "calc.exe").is_err());
    }

    #[test]
    fn redirect_checks() {
        let s = CsrfState::generate();
        let iss = "https://as";
        let q = format!("code=c&state={}&iss=https%3A%2F%2Fas", s.as_str());
        assert!(check_redirect(&q, &s, iss, true).is_ok());
        assert!(matches!(
            check_redirect("code=c&state=other", &s, iss, false),
            Err(Error::StateMismatch)
        ));
        let q = format!("code=c&state={}", s.as_str());
        assert!(matches!(
            check_redirect(&q, &s, iss, true),
            Err(Error::Iss(_))
        ));
        let q = format!("error=access_denied&state={}", s.as_str());
        assert!(matches!(
            check_redirect(&q, &s, iss, false),
            Err(Error::AuthorizationDenied { .. })
        ));
    }
}
