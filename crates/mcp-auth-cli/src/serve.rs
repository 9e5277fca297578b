//! `mcp-auth serve`: the authorization server plus a small protected MCP endpoint, and
//! `mcp-auth users add`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow, bail};
use mcp_auth_resource::{ResourceConfig, ResourceServer, Verifier};
use mcp_auth_server::local_verifier::LocalVerifier;
use mcp_auth_server::store::Store;
use mcp_auth_server::{
    AuthorizationServer, IdentityProvider, LocalAccounts, SealKeys, UpstreamIdentity, UpstreamVault,
};
use mcp_auth_upstream::Upstream;

use crate::server_config::ServerFile;
use mcp_auth_store_sqlite::SqliteStore;
use mcp_auth_types::{Issuer, ResourceUrl};
use serde_json::json;

/// Opens the store named by `--store`: `sqlite:PATH` or a bare path (default: `server.db`
/// in the data directory), `redis://HOST:PORT/DB[?prefix=P]` (feature `redis`), or
/// `postgres://USER@HOST:PORT/DB[?schema=S]` (feature `postgres`; the password from the URL
/// or `PGPASSWORD`). Fails, so that the server refuses to start, when the service is
/// unreachable.
pub async fn open_store(spec: Option<&str>, home: &Path) -> Result<Arc<dyn Store>> {
    let path: PathBuf = match spec {
        None => home.join("server.db"),
        Some(s) if s.starts_with("redis://") || s.starts_with("rediss://") => {
            return open_redis(s).await;
        }
        Some(s) if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
            return open_postgres(s).await;
        }
        Some(s) => match s.strip_prefix("sqlite:") {
            Some(p) => PathBuf::from(p.trim_start_matches("//")),
            None if s.contains("://") => bail!(
                "--store {}: unknown kind of store; use sqlite:PATH, redis://HOST:PORT/DB or postgres://USER@HOST:PORT/DB",
                redact(s)
            ),
            None => PathBuf::from(s),
        },
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let store = SqliteStore::open(&path)
        .await
        .with_context(|| format!("opening the SQLite store {}", path.display()))?;
    Ok(Arc::new(store))
}

/// A store URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(an unparseable URL)".into(),
    }
}

#[cfg(any(feature = "redis", feature = "postgres"))]
/// Takes our own query parameter `name` out of a store URL (the drivers refuse unknown
/// ones): `(URL without it, its value)`.
fn take_param(url: &str, name: &str) -> Result<(String, Option<String>)> {
    let mut u = url::Url::parse(url).map_err(|e| anyhow!("--store {}: {e}", redact(url)))?;
    let mut value = None;
    let rest: Vec<(String, String)> = u
        .query_pairs()
        .into_owned()
        .filter(|(k, v)| {
            if k == name {
                value = Some(v.clone());
                false
            } else {
                true
            }
        })
        .collect();
    if rest.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(rest);
    }
    Ok((u.to_string(), value))
}

