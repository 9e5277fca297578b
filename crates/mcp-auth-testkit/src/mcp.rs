//! The protected MCP endpoint: bearer token validation with RFC 6750 / RFC 9728 challenges,
//! and just enough of the MCP 2025-11-25 streamable HTTP transport to run `initialize`,
//! `tools/list` and `tools/call`.

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mcp_auth_types::{ResourceUrl, ScopeSet};
use serde_json::{Value, json};
use url::Url;

use crate::config::Config;
use crate::http::{self, Req};
use crate::state::{AccessRecord, Inner, Shared, TokenProblem, random_token};

/// Protocol versions this server speaks, newest first.
pub(crate) const SUPPORTED_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

const SESSION_HEADER: &str = "mcp-session-id";

/// Every request to the MCP endpoint.
pub(crate) fn handle(shared: &Shared, req: &Req) -> Response {
    let mut inner = shared.lock();
    inner.stats.mcp_requests += 1;
    let cfg = inner.config.clone();
    let base = shared.base_url.as_str();

    // Streamable HTTP "Security Warning": servers MUST validate Origin (DNS rebinding).
    if let Some(origin) = req.header("origin")
        && !Url::parse(origin).is_ok_and(|u| is_loopback_host(&u))
    {
        return http::text(StatusCode::FORBIDDEN, "Origin not allowed");
    }

    let token = match authorize(shared, &inner, &cfg, req) {
        Ok(t) => t,
        Err(Denied::Unauthorized(challenge)) => {
            inner.stats.unauthorized_responses += 1;
            return with_challenge(
                StatusCode::UNAUTHORIZED,
                challenge,
                "authorization required",
            );
        }
        Err(Denied::Forbidden(challenge)) => {
            inner.stats.insufficient_scope_responses += 1;
            return with_challenge(StatusCode::FORBIDDEN, challenge, "insufficient scope");
        }
    };

    match req.method {
        Method::POST => post(&mut inner, &cfg, base, req, &token),
        Method::DELETE => match session(&inner, req) {
            Err(e) => e.response(),
            Ok(id) => {
                inner.sessions.remove(&id);
                StatusCode::OK.into_response()
            }
        },
        // No server-initiated stream: the spec allows 405 for GET.
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST, DELETE")],
        )
            .into_response(),
    }
}

