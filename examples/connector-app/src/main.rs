//! `connector-app`: a small multi-user web app where each user connects their own account
//! on a remote MCP server, with `mcp-auth-connect`.
//!
//! The app's own sign-in is a toy (pick alice, bob or carol; a random session cookie maps to
//! the user server-side); everything about the MCP server — discovery, registration, the
//! authorization redirect, the callback, the encrypted per-user token vault, refresh,
//! revocation — is the connector's. The home page shows each user's connections and, once
//! connected, the server's tools, listed with the user's own token.
//!
//! ```text
//! connector-app --listen 127.0.0.1:8080 --mcp-url http://127.0.0.1:3000/mcp --data-dir ./data
//! ```
//!
//! Options (each also from the environment): `--listen ADDR` (`CONNECTOR_LISTEN`, default
//! `127.0.0.1:8080`), `--mcp-url URL` (`CONNECTOR_MCP_URL`: server `demo`, "Demo MCP"),
//! `--server ID=URL` (repeatable: more servers), `--data-dir DIR` (`CONNECTOR_DATA_DIR`,
//! default `./connector-app-data`), `--base-url URL` (`CONNECTOR_BASE_URL`, default
//! `http://` + the listening address). Keys: `CONNECTOR_VAULT_KEYS` and
//! `CONNECTOR_COOKIE_KEYS` (`kid:base64-32-bytes[,older…]`), else generated on first start
//! into `vault.key` and `cookie.key` in the data directory (mode 0600). The vault itself is
//! `vault.sqlite3` there: connections survive a restart (the app's own sessions do not).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Form, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, body::Body};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_auth_client::HttpOptions;
use mcp_auth_connect::sqlite::SqliteVault;
use mcp_auth_connect::vault::{Vault, VaultBackend};
use mcp_auth_connect::{ConnectError, Connector, ConnectorConfig, CurrentUser, McpServer, Status};
use mcp_auth_types::seal::SealKeys;
use serde::Deserialize;
use serde_json::Value;

/// The app's session cookie (a name of its own: cookies are per host, not per port, so the
/// authorization server on another loopback port sees it too).
const SESSION_COOKIE: &str = "connector_app_session";
/// The app's toy accounts.
const USERS: &[&str] = &["alice", "bob", "carol"];
/// At most this many signed-in sessions (a toy store, in memory).
const MAX_SESSIONS: usize = 10_000;
/// How long the home page waits for a server's tool list.
const TOOLS_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: connector-app [--listen ADDR] [--mcp-url URL] [--server ID=URL]... [--data-dir DIR] [--base-url URL]";

