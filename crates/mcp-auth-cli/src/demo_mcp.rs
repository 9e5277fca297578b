//! The demo MCP server behind `mcp-auth serve`'s resource layer, over streamable HTTP:
//! `initialize` (2025-11-25 and older) with an `Mcp-Session-Id`, `server/discover`
//! (2026-07-28, no session), `ping`, `tools/list`, and the tools `echo`, `whoami` and
//! `notify` (a server-to-client `notifications/message` on the request's SSE stream, then
//! the result).
//!
//! Sessions live in memory: a restart forgets them, and a client sending a forgotten
//! session id gets 404, as the transport spec says, and must initialize again. Requests
//! without a session id are served too (stateless clients, benchmarks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mcp_auth_resource::{Authenticated, ProtectedLayer};
use mcp_auth_server::upstream::UpstreamAccess;
use serde_json::{Value, json};

const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// Sessions kept at most; the least recently used goes first.
const MAX_SESSIONS: usize = 10_000;
/// A session unused this long is forgotten.
const SESSION_IDLE: Duration = Duration::from_secs(3600);
const SESSION_HEADER: &str = "mcp-session-id";

/// Live sessions and when each was last used.
#[derive(Clone, Default)]
struct Sessions(Arc<Mutex<HashMap<String, Instant>>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn create(&self) -> String {
        let id = mcp_auth_server::handlers::random_token();
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, used| now.duration_since(*used) < SESSION_IDLE);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(id.clone(), now);
        id
    }

    /// Marks `id` used; false when it is unknown (or expired).
    fn touch(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut map = self.lock();
        match map.get_mut(id) {
            Some(used) if now.duration_since(*used) < SESSION_IDLE => {
                *used = now;
                true
            }
            Some(_) => {
                map.remove(id);
                false
            }
            None => false,
        }
    }

    fn end(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }
}

/// The demo endpoint at `path`, each of its handlers protected by `protection`; `upstream`:
/// users log in through upstream providers, so the `upstream_profile` tool is offered.
pub fn router(path: &str, protection: ProtectedLayer, upstream: bool) -> axum::Router {
    axum::Router::new()
        .route(
            path,
            post(protection.clone().protect(mcp_endpoint))
                .get(protection.clone().protect(method_not_allowed))
                .delete(protection.protect(end_session)),
        )
        .with_state(Demo {
            sessions: Sessions::default(),
            upstream,
        })
}

/// The endpoint's state.
#[derive(Clone)]
struct Demo {
    sessions: Sessions,
    upstream: bool,
}

async fn method_not_allowed() -> StatusCode {
    StatusCode::METHOD_NOT_ALLOWED
}

fn session_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok())
}

async fn end_session(State(Demo { sessions, .. }): State<Demo>, headers: HeaderMap) -> StatusCode {
    match session_of(&headers) {
        Some(id) if sessions.end(id) => StatusCode::NO_CONTENT,
        Some(_) => StatusCode::NOT_FOUND,
        None => StatusCode::BAD_REQUEST,
    }
}

fn rpc_error(status: StatusCode, id: Option<Value>, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({"jsonrpc":"2.0","id":id,"error":{"code":code,"message":message}})),
    )
        .into_response()
}

