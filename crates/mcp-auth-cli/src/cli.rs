//! Command-line definition and the commands.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use mcp_auth_client::authorize::split_command;
use mcp_auth_client::store::{CredentialStore, FileStore, ServerRecord, now_secs};
use mcp_auth_client::{
    ClientIdentity, ClientOptions, DpopPolicy, GrantKind, HttpOptions, Interaction, McpSession,
    OAuthClient, OAuthMiddleware, PreRegistered, RedirectConfig, ResourceMode, WireFormat,
};
use mcp_auth_types::{AuthMethod, ClientSecret, ScopeSet, SecretString};
use serde_json::{Value, json};

use crate::exit::{self, ToolFailed};
use crate::output;

/// Log in to OAuth-protected MCP servers, and give their tokens to scripts and tools.
#[derive(Debug, Parser)]
#[command(name = "mcp-auth", version, about, propagate_version = true)]
pub struct Cli {
    /// Keep everything (store, key, locks) under this directory instead of the platform's
    /// data directory.
    #[arg(long, env = "MCP_AUTH_HOME", global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr (-v info, -vv debug, -vvv trace). Secrets are never logged.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Write logs to this file instead of stderr.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in to an MCP server (discovery, registration, browser, tokens).
    Login {
        /// The MCP server URL.
        url: String,
        #[command(flatten)]
        auth: AuthArgs,
    },
    /// List the servers you are logged in to.
    List,
    /// Print a valid access token (refreshing it when needed), and nothing else.
    Token {
        /// Server name or URL.
        server: String,
    },
    /// Print an `Authorization: Bearer …` header line; for a DPoP-bound token
    /// `Authorization: DPoP …` and a `DPoP:` proof line for one request (use with
    /// `curl -H @file`).
    Header {
        /// Server name or URL.
        server: String,
        /// DPoP: the method of the request the proof is for.
        #[arg(long, default_value = "POST")]
        method: String,
        /// DPoP: the URL of the request the proof is for (default: the server URL).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Refresh the access token now.
    Refresh {
        /// Server name or URL.
        server: String,
    },
    /// Revoke the tokens at the authorization server, then forget them.
    Logout {
        /// Server name or URL.
        #[arg(required_unless_present = "idp")]
        server: Option<String>,
        /// Instead: end the single sign-on session at this enterprise identity provider
        /// (its ID token and refresh token are forgotten; the next enterprise-managed login
        /// signs in there again).
        #[arg(long, value_name = "ISSUER", conflicts_with = "server")]
        idp: Option<String>,
    },
    /// Forget every stored server without contacting anyone.
    Clear,
    /// Run the authorization server with a protected demo MCP endpoint at /mcp.
    Serve {
        /// Configuration file (default: server.toml in the data directory, when present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:8700).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// The issuer identifier, exactly (default http://ADDR:PORT, no trailing slash).
        #[arg(long, value_name = "URL")]
        issuer: Option<String>,
        /// Storage: sqlite:PATH (default: server.db in the data directory),
        /// redis://HOST:PORT/DB or postgres://USER@HOST:PORT/DB.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// Approve every authorization without a login page (loopback only; tests and
        /// benchmarks).
        #[arg(long)]
        dev_auto_approve: bool,
        /// Also host an isolated tenant NAME with issuer {issuer}/t/NAME (repeatable).
        #[arg(long = "tenant", value_name = "NAME")]
        tenants: Vec<String>,
        /// Log users in through this OpenID Connect provider (proxy-provider mode): its
        /// client id and secret come from MCP_AUTH_UPSTREAM_CLIENT_ID and
        /// MCP_AUTH_UPSTREAM_CLIENT_SECRET; it sends the browser back to
        /// {issuer}/oauth/callback. Accounts are oidc:<subject>.
        #[arg(long, value_name = "ISSUER_URL")]
        upstream_oidc: Option<String>,
        /// DPoP (RFC 9449): bind tokens to the client's key at /token when it sends a proof,
        /// and require the proof of that key with every request to /mcp.
        #[arg(long)]
        dpop: bool,
        /// DPoP with server nonces (RFC 9449 §8, §9); implies --dpop.
        #[arg(long)]
        dpop_nonce: bool,
        /// /mcp accepts only DPoP-bound tokens; implies --dpop.
        #[arg(long)]
        dpop_required: bool,
    },
    /// A server on a free port, a login to it and a `whoami` call, each step printed.
    Demo {
        /// Approve automatically and play the browser with an HTTP client (no window).
        #[arg(long)]
        headless: bool,
    },
    /// Manage the authorization server's local accounts.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
        /// Storage: sqlite:PATH (default: server.db in the data directory),
        /// redis://HOST:PORT/DB or postgres://USER@HOST:PORT/DB.
        #[arg(long, value_name = "URL", global = true)]
        store: Option<String>,
    },
    /// List or withdraw the consents users gave to clients at the authorization server.
    Consents {
        #[command(subcommand)]
        command: ConsentsCommand,
        /// Storage: sqlite:PATH (default: server.db in the data directory),
        /// redis://HOST:PORT/DB or postgres://USER@HOST:PORT/DB.
        #[arg(long, value_name = "URL", global = true)]
        store: Option<String>,
        /// The tenant (default: the default one).
        #[arg(long, value_name = "NAME", global = true, default_value = "default")]
        tenant: String,
    },
    /// Connect to a server (logging in when needed), list its tools, optionally call one.
    Test {
        /// The MCP server URL.
        url: String,
        /// Call this tool.
        #[arg(long, value_name = "TOOL")]
        call: Option<String>,
        /// Its arguments, a JSON object.
        #[arg(long, value_name = "JSON", default_value = "{}")]
        args: String,
        /// MCP wire format: auto (2026-07-28, falling back to the initialize handshake),
        /// stateless, or session.
        #[arg(long, value_name = "FORMAT", default_value = "auto")]
        wire: String,
        #[command(flatten)]
        auth: AuthArgs,
    },
    /// A stdio MCP server that relays to a remote OAuth-protected one (drop-in for
    /// `npx mcp-remote URL`): for clients that only speak stdio.
    Proxy(crate::proxy::ProxyArgs),
    /// Check a server's whole discovery and authorization chain against the specs.
    Doctor {
        /// The MCP server URL.
        url: String,
        /// Also log in (browser), refresh, list the tools and call one.
        #[arg(long)]
        login: bool,
        /// With --login: call this tool (default: the first without required arguments).
        #[arg(long, value_name = "TOOL", requires = "login")]
        call: Option<String>,
        /// Its arguments, a JSON object.
        #[arg(long, value_name = "JSON", default_value = "{}")]
        args: String,
        #[command(flatten)]
        auth: AuthArgs,
    },
}

