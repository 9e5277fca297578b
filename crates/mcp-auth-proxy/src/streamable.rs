//! The streamable HTTP transport (MCP 2025-03-26 and later): every client message is a POST;
//! answers come back as JSON or as an SSE stream scoped to the request (resumed with
//! `Last-Event-ID` when it breaks); server-initiated messages come on an optional GET
//! stream; `Mcp-Session-Id` is kept, a session the server dropped (404) is replaced by a new
//! one initialized with the client's own `initialize`, and the session is deleted at the end.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest_middleware::ClientWithMiddleware;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::error::{SendError, excerpt};
use crate::inbound::{Inbound, StreamCursor};
use crate::message::{Kind, classify, id_key, modern_headers, valid_session_id};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
/// How often a broken response stream is resumed before the request fails.
const RESUME_ATTEMPTS: u32 = 5;
/// Consecutive failures after which the GET stream is given up (the next POST that needs a
/// new session reopens it).
const GET_STREAM_FAILURES: u32 = 6;
/// Deadline of the DELETE at shutdown: the client is leaving, it must not wait long.
const DELETE_TIMEOUT: Duration = Duration::from_secs(3);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct Session {
    /// `Mcp-Session-Id` the server assigned.
    id: Option<String>,
    /// Bumped whenever a new session replaces the old one.
    generation: u64,
    /// The client's `initialize` request, replayed to open a replacement session.
    init: Option<Value>,
}

/// One remote server over streamable HTTP.
#[derive(Debug)]
pub(crate) struct Streamable {
    http: ClientWithMiddleware,
    url: url::Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    inbound: Arc<Inbound>,
    session: Mutex<Session>,
    reinit_lock: tokio::sync::Mutex<()>,
    get_task: Mutex<Option<JoinHandle<()>>>,
    internal_ids: AtomicU64,
}

impl Streamable {
    pub(crate) fn new(
        http: ClientWithMiddleware,
        url: url::Url,
        headers: Vec<(HeaderName, HeaderValue)>,
        inbound: Arc<Inbound>,
    ) -> Self {
        Self {
            http,
            url,
            headers,
            inbound,
            session: Mutex::new(Session::default()),
            reinit_lock: tokio::sync::Mutex::new(()),
            get_task: Mutex::new(None),
            internal_ids: AtomicU64::new(1),
        }
    }

    /// Whether the server has assigned a session.
    pub(crate) fn has_session(&self) -> bool {
        lock(&self.session).id.is_some()
    }

    fn request(
        &self,
        method: reqwest::Method,
        session: Option<&str>,
    ) -> reqwest_middleware::RequestBuilder {
        let mut req = self.http.request(method, self.url.clone());
        for (k, v) in &self.headers {
            req = req.header(k.clone(), v.clone());
        }
        if let Some(sid) = session {
            req = req.header(SESSION_HEADER, sid);
        }
        req
    }

    async fn post(
        &self,
        raw: &str,
        msg: &Value,
        session: Option<&str>,
    ) -> Result<reqwest::Response, SendError> {
        let mut req = self
            .request(reqwest::Method::POST, session)
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json");
        let modern = modern_headers(msg);
        if modern.is_empty() {
            if let Some(v) = self.inbound.protocol_version() {
                req = req.header(VERSION_HEADER, v);
            }
        } else {
            for (k, v) in modern {
                req = req.header(k, v);
            }
        }
        req.body(raw.to_owned())
            .send()
            .await
            .map_err(SendError::from_middleware)
    }

    /// Sends one client message and relays what comes back.
    pub(crate) async fn send(self: &Arc<Self>, msg: &Value, raw: &str) -> Result<(), SendError> {
        let kind = classify(msg);
        let (want, method) = match &kind {
            Kind::Request { id, method } => (Some(id.as_str()), method.as_str()),
            Kind::Notification { method } => (None, method.as_str()),
            _ => (None, ""),
        };
        let initialize = method == "initialize";
        if initialize {
            lock(&self.session).init = Some(msg.clone());
            if let Some(id) = want {
                self.inbound.expect_initialize(id);
            }
        }
        let mut retried = false;
        loop {
            let (sid, generation) = {
                let s = lock(&self.session);
                (if initialize { None } else { s.id.clone() }, s.generation)
            };
            let resp = self.post(raw, msg, sid.as_deref()).await?;
            let status = resp.status();
            if status == reqwest::StatusCode::NOT_FOUND && sid.is_some() && !retried {
                // MCP transport: 404 for a session id means the session is gone; the client
                // MUST start a new one. The local client never learns: its session goes on.
                retried = true;
                self.reinitialize(generation).await?;
                continue;
            }
            if initialize && status.is_success() {
                self.adopt_session(&resp);
            }
            self.consume(resp, want, sid.as_deref()).await?;
            if method == "notifications/initialized" {
                self.open_get_stream();
            }
            return Ok(());
        }
    }