async fn mcp_endpoint(
    State(Demo {
        sessions,
        upstream: offers_upstream,
    }): State<Demo>,
    auth: Authenticated,
    upstream: Option<UpstreamAccess>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return rpc_error(StatusCode::BAD_REQUEST, None, -32700, "parse error");
    };
    let id = msg.get("id").cloned();
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    if method != "initialize"
        && let Some(sid) = session_of(&headers)
        && !sessions.touch(sid)
    {
        return rpc_error(StatusCode::NOT_FOUND, id, -32001, "session not found");
    }
    let Some(id) = id else {
        // A notification, or a response to a server request.
        return StatusCode::ACCEPTED.into_response();
    };
    let stateless = headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        == Some("2026-07-28");
    let params = msg.get("params").cloned().unwrap_or(json!({}));
    let mut notifications = Vec::new();
    let mut new_session = None;
    let result = match method {
        "initialize" => {
            let asked = params
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let version = PROTOCOL_VERSIONS
                .iter()
                .find(|v| **v == asked)
                .copied()
                .unwrap_or(PROTOCOL_VERSIONS[0]);
            new_session = Some(sessions.create());
            Ok(
                json!({"protocolVersion": version, "capabilities": {"tools": {}, "logging": {}},
                      "serverInfo": {"name": "mcp-auth demo", "version": env!("CARGO_PKG_VERSION")}}),
            )
        }
        "server/discover" if stateless => Ok(json!({
            "supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "mcp-auth demo", "version": env!("CARGO_PKG_VERSION")}},
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": tools(offers_upstream)})),
        "tools/call" => {
            let name = params.get("name").and_then(Value::as_str).unwrap_or("");
            let args = params.get("arguments").cloned().unwrap_or(json!({}));
            let text = args.get("text").and_then(Value::as_str).unwrap_or("");
            match name {
                "echo" => Ok(text_result(text)),
                "whoami" => Ok(text_result(
                    &json!({
                        "sub": auth.subject, "subject": auth.subject, "client_id": auth.client_id,
                        "scopes": auth.scopes.to_string(), "issuer": auth.issuer,
                    })
                    .to_string(),
                )),
                "notify" => {
                    notifications.push(json!({"jsonrpc": "2.0", "method": "notifications/message",
                        "params": {"level": "info", "logger": "demo", "data": text}}));
                    Ok(text_result("sent"))
                }
                "upstream_profile" => Ok(match &upstream {
                    // The upstream token stays here: only what the provider answered goes
                    // back to the client.
                    Some(up) => match up.profile().await {
                        Ok(profile) => text_result(&profile.to_string()),
                        Err(e) => error_result(&format!(
                            "the upstream provider could not be reached for you: {e}"
                        )),
                    },
                    None => error_result(
                        "this account did not sign in through an upstream identity provider",
                    ),
                }),
                other => Err((-32602, format!("unknown tool {other:?}"))),
            }
        }
        other => Err((-32601, format!("method not found: {other}"))),
    };
    let (status, answer) = match result {
        Ok(r) => (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": id, "result": r}),
        ),
        Err((code, message)) => (
            if stateless && code == -32601 {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            },
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
        ),
    };
    let accepts_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let mut resp = if !notifications.is_empty() && accepts_sse {
        // The notifications, then the answer, as one SSE stream scoped to this request.
        let mut body = String::new();
        for (n, m) in notifications.iter().chain([&answer]).enumerate() {
            body.push_str(&format!("id: {}\ndata: {m}\n\n", n + 1));
        }
        (status, [(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
    } else {
        (status, Json(answer)).into_response()
    };
    if let Some(sid) = new_session
        && let Ok(v) = HeaderValue::from_str(&sid)
    {
        resp.headers_mut().insert(SESSION_HEADER, v);
    }
    resp
}

/// The tools offered.
fn tools(upstream: bool) -> Value {
    let mut tools = json!([
            {"name": "echo", "description": "Returns its text argument.",
             "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
            {"name": "whoami", "description": "The subject, client and scopes of the access token.",
             "inputSchema": {"type": "object"}},
            {"name": "notify", "description": "Sends its text back as a log notification (on the request's SSE stream), then answers.",
             "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}
    ]);
    if upstream && let Some(list) = tools.as_array_mut() {
        list.push(json!({"name": "upstream_profile", "description": "Your profile, fetched from your upstream identity provider with your upstream token (proxy-provider mode).",
             "inputSchema": {"type": "object"}}));
    }
    tools
}

fn text_result(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": false})
}

fn error_result(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": true})
}