const STYLE: &str = r#"
body { font: 16px/1.5 system-ui, sans-serif; margin: 0; color: #1a1a1a; background: #f6f7f9; }
header { display: flex; justify-content: space-between; align-items: center; padding: .75rem 1.5rem; background: #1f2d3d; color: #fff; }
header form { margin: 0; }
main { max-width: 52rem; margin: 1.5rem auto; padding: 0 1.5rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; }
.app-name { font-weight: 600; }
table { width: 100%; border-collapse: collapse; background: #fff; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
caption { text-align: left; padding: .5rem 0; color: #444; }
th, td { text-align: left; vertical-align: top; padding: .75rem; border-bottom: 1px solid #e3e6ea; }
thead th { background: #eef1f4; font-size: .9rem; }
ul { margin: 0; padding-left: 1.1rem; }
.state { font-weight: 600; }
.state.connected { color: #106b21; }
.state.not-connected { color: #555; }
.state.needs-reconnect { color: #9a4b00; }
.detail { font-size: .85rem; color: #444; }
.message { padding: .6rem .9rem; border-radius: 4px; background: #e6f4ea; border: 1px solid #9fd3ad; }
.message.error, .error { background: #fdecea; border: 1px solid #f1a9a0; padding: .25rem .5rem; border-radius: 4px; }
form.signin { background: #fff; padding: 1.25rem; max-width: 22rem; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
label { display: block; font-weight: 600; margin-bottom: .25rem; }
select { font: inherit; padding: .3rem; margin-bottom: 1rem; min-width: 12rem; }
button, a.button { font: inherit; display: inline-block; padding: .35rem .9rem; border-radius: 4px; border: 1px solid #1f5fa8; background: #1f5fa8; color: #fff; text-decoration: none; cursor: pointer; }
button.secondary { background: #fff; color: #1f5fa8; }
header button { background: transparent; border-color: #fff; color: #fff; }
:focus-visible { outline: 3px solid #f0a500; outline-offset: 2px; }
"#;

/// The app's sessions: random id → user.
#[derive(Clone, Default)]
struct Sessions(Arc<Mutex<HashMap<String, String>>>);

impl Sessions {
    fn user(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, SESSION_COOKIE)?;
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }
}

/// The connector asks the app who is signed in: the user of the session cookie.
#[async_trait]
impl CurrentUser for Sessions {
    async fn current_user(&self, parts: &Parts) -> Option<String> {
        self.user(&parts.headers)
    }
}

#[derive(Clone)]
struct App {
    connector: Connector,
    sessions: Sessions,
    /// The app's origin (`http://127.0.0.1:8080`), for the same-origin check of its forms.
    origin: String,
    secure: bool,
}

struct Config {
    listen: SocketAddr,
    base_url: Option<String>,
    servers: Vec<McpServer>,
    data_dir: PathBuf,
}

fn server(id: &str, label: &str, url: &str) -> McpServer {
    let mut s = McpServer::new(id, label, url);
    // The name the authorization server shows on its consent page.
    s.identity.client_name = "Connector app (example)".into();
    s
}

fn parse_args() -> Result<Config, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut listen = env("CONNECTOR_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into());
    let mut base_url = env("CONNECTOR_BASE_URL");
    let mut mcp_url = env("CONNECTOR_MCP_URL");
    let mut data_dir = env("CONNECTOR_DATA_DIR").unwrap_or_else(|| "connector-app-data".into());
    let mut extra: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--listen" => listen = value()?,
            "--base-url" => base_url = Some(value()?),
            "--mcp-url" => mcp_url = Some(value()?),
            "--data-dir" => data_dir = value()?,
            "--server" => {
                let v = value()?;
                let (id, url) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--server {v:?}: expected ID=URL"))?;
                extra.push((id.to_owned(), url.to_owned()));
            }
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    let listen: SocketAddr = listen
        .parse()
        .map_err(|e| format!("--listen {listen:?}: {e}"))?;
    let mut servers = Vec::new();
    if let Some(url) = mcp_url {
        servers.push(server("demo", "Demo MCP", &url));
    }
    for (id, url) in extra {
        servers.push(server(&id, &id, &url));
    }
    if servers.is_empty() {
        return Err(format!(
            "no MCP server: give --mcp-url URL (or --server ID=URL)\n{USAGE}"
        ));
    }
    Ok(Config {
        listen,
        base_url,
        servers,
        data_dir: PathBuf::from(data_dir),
    })
}

/// The data directory, created private.
fn prepare_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Keys from `env`, else from `dir/file`, else new ones written there (0600).
fn load_keys(env: &str, dir: &Path, file: &str) -> Result<SealKeys, String> {
    if let Some(spec) = std::env::var(env).ok().filter(|v| !v.trim().is_empty()) {
        return SealKeys::parse(&spec).map_err(|e| format!("{env}: {e}"));
    }
    let path = dir.join(file);
    let spec = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let spec = SealKeys::generate_spec()?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            f.write_all(format!("{spec}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a new key");
            spec
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    SealKeys::parse(&spec).map_err(|e| format!("{}: {e}", path.display()))
}

/// The vault's backend: a SQLite file in the data directory (the records in it are sealed
/// with the vault key).
async fn vault_backend(dir: &Path) -> Result<Arc<dyn VaultBackend>, String> {
    let path = dir.join("vault.sqlite3");
    let backend = SqliteVault::open(&path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Arc::new(backend))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONNECTOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connector-app: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let config = parse_args()?;
    prepare_dir(&config.data_dir)?;
    let vault_keys = load_keys("CONNECTOR_VAULT_KEYS", &config.data_dir, "vault.key")?;
    let cookie_keys = load_keys("CONNECTOR_COOKIE_KEYS", &config.data_dir, "cookie.key")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", config.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let base_url = match config.base_url {
        Some(b) => b.trim_end_matches('/').to_owned(),
        None => {
            let mut addr = local;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        }
    };
    let sessions = Sessions::default();
    let vault = Vault::new(vault_backend(&config.data_dir).await?, vault_keys);
    let servers = config.servers;
    let connector = Connector::new(
        ConnectorConfig {
            base_url: base_url.clone(),
            servers: servers.clone(),
            cookie_keys,
            return_to: "/".into(),
            http: HttpOptions::default(),
        },
        vault,
        Arc::new(sessions.clone()),
    )
    .map_err(|e| e.to_string())?;
    let app = App {
        connector: connector.clone(),
        sessions,
        origin: origin_of(&base_url),
        secure: base_url.starts_with("https://"),
    };
    let router: Router = Router::new()
        .route("/", get(home))
        .route("/signin", post(sign_in))
        .route("/signout", post(sign_out))
        .route("/style.css", get(style))
        .with_state(app)
        .merge(connector.router());

    println!("Connector app: {base_url}");
    for s in &servers {
        println!("  {} ({}): {}", s.label, s.id, s.url);
    }
    let _ = std::io::stdout().flush();
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}

// ------------------------------------------------------------------ helpers

/// `scheme://host[:port]` of a URL (the base URL has no path other than a prefix).
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split('/').next().unwrap_or(rest);
    format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase()
    )
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn random_id() -> Option<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).ok()?;
    Some(URL_SAFE_NO_PAD.encode(b))
}

/// Whether a form post comes from the app's own pages (browsers send `Origin` on posts).
fn same_origin(app: &App, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(o) => origin_of(o) == app.origin,
        None => true,
    }
}

fn set_security_headers(h: &mut HeaderMap) {
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Not `no-referrer`: that would turn the `Origin` of the app's own posts into `null`.
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (k, v) in fixed {
        h.insert(k, HeaderValue::from_static(v));
    }
}

/// A whole page of the app.
fn page(status: StatusCode, title: &str, header_html: &str, main_html: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\
         <body><header><span class=\"app-name\">Connector app</span>{header_html}</header>\
         <main>{main_html}</main></body></html>\n",
        title = esc(title),
    );
    let mut r = (status, Html(html)).into_response();
    set_security_headers(r.headers_mut());
    r
}

fn error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "Error",
        "",
        &format!(
            "<h1>Something went wrong</h1><p role=\"alert\" class=\"error\">{}</p><p><a href=\"/\">Back</a></p>",
            esc(message)
        ),
    )
}

fn see_other(to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

// ------------------------------------------------------------------ pages

async fn style() -> Response {
    let mut r = Response::new(Body::from(STYLE));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn home(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(user) = app.sessions.user(&headers) else {
        return sign_in_page();
    };
    let label_of = |id: &str| {
        app.connector
            .servers()
            .find(|s| s.id == id)
            .map_or_else(|| id.to_owned(), |s| s.label.clone())
    };
    let mut main = String::from("<h1>Connections</h1>");
    if let Some(id) = q.get("connected") {
        let _ = write!(
            main,
            "<p role=\"status\" class=\"message\">Connected to {}.</p>",
            esc(&label_of(id))
        );
    }
    if let Some(id) = q.get("disconnected") {
        let _ = write!(
            main,
            "<p role=\"status\" class=\"message\">Disconnected from {}.</p>",
            esc(&label_of(id))
        );
    }
    if let Some(err) = q.get("connect_error") {
        let which = q
            .get("server")
            .map_or_else(|| "the server".into(), |id| label_of(id));
        let _ = write!(
            main,
            "<p role=\"alert\" class=\"message error\">Connecting {} did not complete: {}.</p>",
            esc(&which),
            esc(err)
        );
    }
    main.push_str(
        "<table><caption>Your connections to MCP servers. Each user of this app connects their own account.</caption>\
         <thead><tr><th scope=\"col\">Server</th><th scope=\"col\">Status</th><th scope=\"col\">Tools</th><th scope=\"col\">Action</th></tr></thead><tbody>",
    );
    let servers: Vec<McpServer> = app.connector.servers().cloned().collect();
    for s in &servers {
        main.push_str(&server_row(&app, &user, s).await);
    }
    main.push_str("</tbody></table>");
    let header_html = format!(
        "<form method=\"post\" action=\"/signout\"><span>Signed in as <strong id=\"signed-in-user\">{}</strong></span> \
         <button type=\"submit\">Sign out</button></form>",
        esc(&user)
    );
    page(StatusCode::OK, "Connections", &header_html, &main)
}

/// One row of the connections table: status, tools (listed with the user's token), action.
async fn server_row(app: &App, user: &str, s: &McpServer) -> String {
    let id = esc(&s.id);
    let connect = format!("<a class=\"button\" href=\"/connect/{id}/login\">Connect</a>");
    let disconnect = format!(
        "<form method=\"post\" action=\"/connect/{id}/logout\"><button type=\"submit\" class=\"secondary\">Disconnect</button></form>"
    );
    let status = match app.connector.status(user, &s.id).await {
        Ok(st) => st,
        Err(e) => {
            return format!(
                "<tr><th scope=\"row\">{}</th><td id=\"status-{id}\" data-state=\"error\"><span class=\"error\" role=\"alert\">Status unavailable: {}</span></td><td></td><td>{connect}</td></tr>",
                esc(&s.label),
                esc(&e.to_string())
            );
        }
    };
    let (state, tools_html) = if status.connected {
        match tools(app, user, &s.id).await {
            Some(html) => ("connected", html),
            // The refresh token was refused: the stored tokens are no use.
            None => ("needs-reconnect", String::new()),
        }
    } else if status.needs_reconnect {
        ("needs-reconnect", String::new())
    } else {
        ("not-connected", String::new())
    };
    let action = if state == "connected" {
        disconnect
    } else {
        connect
    };
    format!(
        "<tr><th scope=\"row\">{label}</th><td id=\"status-{id}\" data-state=\"{state}\">{status}</td>\
         <td id=\"tools-{id}\">{tools_html}</td><td>{action}</td></tr>",
        label = esc(&s.label),
        status = status_html(state, &status),
    )
}

fn status_html(state: &str, st: &Status) -> String {
    let mut out = match state {
        "connected" => "<span class=\"state connected\">Connected</span>".to_owned(),
        "needs-reconnect" => {
            "<span class=\"state needs-reconnect\">Needs reconnect</span>".to_owned()
        }
        _ => "<span class=\"state not-connected\">Not connected</span>".to_owned(),
    };
    if state == "connected" {
        if let Some(a) = &st.account {
            let _ = write!(out, "<div class=\"detail\">Account: {}</div>", esc(a));
        }
        if let Some(sc) = &st.scopes {
            let _ = write!(out, "<div class=\"detail\">Scopes: {}</div>", esc(sc));
        }
        if let Some(e) = st.expires_in {
            let _ = write!(
                out,
                "<div class=\"detail\">Token expires in {} (refreshed before)</div>",
                esc(&human_duration(e))
            );
        }
    }
    out
}

/// The server's tool names as a list or an error line; `None` when the user must connect
/// again.
async fn tools(app: &App, user: &str, server: &str) -> Option<String> {
    let listed = tokio::time::timeout(TOOLS_TIMEOUT, async {
        let conn = app.connector.client_for(user, server).await?;
        let tools = conn.mcp.list_tools().await?;
        let _ = conn.mcp.close().await;
        Ok::<_, ConnectError>(tools)
    })
    .await;
    Some(match listed {
        Ok(Ok(tools)) if tools.is_empty() => "<span class=\"detail\">No tools.</span>".into(),
        Ok(Ok(tools)) => {
            let mut out = String::from("<ul>");
            for t in &tools {
                let name = t.get("name").and_then(Value::as_str).unwrap_or("(unnamed)");
                let _ = write!(out, "<li><code>{}</code></li>", esc(name));
            }
            out.push_str("</ul>");
            out
        }
        Ok(Err(ConnectError::NeedsReconnect { .. })) => return None,
        Ok(Err(e)) => {
            tracing::warn!(server = %server, error = %e, "listing tools failed");
            format!(
                "<span class=\"error\" role=\"alert\">Could not list tools: {}</span>",
                esc(&e.to_string())
            )
        }
        Err(_) => format!(
            "<span class=\"error\" role=\"alert\">Could not list tools: no answer within {} s</span>",
            TOOLS_TIMEOUT.as_secs()
        ),
    })
}

fn sign_in_page() -> Response {
    let mut options = String::new();
    for u in USERS {
        let _ = write!(options, "<option value=\"{0}\">{0}</option>", esc(u));
    }
    let main = format!(
        "<h1>Sign in</h1>\
         <p>This example app has three demo users and no passwords. Each connects their own account on the MCP servers.</p>\
         <form class=\"signin\" method=\"post\" action=\"/signin\">\
         <label for=\"user\">Demo user</label><select id=\"user\" name=\"user\">{options}</select>\
         <div><button type=\"submit\">Sign in</button></div></form>"
    );
    page(StatusCode::OK, "Sign in", "", &main)
}

#[derive(Deserialize)]
struct SignIn {
    user: String,
}

async fn sign_in(State(app): State<App>, headers: HeaderMap, Form(f): Form<SignIn>) -> Response {
    if !same_origin(&app, &headers) {
        return error_page(StatusCode::FORBIDDEN, "Cross-site request refused.");
    }
    if !USERS.contains(&f.user.as_str()) {
        return error_page(StatusCode::BAD_REQUEST, "No such demo user.");
    }
    let Some(id) = random_id() else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "No randomness.");
    };
    {
        let mut sessions = app
            .sessions
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if sessions.len() >= MAX_SESSIONS {
            return error_page(StatusCode::SERVICE_UNAVAILABLE, "Too many sessions.");
        }
        // A new session id on every sign-in (no fixation); the old one, if any, ends.
        if let Some(old) = cookie(&headers, SESSION_COOKIE) {
            sessions.remove(&old);
        }
        sessions.insert(id.clone(), f.user.clone());
    }
    tracing::info!(user = %f.user, "signed in");
    let mut r = see_other("/");
    let secure = if app.secure { "; Secure" } else { "" };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax{secure}"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn sign_out(State(app): State<App>, headers: HeaderMap) -> Response {
    if !same_origin(&app, &headers) {
        return error_page(StatusCode::FORBIDDEN, "Cross-site request refused.");
    }
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        app.sessions
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
    let mut r = see_other("/");
    let secure = if app.secure { "; Secure" } else { "" };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn origins() {
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(origin_of("HTTP://Example.COM/app"), "http://example.com");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(59), "59 s");
        assert_eq!(human_duration(3599), "59 min");
        assert_eq!(human_duration(3720), "1 h 2 min");
    }
}