/// `mcp-auth users …`
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create or replace a local account; the password is read from stdin.
    Add {
        /// The username.
        name: String,
    },
}

/// `mcp-auth consents …`
#[derive(Debug, Subcommand)]
pub enum ConsentsCommand {
    /// The consents, of one user with --user.
    List {
        /// Only this account (`local:alice`, `github:583231`).
        #[arg(long, value_name = "ACCOUNT")]
        user: Option<String>,
    },
    /// Withdraw a user's consent for a client, and revoke what the client holds for them
    /// (refresh tokens and their access tokens).
    Revoke {
        /// The account (`local:alice`).
        user: String,
        /// The client id (generated ones may begin with `-`).
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
}

/// How to authorize.
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// Store the server under this short name.
    #[arg(long)]
    pub name: Option<String>,
    /// Scopes to request (space-separated or repeated); default: the spec's selection.
    #[arg(long, value_name = "SCOPE", num_args = 1..)]
    pub scope: Vec<String>,
    /// Browser command; the URL is appended as its last argument, no shell is involved
    /// (default: $BROWSER, else the platform's opener).
    #[arg(long, value_name = "CMD")]
    pub browser: Option<String>,
    /// Do not open a browser: print the URL and wait for the redirect.
    #[arg(long)]
    pub no_browser: bool,
    /// With --no-browser: also accept the redirected URL pasted on stdin (for machines whose
    /// loopback the browser cannot reach).
    #[arg(long)]
    pub paste: bool,
    /// Port of the loopback redirect listener (default: derived from the server URL; 0 picks
    /// a free port each time).
    #[arg(long, value_name = "PORT")]
    pub callback_port: Option<u16>,
    /// Host written in the redirect URI (127.0.0.1 or localhost).
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1", alias = "host")]
    pub callback_host: String,
    /// Path of the redirect URI.
    #[arg(long, value_name = "PATH", default_value = "/callback")]
    pub callback_path: String,
    /// Pre-registered client id.
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    pub client_id: Option<String>,
    /// Its secret (prefer the environment variable: arguments are visible to other users).
    #[arg(
        long,
        env = "MCP_AUTH_CLIENT_SECRET",
        value_name = "SECRET",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub client_secret: Option<String>,
    /// PEM private key file for private_key_jwt.
    #[arg(long, value_name = "FILE")]
    pub private_key: Option<PathBuf>,
    /// Its JWS algorithm (ES256, RS256, EdDSA …).
    #[arg(long, value_name = "ALG")]
    pub signing_alg: Option<String>,
    /// Force the token endpoint authentication method.
    #[arg(long, value_name = "METHOD")]
    pub auth_method: Option<String>,
    /// The issuer the pre-registered credentials belong to (they are sent nowhere else).
    #[arg(long, value_name = "URL")]
    pub client_issuer: Option<String>,
    /// Client ID metadata document URL to use as client_id where the AS accepts them.
    #[arg(long, value_name = "URL")]
    pub client_metadata_url: Option<String>,
    /// Use the client credentials grant (machine client, no browser).
    #[arg(long, conflicts_with = "device")]
    pub client_credentials: bool,
    /// Log in by the device flow (RFC 8628): approve on another device with the URL and code
    /// shown (and a QR code). Chosen by itself where there is no display, or when the
    /// loopback redirect listener cannot bind.
    #[arg(long)]
    pub device: bool,
    /// Workload identity: a platform-issued JWT in this file (re-read at every token
    /// request), used as the JWT-bearer grant (RFC 7523) where the authorization server
    /// offers it. No browser, no secret.
    #[arg(long, value_name = "FILE", conflicts_with = "workload_token_env")]
    pub workload_token_file: Option<PathBuf>,
    /// Workload identity: the JWT in this environment variable (read at every token request).
    #[arg(long, value_name = "VAR")]
    pub workload_token_env: Option<String>,
    /// DPoP (RFC 9449) sender-constrained tokens: `auto` when the authorization server
    /// offers them, `required`, or `off`.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = ["auto", "required", "off"])]
    pub dpop: String,
    /// Enterprise-managed authorization: the company identity provider's issuer (its token
    /// endpoint is discovered). The user's ID token from it is exchanged there (RFC 8693) for
    /// an identity assertion grant that the MCP server's authorization server redeems.
    /// Without --id-token-file/--id-token-env, the user signs in there in the browser
    /// (OpenID Connect) and the session is kept in the store.
    #[arg(long, value_name = "URL")]
    pub idp_issuer: Option<String>,
    /// Enterprise-managed authorization: the identity provider's token endpoint (instead of
    /// discovering it from --idp-issuer).
    #[arg(long, value_name = "URL")]
    pub idp_token_endpoint: Option<String>,
    /// Enterprise-managed authorization: this client's ID at the identity provider.
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    pub idp_client_id: Option<String>,
    /// Its secret at the identity provider, for a confidential client.
    #[arg(
        long,
        env = "MCP_AUTH_IDP_CLIENT_SECRET",
        value_name = "SECRET",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub idp_client_secret: Option<String>,
    /// Enterprise-managed authorization without --id-token-*: the scopes asked for when
    /// signing the user in at the identity provider (`openid` is always added).
    #[arg(long, value_name = "SCOPES", default_value = "openid email profile")]
    pub idp_scope: String,
    /// Enterprise-managed authorization: the user's ID token from the identity provider, in
    /// this file (re-read at every exchange).
    #[arg(long, value_name = "FILE", conflicts_with = "id_token_env")]
    pub id_token_file: Option<PathBuf>,
    /// Enterprise-managed authorization: the user's ID token in this environment variable.
    #[arg(long, value_name = "VAR")]
    pub id_token_env: Option<String>,
    /// Send this RFC 8707 resource instead of the discovered one.
    #[arg(long, value_name = "URL", conflicts_with = "no_resource")]
    pub resource: Option<String>,
    /// Send no resource parameter (some identity providers reject it).
    #[arg(long, alias = "disable-resource-parameter")]
    pub no_resource: bool,
    /// Extra authorization request parameter, k=v (repeatable).
    #[arg(long, value_name = "K=V")]
    pub authorize_param: Vec<String>,
    /// Header sent to the MCP server, 'Name: value' (repeatable).
    #[arg(long, value_name = "HEADER")]
    pub header: Vec<String>,
    /// File of 'Name: value' lines sent as headers to the MCP server.
    #[arg(long, value_name = "FILE")]
    pub header_file: Option<PathBuf>,
    /// Extra trusted CA certificate, PEM (repeatable).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Vec<PathBuf>,
    /// Allow plain http to hosts other than loopback.
    #[arg(long)]
    pub allow_http: bool,
    /// Deadline of one HTTP request, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Deadline of the whole authorization (browser included), seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub auth_timeout: u64,
}