#[cfg(feature = "redis")]
async fn open_redis(url: &str) -> Result<Arc<dyn Store>> {
    // `?prefix=P`: the keys' prefix (default `mcp-auth:`), so that several deployments can
    // share one Redis database.
    let (bare, prefix) = take_param(url, "prefix")?;
    let mut options = mcp_auth_store_redis::RedisOptions::new(bare);
    if let Some(p) = prefix {
        options = options.prefix(p);
    }
    let store = mcp_auth_store_redis::RedisStore::connect_with(options)
        .await
        .with_context(|| format!("opening the Redis store {}", redact(url)))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(url: &str) -> Result<Arc<dyn Store>> {
    bail!(
        "--store {}: this build has no Redis backend (build mcp-auth with the `redis` feature)",
        redact(url)
    )
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Arc<dyn Store>> {
    // `?schema=S`: the schema holding the tables (default `public`).
    let (bare, schema) = take_param(url, "schema")?;
    let mut options = mcp_auth_store_postgres::PostgresOptions::new(bare);
    if let Some(s) = schema {
        options = options.schema(s);
    }
    let store = mcp_auth_store_postgres::PostgresStore::connect_with(options)
        .await
        .with_context(|| format!("opening the PostgreSQL store {}", redact(url)))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(url: &str) -> Result<Arc<dyn Store>> {
    bail!(
        "--store {}: this build has no PostgreSQL backend (build mcp-auth with the `postgres` feature)",
        redact(url)
    )
}

/// What `serve` needs (command-line flags; the configuration file fills what they leave).
#[derive(Debug)]
pub struct ServeOptions {
    /// The configuration file (default `server.toml` in the data directory, if present).
    pub config: Option<PathBuf>,
    /// Listen address.
    pub listen: Option<SocketAddr>,
    /// Issuer override.
    pub issuer: Option<String>,
    /// Store spec.
    pub store: Option<String>,
    /// Auto-approve (loopback only).
    pub dev_auto_approve: bool,
    /// Extra isolated tenants, each its own issuer `{issuer}/t/{name}`.
    pub tenants: Vec<String>,
    /// `--upstream-oidc ISSUER_URL`: one OpenID Connect upstream, its client from
    /// `MCP_AUTH_UPSTREAM_CLIENT_ID` / `MCP_AUTH_UPSTREAM_CLIENT_SECRET`.
    pub upstream_oidc: Option<String>,
    /// `--dpop`, `--dpop-nonce`, `--dpop-required`: turn `[dpop]` settings on.
    pub dpop: crate::server_config::DpopFile,
}

/// How users log in: the identity providers in login-page order, and the vault their
/// upstream tokens are kept in when any provider is an upstream one.
pub struct Logins {
    /// The providers.
    pub idps: Vec<Arc<dyn IdentityProvider>>,
    /// The upstream token vault.
    pub vault: Option<UpstreamVault>,
}

impl Logins {
    /// Local accounts only.
    pub fn local(store: Arc<dyn Store>) -> Self {
        Self {
            idps: vec![Arc::new(LocalAccounts::new(store))],
            vault: None,
        }
    }
}

/// The upstream providers of the configuration file and `--upstream-oidc`.
fn upstream_providers(
    file: &ServerFile,
    upstream_oidc: Option<&str>,
) -> Result<Vec<Arc<dyn Upstream>>> {
    let mut out: Vec<Arc<dyn Upstream>> = Vec::new();
    for u in &file.upstream {
        let secret = u.client_secret()?;
        out.push(crate::upstream_config::provider(u, secret)?);
    }
    if let Some(issuer) = upstream_oidc {
        let client_id = std::env::var("MCP_AUTH_UPSTREAM_CLIENT_ID").map_err(|_| {
            anyhow!("--upstream-oidc needs MCP_AUTH_UPSTREAM_CLIENT_ID in the environment")
        })?;
        let secret = std::env::var("MCP_AUTH_UPSTREAM_CLIENT_SECRET").ok();
        let u = crate::server_config::UpstreamFile {
            kind: crate::server_config::UpstreamKind::Oidc,
            id: None,
            label: None,
            issuer: Some(issuer.to_owned()),
            client_id,
            client_secret_env: None,
            client_secret_file: None,
            scopes: None,
            userinfo: Some(true),
            extra_authorize_params: None,
            // A provider on this machine (tests, a second local server) may be plain http.
            allow_http: Some(crate::upstream_config::is_loopback_url(issuer)),
            web_base: None,
            api_base: None,
        };
        out.push(crate::upstream_config::provider(&u, secret)?);
    }
    Ok(out)
}

/// The keys that seal upstream tokens: `MCP_AUTH_UPSTREAM_TOKEN_KEYS` (or the variable
/// `[upstream_tokens] keys_env` names), else the keys file (default
/// `upstream-token.keys` in the data directory), created with a new random key when missing.
fn seal_keys(file: &ServerFile, home: &Path) -> Result<SealKeys> {
    let conf = file.upstream_tokens.clone().unwrap_or_default();
    let var = conf
        .keys_env
        .clone()
        .unwrap_or_else(|| "MCP_AUTH_UPSTREAM_TOKEN_KEYS".into());
    if let Ok(spec) = std::env::var(&var) {
        return SealKeys::parse(&spec).map_err(|e| anyhow!("{var}: {e}"));
    }
    let path = conf
        .keys_file
        .clone()
        .unwrap_or_else(|| home.join("upstream-token.keys"));
    let spec = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let spec = SealKeys::generate_spec().map_err(|e| anyhow!(e))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            write_private(&path, &spec)?;
            eprintln!(
                "Created {} (the key that seals users' upstream tokens; keep it with the database)",
                path.display()
            );
            spec
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    SealKeys::parse(&spec).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The logins `serve` offers: the upstream providers configured, plus local accounts when
/// none is or `local_accounts = true`.
pub fn logins(
    file: &ServerFile,
    upstream_oidc: Option<&str>,
    store: Arc<dyn Store>,
    tenant: &str,
    external_token_ttl: std::time::Duration,
    home: &Path,
) -> Result<Logins> {
    let upstreams = upstream_providers(file, upstream_oidc)?;
    let local = file.local_accounts.unwrap_or(upstreams.is_empty());
    let mut idps: Vec<Arc<dyn IdentityProvider>> = Vec::new();
    if local {
        idps.push(Arc::new(LocalAccounts::new(store.clone())));
    }
    for u in &upstreams {
        idps.push(Arc::new(UpstreamIdentity(u.clone())));
    }
    if idps.is_empty() {
        bail!("no way to log in: local_accounts = false and no [[upstream]]");
    }
    let vault = if upstreams.is_empty() {
        None
    } else {
        Some(UpstreamVault::new(
            store,
            tenant,
            seal_keys(file, home)?,
            upstreams,
            external_token_ttl,
        ))
    };
    Ok(Logins { idps, vault })
}

/// Tenant names become URL path segments and storage keys: keep them plain.
fn check_tenant(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "default"
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        bail!("--tenant {name:?}: use 1-64 lower-case letters, digits or '-' (and not \"default\")")
    }
}

/// Authorization servers for additional tenants: each has its own issuer
/// (`{issuer}/t/{name}`), keys, clients, users and tokens, all kept apart in the store by the
/// tenant name.
pub async fn tenant_routers(
    issuer: &str,
    tenants: &[String],
    store: Arc<dyn Store>,
    dev_auto_approve: bool,
    file: &ServerFile,
) -> Result<axum::Router> {
    let mut router = axum::Router::new();
    for name in tenants {
        check_tenant(name)?;
        let mut config = file.server_config(&format!("{issuer}/t/{name}"), dev_auto_approve)?;
        config.tenant = name.clone();
        let server = AuthorizationServer::new(config, store.clone())
            .await
            .with_context(|| format!("starting tenant {name}"))?;
        router = router.merge(server.router());
    }
    Ok(router)
}

/// The application: authorization server + protected `/mcp` + its metadata.
pub async fn app(
    issuer: &str,
    mcp_url: &str,
    store: Arc<dyn Store>,
    dev_auto_approve: bool,
    file: &ServerFile,
    logins: Logins,
) -> Result<axum::Router> {
    let mut config = file.server_config(issuer, dev_auto_approve)?;
    config.default_audience = Some(mcp_url.to_owned());
    config.resources = vec![mcp_url.to_owned()];
    let dpop = config.dpop.clone();
    let vault = logins.vault.clone();
    let server = AuthorizationServer::with_identity_providers(
        config,
        store.clone(),
        logins.idps,
        logins.vault,
    )
    .await
    .context("starting the authorization server")?;
    let verifier = LocalVerifier::new(&server, mcp_url);
    let mut rc = ResourceConfig::new(
        ResourceUrl::parse_exact(mcp_url).map_err(|e| anyhow!("MCP URL: {e}"))?,
        vec![Issuer::parse(issuer).map_err(|e| anyhow!("issuer: {e}"))?],
        Verifier::Custom(Arc::new(verifier)),
    );
    rc.resource_name = Some("mcp-auth demo MCP server".into());
    rc.danger_allow_insecure_http = true;
    // The same DPoP settings as the authorization server: bound tokens need their proofs.
    rc.dpop = dpop;
    let rs = ResourceServer::new(rc).map_err(|e| anyhow!("resource server: {e}"))?;
    let mcp_path = url::Url::parse(mcp_url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| "/mcp".into());
    // CORS outermost: a browser's preflight carries no token and must not meet the 401.
    // The resource server's checks wrap each handler (`ProtectedLayer::protect`): the same
    // refusals as `.layer(rs.layer())`, without the extra route axum puts around a layer.
    let mut mcp = crate::demo_mcp::router(&mcp_path, rs.layer(), vault.is_some());
    if let Some(v) = vault {
        // Tool handlers reach the user's upstream token through `UpstreamAccess`.
        mcp = mcp.layer(axum::Extension(v));
    }
    let mcp = mcp.layer(mcp_auth_server::router::cors());
    Ok(server.router().merge(rs.metadata_router()).merge(mcp))
}

/// Runs the server until Ctrl-C.
pub async fn serve(opts: ServeOptions, home: &Path) -> Result<()> {
    let file_path = opts
        .config
        .clone()
        .unwrap_or_else(|| home.join("server.toml"));
    let mut file = match ServerFile::load(&file_path)? {
        Some(f) => f,
        None if opts.config.is_some() => bail!(
            "the configuration file {} does not exist",
            file_path.display()
        ),
        None => ServerFile::default(),
    };
    // Flags add to the file's `[dpop]`.
    let flags = &opts.dpop;
    if flags.enabled.is_some() || flags.require_nonce.is_some() || flags.required.is_some() {
        let d = file.dpop.get_or_insert_with(Default::default);
        d.enabled = d.enabled.or(flags.enabled);
        d.require_nonce = d.require_nonce.or(flags.require_nonce);
        d.required = d.required.or(flags.required);
    }
    let listen = opts
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8700)));
    let dev_auto_approve = opts.dev_auto_approve || file.dev_auto_approve == Some(true);
    let mut tenants = file.tenants.clone().unwrap_or_default();
    tenants.extend(opts.tenants.iter().cloned());
    if dev_auto_approve && !listen.ip().is_loopback() {
        bail!(
            "--dev-auto-approve approves every request without a login: it is only allowed on a loopback address"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let issuer = opts
        .issuer
        .clone()
        .or_else(|| file.issuer.clone())
        .unwrap_or_else(|| format!("http://{addr}"));
    Issuer::parse(&issuer).map_err(|e| anyhow!("--issuer {issuer:?}: {e}"))?;
    if issuer.ends_with('/') {
        bail!("--issuer must not end with '/': clients compare it as a string");
    }
    let mcp_url = format!("{}/mcp", origin_of(&issuer)?);
    let store = open_store(opts.store.as_deref().or(file.store.as_deref()), home).await?;
    let sweeper = mcp_auth_server::store::spawn_sweeper(
        store.clone(),
        std::time::Duration::from_secs(60),
        mcp_auth_server::store::unix_now,
    );
    let ttls = file.server_config(&issuer, dev_auto_approve)?.ttls;
    let logins = logins(
        &file,
        opts.upstream_oidc.as_deref(),
        store.clone(),
        "default",
        ttls.external_token,
        home,
    )?;
    let app = app(
        &issuer,
        &mcp_url,
        store.clone(),
        dev_auto_approve,
        &file,
        logins,
    )
    .await?
    .merge(tenant_routers(&issuer, &tenants, store, dev_auto_approve, &file).await?);
    if dev_auto_approve {
        eprintln!(
            "WARNING: --dev-auto-approve: every authorization request is approved without a login. Tests and benchmarks only."
        );
    }
    println!("MCP server:           {mcp_url}");
    println!("Authorization server: {issuer}");
    for t in &tenants {
        println!("Tenant {t}: issuer {issuer}/t/{t}");
    }
    println!("(clients compare these as strings: use exactly these URLs)");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("serving")?;
    sweeper.abort();
    Ok(())
}

fn origin_of(issuer: &str) -> Result<String> {
    let u = url::Url::parse(issuer).map_err(|e| anyhow!("issuer: {e}"))?;
    Ok(u.origin().ascii_serialization())
}

/// `mcp-auth users add NAME`: the password from stdin (one line).
pub async fn add_user(home: &Path, store_spec: Option<&str>, username: &str) -> Result<()> {
    let store = open_store(store_spec, home).await?;
    let mut line = String::new();
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("Password for {username}: ");
    }
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']);
    LocalAccounts::new(store)
        .add("default", username, password)
        .await
        .map_err(|e| anyhow!(e))?;
    eprintln!("User {username} saved.");
    Ok(())
}

/// `mcp-auth consents list|revoke`.
pub async fn consents(
    home: &Path,
    store_spec: Option<&str>,
    tenant: &str,
    command: &crate::cli::ConsentsCommand,
    json_out: bool,
) -> Result<u8> {
    use crate::cli::ConsentsCommand;
    let store = open_store(store_spec, home).await?;
    match command {
        ConsentsCommand::List { user } => {
            let rows = store.list_consents(tenant, user.as_deref()).await?;
            if json_out {
                let items: Vec<_> = rows
                    .iter()
                    .map(|r| json!({"user": r.subject, "client_id": r.client_id, "scope": r.scope, "granted_at": r.granted_at}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else if rows.is_empty() {
                println!("No consents.");
            } else {
                println!("{:<32} {:<40} {:<24} GRANTED", "USER", "CLIENT", "SCOPE");
                for r in &rows {
                    let when = httpdate::fmt_http_date(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(r.granted_at),
                    );
                    let scope = if r.scope.is_empty() {
                        "-"
                    } else {
                        r.scope.as_str()
                    };
                    println!("{:<32} {:<40} {:<24} {when}", r.subject, r.client_id, scope);
                }
            }
            Ok(crate::exit::OK)
        }
        ConsentsCommand::Revoke { user, client_id } => {
            let ttls = mcp_auth_server::Ttls::from_env().map_err(|e| anyhow!(e))?;
            let (existed, grants) = mcp_auth_server::handlers::withdraw_consent(
                store.as_ref(),
                tenant,
                user,
                client_id,
                ttls.access_token,
                mcp_auth_server::store::unix_now(),
            )
            .await?;
            if json_out {
                println!(
                    "{}",
                    json!({"user": user, "client_id": client_id, "consent_withdrawn": existed, "grants_revoked": grants})
                );
            } else if existed || grants > 0 {
                println!("Withdrew {user}'s consent for {client_id}; revoked {grants} grant(s).");
            } else {
                println!("{user} had no consent or grant for {client_id}.");
            }
            Ok(if existed || grants > 0 {
                crate::exit::OK
            } else {
                crate::exit::REFUSED
            })
        }
    }
}

/// `mcp-auth demo`: a server on a free loopback port, a login to it, and a `whoami` call, in
/// one process, each step of the flow printed as it happens.
pub async fn demo(headless: bool) -> Result<()> {
    use mcp_auth_client::store::FileStore;
    use mcp_auth_client::{
        ClientOptions, HttpOptions, Interaction, McpSession, OAuthClient, OAuthMiddleware,
        RedirectConfig,
    };

    let dir = std::env::temp_dir().join(format!("mcp-auth-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port")?;
        let addr = listener.local_addr()?;
        let issuer = format!("http://{addr}");
        let mcp_url = format!("{issuer}/mcp");
        let store: Arc<dyn Store> = Arc::new(mcp_auth_server::store::MemoryStore::new());
        let app = app(&issuer, &mcp_url, store.clone(), headless, &ServerFile::default(), Logins::local(store.clone())).await?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        println!("== server: authorization server {issuer}, protected MCP endpoint {mcp_url}");
        let interaction = if headless {
            println!("== headless: every authorization is approved automatically; an HTTP client plays the browser");
            let handler: mcp_auth_client::authorize::UrlHandler = Arc::new(|url: &str| {
                let url = url.to_owned();
                tokio::spawn(async move {
                    let _ = reqwest::Client::new().get(url).send().await;
                });
            });
            Interaction::Handler(handler)
        } else {
            let password = mcp_auth_server::handlers::random_token()[..16].to_owned();
            LocalAccounts::new(store.clone())
                .add("default", "demo", &password)
                .await
                .map_err(|e| anyhow!(e))?;
            println!("== log in on the page that opens with username `demo`, password `{password}`");
            Interaction::Browser(None)
        };
        let client_store = Arc::new(FileStore::open(dir.join("store"))?);
        let oauth = OAuthClient::new(
            client_store,
            ClientOptions {
                interaction,
                redirect: RedirectConfig { port: Some(0), ..Default::default() },
                ..Default::default()
            },
            HttpOptions::default(),
        )?;
        let http = reqwest_middleware::ClientBuilder::new(oauth.http().client()?.clone())
            .with(OAuthMiddleware::new(oauth.clone(), mcp_url.clone()))
            .build();
        println!("== client: calling whoami on {mcp_url} (the 401 starts the OAuth flow)");
        let mcp = McpSession::new(http, mcp_url.clone());
        let result = mcp.call_tool("whoami", json!({})).await?;
        let text = result["content"][0]["text"].as_str().unwrap_or("").to_owned();
        println!("== whoami answered: {text}");
        let token = oauth.token(&mcp_url).await?;
        println!(
            "== the token is stored encrypted; it expires in {} s and {} a refresh token",
            token.record.expires_at.map(|e| e.saturating_sub(mcp_auth_client::store::now_secs())).unwrap_or(0),
            if token.record.refresh_token.is_some() { "comes with" } else { "has no" }
        );
        Ok::<(), anyhow::Error>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_never_show_their_password() {
        assert_eq!(
            redact("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("postgres://u:hunter2@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact("postgres://u@db/x"), "postgres://u@db/x");
        assert!(!redact("not a url hunter2").contains("hunter2"));
    }

    #[cfg(any(feature = "redis", feature = "postgres"))]
    #[test]
    fn our_parameters_are_taken_out_of_store_urls() {
        let (u, p) = take_param("redis://h:1/2?prefix=a:b:&x=1", "prefix").unwrap();
        assert_eq!(
            (u.as_str(), p.as_deref()),
            ("redis://h:1/2?x=1", Some("a:b:"))
        );
        let (u, p) = take_param("postgres://u@h/db?schema=s1", "schema").unwrap();
        assert_eq!(
            (u.as_str(), p.as_deref()),
            ("postgres://u@h/db", Some("s1"))
        );
        let (u, p) = take_param("postgres://u@h/db", "schema").unwrap();
        assert_eq!((u.as_str(), p), ("postgres://u@h/db", None));
    }
}
