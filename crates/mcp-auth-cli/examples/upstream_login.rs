//! Users log in with GitHub, Google or a company OpenID Connect provider, and a tool
//! handler acts upstream with the current user's upstream token (proxy-provider mode): the
//! example README.md shows, compiled by CI.
//!
//! ```sh
//! export GITHUB_CLIENT_ID=… GITHUB_CLIENT_SECRET=… GOOGLE_CLIENT_ID=… GOOGLE_CLIENT_SECRET=…
//! export SSO_ISSUER=https://login.example.com SSO_CLIENT_ID=… SSO_CLIENT_SECRET=…
//! export MCP_AUTH_UPSTREAM_TOKEN_KEYS="k1:$(openssl rand -base64 32)"
//! cargo run -p mcp-auth-cli --example upstream_login
//! # then: mcp-auth login http://127.0.0.1:8800/mcp
//! ```
//! Register `http://127.0.0.1:8800/oauth/callback` as the redirect URI at each provider.

use std::sync::Arc;
use std::time::Duration;

use mcp_auth_resource::{Authenticated, JwtConfig, ResourceConfig, ResourceServer, Verifier};
use mcp_auth_server::store::Store;
use mcp_auth_server::upstream::UpstreamAccess;
use mcp_auth_server::{
    AuthorizationServer, IdentityProvider, SealKeys, ServerConfig, UpstreamIdentity, UpstreamVault,
};
use mcp_auth_store_sqlite::SqliteStore;
use mcp_auth_types::{HttpUrl, Issuer, ResourceUrl, SecretString};
use mcp_auth_upstream::{GithubConfig, OidcConfig, Upstream, UpstreamConfig, google};

fn env(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    std::env::var(name).map_err(|_| format!("set {name}").into())
}

/// A tool that acts for the user upstream: the upstream token is used here, on the server,
/// and never returned to the MCP client.
async fn my_profile(who: Authenticated, upstream: Option<UpstreamAccess>) -> String {
    match upstream {
        Some(up) => match up.profile().await {
            Ok(profile) => format!("{} upstream: {profile}", who.subject),
            Err(e) => format!("log in again: {e}"),
        },
        None => format!(
            "{} did not log in through an upstream provider",
            who.subject
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = "http://127.0.0.1:8800";
    let mcp_url = "http://127.0.0.1:8800/mcp";
    let http = mcp_auth_upstream::http_client()?;

    // The providers. Secrets come from the environment, never from code or files in git.
    let github: UpstreamConfig = GithubConfig::new(
        env("GITHUB_CLIENT_ID")?,
        SecretString::new(env("GITHUB_CLIENT_SECRET")?),
    )
    .into();
    // GitHub Enterprise: GithubConfig::enterprise(Url::parse("https://ghe.example.com")?, id, secret)?
    let google: UpstreamConfig = google(
        env("GOOGLE_CLIENT_ID")?,
        SecretString::new(env("GOOGLE_CLIENT_SECRET")?),
    )
    .into();
    let mut sso = OidcConfig::new(
        env("SSO_ISSUER")?,
        env("SSO_CLIENT_ID")?,
        Some(SecretString::new(env("SSO_CLIENT_SECRET")?)),
    );
    sso.id = "sso".into(); // accounts are sso:<subject>
    sso.label = "Company SSO".into();
    sso.use_userinfo = true;
    let upstreams: Vec<Arc<dyn Upstream>> = vec![
        github.build(http.clone())?,
        google.build(http.clone())?,
        UpstreamConfig::from(sso).build(http)?,
    ];

    // Where the users' upstream tokens are kept: sealed with these keys (the first seals,
    // all open, so keys can be rotated), for OAUTH_EXTERNAL_TOKEN_TTL after each login.
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(std::env::temp_dir().join("example-upstream.db")).await?);
    let keys = SealKeys::parse(&env("MCP_AUTH_UPSTREAM_TOKEN_KEYS")?)?;
    let vault = UpstreamVault::new(
        store.clone(),
        "default",
        keys,
        upstreams.clone(),
        Duration::from_secs(86_400),
    );
    let idps: Vec<Arc<dyn IdentityProvider>> = upstreams
        .into_iter()
        .map(|u| Arc::new(UpstreamIdentity(u)) as Arc<dyn IdentityProvider>)
        .collect();

    let mut config = ServerConfig::new(issuer);
    config.resources = vec![mcp_url.into()];
    config.default_audience = Some(mcp_url.into());
    let auth =
        AuthorizationServer::with_identity_providers(config, store, idps, Some(vault.clone()))
            .await?;

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

    let app = axum::Router::new()
        .route("/mcp", axum::routing::post(my_profile))
        .layer(axum::Extension(vault)) // what UpstreamAccess reads
        .layer(rs.layer())
        .merge(rs.metadata_router())
        .merge(auth.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8800").await?;
    println!("MCP endpoint {mcp_url}, issuer {issuer}");
    axum::serve(listener, app).await?;
    Ok(())
}