    /// Takes the session id an `initialize` answer assigned.
    fn adopt_session(&self, resp: &reqwest::Response) {
        let sid = session_id_of(resp);
        let mut s = lock(&self.session);
        s.id = sid;
        s.generation += 1;
        self.stop_get_stream_locked();
    }

    fn stop_get_stream_locked(&self) {
        if let Some(t) = lock(&self.get_task).take() {
            t.abort();
        }
    }

    /// Relays a response: nothing for 202, the message(s) of a JSON body, or the events of
    /// an SSE stream (resumed when it breaks before the answer to `want`).
    async fn consume(
        &self,
        resp: reqwest::Response,
        want: Option<&str>,
        sid: Option<&str>,
    ) -> Result<(), SendError> {
        let status = resp.status();
        if status == reqwest::StatusCode::ACCEPTED || status == reqwest::StatusCode::NO_CONTENT {
            return Ok(());
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if status.is_success() && content_type.starts_with("text/event-stream") {
            return self.consume_stream(resp, want, sid).await;
        }
        let body = read_capped(resp, self.inbound.max_message).await?;
        if status.is_success() {
            if !body.is_empty()
                && !self
                    .inbound
                    .deliver_text(&String::from_utf8_lossy(&body), want)
                && want.is_some()
            {
                tracing::warn!("the server's JSON answer did not answer the request");
            }
            return Ok(());
        }
        // A JSON-RPC error may come with a 4xx status (the 2026-07-28 revision uses 400/404).
        if want.is_some()
            && serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.get("jsonrpc").is_some())
            && self
                .inbound
                .deliver_text(&String::from_utf8_lossy(&body), want)
        {
            return Ok(());
        }
        Err(SendError::Status {
            status: status.as_u16(),
            body: excerpt(&body, 200),
        })
    }

