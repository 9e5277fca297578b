//! `--login`: a real authorization with the client library, a refresh, then an MCP session:
//! `tools/list` and one tool call. Tokens are never shown: only their type, scopes and expiry.

use mcp_auth_client::store::now_secs;
use mcp_auth_client::{McpSession, OAuthClient, OAuthMiddleware};
use serde_json::Value;

use crate::checks::spec;
use crate::report::{Finding, Severity, Step};

/// Which tool to call after logging in.
#[derive(Debug, Clone, Default)]
pub struct ToolCall {
    /// The tool; `None` picks the first one without required arguments.
    pub name: Option<String>,
    /// Its arguments (a JSON object).
    pub arguments: Value,
}

fn expiry(expires_at: Option<u64>) -> String {
    match expires_at {
        Some(e) => format!("expires in {} s", e.saturating_sub(now_secs())),
        None => "no expiry given".into(),
    }
}

/// "server NAME VERSION, protocol P" from an `initialize` or 2026-07-28 `server/discover`
/// result.
fn describe_server(info: &Value) -> String {
    let server = info
        .get("serverInfo")
        .or_else(|| info.pointer("/_meta/io.modelcontextprotocol~1serverInfo"));
    let name = server
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    let version = server
        .and_then(|s| s.get("version"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let protocol = info
        .get("protocolVersion")
        .and_then(Value::as_str)
        .or_else(|| info.pointer("/supportedVersions/0").and_then(Value::as_str))
        .unwrap_or("?");
    format!("server {name} {version}, protocol {protocol}").replace("  ", " ")
}

/// The first tool whose input schema requires nothing.
fn callable_without_arguments(tools: &[Value]) -> Option<String> {
    tools
        .iter()
        .find(|t| {
            t.pointer("/inputSchema/required")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
        })
        .and_then(|t| t.get("name")?.as_str())
        .map(str::to_owned)
}

/// Logs in to `target` with `client` (the browser opens as for `mcp-auth login`), refreshes
/// once when a refresh token was issued, then lists the tools and calls one.
pub async fn login_and_call(
    client: &OAuthClient,
    target: &str,
    call: &ToolCall,
    server_headers: Vec<(String, String)>,
) -> Vec<Finding> {
    let step = Step::Login;
    let mut out = Vec::new();
    let token = match client.login(target, None, None).await {
        Ok(t) => t,
        Err(e) => {
            out.push(Finding::fail(
                "login.authorize",
                step,
                Severity::Must,
                spec::MCP_FLOW,
                format!("login failed: {e}"),
                "see the failed checks above; the error names the step that broke",
            ));
            return out;
        }
    };
    let rec = &token.record;
    out.push(Finding::pass(
        "login.authorize",
        step,
        Severity::Must,
        spec::MCP_FLOW,
        format!(
            "logged in: {} token, scopes {}, {}",
            rec.token_type,
            rec.scope.as_deref().unwrap_or("(none)"),
            expiry(rec.expires_at)
        ),
    ));
    if rec.refresh_token.is_some() {
        match client.refresh(&token.server_url, None).await {
            Ok(t) => out.push(Finding::pass(
                "login.refresh",
                step,
                Severity::Should,
                spec::REFRESH,
                format!(
                    "refreshed: {} token, {}; refresh token {}",
                    t.record.token_type,
                    expiry(t.record.expires_at),
                    if t.record.refresh_token.is_some() {
                        "kept or rotated"
                    } else {
                        "not returned"
                    }
                ),
            )),
            Err(e) => out.push(Finding::fail(
                "login.refresh",
                step,
                Severity::Should,
                spec::REFRESH,
                format!("refresh failed: {e}"),
                "accept the refresh token you issued at the token endpoint (grant_type=refresh_token)",
            )),
        }
    } else {
        out.push(Finding::warn(
            "login.refresh",
            step,
            Severity::Should,
            spec::REFRESH,
            "no refresh token was issued",
            "issue refresh tokens to public clients (with rotation, OAuth 2.1 §4.3.1)",
        ));
    }

    let inner = match client.http().client() {
        Ok(c) => c.clone(),
        Err(e) => {
            out.push(Finding::fail(
                "mcp.connect",
                step,
                Severity::Must,
                spec::MCP_TOOLS,
                format!("HTTP client: {e}"),
                "check --ca-cert",
            ));
            return out;
        }
    };
    let http = reqwest_middleware::ClientBuilder::new(inner)
        .with(OAuthMiddleware::new(client.clone(), target))
        .build();
    let session = McpSession::new(http, target).headers(server_headers);
    match session.connect().await {
        Ok(info) => out.push(Finding::pass(
            "mcp.connect",
            step,
            Severity::Must,
            spec::MCP_TOKEN_USAGE,
            format!("connected with the token: {}", describe_server(&info)),
        )),
        Err(e) => {
            out.push(Finding::fail(
                "mcp.connect",
                step,
                Severity::Must,
                spec::MCP_TOKEN_USAGE,
                format!("the MCP server refused the session: {e}"),
                "accept access tokens issued for this resource (audience = the PRM resource)",
            ));
            return out;
        }
    }
    let tools = match session.list_tools().await {
        Ok(t) => t,
        Err(e) => {
            out.push(Finding::fail(
                "mcp.tools-list",
                step,
                Severity::Must,
                spec::MCP_TOOLS,
                format!("tools/list failed: {e}"),
                "answer tools/list for authorized clients",
            ));
            return out;
        }
    };
    let names: Vec<&str> = tools
        .iter()
        .filter_map(|t| t.get("name")?.as_str())
        .collect();
    out.push(Finding::pass(
        "mcp.tools-list",
        step,
        Severity::Must,
        spec::MCP_TOOLS,
        format!("{} tool(s): {}", names.len(), names.join(", ")),
    ));
    let (name, arguments) = match &call.name {
        Some(n) => (Some(n.clone()), call.arguments.clone()),
        None => (
            callable_without_arguments(&tools),
            Value::Object(Default::default()),
        ),
    };
    let Some(name) = name else {
        out.push(Finding::skip(
            "mcp.tool-call",
            step,
            Severity::Must,
            spec::MCP_TOOLS,
            "no tool without required arguments; pick one with --call TOOL --args JSON",
        ));
        return out;
    };
    match session.call_tool(&name, arguments).await {
        Ok(r) if r.get("isError").and_then(Value::as_bool) == Some(true) => {
            out.push(Finding::fail(
                "mcp.tool-call",
                step,
                Severity::Should,
                spec::MCP_TOOLS,
                format!("{name} returned isError: true"),
                "check the tool's arguments (--args) or the tool itself",
            ))
        }
        Ok(_) => out.push(Finding::pass(
            "mcp.tool-call",
            step,
            Severity::Must,
            spec::MCP_TOOLS,
            format!("{name} answered"),
        )),
        Err(e) => out.push(Finding::fail(
            "mcp.tool-call",
            step,
            Severity::Must,
            spec::MCP_TOOLS,
            format!("tools/call {name} failed: {e}"),
            "answer tools/call for authorized clients",
        )),
    }
    let _ = session.close().await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_the_first_tool_without_required_arguments() {
        let tools = vec![
            json!({"name": "echo", "inputSchema": {"type": "object", "required": ["text"]}}),
            json!({"name": "whoami", "inputSchema": {"type": "object"}}),
        ];
        assert_eq!(
            callable_without_arguments(&tools).as_deref(),
            Some("whoami")
        );
        assert_eq!(callable_without_arguments(&tools[..1]), None);
    }

    #[test]
    fn describes_both_wire_formats() {
        let session =
            json!({"protocolVersion": "2025-11-25", "serverInfo": {"name": "s", "version": "1"}});
        assert_eq!(describe_server(&session), "server s 1, protocol 2025-11-25");
        let stateless = json!({"supportedVersions": ["2026-07-28"],
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "d", "version": "0.1.0"}}});
        assert_eq!(
            describe_server(&stateless),
            "server d 0.1.0, protocol 2026-07-28"
        );
    }
}
