//! Exit codes: distinct per kind of failure, so scripts can react without parsing text.

use mcp_auth_client::Error;

/// Success.
pub const OK: u8 = 0;
/// Anything not listed below.
pub const INTERNAL: u8 = 1;
// 2 is clap's usage error.
/// Not logged in, or the session expired and cannot be renewed without the user.
pub const LOGIN_REQUIRED: u8 = 3;
/// The user or the authorization server refused (access_denied, invalid_grant, step-up
/// exhausted).
pub const REFUSED: u8 = 4;
/// The server or authorization server misbehaved or failed a security check (metadata
/// issuer/resource mismatch, non-http endpoint, missing PKCE support, iss mismatch); for
/// `doctor`, any MUST violation in its report.
pub const UNSAFE_SERVER: u8 = 5;
/// Network failure or an unexpected HTTP status.
pub const NETWORK: u8 = 6;
/// A deadline passed.
pub const TIMEOUT: u8 = 7;
/// Local problem: the store, the configuration, the callback port, the browser.
pub const LOCAL: u8 = 8;
/// The MCP server answered with an error (JSON-RPC error, or a tool result with isError).
pub const MCP: u8 = 9;

/// The exit code for an error chain.
pub fn code_for(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ToolFailed>().is_some() {
        return MCP;
    }
    let Some(e) = e.chain().find_map(|c| c.downcast_ref::<Error>()) else {
        return INTERNAL;
    };
    match e {
        Error::LoginRequired { .. } => LOGIN_REQUIRED,
        Error::AuthorizationDenied { .. }
        | Error::StepUpExhausted { .. }
        | Error::AuthorizationStorm { .. }
        | Error::OAuth { .. } => REFUSED,
        Error::Metadata { .. }
        | Error::Url { .. }
        | Error::PkceNotSupported { .. }
        | Error::UnsupportedTokenType { .. }
        | Error::StateMismatch
        | Error::Iss(_)
        | Error::Redirect(_)
        | Error::InvalidResponse { .. }
        | Error::BodyTooLarge { .. }
        | Error::NoRegistration { .. }
        | Error::NoAuthorizationServer { .. } => UNSAFE_SERVER,
        Error::Network { .. } | Error::Status { .. } => NETWORK,
        Error::Timeout { .. } => TIMEOUT,
        Error::Store(_) | Error::Config(_) | Error::CallbackPort { .. } | Error::Browser { .. } => {
            LOCAL
        }
        Error::JsonRpc { .. } => MCP,
        _ => INTERNAL,
    }
}

/// One line: the error and its causes.
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

/// A tool call that returned `isError: true`.
#[derive(Debug)]
pub struct ToolFailed(pub String);

impl std::fmt::Display for ToolFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the tool reported an error: {}", self.0)
    }
}

impl std::error::Error for ToolFailed {}
