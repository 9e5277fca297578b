//! Mounts the authorization server and the bearer-token checks in an existing axum app: the
//! example README.md shows, compiled by CI.
//!
//! ```sh
//! cargo run -p mcp-auth-cli --example protect_axum_app
//! # then: mcp-auth login http://127.0.0.1:8800/mcp
//! ```

use std::sync::Arc;

use mcp_auth_resource::{Authenticated, JwtConfig, ResourceConfig, ResourceServer, Verifier};
use mcp_auth_server::{AuthorizationServer, ServerConfig};
use mcp_auth_store_sqlite::SqliteStore;
use mcp_auth_types::{HttpUrl, Issuer, ResourceUrl};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = "http://127.0.0.1:8800";
    let mcp_url = "http://127.0.0.1:8800/mcp";

    // The authorization server, its data in SQLite.
    let store = Arc::new(SqliteStore::open(std::env::temp_dir().join("example-server.db")).await?);
    let mut config = ServerConfig::new(issuer);
    config.resources = vec![mcp_url.into()];
    config.default_audience = Some(mcp_url.into());
    let auth = AuthorizationServer::new(config, store).await?;

    // The resource side: tokens checked against the AS's JWKS, challenges on failure.
    let mut rc = ResourceConfig::new(
        ResourceUrl::parse_exact(mcp_url)?,
        vec![Issuer::parse(issuer)?],
        Verifier::Jwt(JwtConfig::new(
            Issuer::parse(issuer)?,
            HttpUrl::parse(&format!("{issuer}/jwks"))?,
        )),
    );
    rc.danger_allow_insecure_http = true; // plain http on loopback, for the example
    let rs = ResourceServer::new(rc)?;

    // One endpoint: wrap its handler (`protect`), the cheapest way, one route as without
    // protection. A group of routes: `.layer(...)` over their router.
    let mcp = |who: Authenticated| async move {
        format!("hello {} (scopes: {})", who.subject, who.scopes)
    };
    let admin = axum::Router::new()
        .route("/admin/whoami", axum::routing::get(mcp))
        .route("/admin/ping", axum::routing::get(|| async { "pong" }))
        .layer(rs.layer().require_scopes(["mcp:admin"]));
    let app = axum::Router::new()
        .route(
            "/mcp",
            axum::routing::post(rs.layer().require_scopes(["mcp:read"]).protect(mcp)),
        )
        .merge(admin)
        .merge(rs.metadata_router())
        .merge(auth.router());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8800").await?;
    println!("MCP endpoint {mcp_url}, issuer {issuer}");
    axum::serve(listener, app).await?;
    Ok(())
}