impl Default for AuthArgs {
    /// The same defaults as on the command line (commands like `token` take no auth flags).
    fn default() -> Self {
        use clap::FromArgMatches as _;
        let cmd = <AuthArgs as Args>::augment_args(clap::Command::new("defaults"));
        // No arguments: only defaults (and environment variables) apply, which cannot fail
        // to parse unless the definitions above are wrong — a bug caught by every test.
        let matches = cmd
            .try_get_matches_from(["defaults"])
            .expect("AuthArgs defaults parse");
        AuthArgs::from_arg_matches(&matches).expect("AuthArgs defaults convert")
    }
}

/// Where everything lives: `MCP_AUTH_HOME` or the platform's data directory.
pub(crate) fn home(cli: &Cli) -> Result<PathBuf> {
    if let Some(h) = &cli.home {
        return Ok(h.clone());
    }
    directories::ProjectDirs::from("", "", "mcp-auth")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or_else(|| anyhow!("cannot find a home directory; set MCP_AUTH_HOME"))
}

/// The encrypted store in `<home>/store`. With the `keyring` feature its key is in the OS
/// keyring when one is reachable as the store is created, in `store.key` otherwise; the
/// keyring is only connected to when there is no key file (see `keyring::os_keyring`).
fn open_store(home: &Path) -> Result<Arc<dyn CredentialStore>> {
    let dir = home.join("store");
    #[cfg(feature = "keyring")]
    let store = FileStore::open_auto_with(dir, crate::keyring::os_keyring);
    #[cfg(not(feature = "keyring"))]
    let store = FileStore::open(dir);
    Ok(Arc::new(store.map_err(mcp_auth_client::Error::from)?))
}

