//! # mcp-auth-proxy
//!
//! Lets an MCP client that only speaks stdio (Claude Desktop, many IDE plug-ins) use a remote
//! server: [`Proxy::run`] reads newline-delimited JSON-RPC from the client and relays each
//! message to the server over streamable HTTP — or over the older HTTP+SSE transport when
//! the server only has that ([`TransportStrategy`]) — and writes every message from the
//! server back, one per line.
//!
//! Authorization is not this crate's business: give it a `reqwest_middleware` client with
//! `mcp_auth_client::OAuthMiddleware`, which attaches tokens from the shared store and runs
//! the OAuth flow when the server answers 401. What the relay does itself:
//! - requests go out concurrently (a slow tool call holds nothing up); notifications and
//!   responses in order;
//! - `Mcp-Session-Id` is kept; a session the server drops (404) is replaced by one
//!   initialized with the client's own `initialize`, and the failed message is sent again;
//! - SSE answers are relayed event by event and resumed with `Last-Event-ID` when they break;
//!   the GET stream carries server-initiated requests (sampling, elicitation) and
//!   notifications;
//! - a request that cannot be delivered is answered with a JSON-RPC error, so the client
//!   never waits forever;
//! - `--ignore-tool` patterns hide tools from `tools/list` and refuse their calls;
//! - at the end (stdin closed, or the shutdown future resolves) the session is deleted.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mcp_auth_proxy::{Proxy, ProxyConfig};
//! let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).build();
//! let config = ProxyConfig::new(url::Url::parse("https://mcp.example.com/mcp")?);
//! Proxy::new(config, http)?
//!     .run(tokio::io::stdin(), tokio::io::stdout(), std::future::pending())
//!     .await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod error;
mod filter;
mod inbound;
mod legacy;
mod message;
mod streamable;

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use futures_util::StreamExt as _;
use http::header::{HeaderName, HeaderValue};
use reqwest_middleware::ClientWithMiddleware;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

pub use error::ProxyError;
pub use filter::ToolFilter;

use error::SendError;
use inbound::Inbound;
use legacy::Legacy;
use message::{INTERNAL_ERROR, INVALID_PARAMS, Kind, PARSE_ERROR, classify, error_response};
use streamable::Streamable;

/// Which transport to use, and in which order to try them (mcp-remote's `--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportStrategy {
    /// Streamable HTTP; the old HTTP+SSE transport when the first POST gets 400, 404 or 405
    /// (the MCP spec's backwards-compatibility rule).
    #[default]
    HttpFirst,
    /// HTTP+SSE; streamable HTTP when the GET is refused or is not an SSE stream.
    SseFirst,
    /// Streamable HTTP only.
    HttpOnly,
    /// HTTP+SSE only.
    SseOnly,
}

impl FromStr for TransportStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http-first" => Ok(Self::HttpFirst),
            "sse-first" => Ok(Self::SseFirst),
            "http-only" => Ok(Self::HttpOnly),
            "sse-only" => Ok(Self::SseOnly),
            other => Err(format!(
                "unknown transport {other:?}: expected http-first, sse-first, http-only or sse-only"
            )),
        }
    }
}

/// What to relay to. `Debug` shows header names only: their values are often credentials.
#[derive(Clone)]
pub struct ProxyConfig {
    /// The server's MCP endpoint (streamable HTTP) or SSE URL (HTTP+SSE).
    pub url: url::Url,
    /// Transport order.
    pub transport: TransportStrategy,
    /// Headers sent with every request to the server, `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// Tools hidden from the client.
    pub ignore_tools: ToolFilter,
    /// Largest message accepted from either side, bytes.
    pub max_message_bytes: usize,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, _)| format!("{k}: [redacted]"))
            .collect();
        f.debug_struct("ProxyConfig")
            .field("url", &self.url.as_str())
            .field("transport", &self.transport)
            .field("headers", &headers)
            .field("ignore_tools", &self.ignore_tools)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