fn is_loopback_host(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Why the bearer token is refused, with the `WWW-Authenticate` value to answer.
enum Denied {
    Unauthorized(String),
    Forbidden(String),
}

/// Builds a `WWW-Authenticate: Bearer …` value (RFC 6750 §3, RFC 9728 §5.1).
fn challenge(cfg: &Config, base: &str, error: Option<(&str, &str)>, scope: Option<&str>) -> String {
    let mut params = Vec::new();
    if let Some((code, description)) = error {
        params.push(format!("error={}", http::quote(code)));
        params.push(format!("error_description={}", http::quote(description)));
    }
    if let Some(url) = cfg.resource_metadata_url_at(base) {
        params.push(format!("resource_metadata={}", http::quote(&url)));
    }
    if let Some(s) = scope.filter(|s| !s.is_empty()) {
        params.push(format!("scope={}", http::quote(s)));
    }
    if params.is_empty() {
        "Bearer".to_owned()
    } else {
        format!("Bearer {}", params.join(", "))
    }
}

fn with_challenge(status: StatusCode, value: String, body: &str) -> Response {
    let mut r = http::text(status, body);
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// The `401` answer: no token, or one that is not valid here.
fn unauthorized(cfg: &Config, base: &str, error: Option<&str>) -> Denied {
    let scope = cfg.challenge_scope.then(|| cfg.required_scopes.join(" "));
    Denied::Unauthorized(challenge(
        cfg,
        base,
        error.map(|d| ("invalid_token", d)),
        scope.as_deref(),
    ))
}

/// The `403 insufficient_scope` challenge; `scope` lists every scope needed, the token's own
/// included, so a client that asks for exactly these keeps what it had (MCP 2025-11-25
/// "Scope Challenge Handling").
fn insufficient_scope(cfg: &Config, base: &str, token: &AccessRecord, needed: &[String]) -> String {
    let mut all = token.scopes.clone();
    if let Ok(extra) = ScopeSet::from_strs(cfg.required_scopes.iter().chain(needed)) {
        all = all.union(&extra);
    }
    challenge(
        cfg,
        base,
        Some((
            "insufficient_scope",
            "the access token lacks a scope this request needs",
        )),
        Some(&all.to_string()),
    )
}

/// Validates the bearer token (RFC 6750 §2.1; the query and body forms are not accepted,
/// OAuth 2.1 §5.2) and its audience (RFC 8707, MCP "Token Audience Binding").
fn authorize(
    shared: &Shared,
    inner: &Inner,
    cfg: &Config,
    req: &Req,
) -> Result<AccessRecord, Denied> {
    let base = shared.base_url.as_str();
    let Some(value) = req.header("authorization") else {
        return Err(unauthorized(cfg, base, None));
    };
    let token = match value.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => return Err(unauthorized(cfg, base, None)),
    };
    let record = match inner.check_access(token, shared.now(inner)) {
        Ok(r) => r,
        Err(TokenProblem::Unknown) => {
            return Err(unauthorized(
                cfg,
                base,
                Some("the access token is not known"),
            ));
        }
        Err(TokenProblem::Expired) => {
            return Err(unauthorized(
                cfg,
                base,
                Some("the access token has expired"),
            ));
        }
        Err(TokenProblem::Revoked) => {
            return Err(unauthorized(
                cfg,
                base,
                Some("the access token was revoked"),
            ));
        }
    };
    if cfg.check_audience {
        match &record.resource {
            Some(audience) if !audience_covers(audience, &cfg.mcp_url_at(base)) => {
                return Err(unauthorized(
                    cfg,
                    base,
                    Some("the access token was issued for another resource"),
                ));
            }
            None if cfg.require_resource => {
                return Err(unauthorized(
                    cfg,
                    base,
                    Some("the access token is not bound to a resource"),
                ));
            }
            _ => {}
        }
    }
    let required = ScopeSet::from_strs(&cfg.required_scopes).unwrap_or_default();
    if !record.scopes.is_superset(&required) {
        return Err(Denied::Forbidden(insufficient_scope(
            cfg,
            base,
            &record,
            &[],
        )));
    }
    Ok(record)
}

/// Whether a token for `audience` may be used at `server` (same resource, or a parent path
/// on the same origin, compared in canonical form: RFC 9728 §3.3, RFC 8707 §2).
fn audience_covers(audience: &str, server: &str) -> bool {
    match (
        ResourceUrl::canonicalize(audience),
        ResourceUrl::canonicalize(server),
    ) {
        (Ok(a), Ok(s)) => a.covers(&s),
        _ => audience == server,
    }
}

/// A request outside any known session.
enum SessionError {
    Missing,
    Unknown,
}

impl SessionError {
    /// Streamable HTTP "Session Management": `400` without a session id, `404` for one the
    /// server does not know (the client must then initialize again).
    fn response(self) -> Response {
        match self {
            Self::Missing => {
                http::text(StatusCode::BAD_REQUEST, "Mcp-Session-Id header is required")
            }
            Self::Unknown => http::text(StatusCode::NOT_FOUND, "unknown session"),
        }
    }
}

/// The session of a non-initialize request.
fn session(inner: &Inner, req: &Req) -> Result<String, SessionError> {
    match req.header(SESSION_HEADER) {
        None => Err(SessionError::Missing),
        Some(id) if inner.sessions.contains(id) => Ok(id.to_owned()),
        Some(_) => Err(SessionError::Unknown),
    }
}

fn rpc_error(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    http::json(
        status,
        &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
    )
}

/// A JSON-RPC request over `POST`.
fn post(inner: &mut Inner, cfg: &Config, base: &str, req: &Req, token: &AccessRecord) -> Response {
    if cfg.strict_accept {
        let accept = req.header("accept").unwrap_or_default();
        if !(accept.contains("application/json") && accept.contains("text/event-stream")) {
            return http::text(
                StatusCode::NOT_ACCEPTABLE,
                "Accept must list application/json and text/event-stream",
            );
        }
    }
    // 2025-06-18 "Protocol Version Header": an unsupported version is a 400.
    if let Some(v) = req.header("mcp-protocol-version")
        && !SUPPORTED_VERSIONS.contains(&v)
    {
        return http::text(StatusCode::BAD_REQUEST, "unsupported MCP-Protocol-Version");
    }
    let message: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => return rpc_error(StatusCode::BAD_REQUEST, Value::Null, -32700, "Parse error"),
    };
    let Some(obj) = message.as_object() else {
        // Batches were removed in 2025-06-18.
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32600,
            "Invalid Request: expected one JSON-RPC object",
        );
    };
    let id = obj.get("id").cloned();
    let valid_id = id
        .as_ref()
        .is_none_or(|i| i.is_string() || i.is_i64() || i.is_u64());
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") || !valid_id {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32600,
            "Invalid Request",
        );
    }
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        // A response to a server request (this server sends none) or junk.
        return if obj.contains_key("result") || obj.contains_key("error") {
            StatusCode::ACCEPTED.into_response()
        } else {
            rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32600,
                "Invalid Request",
            )
        };
    };

    let initialize = method == "initialize";
    if !initialize
        && cfg.require_session
        && let Err(e) = session(inner, req)
    {
        return e.response();
    }
    inner.stats.mcp_methods.push(method.to_owned());

    let Some(id) = id else {
        // Notifications (`notifications/initialized`, …) are accepted without a body.
        return StatusCode::ACCEPTED.into_response();
    };
    let params = obj.get("params").cloned().unwrap_or(Value::Null);
    let mut session_id = None;
    let outcome: Result<Value, (i64, String)> = match method {
        "initialize" => {
            let asked = params.get("protocolVersion").and_then(Value::as_str);
            let version = asked
                .filter(|v| SUPPORTED_VERSIONS.contains(v))
                .unwrap_or(SUPPORTED_VERSIONS[0]);
            let sid = random_token("session_");
            inner.sessions.insert(sid.clone());
            session_id = Some(sid);
            Ok(json!({
                "protocolVersion": version,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "mcp-auth-testkit", "version": env!("CARGO_PKG_VERSION")},
            }))
        }
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": tools(cfg)})),
        "tools/call" => match call_tool(cfg, token, &params) {
            Ok(v) => Ok(v),
            Err(ToolError::Rpc(code, message)) => Err((code, message)),
            Err(ToolError::StepUp) => {
                inner.stats.insufficient_scope_responses += 1;
                let needed = std::slice::from_ref(&cfg.step_up_scope);
                let value = insufficient_scope(cfg, base, token, needed);
                return with_challenge(StatusCode::FORBIDDEN, value, "insufficient scope");
            }
        },
        other => Err((-32601, format!("Method not found: {other}"))),
    };
    let body = match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
        }
    };
    let mut response = if cfg.sse_responses {
        let event = format!("event: message\ndata: {body}\n\n");
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            event,
        )
            .into_response()
    } else {
        http::json(StatusCode::OK, &body)
    };
    if let Some(sid) = session_id
        && let Ok(v) = HeaderValue::from_str(&sid)
    {
        response.headers_mut().insert(SESSION_HEADER, v);
    }
    response
}