    async fn consume_stream(
        &self,
        resp: reqwest::Response,
        want: Option<&str>,
        sid: Option<&str>,
    ) -> Result<(), SendError> {
        let mut cursor = StreamCursor::default();
        let mut ignore = |_: &str, _: String| {};
        match self
            .inbound
            .pump_sse(resp, want, &mut cursor, &mut ignore)
            .await
        {
            Ok(true) => return Ok(()),
            Ok(false) if want.is_none() => return Ok(()),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "a response stream broke"),
        }
        // Resume: GET with the last event id (MCP transport, "Resumability and Redelivery").
        for attempt in 0..RESUME_ATTEMPTS {
            let Some(last) = cursor.last_event_id.clone() else {
                break;
            };
            tokio::time::sleep(cursor.retry).await;
            tracing::debug!(attempt, "resuming a response stream");
            let mut req = self
                .request(reqwest::Method::GET, sid)
                .header(ACCEPT, "text/event-stream")
                .header("last-event-id", last);
            if let Some(v) = self.inbound.protocol_version() {
                req = req.header(VERSION_HEADER, v);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %SendError::from_middleware(e), "resumption failed");
                    continue;
                }
            };
            if !resp.status().is_success() {
                tracing::debug!(
                    status = resp.status().as_u16(),
                    "the server refused to resume the stream"
                );
                break;
            }
            if let Ok(true) = self
                .inbound
                .pump_sse(resp, want, &mut cursor, &mut ignore)
                .await
            {
                return Ok(());
            }
        }
        Err(SendError::StreamLost)
    }

    /// Replaces a session the server dropped: the client's `initialize` again (answered
    /// here, not relayed), `notifications/initialized`, and a new GET stream. Concurrent
    /// callers that saw the same dropped session wait for one replacement.
    async fn reinitialize(self: &Arc<Self>, failed_generation: u64) -> Result<(), SendError> {
        let _one = self.reinit_lock.lock().await;
        let init = {
            let s = lock(&self.session);
            if s.generation != failed_generation {
                return Ok(());
            }
            s.init.clone()
        };
        let Some(mut init) = init else {
            return Err(SendError::Reinit("the client never sent initialize".into()));
        };
        tracing::warn!("the server ended the MCP session; initializing a new one");
        let n = self.internal_ids.fetch_add(1, Ordering::Relaxed);
        let id = json!(format!("mcp-auth-proxy-reinit-{n}"));
        let key = id_key(&id);
        init["id"] = id;
        let raw = init.to_string();
        let answer = self.inbound.internal_request(&key);
        let result = async {
            let resp = self.post(&raw, &init, None).await?;
            if !resp.status().is_success() {
                return Err(SendError::Status {
                    status: resp.status().as_u16(),
                    body: String::new(),
                });
            }
            let sid = session_id_of(&resp);
            self.consume(resp, Some(&key), None).await?;
            Ok(sid)
        }
        .await;
        let sid = match result {
            Ok(sid) => sid,
            Err(e) => {
                self.inbound.cancel_internal(&key);
                return Err(SendError::Reinit(e.to_string()));
            }
        };
        let answer = tokio::time::timeout(Duration::from_secs(30), answer)
            .await
            .map_err(|_| SendError::Reinit("no answer to initialize".into()))?
            .map_err(|_| SendError::Reinit("no answer to initialize".into()))?;
        if let Some(err) = answer.get("error") {
            return Err(SendError::Reinit(format!("initialize failed: {err}")));
        }
        {
            let mut s = lock(&self.session);
            s.id = sid.clone();
            s.generation += 1;
            self.stop_get_stream_locked();
        }
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let resp = self.post(&note.to_string(), &note, sid.as_deref()).await?;
        self.consume(resp, None, sid.as_deref()).await?;
        self.open_get_stream();
        Ok(())
    }

    /// Opens the GET stream for server-initiated messages (optional for servers: 405 means
    /// there is none), reconnecting with `Last-Event-ID` when it ends.
    fn open_get_stream(self: &Arc<Self>) {
        let (sid, generation) = {
            let s = lock(&self.session);
            (s.id.clone(), s.generation)
        };
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let mut cursor = StreamCursor::default();
            let mut failures = 0u32;
            let mut ignore = |_: &str, _: String| {};
            loop {
                if lock(&this.session).generation != generation {
                    return;
                }
                let mut req = this
                    .request(reqwest::Method::GET, sid.as_deref())
                    .header(ACCEPT, "text/event-stream");
                if let Some(v) = this.inbound.protocol_version() {
                    req = req.header(VERSION_HEADER, v);
                }
                if let Some(last) = &cursor.last_event_id {
                    req = req.header("last-event-id", last.clone());
                }
                match req.send().await {
                    Ok(resp) if resp.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED => {
                        tracing::debug!(
                            "the server offers no stream for server-initiated messages"
                        );
                        return;
                    }
                    Ok(resp) if resp.status().is_success() => {
                        failures = 0;
                        match this
                            .inbound
                            .pump_sse(resp, None, &mut cursor, &mut ignore)
                            .await
                        {
                            Ok(_) => tracing::debug!("the server closed its message stream"),
                            Err(e) => {
                                tracing::debug!(error = %e, "the server's message stream broke")
                            }
                        }
                    }
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        tracing::debug!(status, "the server refused the message stream");
                        if matches!(status, 400 | 401 | 403 | 404) {
                            return;
                        }
                        failures += 1;
                    }
                    Err(e) => {
                        tracing::debug!(error = %SendError::from_middleware(e), "cannot open the message stream");
                        failures += 1;
                    }
                }
                if failures >= GET_STREAM_FAILURES {
                    tracing::warn!("gave up the server's message stream after {failures} failures");
                    return;
                }
                let backoff = cursor.retry * 2u32.pow(failures.min(5));
                tokio::time::sleep(backoff.min(Duration::from_secs(30))).await;
            }
        });
        let mut slot = lock(&self.get_task);
        if let Some(old) = slot.replace(task) {
            old.abort();
        }
    }

    /// Ends the session: stops the GET stream and DELETEs the session (servers that do not
    /// allow it answer 405, which is fine).
    pub(crate) async fn close(&self) {
        self.stop_get_stream_locked();
        let sid = lock(&self.session).id.take();
        if let Some(sid) = sid {
            let req = self.request(reqwest::Method::DELETE, Some(&sid));
            match tokio::time::timeout(DELETE_TIMEOUT, req.send()).await {
                Ok(Ok(resp)) => {
                    tracing::debug!(status = resp.status().as_u16(), "deleted the MCP session")
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %SendError::from_middleware(e), "could not delete the MCP session")
                }
                Err(_) => tracing::debug!("deleting the MCP session timed out"),
            }
        }
    }
}

/// The `Mcp-Session-Id` a response assigns, when it is a usable header value.
fn session_id_of(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| valid_session_id(s))
        .map(str::to_owned)
}

/// Reads a body up to `cap` bytes.
pub(crate) async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, SendError> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| SendError::Http(format!("reading the answer: {}", e.without_url())))?;
        if out.len() + chunk.len() > cap {
            return Err(SendError::Http(format!("the answer exceeds {cap} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