impl ProxyConfig {
    /// Defaults: http-first, no extra headers, nothing hidden, 16 MiB messages.
    pub fn new(url: url::Url) -> Self {
        Self {
            url,
            transport: TransportStrategy::default(),
            headers: Vec::new(),
            ignore_tools: ToolFilter::default(),
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The chosen transport.
#[derive(Debug, Clone)]
enum Remote {
    Http(Arc<Streamable>),
    Sse(Arc<Legacy>),
}

impl Remote {
    async fn send(&self, msg: &Value, raw: &str) -> Result<(), SendError> {
        match self {
            Self::Http(s) => s.send(msg, raw).await,
            Self::Sse(l) => l.send(msg, raw).await,
        }
    }

    async fn close(&self) {
        match self {
            Self::Http(s) => s.close().await,
            Self::Sse(l) => l.close(),
        }
    }
}

/// A stdio ↔ remote relay for one server.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    http: ClientWithMiddleware,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Proxy {
    /// Checks the configuration; `http` carries every request (give it the OAuth
    /// middleware, and no overall timeout: SSE streams live long).
    pub fn new(config: ProxyConfig, http: ClientWithMiddleware) -> Result<Self, ProxyError> {
        if !matches!(config.url.scheme(), "http" | "https") {
            return Err(ProxyError::Config(format!(
                "the server URL must be http(s), not {}:",
                config.url.scheme()
            )));
        }
        let headers = config
            .headers
            .iter()
            .map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| ProxyError::Config(format!("invalid header name {k:?}")))?;
                let mut value = HeaderValue::from_str(v).map_err(|_| {
                    ProxyError::Config(format!(
                        "the value of header {k} is not a valid header value"
                    ))
                })?;
                // Custom headers often carry credentials: never logged by the HTTP stack.
                value.set_sensitive(true);
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, ProxyError>>()?;
        Ok(Self {
            config,
            http,
            headers,
        })
    }

    /// Relays between `input`/`output` (the local client) and the server until `input`
    /// ends or `shutdown` resolves; then deletes the remote session.
    pub async fn run<R, W, S>(self, input: R, output: W, shutdown: S) -> Result<(), ProxyError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send + 'static,
        S: Future<Output = ()> + Send,
    {
        let (tx, rx) = mpsc::unbounded_channel::<String>();
        let writer = tokio::spawn(write_lines(output, rx));
        let inbound = Arc::new(Inbound::new(
            tx,
            self.config.ignore_tools.clone(),
            self.config.max_message_bytes,
        ));
        let mut session = Relay {
            proxy: &self,
            inbound: Arc::clone(&inbound),
            remote: None,
            tasks: JoinSet::new(),
        };
        let mut lines = FramedRead::new(
            input,
            LinesCodec::new_with_max_length(self.config.max_message_bytes),
        );
        let outcome = {
            let work = async {
                loop {
                    tokio::select! {
                        line = lines.next() => match line {
                            None => return Ok(()),
                            Some(Ok(line)) => session.handle_line(&line).await,
                            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                                tracing::warn!("a client message exceeds {} bytes; refused", self.config.max_message_bytes);
                                session.inbound.send_line(error_response(&Value::Null, PARSE_ERROR, "message too large").to_string());
                            }
                            Some(Err(LinesCodecError::Io(e))) => return Err(ProxyError::Io(e)),
                        },
                        Some(done) = session.tasks.join_next(), if !session.tasks.is_empty() => {
                            if let Err(e) = done && e.is_panic() {
                                tracing::error!("a relay task panicked");
                            }
                        }
                    }
                }
            };
            tokio::select! {
                r = work => r,
                () = shutdown => { tracing::debug!("shutting down"); Ok(()) }
            }
        };
        tracing::debug!("closing the remote session");
        session.tasks.abort_all();
        if let Some(remote) = session.remote.take() {
            remote.close().await;
        }
        drop(session);
        drop(inbound);
        // Everything queued for the client is written before returning (bounded: a task
        // that has not finished aborting may still hold a sender).
        match tokio::time::timeout(std::time::Duration::from_secs(2), writer).await {
            Ok(Ok(Err(e))) if outcome.is_ok() && e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(ProxyError::Io(e));
            }
            _ => {}
        }
        outcome
    }
}

/// The dispatcher's state for one run.
struct Relay<'a> {
    proxy: &'a Proxy,
    inbound: Arc<Inbound>,
    remote: Option<Remote>,
    tasks: JoinSet<()>,
}

