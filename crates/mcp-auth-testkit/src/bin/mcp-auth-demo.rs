//! `mcp-auth-demo`: the test server on a fixed port, for trying the `mcp-auth` CLI by hand.
//!
//! ```text
//! mcp-auth-demo [--port 8600]
//! ```
//!
//! Serves a well-behaved MCP 2025-11-25 server with its own authorization server on
//! `127.0.0.1`, prints the MCP URL, and runs until Ctrl-C. Everything is in memory and every
//! authorization request is approved: never expose it beyond loopback.

use std::process::ExitCode;

use mcp_auth_testkit::{Config, TestServer};

const USAGE: &str = "usage: mcp-auth-demo [--port PORT]   (default port 8600, 127.0.0.1 only)";

fn parse_port(args: impl Iterator<Item = String>) -> Result<Option<u16>, String> {
    let mut args = args;
    let mut port = 8600;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--port" | "-p" => args.next().ok_or("--port needs a value")?,
            other => match other.strip_prefix("--port=") {
                Some(v) => v.to_owned(),
                None => return Err(format!("unknown argument {other:?}")),
            },
        };
        port = value
            .parse()
            .map_err(|_| format!("{value:?} is not a port number"))?;
    }
    Ok(Some(port))
}

#[tokio::main]
async fn main() -> ExitCode {
    let port = match parse_port(std::env::args().skip(1)) {
        Ok(Some(p)) => p,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mcp-auth-demo: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let server = match TestServer::try_start(Config {
        port,
        ..Config::default()
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-auth-demo: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("MCP server:           {}", server.mcp_url());
    println!("Authorization server: {}", server.issuer());
    println!("Every authorization request is approved automatically. Ctrl-C stops.");
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("mcp-auth-demo: cannot wait for Ctrl-C: {e}");
    }
    let stats = server.stats();
    server.shutdown().await;
    println!(
        "Stopped after {} authorizations, {} token refreshes, {} MCP requests.",
        stats.authorizations, stats.refreshes, stats.mcp_requests
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> impl Iterator<Item = String> {
        a.iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn port_argument() {
        assert_eq!(parse_port(args(&[])), Ok(Some(8600)));
        assert_eq!(parse_port(args(&["--port", "9000"])), Ok(Some(9000)));
        assert_eq!(parse_port(args(&["--port=9001"])), Ok(Some(9001)));
        assert_eq!(parse_port(args(&["--help"])), Ok(None));
        assert!(parse_port(args(&["--port"])).is_err());
        assert!(parse_port(args(&["--port", "x"])).is_err());
        assert!(parse_port(args(&["extra"])).is_err());
    }
}