/// The enterprise identity provider from the `--idp-*` / `--id-token-*` flags. Without an
/// `--id-token-*` flag, the CLI signs the user in at `--idp-issuer` itself.
fn enterprise_idp(args: &AuthArgs) -> Result<Option<mcp_auth_client::EnterpriseIdp>> {
    use mcp_auth_client::IdTokenSource;
    let any_idp = args.idp_issuer.is_some()
        || args.idp_token_endpoint.is_some()
        || args.idp_client_id.is_some();
    let id_token = match (&args.id_token_file, &args.id_token_env) {
        (Some(f), _) => IdTokenSource::File(f.clone()),
        (None, Some(v)) => IdTokenSource::Env(v.clone()),
        (None, None) if !any_idp => return Ok(None),
        (None, None) if args.idp_issuer.is_some() => IdTokenSource::Login {
            scopes: args
                .idp_scope
                .parse()
                .map_err(|e| anyhow!("--idp-scope: {e}"))?,
        },
        (None, None) => bail!(
            "enterprise-managed authorization needs the user's ID token (--id-token-file or --id-token-env), or --idp-issuer to sign in there"
        ),
    };
    let Some(client_id) = args.idp_client_id.clone() else {
        bail!("enterprise-managed authorization needs --idp-client-id");
    };
    if args.idp_issuer.is_none() && args.idp_token_endpoint.is_none() {
        bail!("enterprise-managed authorization needs --idp-issuer or --idp-token-endpoint");
    }
    Ok(Some(mcp_auth_client::EnterpriseIdp {
        issuer: args.idp_issuer.clone(),
        token_endpoint: args.idp_token_endpoint.clone(),
        client_id,
        client_secret: args.idp_client_secret.clone().map(ClientSecret::new),
        id_token,
    }))
}

pub(crate) fn parse_headers(args: &AuthArgs) -> Result<Vec<(String, String)>> {
    let mut lines: Vec<String> = args.header.clone();
    if let Some(f) = &args.header_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the header file {}", f.display()))?;
        lines.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    lines
        .iter()
        .map(|l| {
            let (k, v) = l.split_once(':').ok_or_else(|| {
                // Not echoed: a malformed line may still hold a credential.
                anyhow!(
                    "a header ({} characters) is not 'Name: value'",
                    l.chars().count()
                )
            })?;
            let (k, v) = (k.trim(), expand_env(v.trim())?);
            http_header_ok(k, &v)?;
            Ok((k.to_owned(), v))
        })
        .collect()
}

/// Replaces each `${NAME}` with the environment variable NAME (mcp-remote's syntax, so
/// credentials can stay out of a client's JSON configuration). An unset variable is an
/// error: sending a header without its credential would fail later and less clearly.
pub(crate) fn expand_env(value: &str) -> Result<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            bail!("unclosed ${{ in a header or client value (the value is not shown)");
        };
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("invalid variable name {name:?} in ${{…}}");
        }
        let v = std::env::var(name)
            .map_err(|_| anyhow!("environment variable {name} (used as ${{{name}}}) is not set"))?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn http_header_ok(k: &str, v: &str) -> Result<()> {
    if k.is_empty()
        || !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        bail!("invalid header name {k:?}");
    }
    if v.chars().any(|c| c.is_control()) {
        bail!("the value of header {k} contains control characters");
    }
    Ok(())
}

