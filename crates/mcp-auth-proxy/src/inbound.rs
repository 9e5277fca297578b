//! Messages from the server on their way to the local client: every path (JSON bodies, SSE
//! streams of either transport) ends in [`Inbound::deliver_text`], which answers the proxy's
//! own requests, learns the negotiated revision, applies `--ignore-tool`, and queues one
//! line per message for stdout.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::filter::ToolFilter;
use crate::message::{Kind, classify, frame, negotiated_version, split_batch};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// State shared by the transports and the dispatcher.
#[derive(Debug)]
pub(crate) struct Inbound {
    out: mpsc::UnboundedSender<String>,
    filter: ToolFilter,
    /// Ids of the client's `tools/list` requests whose answers get filtered.
    tools_list: Mutex<HashSet<String>>,
    /// The proxy's own requests (re-initialisation), answered here, never forwarded.
    internal: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// Ids of the client's `initialize` requests.
    init_ids: Mutex<HashSet<String>>,
    /// The revision the last `initialize` negotiated.
    protocol_version: Mutex<Option<String>>,
    /// Largest message accepted from the server.
    pub(crate) max_message: usize,
}

impl Inbound {
    pub(crate) fn new(
        out: mpsc::UnboundedSender<String>,
        filter: ToolFilter,
        max_message: usize,
    ) -> Self {
        Self {
            out,
            filter,
            tools_list: Mutex::new(HashSet::new()),
            internal: Mutex::new(HashMap::new()),
            init_ids: Mutex::new(HashSet::new()),
            protocol_version: Mutex::new(None),
            max_message,
        }
    }

    /// Queues a line for the client.
    pub(crate) fn send_line(&self, line: String) {
        // The writer is gone only when stdout closed; the dispatcher notices and stops.
        let _ = self.out.send(line);
    }

    /// Watches for the answer to the client's `tools/list` request `id`.
    pub(crate) fn expect_tools_list(&self, id: &str) {
        if !self.filter.is_empty() {
            lock(&self.tools_list).insert(id.to_owned());
        }
    }

    /// Watches for the answer to the client's `initialize` request `id`.
    pub(crate) fn expect_initialize(&self, id: &str) {
        lock(&self.init_ids).insert(id.to_owned());
    }

    /// Registers one of the proxy's own requests; its answer goes to the receiver.
    pub(crate) fn internal_request(&self, id: &str) -> oneshot::Receiver<Value> {
        let (tx, rx) = oneshot::channel();
        lock(&self.internal).insert(id.to_owned(), tx);
        rx
    }

    /// Forgets an internal request that will not be answered.
    pub(crate) fn cancel_internal(&self, id: &str) {
        lock(&self.internal).remove(id);
    }

    /// The revision negotiated by the last `initialize`, if any.
    pub(crate) fn protocol_version(&self) -> Option<String> {
        lock(&self.protocol_version).clone()
    }

    pub(crate) fn filter(&self) -> &ToolFilter {
        &self.filter
    }

    /// Delivers the message(s) in `text` (one message or a batch); returns whether one of
    /// them answered the request whose id key is `want`. Text that is not JSON is dropped
    /// with a warning: the client could do nothing with it.
    pub(crate) fn deliver_text(&self, text: &str, want: Option<&str>) -> bool {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return false;
        }
        let value: Value = match serde_json::from_str(trimmed) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, bytes = trimmed.len(), "dropped a server message that is not JSON");
                return false;
            }
        };
        let batch = value.is_array();
        let mut answered = false;
        for msg in split_batch(value) {
            let raw = (!batch).then_some(trimmed);
            answered |= self.deliver(msg, raw, want);
        }
        answered
    }

    fn deliver(&self, mut msg: Value, raw: Option<&str>, want: Option<&str>) -> bool {
        let kind = classify(&msg);
        let mut answered = false;
        if let Kind::Response { id } = &kind {
            answered = want == Some(id.as_str());
            if let Some(tx) = lock(&self.internal).remove(id) {
                let _ = tx.send(msg);
                return answered;
            }
            if lock(&self.init_ids).remove(id)
                && let Some(v) = negotiated_version(&msg)
            {
                *lock(&self.protocol_version) = Some(v.to_owned());
            }
            if lock(&self.tools_list).remove(id) {
                let hidden = self.filter.filter_list_response(&mut msg);
                if hidden > 0 {
                    tracing::debug!(hidden, "hid tools matching --ignore-tool");
                    self.send_line(frame(None, &msg));
                    return answered;
                }
            }
        }
        match &kind {
            Kind::Request { method, .. } => tracing::debug!(%method, "server → client request"),
            Kind::Notification { method } => {
                tracing::debug!(%method, "server → client notification")
            }
            _ => {}
        }
        self.send_line(frame(raw, &msg));
        answered
    }

    /// Reads an SSE response, delivering each event's data. Remembers the last event id and
    /// the server's `retry` for resumption. Returns `Ok(true)` as soon as the answer to
    /// `want` was delivered (the server closes the stream after it), `Ok(false)` when the
    /// stream ended without it, `Err` when it broke. Named events other than `message` (the old
    /// transport's `endpoint`) go to `on_named`.
    pub(crate) async fn pump_sse(
        &self,
        resp: reqwest::Response,
        want: Option<&str>,
        cursor: &mut StreamCursor,
        on_named: &mut (dyn FnMut(&str, String) + Send),
    ) -> Result<bool, String> {
        let limit = self.max_message;
        let mut pending = 0usize;
        let bytes = resp.bytes_stream().map(move |chunk| {
            if let Ok(c) = &chunk {
                // Bounds one event's size, not the stream's: a long-lived stream may carry
                // any number of events.
                pending = if c.contains(&b'\n') {
                    0
                } else {
                    pending + c.len()
                };
                if pending > limit {
                    return Err(std::io::Error::other("an SSE event exceeds the size limit"));
                }
            }
            chunk.map_err(std::io::Error::other)
        });
        let mut events = sse_stream::SseStream::from_bytes_stream(bytes);
        while let Some(ev) = events.next().await {
            let ev = ev.map_err(|e| e.to_string())?;
            if let Some(id) = ev.id.as_ref() {
                cursor.last_event_id = (!id.is_empty()).then(|| id.clone());
            }
            if let Some(ms) = ev.retry {
                cursor.retry = Duration::from_millis(ms.clamp(100, 60_000));
            }
            if let Some(event) = ev.event.as_deref()
                && event != "message"
            {
                on_named(event, ev.data.unwrap_or_default());
                continue;
            }
            let Some(data) = ev.data else { continue };
            if self.deliver_text(&data, want) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Where an SSE stream stopped, for resuming it: `Last-Event-ID` and the `retry` delay.
#[derive(Debug)]
pub(crate) struct StreamCursor {
    pub(crate) last_event_id: Option<String>,
    pub(crate) retry: Duration,
}

impl Default for StreamCursor {
    fn default() -> Self {
        Self {
            last_event_id: None,
            retry: Duration::from_secs(1),
        }
    }
}
