//! The HTTP+SSE transport of MCP 2024-11-05, for servers that only have that: a GET opens an
//! SSE stream whose first `endpoint` event names where to POST messages; every answer and
//! server message comes on the stream. When the stream ends the proxy reconnects and, if
//! the client had initialized, initializes the new connection with the client's own
//! `initialize` (answered here, not relayed).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest_middleware::ClientWithMiddleware;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{SendError, excerpt};
use crate::inbound::{Inbound, StreamCursor};
use crate::message::{Kind, classify, id_key};
use crate::streamable::read_capped;

/// How long a message waits for the stream to name its endpoint.
const ENDPOINT_WAIT: Duration = Duration::from_secs(30);
/// Reconnection attempts after the stream ends, before giving up.
const RECONNECTS: u32 = 6;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One remote server over HTTP+SSE.
#[derive(Debug)]
pub(crate) struct Legacy {
    http: ClientWithMiddleware,
    url: url::Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    inbound: Arc<Inbound>,
    /// The current POST endpoint (`None` while connecting or disconnected), or why the one
    /// the server named was refused.
    endpoint: watch::Sender<Option<Result<url::Url, String>>>,
    init: Mutex<Option<Value>>,
    task: Mutex<Option<JoinHandle<()>>>,
    internal_ids: AtomicU64,
}

/// The endpoint an `endpoint` event names, resolved against the stream's URL. Only the
/// stream's own origin is accepted: the messages carry the user's token.
pub(crate) fn resolve_endpoint(base: &url::Url, data: &str) -> Result<url::Url, String> {
    let u = base.join(data.trim()).map_err(|e| {
        format!(
            "endpoint {:?} is not a URL: {e}",
            excerpt(data.as_bytes(), 100)
        )
    })?;
    if u.origin() != base.origin() {
        return Err(format!(
            "endpoint on another origin ({}) refused: the token is only sent to {}",
            u.origin().ascii_serialization(),
            base.origin().ascii_serialization()
        ));
    }
    Ok(u)
}

