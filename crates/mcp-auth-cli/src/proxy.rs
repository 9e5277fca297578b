//! `mcp-auth proxy URL [PORT] [options]`: a stdio MCP server for local clients that relays to
//! a remote OAuth-protected one, with mcp-remote's command line.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use mcp_auth_client::authorize::{open_browser, split_command};
use mcp_auth_client::store::CredentialStore;
use mcp_auth_client::{Interaction, OAuthClient, OAuthMiddleware, PreRegistered};
use mcp_auth_proxy::{Proxy, ProxyConfig, ToolFilter, TransportStrategy};
use mcp_auth_types::{AuthMethod, ClientSecret, ScopeSet};
use serde_json::Value;

use crate::cli::{AuthArgs, client_options, expand_env, parse_headers};
use crate::exit;

/// `mcp-auth proxy`: mcp-remote's arguments (see README, "Use with Claude Desktop").
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The remote MCP server URL (streamable HTTP endpoint, or an HTTP+SSE stream URL).
    pub url: String,
    /// Port of the OAuth redirect listener (mcp-remote's optional second argument; the same
    /// as --callback-port).
    #[arg(value_name = "CALLBACK_PORT")]
    pub port: Option<u16>,
    /// http-first (streamable HTTP, falling back to HTTP+SSE), sse-first, http-only, sse-only.
    #[arg(long, value_name = "STRATEGY", default_value = "http-first")]
    pub transport: TransportStrategy,
    /// Hide tools whose name matches (`*` is a wildcard) from tools/list and refuse their
    /// calls (repeatable).
    #[arg(long = "ignore-tool", value_name = "GLOB")]
    pub ignore_tool: Vec<String>,
    /// Client metadata for registration, JSON or @FILE (client_name, client_uri, scope,
    /// software_id, software_version, token_endpoint_auth_method).
    #[arg(long, value_name = "JSON|@FILE")]
    pub static_oauth_client_metadata: Option<String>,
    /// A pre-registered client, JSON or @FILE: {"client_id": …, "client_secret": …}.
    /// ${VAR} is expanded from the environment.
    #[arg(long, value_name = "JSON|@FILE")]
    pub static_oauth_client_info: Option<String>,
    /// Use the HTTP(S) proxy named by HTTPS_PROXY / HTTP_PROXY / NO_PROXY.
    #[arg(long)]
    pub enable_proxy: bool,
    /// Debug logs, to --log-file or else <home>/logs/proxy-<server>.log.
    #[arg(long)]
    pub debug: bool,
    /// No logs on stderr (except with --debug).
    #[arg(long)]
    pub silent: bool,
    /// Deadline of connecting to the server, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout: u64,
    /// Longest silence within a response or stream before it is dropped (and resumed),
    /// seconds; 0: none.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub body_timeout: u64,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Where `--debug` writes when no `--log-file` is given.
pub fn debug_log_path(home: &Path, url: &str) -> std::path::PathBuf {
    let key = mcp_auth_client::store::server_key(url);
    home.join("logs").join(format!("proxy-{key}.log"))
}

/// Reads `@FILE` or takes the text as it is, then parses JSON.
fn json_arg(flag: &str, value: &str) -> Result<Value> {
    let text = match value.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("{flag}: reading {path}"))?
        }
        None => value.to_owned(),
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| anyhow!("{flag}: not JSON ({e})"))?;
    if !v.is_object() {
        bail!("{flag}: expected a JSON object");
    }
    Ok(v)
}

fn str_field(v: &Value, key: &str, flag: &str) -> Result<Option<String>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(expand_env(s).with_context(|| flag.to_owned())?)),
        Some(_) => bail!("{flag}: {key} must be a string"),
    }
}

/// An OS browser is reachable: not on a Linux box without a display.
fn has_display() -> bool {
    if cfg!(target_os = "linux") {
        ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
    } else {
        true
    }
}

