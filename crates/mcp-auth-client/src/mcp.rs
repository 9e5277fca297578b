//! A small MCP client over streamable HTTP, enough to test a server and to drive the
//! conformance suite: both wire formats, JSON and SSE responses, sessions.
//!
//! - 2025-11-25 (and 2025-06-18/03-26): `initialize` → `notifications/initialized`, an
//!   optional `Mcp-Session-Id`, `MCP-Protocol-Version` on later requests, answers as JSON or
//!   as an SSE stream scoped to the request.
//! - 2026-07-28 (stateless): no handshake; every request carries
//!   `_meta["io.modelcontextprotocol/protocolVersion"]`, client info and capabilities, the
//!   `MCP-Protocol-Version` header equal to it, and `Mcp-Method` / `Mcp-Name`.
//!
//! With [`WireFormat::Auto`] the session first speaks 2026-07-28 (`server/discover`) and falls
//! back to the `initialize` handshake when the server does not know that revision.

use std::sync::atomic::{AtomicI64, Ordering};

use futures_util::StreamExt as _;
use reqwest_middleware::ClientWithMiddleware;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::error::{Error, Result, Step, sanitize};

/// The newest protocol revision this helper speaks.
pub const LATEST_PROTOCOL_VERSION: &str = "2026-07-28";
/// The newest revision with the `initialize` handshake.
pub const SESSION_PROTOCOL_VERSION: &str = "2025-11-25";

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// Which wire format to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireFormat {
    /// Try 2026-07-28, fall back to the handshake.
    #[default]
    Auto,
    /// 2026-07-28 only.
    Stateless,
    /// The `initialize` handshake only (2025-11-25 and older).
    Session,
}

#[derive(Debug, Default)]
struct State {
    /// Negotiated: `Some(true)` stateless, `Some(false)` session.
    stateless: Option<bool>,
    protocol_version: Option<String>,
    session_id: Option<String>,
    server: Option<Value>,
}

/// One MCP connection to a streamable-HTTP endpoint.
#[derive(Debug)]
pub struct McpSession {
    http: ClientWithMiddleware,
    url: String,
    headers: Vec<(String, String)>,
    format: WireFormat,
    max_body: usize,
    next_id: AtomicI64,
    state: Mutex<State>,
}

/// A JSON-RPC answer to one request.
enum Outcome {
    Result(Value),
    Error { code: i64, message: String },
}