pub(crate) fn build_client(
    cli: &Cli,
    store: Arc<dyn CredentialStore>,
    args: &AuthArgs,
) -> Result<OAuthClient> {
    let (mut opts, http) = client_options(args)?;
    opts.device_prompt = Some(crate::output::device_prompt(cli.json));
    Ok(OAuthClient::new(store, opts, http)?)
}

/// The client library's options as the authorization flags give them.
pub(crate) fn client_options(args: &AuthArgs) -> Result<(ClientOptions, HttpOptions)> {
    let browser = args.browser.clone().or_else(|| {
        std::env::var("BROWSER")
            .ok()
            .filter(|b| !b.trim().is_empty())
    });
    let interaction = if args.no_browser {
        Interaction::Manual { paste: args.paste }
    } else {
        Interaction::Browser(browser.as_deref().map(split_command).transpose()?)
    };
    let scopes = if args.scope.is_empty() {
        None
    } else {
        Some(
            args.scope
                .join(" ")
                .parse::<ScopeSet>()
                .map_err(|e| anyhow!("--scope: {e}"))?,
        )
    };
    let private_key = args
        .private_key
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(SecretString::new)
                .with_context(|| format!("reading the private key {}", p.display()))
        })
        .transpose()?;
    let pre_registered = args.client_id.as_ref().map(|id| PreRegistered {
        client_id: id.clone(),
        client_secret: args.client_secret.clone().map(ClientSecret::new),
        auth_method: args.auth_method.as_deref().map(AuthMethod::from),
        private_key_pem: private_key.clone(),
        signing_alg: args.signing_alg.clone(),
        issuer: args.client_issuer.clone(),
    });
    let authorize_params = args
        .authorize_param
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("--authorize-param {kv:?} is not k=v"))
        })
        .collect::<Result<Vec<_>>>()?;
    let resource = match (&args.resource, args.no_resource) {
        (_, true) => ResourceMode::Omit,
        (Some(r), _) => ResourceMode::Override(r.clone()),
        _ => ResourceMode::Auto,
    };
    if args.client_credentials && pre_registered.is_none() {
        bail!("--client-credentials needs --client-id (and a secret or a private key)");
    }
    let opts = ClientOptions {
        interaction,
        redirect: RedirectConfig {
            port: args.callback_port,
            path: args.callback_path.clone(),
            host: args.callback_host.clone(),
        },
        identity: ClientIdentity {
            pre_registered,
            metadata_document_url: args.client_metadata_url.clone(),
            ..Default::default()
        },
        scopes,
        resource,
        authorize_params,
        allow_http: args.allow_http,
        grant: if args.client_credentials {
            GrantKind::ClientCredentials
        } else if args.device {
            GrantKind::DeviceCode
        } else {
            GrantKind::Auto
        },
        flow_timeout: Duration::from_secs(args.auth_timeout),
        name: args.name.clone(),
        server_headers: parse_headers(args)?,
        workload_token: match (&args.workload_token_file, &args.workload_token_env) {
            (Some(f), _) => Some(mcp_auth_client::WorkloadToken::File(f.clone())),
            (None, Some(v)) => Some(mcp_auth_client::WorkloadToken::Env(v.clone())),
            (None, None) => None,
        },
        dpop: match args.dpop.as_str() {
            "required" => DpopPolicy::Required,
            "off" => DpopPolicy::Off,
            _ => DpopPolicy::Auto,
        },
        enterprise: enterprise_idp(args)?,
        ..Default::default()
    };
    let extra_ca_pem = args
        .ca_cert
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let http = HttpOptions {
        request_timeout: Duration::from_secs(args.timeout),
        extra_ca_pem,
        ..Default::default()
    };
    Ok((opts, http))
}

