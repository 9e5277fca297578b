//! JSON-RPC messages as the relay sees them: what kind each is, the key of its id, the
//! headers the 2026-07-28 revision derives from it, and stdio framing. Pure: no I/O.

use serde_json::{Value, json};

/// `_meta` key carrying the protocol revision of a 2026-07-28 request.
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// What one JSON-RPC message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A request: it has an `id` and a `method`; an answer is owed.
    Request {
        /// The id's key ([`id_key`]).
        id: String,
        /// The method.
        method: String,
    },
    /// A notification: a `method` and no `id`.
    Notification {
        /// The method.
        method: String,
    },
    /// A response (`result` or `error`) to the request with this id key.
    Response {
        /// The id's key ([`id_key`]).
        id: String,
    },
    /// Anything else (kept and relayed as it is: the far end reports it).
    Other,
}

/// Classifies one message (not a batch).
pub fn classify(msg: &Value) -> Kind {
    let method = msg.get("method").and_then(Value::as_str);
    let id = msg.get("id").filter(|i| !i.is_null());
    match (method, id) {
        (Some(m), Some(id)) => Kind::Request {
            id: id_key(id),
            method: m.to_owned(),
        },
        (Some(m), None) => Kind::Notification {
            method: m.to_owned(),
        },
        (None, Some(id)) if msg.get("result").is_some() || msg.get("error").is_some() => {
            Kind::Response { id: id_key(id) }
        }
        _ => Kind::Other,
    }
}

/// A JSON-RPC id as a map key: its compact JSON text, so `1` and `"1"` stay distinct.
pub fn id_key(id: &Value) -> String {
    id.to_string()
}

/// The messages of a body: a batch is split into its members, a single message is one.
pub fn split_batch(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => vec![other],
    }
}

/// A stdio frame for `msg`: `raw` when it is one line already, else compact JSON. The
/// stdio transport forbids embedded newlines; JSON text never needs one.
pub fn frame(raw: Option<&str>, msg: &Value) -> String {
    match raw {
        Some(r) if !r.contains(['\n', '\r']) => r.trim().to_owned(),
        _ => msg.to_string(),
    }
}

/// A JSON-RPC error answer to the request with id `id` (the id's original JSON value).
pub fn error_response(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// JSON-RPC "internal error", used when the proxy cannot deliver a request.
pub const INTERNAL_ERROR: i64 = -32603;
/// JSON-RPC "parse error".
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC "invalid params" (a call of a tool hidden by `--ignore-tool`).
pub const INVALID_PARAMS: i64 = -32602;

/// The HTTP headers the 2026-07-28 revision wants beside a request that carries its protocol
/// version in `_meta`: `MCP-Protocol-Version`, `Mcp-Method` and, for the methods that name
/// something, `Mcp-Name`. Empty for older revisions (their version header comes from the
/// `initialize` result instead). Values that are not visible ASCII are left out.
pub fn modern_headers(msg: &Value) -> Vec<(&'static str, String)> {
    let Some(version) = msg
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str)
    else {
        return Vec::new();
    };
    let mut out = vec![("MCP-Protocol-Version", version.to_owned())];
    if let Some(method) = msg.get("method").and_then(Value::as_str) {
        out.push(("Mcp-Method", method.to_owned()));
        let name = match method {
            "tools/call" | "prompts/get" => msg.pointer("/params/name"),
            "resources/read" => msg.pointer("/params/uri"),
            _ => None,
        };
        if let Some(n) = name.and_then(Value::as_str) {
            out.push(("Mcp-Name", n.to_owned()));
        }
    }
    out.retain(|(_, v)| !v.is_empty() && v.chars().all(|c| (' '..='~').contains(&c)));
    out
}

/// The `protocolVersion` of an `initialize` result, if `msg` is one.
pub fn negotiated_version(msg: &Value) -> Option<&str> {
    msg.get("result")?.get("protocolVersion")?.as_str()
}

/// Whether a session id is usable as a header value (visible ASCII, MCP transport spec).
pub fn valid_session_id(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| ('!'..='~').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_kind() {
        assert_eq!(
            classify(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"})),
            Kind::Request {
                id: "1".into(),
                method: "tools/list".into()
            }
        );
        assert_eq!(
            classify(&json!({"jsonrpc":"2.0","id":"1","method":"ping"})),
            Kind::Request {
                id: "\"1\"".into(),
                method: "ping".into()
            }
        );
        assert_eq!(
            classify(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})),
            Kind::Notification {
                method: "notifications/initialized".into()
            }
        );
        assert_eq!(
            classify(&json!({"jsonrpc":"2.0","id":7,"result":{}})),
            Kind::Response { id: "7".into() }
        );
        assert_eq!(
            classify(&json!({"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"x"}})),
            Kind::Response { id: "7".into() }
        );
        assert_eq!(classify(&json!({"jsonrpc":"2.0","id":null})), Kind::Other);
        assert_eq!(classify(&json!(42)), Kind::Other);
    }

    #[test]
    fn frames_are_single_lines() {
        let v = json!({"a": "b\nc"});
        assert_eq!(frame(Some("{\"a\":\"b\\nc\"}"), &v), "{\"a\":\"b\\nc\"}");
        let pretty = "{\n  \"a\": 1\n}";
        assert_eq!(frame(Some(pretty), &json!({"a": 1})), "{\"a\":1}");
        assert!(!frame(None, &v).contains('\n'));
    }

    #[test]
    fn modern_headers_follow_meta() {
        let legacy = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}});
        assert!(modern_headers(&legacy).is_empty());
        let modern = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":"echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}});
        assert_eq!(
            modern_headers(&modern),
            vec![
                ("MCP-Protocol-Version", "2026-07-28".to_owned()),
                ("Mcp-Method", "tools/call".to_owned()),
                ("Mcp-Name", "echo".to_owned()),
            ]
        );
        let bad = json!({"jsonrpc":"2.0","id":1,"method":"resources/read",
            "params":{"uri":"file:///é","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}});
        assert_eq!(
            modern_headers(&bad).len(),
            2,
            "a non-ASCII name is left out"
        );
    }

    #[test]
    fn session_ids_are_visible_ascii() {
        assert!(valid_session_id("abc-123"));
        assert!(!valid_session_id(""));
        assert!(!valid_session_id("a b"));
        assert!(!valid_session_id("a\r\nX-Evil: 1"));
    }

    proptest::proptest! {
        #[test]
        fn frame_never_breaks_lines(s in ".*") {
            let v = json!({"text": s});
            let raw = serde_json::to_string_pretty(&v).unwrap_or_default();
            let line = frame(Some(&raw), &v);
            proptest::prop_assert!(!line.contains('\n'));
            let back: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            proptest::prop_assert_eq!(back, v);
        }

        #[test]
        fn classify_never_panics(s in ".{0,200}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                let _ = classify(&v);
                let _ = modern_headers(&v);
            }
        }
    }
}