impl McpSession {
    /// A session over `http` (usually a client with [`crate::OAuthMiddleware`]).
    pub fn new(http: ClientWithMiddleware, url: impl Into<String>) -> Self {
        Self {
            http,
            url: url.into(),
            headers: Vec::new(),
            format: WireFormat::Auto,
            max_body: 16 * 1024 * 1024,
            next_id: AtomicI64::new(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Pins the wire format.
    pub fn wire_format(mut self, f: WireFormat) -> Self {
        self.format = f;
        self
    }

    /// Extra headers on every request.
    pub fn headers(mut self, h: Vec<(String, String)>) -> Self {
        self.headers = h;
        self
    }

    fn meta() -> Value {
        json!({
            META_VERSION: LATEST_PROTOCOL_VERSION,
            META_CLIENT_INFO: {"name": "mcp-auth", "version": env!("CARGO_PKG_VERSION")},
            META_CAPABILITIES: {},
        })
    }

    /// Connects: negotiates the wire format and returns what the server said about itself
    /// (the `server/discover` or `initialize` result).
    pub async fn connect(&self) -> Result<Value> {
        let mut st = self.state.lock().await;
        self.connect_locked(&mut st).await
    }

    async fn connect_locked(&self, st: &mut State) -> Result<Value> {
        if let Some(s) = &st.server {
            return Ok(s.clone());
        }
        if self.format != WireFormat::Session {
            match self.send(st, true, "server/discover", json!({})).await {
                Ok(Outcome::Result(v)) => {
                    st.stateless = Some(true);
                    st.protocol_version = Some(LATEST_PROTOCOL_VERSION.into());
                    st.server = Some(v.clone());
                    return Ok(v);
                }
                Ok(Outcome::Error { code, message }) if self.format == WireFormat::Stateless => {
                    return Err(Error::JsonRpc { code, message });
                }
                Err(e) if self.format == WireFormat::Stateless || !is_version_refusal(&e) => {
                    return Err(e);
                }
                other => {
                    tracing::debug!(
                        refused = matches!(other, Ok(Outcome::Error { .. }) | Err(_)),
                        "server does not speak {LATEST_PROTOCOL_VERSION}; using the initialize handshake"
                    );
                }
            }
        }
        let params = json!({
            "protocolVersion": SESSION_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-auth", "version": env!("CARGO_PKG_VERSION")},
        });
        st.stateless = Some(false);
        st.session_id = None;
        st.protocol_version = None;
        let result = match self.send(st, false, "initialize", params).await? {
            Outcome::Result(v) => v,
            Outcome::Error { code, message } => return Err(Error::JsonRpc { code, message }),
        };
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(SESSION_PROTOCOL_VERSION)
            .to_owned();
        st.protocol_version = Some(version);
        self.notify_locked(st, "notifications/initialized", json!({}))
            .await?;
        st.server = Some(result.clone());
        Ok(result)
    }

    /// Sends a request and returns its result (connecting first if needed). A session the
    /// server has forgotten (404 with a session id) is re-initialized once.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value> {
        let mut st = self.state.lock().await;
        self.connect_locked(&mut st).await?;
        let stateless = st.stateless == Some(true);
        let outcome = match self.send(&mut st, stateless, method, params.clone()).await {
            Err(Error::Status { status: 404, .. }) if st.session_id.is_some() => {
                tracing::info!("the server dropped the MCP session; initializing again");
                st.server = None;
                st.session_id = None;
                self.connect_locked(&mut st).await?;
                self.send(&mut st, stateless, method, params).await?
            }
            other => other?,
        };
        match outcome {
            Outcome::Result(v) => Ok(v),
            Outcome::Error { code, message } => Err(Error::JsonRpc { code, message }),
        }
    }

    /// `tools/list` (first page).
    pub async fn list_tools(&self) -> Result<Vec<Value>> {
        let r = self.request("tools/list", json!({})).await?;
        Ok(r.get("tools")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// `tools/call`.
    pub async fn call_tool(&self, name: &str, arguments: Value) -> Result<Value> {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))
            .await
    }

    /// Ends the session (`DELETE` with the session id), when there is one.
    pub async fn close(&self) -> Result<()> {
        let st = self.state.lock().await;
        if let Some(id) = &st.session_id {
            let mut req = self.http.delete(&self.url).header("Mcp-Session-Id", id);
            for (k, v) in &self.headers {
                req = req.header(k, v);
            }
            let _ = req.send().await;
        }
        Ok(())
    }

    async fn notify_locked(&self, st: &mut State, method: &str, params: Value) -> Result<()> {
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params});
        let resp = self.post(st, false, method, None, &body).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = crate::http::read_capped(Step::Mcp, &self.url, resp, 4096)
                .await
                .unwrap_or_default();
            return Err(Error::Status {
                step: Step::Mcp,
                url: self.url.clone(),
                status: status.as_u16(),
                body: sanitize(&String::from_utf8_lossy(&body), 200),
            });
        }
        Ok(())
    }

    async fn post(
        &self,
        st: &State,
        stateless: bool,
        method: &str,
        name: Option<&str>,
        body: &Value,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .post(&self.url)
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header(http::header::CONTENT_TYPE, "application/json");
        if stateless {
            req = req
                .header("MCP-Protocol-Version", LATEST_PROTOCOL_VERSION)
                .header("Mcp-Method", method);
            if let Some(n) = name {
                req = req.header("Mcp-Name", n);
            }
        } else {
            if let Some(v) = &st.protocol_version {
                req = req.header("MCP-Protocol-Version", v);
            }
            if let Some(id) = &st.session_id {
                req = req.header("Mcp-Session-Id", id);
            }
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let bytes = serde_json::to_vec(body).map_err(|e| Error::Config(e.to_string()))?;
        req.body(bytes)
            .send()
            .await
            .map_err(|e| from_middleware(e, &self.url))
    }

    async fn send(
        &self,
        st: &mut State,
        stateless: bool,
        method: &str,
        mut params: Value,
    ) -> Result<Outcome> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if stateless && let Some(obj) = params.as_object_mut() {
            obj.insert("_meta".into(), Self::meta());
        }
        let name = match method {
            "tools/call" | "prompts/get" => params.get("name").and_then(Value::as_str),
            "resources/read" => params.get("uri").and_then(Value::as_str),
            _ => None,
        }
        .map(str::to_owned);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let resp = self
            .post(st, stateless, method, name.as_deref(), &body)
            .await?;
        let status = resp.status();
        if let Some(sid) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            && method == "initialize"
        {
            if sid.is_empty() || sid.chars().any(|c| !(' '..='~').contains(&c)) {
                return Err(Error::InvalidResponse {
                    step: Step::Mcp,
                    url: self.url.clone(),
                    message: "Mcp-Session-Id has characters outside visible ASCII".into(),
                });
            }
            st.session_id = Some(sid.to_owned());
        }
        let is_sse = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if is_sse && status.is_success() {
            return self.read_sse(resp, id).await;
        }
        let bytes = crate::http::read_capped(Step::Mcp, &self.url, resp, self.max_body).await?;
        // A JSON-RPC error may come with a 4xx status (2026-07-28 uses 400/404 for them).
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes)
            && let Some(o) = outcome_for(&v, id)
        {
            return Ok(o);
        }
        if !status.is_success() {
            return Err(Error::Status {
                step: Step::Mcp,
                url: self.url.clone(),
                status: status.as_u16(),
                body: sanitize(&String::from_utf8_lossy(&bytes), 200),
            });
        }
        Err(Error::InvalidResponse {
            step: Step::Mcp,
            url: self.url.clone(),
            message: format!("no JSON-RPC response with id {id}"),
        })
    }

    async fn read_sse(&self, resp: reqwest::Response, id: i64) -> Result<Outcome> {
        let limit = self.max_body;
        let mut seen = 0usize;
        let url = self.url.clone();
        let bytes = resp.bytes_stream().map(move |chunk| {
            if let Ok(c) = &chunk {
                seen += c.len();
                if seen > limit {
                    return Err(std::io::Error::other("SSE stream exceeds the size limit"));
                }
            }
            chunk.map_err(std::io::Error::other)
        });
        let mut events = sse_stream::SseStream::from_bytes_stream(bytes);
        while let Some(ev) = events.next().await {
            let ev = ev.map_err(|e| Error::InvalidResponse {
                step: Step::Mcp,
                url: url.clone(),
                message: format!("SSE stream: {e}"),
            })?;
            let Some(data) = ev.data.filter(|d| !d.is_empty()) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&data) else {
                tracing::debug!("skipped an SSE event that is not JSON");
                continue;
            };
            if let Some(o) = outcome_for(&v, id) {
                return Ok(o);
            }
            let method = v.get("method").and_then(Value::as_str).unwrap_or("");
            tracing::debug!(method, "skipped a server message on the request stream");
        }
        Err(Error::InvalidResponse {
            step: Step::Mcp,
            url,
            message: format!("the SSE stream ended without a response to request {id}"),
        })
    }

    /// Whether the negotiated format is stateless (after [`Self::connect`]).
    pub async fn is_stateless(&self) -> Option<bool> {
        self.state.lock().await.stateless
    }
}