impl Relay<'_> {
    async fn handle_line(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let value: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "the client sent a line that is not JSON");
                self.inbound.send_line(
                    error_response(&Value::Null, PARSE_ERROR, "parse error").to_string(),
                );
                return;
            }
        };
        if let Value::Array(batch) = value {
            for msg in batch {
                let raw = msg.to_string();
                self.handle(msg, raw).await;
            }
        } else {
            self.handle(value, line.to_owned()).await;
        }
    }

    async fn handle(&mut self, msg: Value, raw: String) {
        let kind = classify(&msg);
        if let Kind::Request { id, method } = &kind {
            if method == "tools/call"
                && let Some(name) = msg.pointer("/params/name").and_then(Value::as_str)
                && self.inbound.filter().ignores(name)
            {
                tracing::info!(tool = name, "refused a call of an ignored tool");
                let answer = error_response(
                    msg.get("id").unwrap_or(&Value::Null),
                    INVALID_PARAMS,
                    &format!("tool {name:?} is not available (hidden by --ignore-tool)"),
                );
                self.inbound.send_line(answer.to_string());
                return;
            }
            if method == "tools/list" {
                self.inbound.expect_tools_list(id);
            }
        }
        let request_id = match kind {
            Kind::Request { .. } => msg.get("id").cloned(),
            _ => None,
        };
        let Some(remote) = self.remote.clone() else {
            // The first message picks the transport (and usually runs the authorization).
            let (remote, result) = self.select(&msg, &raw).await;
            self.remote = remote;
            if let Err(e) = result {
                self.fail(request_id.as_ref(), &e);
            }
            return;
        };
        match request_id {
            Some(id) => {
                let inbound = Arc::clone(&self.inbound);
                self.tasks.spawn(async move {
                    if let Err(e) = remote.send(&msg, &raw).await {
                        fail(&inbound, Some(&id), &e);
                    }
                });
            }
            None => {
                if let Err(e) = remote.send(&msg, &raw).await {
                    self.fail(None, &e);
                }
            }
        }
    }

    fn fail(&self, id: Option<&Value>, e: &SendError) {
        fail(&self.inbound, id, e);
    }

    fn streamable(&self) -> Arc<Streamable> {
        Arc::new(Streamable::new(
            self.proxy.http.clone(),
            self.proxy.config.url.clone(),
            self.proxy.headers.clone(),
            Arc::clone(&self.inbound),
        ))
    }

    fn legacy(&self) -> Arc<Legacy> {
        Arc::new(Legacy::new(
            self.proxy.http.clone(),
            self.proxy.config.url.clone(),
            self.proxy.headers.clone(),
            Arc::clone(&self.inbound),
        ))
    }

    /// Picks the transport by sending the first message (MCP's backwards-compatibility
    /// procedure). `None` when nothing worked: the next message tries again.
    async fn select(&self, msg: &Value, raw: &str) -> (Option<Remote>, Result<(), SendError>) {
        match self.proxy.config.transport {
            TransportStrategy::HttpOnly => {
                let s = self.streamable();
                let r = s.send(msg, raw).await;
                (Some(Remote::Http(s)), r)
            }
            TransportStrategy::SseOnly => {
                let l = self.legacy();
                match l.connect().await {
                    Ok(()) => {
                        let r = l.send(msg, raw).await;
                        (Some(Remote::Sse(l)), r)
                    }
                    Err(e) => (None, Err(e)),
                }
            }
            TransportStrategy::HttpFirst => {
                let s = self.streamable();
                match s.send(msg, raw).await {
                    Err(e) if matches!(e.status(), Some(400 | 404 | 405)) && !s.has_session() => {
                        tracing::info!(
                            status = e.status(),
                            "streamable HTTP refused; trying the HTTP+SSE transport"
                        );
                        let l = self.legacy();
                        match l.connect().await {
                            Ok(()) => {
                                let r = l.send(msg, raw).await;
                                (Some(Remote::Sse(l)), r)
                            }
                            Err(sse) => {
                                tracing::debug!(error = %sse, "HTTP+SSE failed too");
                                (None, Err(e))
                            }
                        }
                    }
                    r => (Some(Remote::Http(s)), r),
                }
            }
            TransportStrategy::SseFirst => {
                let l = self.legacy();
                match l.connect().await {
                    Ok(()) => {
                        let r = l.send(msg, raw).await;
                        (Some(Remote::Sse(l)), r)
                    }
                    Err(e) if e.status().is_some() => {
                        tracing::info!(
                            status = e.status(),
                            "no HTTP+SSE stream; trying streamable HTTP"
                        );
                        let s = self.streamable();
                        let r = s.send(msg, raw).await;
                        (Some(Remote::Http(s)), r)
                    }
                    Err(e) => (None, Err(e)),
                }
            }
        }
    }
}

/// Answers a failed request with a JSON-RPC error (the client must not wait forever); a
/// failed notification or response is only logged.
fn fail(inbound: &Inbound, id: Option<&Value>, e: &SendError) {
    match id {
        Some(id) => {
            tracing::warn!("a request failed: {e}");
            let answer = error_response(id, INTERNAL_ERROR, &format!("mcp-auth proxy: {e}"));
            inbound.send_line(answer.to_string());
        }
        None => tracing::warn!("a message could not be delivered: {e}"),
    }
}

/// Writes queued lines to the client, flushing whenever the queue is empty.
async fn write_lines<W: AsyncWrite + Unpin>(
    mut out: W,
    mut rx: mpsc::UnboundedReceiver<String>,
) -> std::io::Result<()> {
    while let Some(line) = rx.recv().await {
        out.write_all(line.as_bytes()).await?;
        out.write_all(b"\n").await?;
        if rx.is_empty() {
            out.flush().await?;
        }
    }
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_header_values() {
        let mut c = ProxyConfig::new(url::Url::parse("https://mcp.example.com/mcp").unwrap());
        c.headers = vec![("Authorization".into(), "Bearer s3cr3t-token".into())];
        let proxy = Proxy::new(
            c.clone(),
            reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).build(),
        )
        .unwrap();
        for shown in [format!("{c:?}"), format!("{proxy:?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("Authorization"), "{shown}");
        }
    }
}