impl Legacy {
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
            endpoint: watch::Sender::new(None),
            init: Mutex::new(None),
            task: Mutex::new(None),
            internal_ids: AtomicU64::new(1),
        }
    }

    async fn open(&self) -> Result<reqwest::Response, SendError> {
        let mut req = self
            .http
            .get(self.url.clone())
            .header(ACCEPT, "text/event-stream");
        for (k, v) in &self.headers {
            req = req.header(k.clone(), v.clone());
        }
        let resp = req.send().await.map_err(SendError::from_middleware)?;
        let status = resp.status();
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
        if !status.is_success() || !is_sse {
            let body = read_capped(resp, 4096).await.unwrap_or_default();
            return Err(SendError::Status {
                status: if status.is_success() {
                    415
                } else {
                    status.as_u16()
                },
                body: if is_sse {
                    excerpt(&body, 200)
                } else {
                    "not an SSE stream".into()
                },
            });
        }
        Ok(resp)
    }

    /// Opens the stream and waits for its endpoint.
    pub(crate) async fn connect(self: &Arc<Self>) -> Result<(), SendError> {
        let resp = self.open().await?;
        let this = Arc::clone(self);
        let task = tokio::spawn(async move { this.read_loop(resp).await });
        if let Some(old) = lock(&self.task).replace(task) {
            old.abort();
        }
        match self.wait_endpoint().await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Nothing will use this stream: stop reading (and reconnecting) it.
                self.close();
                Err(e)
            }
        }
    }

    async fn wait_endpoint(&self) -> Result<url::Url, SendError> {
        let mut rx = self.endpoint.subscribe();
        let got = tokio::time::timeout(ENDPOINT_WAIT, rx.wait_for(Option::is_some)).await;
        match got {
            Ok(Ok(ep)) => match ep.clone() {
                Some(Ok(u)) => Ok(u),
                Some(Err(refused)) => Err(SendError::NoEndpoint(refused)),
                None => Err(SendError::NoEndpoint("disconnected".into())),
            },
            Ok(Err(_)) => Err(SendError::NoEndpoint("the stream is closed".into())),
            Err(_) => Err(SendError::NoEndpoint(format!(
                "none within {} s",
                ENDPOINT_WAIT.as_secs()
            ))),
        }
    }

    /// Reads the stream; reconnects when it ends, and re-initializes the new connection.
    async fn read_loop(self: Arc<Self>, first: reqwest::Response) {
        let mut resp = Some(first);
        let mut failures = 0u32;
        loop {
            if let Some(r) = resp.take() {
                let mut cursor = StreamCursor::default();
                let endpoint = &self.endpoint;
                let base = self.url.clone();
                let mut on_named = |event: &str, data: String| {
                    if event == "endpoint" {
                        match resolve_endpoint(&base, &data) {
                            Ok(u) => {
                                tracing::debug!("the server's message endpoint arrived");
                                endpoint.send_replace(Some(Ok(u)));
                            }
                            Err(e) => {
                                tracing::warn!("{e}");
                                endpoint.send_replace(Some(Err(e)));
                            }
                        }
                    }
                };
                match self
                    .inbound
                    .pump_sse(r, None, &mut cursor, &mut on_named)
                    .await
                {
                    Ok(_) => tracing::debug!("the server closed the SSE stream"),
                    Err(e) => tracing::debug!(error = %e, "the SSE stream broke"),
                }
                self.endpoint.send_replace(None);
            }
            if failures >= RECONNECTS {
                tracing::warn!("gave up reconnecting to the server's SSE stream");
                return;
            }
            tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(failures.min(5))).await;
            match self.open().await {
                Ok(r) => {
                    failures = 0;
                    resp = Some(r);
                    if lock(&self.init).is_some() {
                        let this = Arc::clone(&self);
                        tokio::spawn(async move {
                            if let Err(e) = this.reinitialize().await {
                                tracing::warn!("{e}");
                            }
                        });
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reconnecting to the SSE stream failed");
                    failures += 1;
                }
            }
        }
    }

    async fn reinitialize(&self) -> Result<(), SendError> {
        let Some(mut init) = lock(&self.init).clone() else {
            return Ok(());
        };
        tracing::warn!("the server's SSE stream ended; initializing a new connection");
        let n = self.internal_ids.fetch_add(1, Ordering::Relaxed);
        let id = json!(format!("mcp-auth-proxy-reinit-{n}"));
        let key = id_key(&id);
        init["id"] = id;
        let answer = self.inbound.internal_request(&key);
        if let Err(e) = self.post(&init.to_string()).await {
            self.inbound.cancel_internal(&key);
            return Err(SendError::Reinit(e.to_string()));
        }
        let answer = tokio::time::timeout(ENDPOINT_WAIT, answer)
            .await
            .map_err(|_| SendError::Reinit("no answer to initialize".into()))?
            .map_err(|_| SendError::Reinit("no answer to initialize".into()))?;
        if let Some(err) = answer.get("error") {
            return Err(SendError::Reinit(format!("initialize failed: {err}")));
        }
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.post(&note.to_string()).await
    }

    async fn post(&self, raw: &str) -> Result<(), SendError> {
        let endpoint = self.wait_endpoint().await?;
        let mut req = self
            .http
            .post(endpoint)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream");
        for (k, v) in &self.headers {
            req = req.header(k.clone(), v.clone());
        }
        let resp = req
            .body(raw.to_owned())
            .send()
            .await
            .map_err(SendError::from_middleware)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = read_capped(resp, 4096).await.unwrap_or_default();
        Err(SendError::Status {
            status: status.as_u16(),
            body: excerpt(&body, 200),
        })
    }

    /// Sends one client message; answers arrive on the stream.
    pub(crate) async fn send(&self, msg: &Value, raw: &str) -> Result<(), SendError> {
        if let Kind::Request { id, method } = classify(msg)
            && method == "initialize"
        {
            *lock(&self.init) = Some(msg.clone());
            self.inbound.expect_initialize(&id);
        }
        self.post(raw).await
    }

    /// Stops reading the stream.
    pub(crate) fn close(&self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_stay_on_the_stream_origin() {
        let base = url::Url::parse("https://mcp.example.com/sse").unwrap();
        assert_eq!(
            resolve_endpoint(&base, "/messages?session=1")
                .unwrap()
                .as_str(),
            "https://mcp.example.com/messages?session=1"
        );
        assert_eq!(
            resolve_endpoint(&base, "https://mcp.example.com/m")
                .unwrap()
                .as_str(),
            "https://mcp.example.com/m"
        );
        assert!(resolve_endpoint(&base, "https://evil.example/m").is_err());
        assert!(resolve_endpoint(&base, "//evil.example/m").is_err());
        assert!(resolve_endpoint(&base, "http://mcp.example.com/m").is_err());
    }
}