/// Runs a command; returns the exit code.
pub async fn run(cli: Cli) -> Result<u8> {
    let home = home(&cli)?;
    match &cli.command {
        Command::Serve {
            config,
            listen,
            issuer,
            store,
            dev_auto_approve,
            tenants,
            upstream_oidc,
            dpop,
            dpop_nonce,
            dpop_required,
        } => {
            crate::serve::serve(
                crate::serve::ServeOptions {
                    config: config.clone(),
                    listen: *listen,
                    issuer: issuer.clone(),
                    store: store.clone(),
                    dev_auto_approve: *dev_auto_approve,
                    tenants: tenants.clone(),
                    upstream_oidc: upstream_oidc.clone(),
                    dpop: crate::server_config::DpopFile {
                        enabled: (*dpop || *dpop_nonce || *dpop_required).then_some(true),
                        require_nonce: dpop_nonce.then_some(true),
                        required: dpop_required.then_some(true),
                        nonce_secret_env: None,
                    },
                },
                &home,
            )
            .await?;
            return Ok(exit::OK);
        }
        Command::Demo { headless } => {
            crate::serve::demo(*headless).await?;
            return Ok(exit::OK);
        }
        Command::Users {
            command: UsersCommand::Add { name },
            store,
        } => {
            crate::serve::add_user(&home, store.as_deref(), name).await?;
            return Ok(exit::OK);
        }
        Command::Consents {
            command,
            store,
            tenant,
        } => {
            return crate::serve::consents(&home, store.as_deref(), tenant, command, cli.json)
                .await;
        }
        _ => {}
    }
    let store = open_store(&home)?;
    match &cli.command {
        Command::Serve { .. }
        | Command::Users { .. }
        | Command::Consents { .. }
        | Command::Demo { .. } => Ok(exit::OK),
        Command::Login { url, auth } => login(&cli, store, url, auth).await,
        Command::List => list(&cli, store).await,
        Command::Token { server } => token(&cli, store, server, None).await,
        Command::Header {
            server,
            method,
            url,
        } => token(&cli, store, server, Some((method, url.as_deref()))).await,
        Command::Refresh { server } => refresh(&cli, store, server).await,
        Command::Logout {
            server: Some(server),
            ..
        } => logout(&cli, store, server).await,
        Command::Logout {
            idp: Some(issuer), ..
        } => logout_idp(&cli, store, issuer).await,
        Command::Logout { .. } => bail!("logout needs a server, or --idp ISSUER"),
        Command::Clear => clear(&cli, store).await,
        Command::Test {
            url,
            call,
            args,
            wire,
            auth,
        } => test(&cli, store, url, call.as_deref(), args, wire, auth).await,
        Command::Doctor {
            url,
            login,
            call,
            args,
            auth,
        } => crate::doctor::run(&cli, store, url, *login, call.as_deref(), args, auth).await,
        Command::Proxy(args) => crate::proxy::run(store, args).await,
    }
}

async fn login(
    cli: &Cli,
    store: Arc<dyn CredentialStore>,
    url: &str,
    auth: &AuthArgs,
) -> Result<u8> {
    let client = build_client(cli, store.clone(), auth)?;
    let pb = (!auth.client_credentials && !cli.json)
        .then(|| output::spinner("Waiting for the authorization in the browser…"));
    let result = client.login(url, None, None).await;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let token = result?;
    let rec = client.resolve(&token.server_url).await?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&describe(&rec))?);
    } else {
        eprintln!(
            "Logged in to {} (authorization server {}; scopes: {}; token expires {}).",
            rec.server_url,
            rec.issuer,
            token.record.scope.as_deref().unwrap_or("(none)"),
            output::expiry(token.record.expires_at, now_secs()),
        );
    }
    Ok(exit::OK)
}

/// What `list` shows of a record: never a secret.
fn describe(r: &ServerRecord) -> Value {
    let t = r.tokens.as_ref();
    json!({
        "name": r.name,
        "server": r.server_url,
        "issuer": r.issuer,
        "resource": r.resource,
        "client_id": r.client.as_ref().map(|c| c.client_id.clone()),
        "registration": r.client.as_ref().map(|c| c.registration),
        "scopes": t.and_then(|t| t.scope.clone()).or_else(|| r.requested_scope.clone()),
        "expires_at": t.and_then(|t| t.expires_at),
        "expires_in": t.and_then(|t| t.expires_at).map(|e| e as i64 - now_secs() as i64),
        "has_refresh_token": t.is_some_and(|t| t.refresh_token.is_some()),
        "logged_in": t.is_some(),
        "token_type": t.map(|t| t.token_type.clone()),
        "dpop_bound": t.is_some_and(|t| t.token_type.eq_ignore_ascii_case("dpop")) && r.dpop_key.is_some(),
    })
}

