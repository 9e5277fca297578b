//! # mcp-auth-doctor
//!
//! Walks an MCP server's whole discovery and authorization chain and says, check by check,
//! whether it is what the specs require: the `401` and its challenge, protected resource
//! metadata at each location (RFC 9728), the authorization server metadata candidates
//! (RFC 8414, OpenID Connect discovery) with issuer equality, PKCE S256, registration
//! options (client ID metadata documents, RFC 7591), `resource` matching, token endpoint
//! authentication, refresh and revocation, CORS for browser clients — and, optionally, a
//! real login and tool call. It is what `mcp-auth doctor` prints.
//!
//! A short tour:
//! - [`report`]: [`Finding`] (an id, the spec section, pass/fail, the fix, the HTTP exchange),
//!   [`Report`] and its verdict, the human rendering; serde for JSON. Pure.
//! - [`checks`]: pure functions from responses to findings, unit-tested one by one.
//! - [`probe`]: the requests ([`diagnose`]).
//! - [`login`]: `--login`, with the client library ([`login_and_call`]).
//!
//! ```no_run
//! use mcp_auth_client::http::{Http, HttpOptions};
//! use mcp_auth_doctor::{Options, diagnose};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let opts = Options::new(Http::new(HttpOptions::default())?);
//! let report = diagnose("https://mcp.example.com/mcp", &opts).await?;
//! print!("{}", report.render());
//! assert!(report.verdict.ok, "a MUST of the spec is violated");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod checks;
pub mod login;
pub mod probe;
pub mod report;

pub use login::{ToolCall, login_and_call};
pub use probe::{DoctorError, INSPECTOR_ORIGIN, Options, diagnose};
pub use report::{Exchange, Finding, Report, Severity, Status, Step, Verdict};
