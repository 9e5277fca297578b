//! # mcp-auth-client
//!
//! OAuth 2.1 for MCP clients. (Crate docs are completed as the modules land.)
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod store;