async fn list(cli: &Cli, store: Arc<dyn CredentialStore>) -> Result<u8> {
    let mut all = store.list().await.map_err(mcp_auth_client::Error::from)?;
    // Single sign-on sessions at identity providers are not servers.
    all.retain(|r| !r.is_idp_session());
    all.sort_by(|a, b| a.server_url.cmp(&b.server_url));
    if cli.json {
        let v: Vec<Value> = all.iter().map(describe).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(exit::OK);
    }
    if all.is_empty() {
        eprintln!("No servers. Log in with: mcp-auth login <url>");
        return Ok(exit::OK);
    }
    let now = now_secs();
    println!(
        "{:<16} {:<40} {:<32} {:<24} EXPIRES",
        "NAME", "SERVER", "ISSUER", "SCOPES"
    );
    for r in &all {
        let t = r.tokens.as_ref();
        println!(
            "{:<16} {:<40} {:<32} {:<24} {}",
            r.name.as_deref().unwrap_or("-"),
            r.server_url,
            r.issuer,
            t.and_then(|t| t.scope.as_deref()).unwrap_or("-"),
            match t {
                Some(t) => output::expiry(t.expires_at, now),
                None => "logged out".into(),
            }
        );
    }
    Ok(exit::OK)
}

/// `token` / `header`: the fast path reads the store and prints; only an expiring token
/// builds the HTTP machinery.
/// `token` (`header` None) and `header` (the DPoP proof's method and URL).
async fn token(
    cli: &Cli,
    store: Arc<dyn CredentialStore>,
    server: &str,
    header: Option<(&str, Option<&str>)>,
) -> Result<u8> {
    let client = build_client(cli, store, &AuthArgs::default())?;
    let rec = client.resolve(server).await?;
    let t = client.token(&rec.server_url).await?;
    match header {
        Some((method, url)) => {
            println!("Authorization: {}", t.authorization_header());
            let url = url.unwrap_or(&rec.server_url);
            if let Some(proof) = client.dpop_proof(&t, &method.to_ascii_uppercase(), url)? {
                println!("DPoP: {proof}");
            }
        }
        None => {
            if t.is_dpop() {
                eprintln!(
                    "note: this token is DPoP-bound: every request needs a proof of this machine's key (mcp-auth header {} --method M --url U prints both headers)",
                    rec.server_url
                );
            }
            println!("{}", t.record.access_token.secret());
        }
    }
    Ok(exit::OK)
}

async fn refresh(cli: &Cli, store: Arc<dyn CredentialStore>, server: &str) -> Result<u8> {
    let client = build_client(cli, store, &AuthArgs::default())?;
    let rec = client.resolve(server).await?;
    let t = client.refresh(&rec.server_url, None).await?;
    if cli.json {
        println!(
            "{}",
            json!({"server": rec.server_url, "expires_at": t.record.expires_at, "scopes": t.record.scope})
        );
    } else {
        eprintln!(
            "Refreshed {}; the token expires {}.",
            rec.server_url,
            output::expiry(t.record.expires_at, now_secs())
        );
    }
    Ok(exit::OK)
}

async fn logout(cli: &Cli, store: Arc<dyn CredentialStore>, server: &str) -> Result<u8> {
    let client = build_client(cli, store, &AuthArgs::default())?;
    let rec = client.resolve(server).await?;
    let problems = client.logout(&rec.server_url).await?;
    for p in &problems {
        eprintln!("mcp-auth: warning: revocation: {p}");
    }
    if cli.json {
        println!(
            "{}",
            json!({"server": rec.server_url, "revoked": problems.is_empty() && rec.revocation_endpoint.is_some(), "forgotten": true})
        );
    } else if rec.revocation_endpoint.is_none() {
        eprintln!(
            "Forgot {} (its authorization server has no revocation endpoint).",
            rec.server_url
        );
    } else {
        eprintln!("Logged out of {}.", rec.server_url);
    }
    Ok(exit::OK)
}

async fn logout_idp(cli: &Cli, store: Arc<dyn CredentialStore>, issuer: &str) -> Result<u8> {
    let client = build_client(cli, store, &AuthArgs::default())?;
    let existed = client.forget_idp_session(issuer).await?;
    if cli.json {
        println!("{}", json!({"idp": issuer, "forgotten": existed}));
    } else if existed {
        eprintln!("Forgot the sign-in at {issuer}.");
    } else {
        eprintln!("No sign-in at {issuer} was stored.");
    }
    Ok(exit::OK)
}

async fn clear(cli: &Cli, store: Arc<dyn CredentialStore>) -> Result<u8> {
    let all = store.list().await.map_err(mcp_auth_client::Error::from)?;
    let client = build_client(cli, store, &AuthArgs::default())?;
    for r in &all {
        client.forget(&r.server_url).await?;
    }
    if cli.json {
        println!("{}", json!({"forgotten": all.len()}));
    } else {
        eprintln!("Forgot {} server(s).", all.len());
    }
    Ok(exit::OK)
}