/// The JSON-RPC response with `id` in a message or batch.
fn outcome_for(v: &Value, id: i64) -> Option<Outcome> {
    if let Some(arr) = v.as_array() {
        return arr.iter().find_map(|m| outcome_for(m, id));
    }
    if v.get("id").and_then(Value::as_i64) != Some(id) {
        // 2026-07-28 transport errors carry no id; accept an id-less error as ours.
        if v.get("id").is_none_or(Value::is_null)
            && v.get("jsonrpc").is_some()
            && let Some(e) = v.get("error").filter(|e| e.is_object())
        {
            return Some(error_outcome(e));
        }
        return None;
    }
    if let Some(r) = v.get("result") {
        return Some(Outcome::Result(r.clone()));
    }
    v.get("error").map(error_outcome)
}

fn error_outcome(e: &Value) -> Outcome {
    Outcome::Error {
        code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
        message: sanitize(e.get("message").and_then(Value::as_str).unwrap_or(""), 300),
    }
}

/// Whether an error from a 2026-07-28 attempt means "this server speaks an older revision".
fn is_version_refusal(e: &Error) -> bool {
    matches!(
        e,
        Error::Status {
            status: 400 | 404 | 405 | 406 | 415 | 422,
            ..
        } | Error::InvalidResponse { .. }
    )
}

/// Unwraps a middleware error back into ours.
pub(crate) fn from_middleware(e: reqwest_middleware::Error, url: &str) -> Error {
    match e {
        reqwest_middleware::Error::Reqwest(source) => Error::Network {
            step: Step::Mcp,
            url: url.to_owned(),
            source,
        },
        reqwest_middleware::Error::Middleware(any) => match any.downcast::<Error>() {
            Ok(e) => e,
            Err(other) => Error::Config(format!("HTTP middleware: {other}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_response_by_id() {
        let v = json!([{"jsonrpc":"2.0","method":"notifications/progress"},{"jsonrpc":"2.0","id":3,"result":{"ok":true}}]);
        assert!(matches!(outcome_for(&v, 3), Some(Outcome::Result(_))));
        assert!(outcome_for(&v, 4).is_none());
        let e = json!({"jsonrpc":"2.0","id":null,"error":{"code":-32020,"message":"Missing\u{1b} header"}});
        match outcome_for(&e, 9) {
            Some(Outcome::Error { code, message }) => {
                assert_eq!(code, -32020);
                assert!(!message.contains('\u{1b}'));
            }
            _ => panic!("expected an error"),
        }
    }
}