/// Runs the proxy until stdin closes or a signal arrives.
pub async fn run(store: Arc<dyn CredentialStore>, args: &ProxyArgs) -> Result<u8> {
    let url =
        url::Url::parse(&args.url).map_err(|e| anyhow!("the server URL {:?}: {e}", args.url))?;
    let mut auth_port = args.auth.callback_port;
    if let Some(p) = args.port {
        if auth_port.is_some_and(|a| a != p) {
            bail!("the callback port is given twice, differently ({p} and --callback-port)");
        }
        auth_port = Some(p);
    }
    let (mut opts, mut http_opts) = client_options(&args.auth)?;
    opts.redirect.port = auth_port;
    http_opts.proxy_from_env = args.enable_proxy;

    if let Some(info) = &args.static_oauth_client_info {
        let flag = "--static-oauth-client-info";
        if args.auth.client_id.is_some() {
            bail!("{flag} and --client-id both name the client: give one");
        }
        let v = json_arg(flag, info)?;
        let client_id = str_field(&v, "client_id", flag)?
            .ok_or_else(|| anyhow!("{flag}: client_id is missing"))?;
        opts.identity.pre_registered = Some(PreRegistered {
            client_id,
            client_secret: str_field(&v, "client_secret", flag)?.map(ClientSecret::new),
            auth_method: str_field(&v, "token_endpoint_auth_method", flag)?
                .as_deref()
                .map(AuthMethod::from),
            private_key_pem: None,
            signing_alg: None,
            issuer: args.auth.client_issuer.clone(),
        });
    }
    if let Some(meta) = &args.static_oauth_client_metadata {
        let flag = "--static-oauth-client-metadata";
        let v = json_arg(flag, meta)?;
        for (key, _) in v.as_object().into_iter().flatten() {
            match key.as_str() {
                "client_name"
                | "client_uri"
                | "software_id"
                | "software_version"
                | "scope"
                | "token_endpoint_auth_method" => {}
                other => tracing::warn!("{flag}: {other} is not used by mcp-auth (ignored)"),
            }
        }
        if let Some(n) = str_field(&v, "client_name", flag)? {
            opts.identity.client_name = n;
        }
        if let Some(u) = str_field(&v, "client_uri", flag)? {
            opts.identity.client_uri = Some(u);
        }
        if let Some(s) = str_field(&v, "software_id", flag)? {
            opts.identity.software_id = Some(s);
        }
        if let Some(s) = str_field(&v, "software_version", flag)? {
            opts.identity.software_version = Some(s);
        }
        if opts.scopes.is_none()
            && let Some(s) = str_field(&v, "scope", flag)?
        {
            opts.scopes = Some(
                s.parse::<ScopeSet>()
                    .map_err(|e| anyhow!("{flag}: scope: {e}"))?,
            );
        }
        if let Some(m) = str_field(&v, "token_endpoint_auth_method", flag)?
            && let Some(pre) = opts.identity.pre_registered.as_mut()
            && pre.auth_method.is_none()
        {
            pre.auth_method = Some(AuthMethod::from(m.as_str()));
        }
    }
    // No browser to open (a server without a display): print the URL to stderr instead;
    // a browser command that fails does the same rather than failing the connection.
    if !args.auth.no_browser {
        let explicit = args.auth.browser.clone().or_else(|| {
            std::env::var("BROWSER")
                .ok()
                .filter(|b| !b.trim().is_empty())
        });
        let command = explicit.as_deref().map(split_command).transpose()?;
        if command.is_some() || has_display() {
            opts.interaction = Interaction::Handler(Arc::new(move |url: &str| {
                if let Err(e) = open_browser(command.as_deref(), url) {
                    tracing::warn!("could not open a browser ({e})");
                    eprintln!("Open this URL in a browser to authorize:\n\n  {url}\n");
                }
            }));
        } else {
            opts.interaction = Interaction::Manual { paste: false };
        }
    }

    let client = OAuthClient::new(store, opts, http_opts)?;
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(args.connect_timeout.max(1)))
        .user_agent(format!("mcp-auth-proxy/{}", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(3));
    if args.body_timeout > 0 {
        builder = builder.read_timeout(Duration::from_secs(args.body_timeout));
    }
    if !args.enable_proxy {
        builder = builder.no_proxy();
    }
    for path in &args.auth.ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow!("--ca-cert {}: {e}", path.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let inner = builder.build().context("building the HTTP client")?;
    let http = reqwest_middleware::ClientBuilder::new(inner)
        .with(OAuthMiddleware::new(client, args.url.clone()))
        .build();

    let mut config = ProxyConfig::new(url);
    config.transport = args.transport;
    config.headers = parse_headers(&args.auth)?;
    config.ignore_tools = ToolFilter::new(args.ignore_tool.iter().cloned());
    let proxy = Proxy::new(config, http)?;
    tracing::info!(server = %args.url, "proxy started");
    proxy
        .run(tokio::io::stdin(), tokio::io::stdout(), shutdown_signal())
        .await?;
    tracing::info!("proxy stopped");
    Ok(exit::OK)
}

/// SIGINT or SIGTERM (Ctrl-C elsewhere).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