/// `--args`: a tool's arguments, a JSON object.
pub(crate) fn tool_arguments(args: &str) -> Result<Value> {
    let arguments: Value =
        serde_json::from_str(args).map_err(|e| anyhow!("--args is not JSON: {e}"))?;
    if !arguments.is_object() {
        bail!("--args must be a JSON object");
    }
    Ok(arguments)
}

#[allow(clippy::too_many_arguments)]
async fn test(
    cli: &Cli,
    store: Arc<dyn CredentialStore>,
    url: &str,
    call: Option<&str>,
    args: &str,
    wire: &str,
    auth: &AuthArgs,
) -> Result<u8> {
    let arguments = tool_arguments(args)?;
    let wire = match wire {
        "auto" => WireFormat::Auto,
        "stateless" => WireFormat::Stateless,
        "session" => WireFormat::Session,
        other => bail!("--wire {other:?}: expected auto, stateless or session"),
    };
    let client = build_client(cli, store, auth)?;
    let inner = client.http().client()?.clone();
    let http = reqwest_middleware::ClientBuilder::new(inner)
        .with(OAuthMiddleware::new(client.clone(), url))
        .build();
    let session = McpSession::new(http, url)
        .wire_format(wire)
        .headers(parse_headers(auth)?);
    let server = session.connect().await?;
    let tools = session.list_tools().await?;
    let mut out = json!({
        "server": server,
        "tools": tools.iter().map(|t| t.get("name").cloned().unwrap_or(Value::Null)).collect::<Vec<_>>(),
    });
    let mut failed = None;
    if let Some(tool) = call {
        let result = session.call_tool(tool, arguments).await?;
        if result.get("isError").and_then(Value::as_bool) == Some(true) {
            failed = Some(text_of(&result));
        }
        out["result"] = result;
    }
    let _ = session.close().await;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let names: Vec<&str> = tools
            .iter()
            .filter_map(|t| t.get("name")?.as_str())
            .collect();
        eprintln!(
            "Connected to {url}; {} tool(s): {}",
            names.len(),
            names.join(", ")
        );
        if let Some(r) = out.get("result") {
            println!("{}", text_of(r));
        }
    }
    if let Some(msg) = failed {
        return Err(ToolFailed(msg).into());
    }
    Ok(exit::OK)
}

/// The text parts of a tool result, or its JSON when there are none.
fn text_of(result: &Value) -> String {
    let texts: Vec<&str> = result
        .get("content")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if texts.is_empty() {
        result.to_string()
    } else {
        texts.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion_in_header_values() {
        // PATH is set in every test environment; the test sets nothing.
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(expand_env("a ${PATH} b").unwrap(), format!("a {path} b"));
        assert_eq!(expand_env("no vars").unwrap(), "no vars");
        let unset = expand_env("Bearer ${MCP_AUTH_SURELY_UNSET_VARIABLE_1234}").unwrap_err();
        assert!(
            unset
                .to_string()
                .contains("MCP_AUTH_SURELY_UNSET_VARIABLE_1234")
        );
        let unclosed = expand_env("Bearer s3cr3t ${OOPS").unwrap_err().to_string();
        assert!(!unclosed.contains("s3cr3t"), "{unclosed}");
        assert!(expand_env("${bad-name}").is_err());
    }

    #[test]
    fn malformed_header_lines_are_not_echoed() {
        let args = AuthArgs {
            header: vec!["Authorization Bearer s3cr3t".into()],
            ..AuthArgs::default()
        };
        let e = parse_headers(&args).unwrap_err().to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    /// Generated client ids and secrets are base64url and may begin with `-`; they are
    /// values, never taken for flags.
    #[test]
    fn credentials_may_begin_with_a_dash() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "mcp-auth",
            "test",
            "--client-id",
            "-abc",
            "--client-secret",
            "-3tFnjDc",
            "--idp-client-id",
            "-idp",
            "--idp-client-secret",
            "--x",
            "http://127.0.0.1:1/mcp",
        ])
        .unwrap();
        let revoke = Cli::try_parse_from(["mcp-auth", "consents", "revoke", "local:a", "-c1"]);
        assert!(revoke.is_ok(), "{revoke:?}");
        let Command::Test { auth, url, .. } = cli.command else {
            panic!("not the test command");
        };
        assert_eq!(url, "http://127.0.0.1:1/mcp");
        assert_eq!(auth.client_id.as_deref(), Some("-abc"));
        assert_eq!(auth.client_secret.as_deref(), Some("-3tFnjDc"));
        assert_eq!(auth.idp_client_id.as_deref(), Some("-idp"));
        assert_eq!(auth.idp_client_secret.as_deref(), Some("--x"));
    }
}