fn tools(cfg: &Config) -> Value {
    json!([
        {
            "name": "echo",
            "description": "Returns its `text` argument.",
            "inputSchema": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
        },
        {
            "name": "whoami",
            "description": "Returns the access token's client id, scopes and resource as JSON.",
            "inputSchema": {"type": "object", "properties": {}},
        },
        {
            "name": "admin-op",
            "description": format!("Needs the `{}` scope (step-up authorization).", cfg.step_up_scope),
            "inputSchema": {"type": "object", "properties": {}},
        },
    ])
}

enum ToolError {
    Rpc(i64, String),
    StepUp,
}

fn text_result(text: impl Into<String>, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text.into()}], "isError": is_error})
}

fn call_tool(cfg: &Config, token: &AccessRecord, params: &Value) -> Result<Value, ToolError> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err(ToolError::Rpc(
            -32602,
            "tools/call needs a tool name".into(),
        ));
    };
    let args = params.get("arguments");
    match name {
        "echo" => Ok(
            match args.and_then(|a| a.get("text")).and_then(Value::as_str) {
                Some(t) => text_result(t, false),
                // Input validation errors are tool errors, for the model to see (2025-11-25).
                None => text_result("echo needs a string argument `text`", true),
            },
        ),
        "whoami" => {
            let who = json!({
                "client_id": token.client_id,
                "scope": token.scopes.to_string(),
                "resource": token.resource,
            });
            Ok(text_result(who.to_string(), false))
        }
        "admin-op" => {
            if token.scopes.contains(&cfg.step_up_scope) {
                Ok(text_result("admin-op done", false))
            } else {
                Err(ToolError::StepUp)
            }
        }
        other => Err(ToolError::Rpc(-32602, format!("Unknown tool: {other}"))),
    }
}
