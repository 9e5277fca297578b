//! Calls one tool on an OAuth-protected MCP server, logging in through the browser when
//! needed, with tokens kept in a store under `$MCP_AUTH_HOME` (or a temporary directory).
//!
//! ```sh
//! cargo run -p mcp-auth-client --example call_tool -- https://mcp.example.com/mcp echo '{"text":"hi"}'
//! ```

use std::sync::Arc;

use mcp_auth_client::store::FileStore;
use mcp_auth_client::{
    ClientOptions, HttpOptions, Interaction, McpSession, OAuthClient, OAuthMiddleware,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(server), Some(tool)) = (args.next(), args.next()) else {
        eprintln!("usage: call_tool <mcp-server-url> <tool> [json-arguments]");
        std::process::exit(2);
    };
    let arguments: serde_json::Value =
        serde_json::from_str(&args.next().unwrap_or_else(|| "{}".into()))?;

    let dir = std::env::var_os("MCP_AUTH_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("mcp-auth-example"))
        .join("store");
    let store = Arc::new(FileStore::open(dir)?);
    let opts = ClientOptions {
        interaction: Interaction::Browser(None),
        ..Default::default()
    };
    let oauth = OAuthClient::new(store, opts, HttpOptions::default())?;

    // One layer gives any reqwest client OAuth: tokens attached, 401/403 handled.
    let http = reqwest_middleware::ClientBuilder::new(oauth.http().client()?.clone())
        .with(OAuthMiddleware::new(oauth.clone(), server.clone()))
        .build();
    let mcp = McpSession::new(http, server);
    let result = mcp.call_tool(&tool, arguments).await?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    mcp.close().await?;
    Ok(())
}
