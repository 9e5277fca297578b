//! [`OAuthClient`]: the whole dance for one user and many servers, over a shared store.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_auth_types::SecretString;
use mcp_auth_types::challenge::{Challenge, find_bearer};
use mcp_auth_types::dpop::DpopKey;
use mcp_auth_types::{
    AuthorizationCode, HttpUrl, RefreshToken, ResourceUrl, ScopeSet, TokenRequest, select_scopes,
};

use crate::authorize::{
    AuthorizationRequest, Interaction, Listener, RedirectConfig, authorization_url,
    new_request_secrets, open_browser, wait_for_code,
};
use crate::device::DevicePrompt;
use crate::discovery::{Discovered, DiscoveryOptions, discover};
use crate::dpop::{Dpop, DpopPolicy, NonceCache, decode_key, encode_key};
use crate::enterprise::EnterpriseIdp;
use crate::error::{Error, Result, Step};
use crate::http::{Http, HttpOptions};
use crate::registration::{ClientIdentity, ensure_client};
use crate::store::{
    ClientRecord, CredentialStore, ServerRecord, TokenRecord, now_secs, server_key,
};
use crate::token::{request_token_with, revoke, to_record};

/// Which RFC 8707 `resource` to send.
#[derive(Debug, Clone, Default)]
pub enum ResourceMode {
    /// The resource from the protected resource metadata (or the canonical server URL).
    #[default]
    Auto,
    /// Send nothing: some identity providers reject unknown `resource` values.
    Omit,
    /// Send this value instead.
    Override(String),
}

/// Which grant obtains tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GrantKind {
    /// Client credentials when the client is pre-registered with a secret or key and the
    /// authorization server offers client credentials but not the authorization code grant;
    /// otherwise the authorization code grant.
    #[default]
    Auto,
    /// Authorization code with PKCE, a user in a browser.
    AuthorizationCode,
    /// Client credentials (RFC 6749 §4.4): a machine client with pre-registered
    /// credentials, no user.
    ClientCredentials,
    /// A platform-issued JWT as the authorization grant (RFC 7523 §2.1; workload identity
    /// federation): no user, no secret; needs [`ClientOptions::workload_token`].
    JwtBearer,
    /// Enterprise-managed authorization (cross-app access): the user's ID token exchanged
    /// at the company's identity provider for an identity assertion grant (RFC 8693), then
    /// that grant at the server's authorization server (RFC 7523); needs
    /// [`ClientOptions::enterprise`].
    IdentityAssertion,
    /// The device authorization grant (RFC 8628): the user approves on another device, by
    /// a URL and a code that [`ClientOptions::device_prompt`] shows.
    DeviceCode,
}

/// The RFC 7523 grant type URN, as stored in [`ServerRecord::grant`].
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// [`ServerRecord::grant`] of tokens obtained with an identity assertion grant.
const ID_JAG_GRANT: &str = crate::enterprise::ID_JAG;

/// Where the workload's platform-issued JWT is read from, at every token request (platforms
/// rotate it in place: a Kubernetes projected service account token, a CI job's OIDC token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadToken {
    /// A file holding the JWT (surrounding whitespace ignored).
    File(std::path::PathBuf),
    /// An environment variable holding it.
    Env(String),
}

impl WorkloadToken {
    /// The current JWT. Errors name the file or variable, never the content.
    pub fn read(&self) -> Result<String> {
        let raw = match self {
            Self::File(p) => std::fs::read_to_string(p).map_err(|e| {
                Error::Config(format!("reading the workload token {}: {e}", p.display()))
            })?,
            Self::Env(var) => std::env::var(var).map_err(|_| {
                Error::Config(format!("the workload token variable {var} is not set"))
            })?,
        };
        let jwt = raw.trim().to_owned();
        if jwt.split('.').count() != 3 || jwt.chars().any(char::is_whitespace) {
            return Err(Error::Config(
                "the workload token is not a JWT (three dot-separated parts)".into(),
            ));
        }
        Ok(jwt)
    }
}

/// Options of an [`OAuthClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How the user reaches the authorization page.
    pub interaction: Interaction,
    /// Redirect URI policy.
    pub redirect: RedirectConfig,
    /// Client identity sources.
    pub identity: ClientIdentity,
    /// Scopes chosen by the user (override the spec's selection).
    pub scopes: Option<ScopeSet>,
    /// `resource` policy.
    pub resource: ResourceMode,
    /// Extra authorization request parameters.
    pub authorize_params: Vec<(String, String)>,
    /// Allow plain http to non-loopback hosts.
    pub allow_http: bool,
    /// Which grant to use.
    pub grant: GrantKind,
    /// Refresh this long before the access token expires.
    pub refresh_skew: Duration,
    /// Deadline of a whole interactive authorization (browser included).
    pub flow_timeout: Duration,
    /// The name to store a newly logged-in server under.
    pub name: Option<String>,
    /// Headers sent on requests to the MCP server (not to the authorization server).
    pub server_headers: Vec<(String, String)>,
    /// The workload's platform-issued JWT, for the JWT-bearer grant (RFC 7523): chosen by
    /// [`GrantKind::Auto`] when the authorization server supports that grant.
    pub workload_token: Option<WorkloadToken>,
    /// When to ask for DPoP-bound tokens (RFC 9449).
    pub dpop: DpopPolicy,
    /// The enterprise identity provider for enterprise-managed authorization: chosen by
    /// [`GrantKind::Auto`] when the authorization server supports the JWT-bearer grant.
    pub enterprise: Option<EnterpriseIdp>,
    /// Shows the device flow's URL and code (default: printed to standard error). The
    /// device flow is chosen by [`GrantKind::Auto`] for a browser login where there is no
    /// display ([`crate::device::no_display`]) or the loopback listener cannot bind.
    pub device_prompt: Option<DevicePrompt>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            interaction: Interaction::default(),
            redirect: RedirectConfig::default(),
            identity: ClientIdentity::default(),
            scopes: None,
            resource: ResourceMode::Auto,
            authorize_params: Vec::new(),
            allow_http: false,
            grant: GrantKind::Auto,
            refresh_skew: Duration::from_secs(60),
            flow_timeout: Duration::from_secs(300),
            name: None,
            server_headers: Vec::new(),
            workload_token: None,
            dpop: DpopPolicy::Auto,
            enterprise: None,
            device_prompt: None,
        }
    }
}

/// What a caller of `refresh_locked` needs.
#[derive(Clone, Copy)]
enum Need<'a> {
    /// A token that is not about to expire.
    Fresh,
    /// A token other than this one, which the server refused.
    Replace(&'a str),
    /// A newly refreshed token, whatever is stored.
    New,
}

/// A valid token, ready for an `Authorization` header.
#[derive(Debug, Clone)]
pub struct Token {
    /// The server it is for.
    pub server_url: String,
    /// The tokens.
    pub record: TokenRecord,
    /// The DPoP key the token is bound to (RFC 9449), in its stored form, when it is
    /// DPoP-bound: each request then needs a proof ([`OAuthClient::dpop_proof`]).
    pub dpop_key: Option<mcp_auth_types::SecretString>,
}

impl Token {
    /// Whether the token is DPoP-bound, so that requests must carry a proof.
    pub fn is_dpop(&self) -> bool {
        self.record.token_type.eq_ignore_ascii_case("dpop") && self.dpop_key.is_some()
    }

    /// `Bearer <token>` or `DPoP <token>`.
    pub fn authorization_header(&self) -> String {
        format!(
            "{} {}",
            self.record.token_type,
            self.record.access_token.secret()
        )
    }
}

/// Logs in to MCP servers and keeps their tokens valid.
///
/// Cheap to clone. Every method that writes the store holds that server's lock while it
/// reads, talks to the AS, and writes, so processes sharing the store never lose or reuse a
/// rotated refresh token.
#[derive(Clone)]
pub struct OAuthClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: Http,
    store: Arc<dyn CredentialStore>,
    opts: ClientOptions,
    /// When each server was last sent through an authorization, for the storm brake.
    recent_logins: std::sync::Mutex<HashMap<String, VecDeque<Instant>>>,
    /// The DPoP nonces servers gave (RFC 9449 §8, §9).
    nonces: NonceCache,
}

/// At most this many authorizations per server within [`STORM_WINDOW`] from one client: a
/// server that rejects every token it is given must not open browser tab after browser tab.
/// (The MCP flows that legitimately chain authorizations — an initial login, two step-ups,
/// an authorization server migration — stay well below it.)
const STORM_LIMIT: usize = 6;
const STORM_WINDOW: Duration = Duration::from_secs(60);
/// A token obtained this recently is not refreshed again merely for being near expiry: a
/// server that issues tokens that expire at once must not get a refresh per call.
const MIN_REFRESH_INTERVAL: u64 = 5;

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("grant", &self.inner.opts.grant)
            .finish_non_exhaustive()
    }
}

/// Canonical URL and store key of a server URL.
fn identify(server: &str, allow_http: bool) -> Result<(HttpUrl, ResourceUrl, String)> {
    let url = HttpUrl::parse_secure(server, allow_http).map_err(|source| Error::Url {
        what: format!("the server URL {server:?}"),
        source,
    })?;
    let canonical = ResourceUrl::canonicalize(url.as_str()).map_err(|source| Error::Url {
        what: "the server URL".into(),
        source,
    })?;
    let key = server_key(canonical.as_str());
    Ok((url, canonical, key))
}

impl OAuthClient {
    /// A client over `store`.
    pub fn new(
        store: Arc<dyn CredentialStore>,
        opts: ClientOptions,
        http: HttpOptions,
    ) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                http: Http::new(http)?,
                store,
                opts,
                recent_logins: std::sync::Mutex::new(HashMap::new()),
                nonces: NonceCache::default(),
            }),
        })
    }

    /// The HTTP layer (for MCP requests that should share limits and proxies).
    pub fn http(&self) -> &Http {
        &self.inner.http
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CredentialStore> {
        &self.inner.store
    }

    /// The options.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// Finds a stored server by name or URL.
    pub async fn resolve(&self, name_or_url: &str) -> Result<ServerRecord> {
        let all = self.inner.store.list().await?;
        if let Some(r) = all.iter().find(|r| r.name.as_deref() == Some(name_or_url)) {
            return Ok(r.clone());
        }
        if let Ok((_, canonical, _)) = identify(name_or_url, true)
            && let Some(r) = all.into_iter().find(|r| r.server_url == canonical.as_str())
        {
            return Ok(r);
        }
        Err(Error::LoginRequired {
            server: name_or_url.to_owned(),
            reason: "no stored credentials".into(),
        })
    }

    /// Sends an unauthenticated MCP `initialize` to learn the server's challenge.
    /// `Ok(None)` when the server does not ask for authorization.
    pub async fn probe(&self, server: &HttpUrl) -> Result<Option<Challenge>> {
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": crate::mcp::LATEST_PROTOCOL_VERSION,
                       "capabilities": {}, "clientInfo": {"name": "mcp-auth", "version": env!("CARGO_PKG_VERSION")}}
        });
        let mut req = self
            .inner
            .http
            .client()?
            .post(server.as_str())
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .json(&body);
        for (k, v) in &self.inner.opts.server_headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|source| Error::Network {
            step: Step::Probe,
            url: server.as_str().to_owned(),
            source,
        })?;
        let status = resp.status().as_u16();
        let challenge = challenge_of(resp.headers());
        match status {
            401 | 403 => Ok(Some(challenge.unwrap_or_else(empty_bearer))),
            _ => Ok(None),
        }
    }

    /// A valid token for `server` without user interaction: the stored one, refreshed when
    /// it expires within the skew. [`Error::LoginRequired`] when there is none to be had.
    pub async fn token(&self, server: &str) -> Result<Token> {
        let (_, canonical, key) = identify(server, self.inner.opts.allow_http)?;
        let rec = self.inner.store.get(&key).await?;
        let skew = self.inner.opts.refresh_skew.as_secs();
        if let Some(t) = rec.as_ref().and_then(|r| r.tokens.as_ref())
            && t.is_fresh(now_secs(), skew)
        {
            return Ok(Token {
                server_url: canonical.as_str().to_owned(),
                record: t.clone(),
                dpop_key: rec.as_ref().and_then(|r| r.dpop_key.clone()),
            });
        }
        self.refresh_locked(&key, canonical.as_str(), Need::Fresh)
            .await
    }

    /// Forces a refresh (e.g. after the server said 401 to `rejected`, the token it was
    /// sent). If another process already replaced `rejected`, its token is used instead.
    pub async fn refresh(&self, server: &str, rejected: Option<&str>) -> Result<Token> {
        let (_, canonical, key) = identify(server, self.inner.opts.allow_http)?;
        let need = match rejected {
            Some(r) => Need::Replace(r),
            None => Need::New,
        };
        self.refresh_locked(&key, canonical.as_str(), need).await
    }

    /// Under the server's lock: re-read, and refresh only if what is stored still needs it.
    async fn refresh_locked(&self, key: &str, server: &str, need: Need<'_>) -> Result<Token> {
        let store = &self.inner.store;
        let _lock = store.lock(key).await?;
        let Some(mut rec) = store.get(key).await? else {
            return Err(Error::LoginRequired {
                server: server.to_owned(),
                reason: "no stored credentials".into(),
            });
        };
        let skew = self.inner.opts.refresh_skew.as_secs();
        if let Some(t) = &rec.tokens {
            let fresh = t.is_fresh(now_secs(), skew);
            let just_obtained = t.obtained_at + MIN_REFRESH_INTERVAL > now_secs()
                && t.expires_at.is_none_or(|e| e > now_secs());
            let usable = match need {
                Need::Fresh => fresh || just_obtained,
                // Someone already replaced the token the server refused.
                Need::Replace(rejected) => fresh && t.access_token.secret() != rejected,
                Need::New => false,
            };
            if usable {
                return Ok(Token {
                    server_url: server.to_owned(),
                    record: t.clone(),
                    dpop_key: rec.dpop_key.clone(),
                });
            }
        }
        let Some(client) = rec.client.clone() else {
            return Err(Error::LoginRequired {
                server: server.to_owned(),
                reason: "no client registration".into(),
            });
        };
        let refresh_token = rec.tokens.as_ref().and_then(|t| t.refresh_token.clone());
        let Some(refresh_token) = refresh_token else {
            if rec.grant.as_deref() == Some("client_credentials") {
                return self.renew_into(&mut rec, &client, None).await;
            }
            if rec.grant.as_deref() == Some(JWT_BEARER)
                && let Some(source) = &self.inner.opts.workload_token
            {
                let assertion = SecretString::new(source.read()?);
                return self.renew_into(&mut rec, &client, Some(&assertion)).await;
            }
            if rec.grant.as_deref() == Some(ID_JAG_GRANT)
                && let Some(idp) = &self.inner.opts.enterprise
            {
                // A new identity assertion grant from the (re-read, or stored and still
                // valid, or refreshed) ID token: the IdP decides again whether the user may
                // still reach this server. No browser here: a sign-in that needs the user
                // is a login, which the caller starts on `LoginRequired`.
                let scope: Option<ScopeSet> =
                    rec.requested_scope.as_deref().and_then(|s| s.parse().ok());
                let id_token = self.enterprise_id_token(idp, false, server).await?;
                let assertion = idp
                    .identity_assertion(
                        &self.inner.http,
                        &id_token,
                        &rec.issuer,
                        rec.resource.as_deref(),
                        scope.as_ref(),
                        self.inner.opts.allow_http,
                    )
                    .await?;
                return self.renew_into(&mut rec, &client, Some(&assertion)).await;
            }
            return Err(Error::LoginRequired {
                server: server.to_owned(),
                reason: "the access token expired and there is no refresh token".into(),
            });
        };
        let grant = TokenRequest::RefreshToken {
            refresh_token: &refresh_token,
            scope: None,
            resource: rec.resource.as_deref(),
        };
        let dpop_key = stored_dpop_key(&rec)?;
        let result = request_token_with(
            &self.inner.http,
            Step::Refresh,
            &rec.token_endpoint,
            &rec.issuer,
            &client,
            &grant,
            self.dpop(dpop_key.as_ref()),
        )
        .await;
        match result {
            Ok(resp) => {
                let record = to_record(resp, rec.tokens.as_ref(), rec.requested_scope.as_deref());
                rec.tokens = Some(record.clone());
                rec.updated_at = now_secs();
                store.put(key, &rec).await?;
                tracing::debug!(%server, "refreshed");
                Ok(Token {
                    server_url: server.to_owned(),
                    record,
                    dpop_key: rec.dpop_key.clone(),
                })
            }
            Err(e) if e.is_invalid_grant() => {
                // Re-read before deleting anything: a writer that does not take our lock (an
                // older version, another tool) may have rotated it meanwhile.
                if let Some(now) = store.get(key).await?
                    && let Some(t) = &now.tokens
                    && t.refresh_token
                        .as_ref()
                        .is_some_and(|r| !r.ct_eq(&refresh_token))
                {
                    return Ok(Token {
                        server_url: server.to_owned(),
                        record: t.clone(),
                        dpop_key: now.dpop_key.clone(),
                    });
                }
                rec.tokens = None;
                rec.updated_at = now_secs();
                store.put(key, &rec).await?;
                Err(Error::LoginRequired {
                    server: server.to_owned(),
                    reason: format!("the refresh token was refused ({e})"),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Renews a token that came without a refresh token by its grant again: client
    /// credentials (`assertion` `None`), or the JWT-bearer grant with a new assertion (the
    /// workload's current JWT, or a new identity assertion grant).
    async fn renew_into(
        &self,
        rec: &mut ServerRecord,
        client: &ClientRecord,
        assertion: Option<&SecretString>,
    ) -> Result<Token> {
        let scope: Option<ScopeSet> = rec.requested_scope.as_deref().and_then(|s| s.parse().ok());
        let resource = rec.resource.as_deref();
        let (step, grant) = match assertion {
            None => (
                Step::ClientCredentials,
                TokenRequest::ClientCredentials {
                    scope: scope.as_ref(),
                    resource,
                },
            ),
            Some(a) => (
                Step::JwtBearer,
                TokenRequest::JwtBearer {
                    assertion: a.secret(),
                    scope: scope.as_ref(),
                    resource,
                },
            ),
        };
        let dpop_key = stored_dpop_key(rec)?;
        let resp = request_token_with(
            &self.inner.http,
            step,
            &rec.token_endpoint,
            &rec.issuer,
            client,
            &grant,
            self.dpop(dpop_key.as_ref()),
        )
        .await?;
        let record = to_record(resp, None, rec.requested_scope.as_deref());
        rec.tokens = Some(record.clone());
        rec.updated_at = now_secs();
        self.inner
            .store
            .put(&server_key(&rec.server_url), rec)
            .await?;
        Ok(Token {
            server_url: rec.server_url.clone(),
            record,
            dpop_key: rec.dpop_key.clone(),
        })
    }

    /// A valid token, logging in when there is none (and interaction is allowed).
    pub async fn token_or_login(&self, server: &str) -> Result<Token> {
        match self.token(server).await {
            Err(Error::LoginRequired { .. }) => self.login(server, None, None).await,
            other => other,
        }
    }

    /// Reacts to a 401 from the MCP server for `rejected`: use a token another process just
    /// obtained, else refresh, else log in again.
    pub async fn on_unauthorized(
        &self,
        server: &str,
        rejected: Option<&str>,
        challenge: Option<Challenge>,
    ) -> Result<Token> {
        let (_, canonical, key) = identify(server, self.inner.opts.allow_http)?;
        // Nothing sent: a fresh stored token (another process may have just logged in) is
        // the answer; a rejected token: anything newer than it, else a refresh.
        let need = match rejected {
            Some(r) => Need::Replace(r),
            None => Need::Fresh,
        };
        let attempt = self.refresh_locked(&key, canonical.as_str(), need).await;
        match attempt {
            Err(Error::LoginRequired { .. }) => {
                self.login_replacing(server, challenge, None, rejected)
                    .await
            }
            other => other,
        }
    }

    /// Reacts to `403 insufficient_scope` (MCP 2025-11-25 "Step-Up Authorization Flow"):
    /// authorizes again with the union of the scopes held and the scopes the challenge
    /// names. `rejected` is the token the server refused, when known: if another task or
    /// process already replaced it with one holding the scopes, that one is used. The caller
    /// bounds the number of attempts.
    pub async fn step_up(
        &self,
        server: &str,
        rejected: Option<&str>,
        challenge: Challenge,
    ) -> Result<Token> {
        let (_, _, key) = identify(server, self.inner.opts.allow_http)?;
        let held: ScopeSet = self
            .inner
            .store
            .get(&key)
            .await?
            .and_then(|r| r.tokens.and_then(|t| t.scope).or(r.requested_scope))
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        let wanted = challenge.scope().unwrap_or_default();
        let scopes = held.union(&wanted);
        self.login_replacing(server, Some(challenge), Some(scopes), rejected)
            .await
    }

    /// The full authorization: discovery, registration, the grant, and storing the result.
    /// `challenge` is the server's `WWW-Authenticate` (probed when `None`); `scopes`
    /// overrides the scope selection (step-up).
    pub async fn login(
        &self,
        server: &str,
        challenge: Option<Challenge>,
        scopes: Option<ScopeSet>,
    ) -> Result<Token> {
        self.login_replacing(server, challenge, scopes, None).await
    }

    /// [`Self::login`] on behalf of a request whose token `rejected` the server refused.
    async fn login_replacing(
        &self,
        server: &str,
        challenge: Option<Challenge>,
        scopes: Option<ScopeSet>,
        rejected: Option<&str>,
    ) -> Result<Token> {
        let opts = &self.inner.opts;
        let (url, canonical, key) = identify(server, opts.allow_http)?;
        let flow = self.login_inner(&url, &canonical, &key, challenge, scopes, rejected);
        tokio::time::timeout(opts.flow_timeout + Duration::from_secs(30), flow)
            .await
            .map_err(|_| Error::Timeout {
                step: Step::Authorization,
                seconds: opts.flow_timeout.as_secs() + 30,
            })?
    }

    pub(crate) fn storm_brake(&self, key: &str, server: &str) -> Result<()> {
        let mut recent = self
            .inner
            .recent_logins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let times = recent.entry(key.to_owned()).or_default();
        let now = Instant::now();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > STORM_WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= STORM_LIMIT {
            return Err(Error::AuthorizationStorm {
                server: server.to_owned(),
                count: times.len(),
                seconds: STORM_WINDOW.as_secs(),
            });
        }
        times.push_back(now);
        Ok(())
    }

    async fn login_inner(
        &self,
        url: &HttpUrl,
        canonical: &ResourceUrl,
        key: &str,
        challenge: Option<Challenge>,
        scopes: Option<ScopeSet>,
        rejected: Option<&str>,
    ) -> Result<Token> {
        let opts = &self.inner.opts;
        let http = &self.inner.http;
        let store = &self.inner.store;
        // One interactive authorization per server at a time, across processes. Whoever
        // waited here re-reads the store: if another process logged in meanwhile (the token
        // differs from the one the server refused, or from the one stored before we waited),
        // its fresh tokens are all we need.
        let before = match rejected {
            Some(r) => Some(mcp_auth_types::AccessToken::new(r)),
            None => store
                .get(key)
                .await?
                .and_then(|r| r.tokens)
                .map(|t| t.access_token),
        };
        let _authorizing = store.lock(&format!("{key}-authorize")).await?;
        if let Some(rec) = store.get(key).await?
            && let Some(t) = &rec.tokens
            && t.is_fresh(now_secs(), opts.refresh_skew.as_secs())
            && before.as_ref().is_none_or(|b| !b.ct_eq(&t.access_token))
            && scopes.as_ref().is_none_or(|wanted| {
                t.scope
                    .as_deref()
                    .and_then(|s| s.parse::<ScopeSet>().ok())
                    .is_some_and(|held| held.is_superset(wanted))
            })
        {
            return Ok(Token {
                server_url: canonical.as_str().to_owned(),
                record: t.clone(),
                dpop_key: rec.dpop_key.clone(),
            });
        }
        // Counted only here, where an authorization really starts: callers that waited
        // for another's login and reused it above are not a storm.
        self.storm_brake(key, canonical.as_str())?;

        let challenge = match challenge {
            Some(c) => Some(c),
            None => self.probe(url).await?,
        };
        let disc = discover(
            http,
            url,
            challenge.as_ref(),
            &DiscoveryOptions {
                allow_http: opts.allow_http,
                issuer_override: None,
            },
        )
        .await?;
        let resource = match &opts.resource {
            ResourceMode::Auto => Some(disc.resource.as_str().to_owned()),
            ResourceMode::Omit => None,
            ResourceMode::Override(r) => Some(r.clone()),
        };
        let scope = scopes.or_else(|| {
            select_scopes(
                opts.scopes.as_ref(),
                challenge.as_ref().and_then(Challenge::scope).as_ref(),
                disc.resource_metadata
                    .as_ref()
                    .and_then(|p| p.scopes())
                    .as_ref(),
                disc.metadata.scopes().as_ref(),
            )
        });
        let stored = store.get(key).await?;
        let stored_client = stored.as_ref().and_then(|r| r.client.as_ref());
        // DPoP (RFC 9449): one key per server, kept across logins so that whatever is
        // bound to it (a refresh token) stays usable.
        let dpop_key = if opts.dpop.decide(
            &disc.issuer,
            &disc.metadata,
            disc.resource_metadata.as_ref(),
        )? {
            match stored.as_ref().map(stored_dpop_key).transpose()?.flatten() {
                Some(k) => Some(k),
                None => Some(DpopKey::generate().map_err(|e| Error::Config(e.to_string()))?),
            }
        } else {
            None
        };

        let grant = match opts.grant {
            GrantKind::Auto
                if opts.enterprise.is_some() && disc.metadata.supports_grant(JWT_BEARER) =>
            {
                GrantKind::IdentityAssertion
            }
            GrantKind::Auto
                if opts.workload_token.is_some() && disc.metadata.supports_grant(JWT_BEARER) =>
            {
                GrantKind::JwtBearer
            }
            GrantKind::Auto => {
                let machine = opts
                    .identity
                    .pre_registered
                    .as_ref()
                    .is_some_and(|p| p.client_secret.is_some() || p.private_key_pem.is_some());
                if machine
                    && disc.metadata.supports_grant("client_credentials")
                    && !disc.metadata.supports_grant("authorization_code")
                {
                    GrantKind::ClientCredentials
                } else if matches!(opts.interaction, Interaction::Browser(None))
                    && disc.metadata.device_authorization_endpoint.is_some()
                    && crate::device::no_display()
                {
                    tracing::info!("no display to open a browser on: using the device flow");
                    GrantKind::DeviceCode
                } else {
                    GrantKind::AuthorizationCode
                }
            }
            g => g,
        };
        if matches!(grant, GrantKind::AuthorizationCode | GrantKind::DeviceCode)
            && matches!(opts.interaction, Interaction::NonInteractive)
        {
            return Err(Error::LoginRequired {
                server: canonical.as_str().to_owned(),
                reason: "authorization is needed and no user interaction is allowed".into(),
            });
        }
        let (client, tokens) = match grant {
            GrantKind::Auto | GrantKind::ClientCredentials => {
                let client = ensure_client(
                    http,
                    &disc,
                    &opts.identity,
                    stored_client,
                    None,
                    scope.as_ref().map(ToString::to_string).as_deref(),
                )
                .await?;
                let grant = TokenRequest::ClientCredentials {
                    scope: scope.as_ref(),
                    resource: resource.as_deref(),
                };
                let resp = request_token_with(
                    http,
                    Step::ClientCredentials,
                    token_endpoint(&disc)?,
                    &disc.issuer,
                    &client,
                    &grant,
                    self.dpop(dpop_key.as_ref()),
                )
                .await?;
                (client, resp)
            }
            GrantKind::JwtBearer => {
                let source = opts.workload_token.as_ref().ok_or_else(|| {
                    Error::Config("the JWT-bearer grant needs a workload token".into())
                })?;
                let client = ensure_client(
                    http,
                    &disc,
                    &opts.identity,
                    stored_client,
                    None,
                    scope.as_ref().map(ToString::to_string).as_deref(),
                )
                .await?;
                let assertion = SecretString::new(source.read()?);
                let resp = self
                    .jwt_bearer_grant(
                        &disc,
                        &client,
                        &assertion,
                        scope.as_ref(),
                        resource.as_deref(),
                        self.dpop(dpop_key.as_ref()),
                    )
                    .await?;
                (client, resp)
            }
            GrantKind::IdentityAssertion => {
                let idp = opts.enterprise.as_ref().ok_or_else(|| {
                    Error::Config(
                        "enterprise-managed authorization needs an identity provider".into(),
                    )
                })?;
                let client = ensure_client(
                    http,
                    &disc,
                    &opts.identity,
                    stored_client,
                    None,
                    scope.as_ref().map(ToString::to_string).as_deref(),
                )
                .await?;
                let interactive = !matches!(opts.interaction, Interaction::NonInteractive);
                let id_token = self
                    .enterprise_id_token(idp, interactive, canonical.as_str())
                    .await?;
                let assertion = idp
                    .identity_assertion(
                        http,
                        &id_token,
                        &disc.issuer,
                        resource.as_deref(),
                        scope.as_ref(),
                        opts.allow_http,
                    )
                    .await?;
                let resp = self
                    .jwt_bearer_grant(
                        &disc,
                        &client,
                        &assertion,
                        scope.as_ref(),
                        resource.as_deref(),
                        self.dpop(dpop_key.as_ref()),
                    )
                    .await?;
                (client, resp)
            }
            GrantKind::DeviceCode => {
                self.device_flow(
                    &disc,
                    stored_client,
                    scope.as_ref(),
                    resource.as_deref(),
                    self.dpop(dpop_key.as_ref()),
                )
                .await?
            }
            GrantKind::AuthorizationCode => {
                // MCP 2025-11-25 "Authorization Code Protection": no S256, no flow.
                if !disc.metadata.supports_s256() {
                    return Err(Error::PkceNotSupported {
                        issuer: disc.issuer.clone(),
                    });
                }
                let flow = self
                    .code_flow(
                        &disc,
                        canonical,
                        stored_client,
                        scope.as_ref(),
                        resource.as_deref(),
                        self.dpop(dpop_key.as_ref()),
                    )
                    .await;
                match flow {
                    // No loopback port to receive the redirect on: the device flow needs none.
                    Err(Error::CallbackPort { .. })
                        if disc.metadata.device_authorization_endpoint.is_some()
                            && matches!(opts.grant, GrantKind::Auto) =>
                    {
                        tracing::warn!(
                            "the loopback redirect listener cannot bind; using the device flow instead"
                        );
                        self.device_flow(
                            &disc,
                            stored_client,
                            scope.as_ref(),
                            resource.as_deref(),
                            self.dpop(dpop_key.as_ref()),
                        )
                        .await?
                    }
                    other => other?,
                }
            }
        };

        let record = to_record(
            tokens,
            None,
            scope.as_ref().map(ToString::to_string).as_deref(),
        );
        tracing::info!(
            scope = record.scope.as_deref().unwrap_or(""),
            expires_in = record.expires_at.map(|e| e.saturating_sub(now_secs())),
            refreshable = record.refresh_token.is_some(),
            "tokens received and stored"
        );
        let _lock = store.lock(key).await?;
        let previous = store.get(key).await?;
        let name = opts
            .name
            .clone()
            .or_else(|| previous.as_ref().and_then(|p| p.name.clone()));
        let rec = ServerRecord {
            server_url: canonical.as_str().to_owned(),
            name,
            resource,
            issuer: disc.issuer.clone(),
            token_endpoint: token_endpoint(&disc)?.to_owned(),
            revocation_endpoint: disc.metadata.revocation_endpoint.clone(),
            authorization_endpoint: disc.metadata.authorization_endpoint.clone(),
            requested_scope: scope.as_ref().map(ToString::to_string),
            client: Some(client),
            tokens: Some(record.clone()),
            dpop_key: dpop_key.as_ref().map(encode_key),
            grant: Some(
                match grant {
                    GrantKind::ClientCredentials => "client_credentials",
                    GrantKind::JwtBearer => JWT_BEARER,
                    GrantKind::IdentityAssertion => ID_JAG_GRANT,
                    GrantKind::DeviceCode => crate::device::DEVICE_CODE_GRANT,
                    _ => "authorization_code",
                }
                .to_owned(),
            ),
            updated_at: now_secs(),
        };
        store.put(key, &rec).await?;
        Ok(Token {
            server_url: canonical.as_str().to_owned(),
            record,
            dpop_key: rec.dpop_key.clone(),
        })
    }

    /// The JWT-bearer grant (RFC 7523 §2.1) with `assertion` (a workload's JWT or an
    /// identity assertion grant) at the discovered token endpoint, with a DPoP proof when
    /// the server gets one. No retry and no other grant on failure: the error is the answer.
    async fn jwt_bearer_grant(
        &self,
        disc: &Discovered,
        client: &ClientRecord,
        assertion: &SecretString,
        scope: Option<&ScopeSet>,
        resource: Option<&str>,
        dpop: Option<Dpop<'_>>,
    ) -> Result<mcp_auth_types::TokenResponse> {
        let grant = TokenRequest::JwtBearer {
            assertion: assertion.secret(),
            scope,
            resource,
        };
        request_token_with(
            &self.inner.http,
            Step::JwtBearer,
            token_endpoint(disc)?,
            &disc.issuer,
            client,
            &grant,
            dpop,
        )
        .await
    }

    /// The device authorization grant (RFC 8628): codes, the prompt, polling.
    async fn device_flow(
        &self,
        disc: &Discovered,
        stored_client: Option<&ClientRecord>,
        scope: Option<&ScopeSet>,
        resource: Option<&str>,
        dpop: Option<Dpop<'_>>,
    ) -> Result<(ClientRecord, mcp_auth_types::TokenResponse)> {
        let opts = &self.inner.opts;
        let http = &self.inner.http;
        let endpoint = disc
            .metadata
            .device_authorization_endpoint
            .clone()
            .ok_or_else(|| {
                Error::Config(format!(
                    "the authorization server {} offers no device flow (no device_authorization_endpoint)",
                    disc.issuer
                ))
            })?;
        HttpUrl::parse_secure(&endpoint, opts.allow_http).map_err(|source| Error::Url {
            what: "the device authorization endpoint".into(),
            source,
        })?;
        let scope_str = scope.map(ToString::to_string);
        let client = ensure_client(
            http,
            disc,
            &opts.identity,
            stored_client,
            None,
            scope_str.as_deref(),
        )
        .await?;
        let auth = crate::device::start(
            http,
            &endpoint,
            &disc.issuer,
            &client,
            scope,
            resource,
            opts.allow_http,
        )
        .await?;
        tracing::info!(
            verification_uri = %auth.verification_uri,
            expires_in = auth.expires_in,
            "device authorization started; waiting for the user"
        );
        match &opts.device_prompt {
            Some(p) => (p.0)(&auth),
            None => (DevicePrompt::stderr().0)(&auth),
        }
        let resp = crate::device::poll(
            http,
            token_endpoint(disc)?,
            &disc.issuer,
            &client,
            &auth,
            dpop,
            opts.flow_timeout,
        )
        .await?;
        Ok((client, resp))
    }

    async fn code_flow(
        &self,
        disc: &Discovered,
        canonical: &ResourceUrl,
        stored_client: Option<&ClientRecord>,
        scope: Option<&ScopeSet>,
        resource: Option<&str>,
        dpop: Option<Dpop<'_>>,
    ) -> Result<(ClientRecord, mcp_auth_types::TokenResponse)> {
        let opts = &self.inner.opts;
        let http = &self.inner.http;
        let endpoint = authorization_endpoint(disc, opts.allow_http)?;
        let port = opts.redirect.port_for(canonical.as_str());
        let mut listener = Listener::bind_dual(
            port,
            &opts.redirect.path,
            opts.redirect.host.eq_ignore_ascii_case("localhost"),
        )
        .await?;
        let redirect_uri = opts.redirect.redirect_uri(listener.port());
        let scope_str = scope.map(ToString::to_string);
        let client = ensure_client(
            http,
            disc,
            &opts.identity,
            stored_client,
            Some(&redirect_uri),
            scope_str.as_deref(),
        )
        .await?;

        let (verifier, challenge, state) = new_request_secrets();
        let url = authorization_url(
            &AuthorizationRequest {
                endpoint: &endpoint,
                client_id: &client.client_id,
                redirect_uri: &redirect_uri,
                scope,
                resource,
                extra: &opts.authorize_params,
            },
            &state,
            &challenge,
        );
        tracing::info!(
            endpoint = endpoint.as_str(),
            client_id = %client.client_id,
            %redirect_uri,
            scope = scope_str.as_deref().unwrap_or(""),
            resource = resource.unwrap_or(""),
            "sending the user to the authorization endpoint"
        );
        let paste = self.send_user(&url, canonical.as_str())?;
        let code: AuthorizationCode = wait_for_code(
            &mut listener,
            paste,
            &state,
            &disc.issuer,
            disc.metadata.sends_iss(),
            opts.flow_timeout,
        )
        .await?;
        drop(listener);
        tracing::info!("authorization code received (state and iss checked); exchanging it");
        let grant = TokenRequest::AuthorizationCode {
            code: &code,
            redirect_uri: &redirect_uri,
            verifier: &verifier,
            resource,
        };
        let resp = request_token_with(
            http,
            Step::CodeExchange,
            token_endpoint(disc)?,
            &disc.issuer,
            &client,
            &grant,
            dpop,
        )
        .await?;
        Ok((client, resp))
    }

    /// Brings the user to the authorization `url` as [`ClientOptions::interaction`] says;
    /// `true` when a pasted redirect URL is accepted too. `who` (the server or identity
    /// provider) names what needs the login when no interaction is allowed.
    pub(crate) fn send_user(&self, url: &str, who: &str) -> Result<bool> {
        Ok(match &self.inner.opts.interaction {
            Interaction::Browser(cmd) => {
                open_browser(cmd.as_deref(), url)?;
                false
            }
            Interaction::Handler(handler) => {
                handler(url);
                false
            }
            Interaction::Manual { paste } => {
                eprintln!("Open this URL in a browser to authorize:\n\n  {url}\n");
                if *paste {
                    eprintln!(
                        "Then paste the URL the browser was redirected to here and press Enter."
                    );
                }
                *paste
            }
            Interaction::NonInteractive => {
                return Err(Error::LoginRequired {
                    server: who.to_owned(),
                    reason: "authorization is needed and no user interaction is allowed".into(),
                });
            }
        })
    }

    /// Revokes the server's tokens at the AS (RFC 7009; refresh token first, which revokes
    /// the grant on most servers, then the access token) and forgets them. Revocation
    /// failures are returned after the local copy is gone: a user who logs out expects the
    /// tokens gone from this machine whatever the server says.
    pub async fn logout(&self, server: &str) -> Result<Vec<Error>> {
        let rec = self.resolve(server).await?;
        let key = server_key(&rec.server_url);
        let _lock = self.inner.store.lock(&key).await?;
        let rec = self.inner.store.get(&key).await?.unwrap_or(rec);
        let mut problems = Vec::new();
        if let (Some(endpoint), Some(client), Some(tokens)) =
            (&rec.revocation_endpoint, &rec.client, &rec.tokens)
        {
            let refresh: Option<&RefreshToken> = tokens.refresh_token.as_ref();
            if let Some(r) = refresh
                && let Err(e) = revoke(
                    &self.inner.http,
                    endpoint,
                    &rec.issuer,
                    client,
                    r.secret(),
                    "refresh_token",
                )
                .await
            {
                problems.push(e);
            }
            if let Err(e) = revoke(
                &self.inner.http,
                endpoint,
                &rec.issuer,
                client,
                tokens.access_token.secret(),
                "access_token",
            )
            .await
            {
                problems.push(e);
            }
        }
        self.inner.store.delete(&key).await?;
        Ok(problems)
    }

    fn dpop<'a>(&'a self, key: Option<&'a DpopKey>) -> Option<Dpop<'a>> {
        key.map(|key| Dpop {
            key,
            nonces: &self.inner.nonces,
        })
    }

    /// A DPoP proof (RFC 9449 §7) for sending `token` in `method url`, with the server's
    /// latest nonce; `None` for a bearer token.
    pub fn dpop_proof(&self, token: &Token, method: &str, url: &str) -> Result<Option<String>> {
        let Some(stored) = token.dpop_key.as_ref().filter(|_| token.is_dpop()) else {
            return Ok(None);
        };
        let key = decode_key(stored)?;
        self.dpop(Some(&key))
            .map(|d| d.proof(method, url, Some(token.record.access_token.secret())))
            .transpose()
    }

    /// Remembers the `DPoP-Nonce` of a response from `url`; `true` when it is new (a
    /// request refused with `use_dpop_nonce` is then worth one retry).
    pub fn dpop_nonce_from(&self, url: &str, headers: &http::HeaderMap) -> bool {
        self.inner.nonces.update(url, headers)
    }

    /// Forgets a server without contacting anyone.
    pub async fn forget(&self, server: &str) -> Result<()> {
        let rec = self.resolve(server).await?;
        let key = server_key(&rec.server_url);
        let _lock = self.inner.store.lock(&key).await?;
        self.inner.store.delete(&key).await?;
        Ok(())
    }
}

/// An authorization a server-side application started for one of its users: the browser
/// goes to the authorization server and comes back to the application's own callback URL
/// (not a loopback listener). The application keeps this until the callback — sealed in a
/// cookie bound to the user, or in its session — and never in a URL: it holds the `state`
/// and the PKCE verifier.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct PendingAuthorization {
    /// The MCP server, canonical.
    pub server_url: String,
    /// The redirect URI sent (the token request repeats it).
    pub redirect_uri: String,
    /// The `state` sent.
    pub state: String,
    /// The PKCE verifier.
    pub verifier: String,
    /// The authorization server the request went to.
    pub issuer: String,
    /// Whether it promises `iss` on its responses (RFC 9207).
    pub iss_supported: bool,
    /// The RFC 8707 `resource` sent.
    pub resource: Option<String>,
    /// The scope asked for.
    pub scope: Option<String>,
    /// When it started (seconds since the epoch).
    pub created_at: u64,
}

impl std::fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("server_url", &self.server_url)
            .field("redirect_uri", &self.redirect_uri)
            .field("state", &"[redacted]")
            .field("verifier", &"[redacted]")
            .field("issuer", &self.issuer)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl OAuthClient {
    /// Starts an authorization for a server-side application (see
    /// [`PendingAuthorization`]): discovery from the server's challenge, the client
    /// identity (the stored registration reused when it still fits, else pre-registered, a
    /// client ID metadata document, or dynamic registration with `redirect_uri`), the scope
    /// chosen as for [`Self::login`], PKCE S256 and `state`. Returns the URL to send the
    /// browser to. The registration is stored at once (so the callback and later refreshes
    /// use it); tokens already stored are kept until the new ones replace them.
    pub async fn begin_authorization(
        &self,
        server: &str,
        redirect_uri: &str,
    ) -> Result<(String, PendingAuthorization)> {
        let opts = &self.inner.opts;
        let http = &self.inner.http;
        let store = &self.inner.store;
        let (url, canonical, key) = identify(server, opts.allow_http)?;
        let challenge = self.probe(&url).await?;
        let disc = discover(
            http,
            &url,
            challenge.as_ref(),
            &DiscoveryOptions {
                allow_http: opts.allow_http,
                issuer_override: None,
            },
        )
        .await?;
        if !disc.metadata.supports_s256() {
            return Err(Error::PkceNotSupported {
                issuer: disc.issuer.clone(),
            });
        }
        let resource = match &opts.resource {
            ResourceMode::Auto => Some(disc.resource.as_str().to_owned()),
            ResourceMode::Omit => None,
            ResourceMode::Override(r) => Some(r.clone()),
        };
        let scope = select_scopes(
            opts.scopes.as_ref(),
            challenge.as_ref().and_then(Challenge::scope).as_ref(),
            disc.resource_metadata
                .as_ref()
                .and_then(|p| p.scopes())
                .as_ref(),
            disc.metadata.scopes().as_ref(),
        );
        let endpoint = authorization_endpoint(&disc, opts.allow_http)?;
        let scope_str = scope.as_ref().map(ToString::to_string);
        let _lock = store.lock(&key).await?;
        let stored = store.get(&key).await?;
        let client = ensure_client(
            http,
            &disc,
            &opts.identity,
            stored.as_ref().and_then(|r| r.client.as_ref()),
            Some(redirect_uri),
            scope_str.as_deref(),
        )
        .await?;
        let keep_tokens = stored
            .as_ref()
            .filter(|r| r.issuer == disc.issuer)
            .and_then(|r| r.tokens.clone());
        // As in a login: the server's DPoP key, kept, or a new one when DPoP is chosen.
        let dpop_key = if opts.dpop.decide(
            &disc.issuer,
            &disc.metadata,
            disc.resource_metadata.as_ref(),
        )? {
            match stored.as_ref().and_then(|r| r.dpop_key.clone()) {
                Some(k) => Some(k),
                None => Some(encode_key(
                    &DpopKey::generate().map_err(|e| Error::Config(e.to_string()))?,
                )),
            }
        } else {
            None
        };
        let rec = ServerRecord {
            server_url: canonical.as_str().to_owned(),
            name: stored
                .as_ref()
                .and_then(|r| r.name.clone())
                .or_else(|| opts.name.clone()),
            resource: resource.clone(),
            issuer: disc.issuer.clone(),
            token_endpoint: token_endpoint(&disc)?.to_owned(),
            revocation_endpoint: disc.metadata.revocation_endpoint.clone(),
            authorization_endpoint: disc.metadata.authorization_endpoint.clone(),
            requested_scope: scope_str.clone(),
            client: Some(client.clone()),
            tokens: keep_tokens,
            // Set by the first completed authorization: a record with a registration but no
            // grant was never connected (an abandoned or denied first attempt).
            grant: stored.as_ref().and_then(|r| r.grant.clone()),
            dpop_key,
            updated_at: now_secs(),
        };
        store.put(&key, &rec).await?;
        let (verifier, pkce, state) = new_request_secrets();
        let url = authorization_url(
            &AuthorizationRequest {
                endpoint: &endpoint,
                client_id: &client.client_id,
                redirect_uri,
                scope: scope.as_ref(),
                resource: resource.as_deref(),
                extra: &opts.authorize_params,
            },
            &state,
            &pkce,
        );
        Ok((
            url,
            PendingAuthorization {
                server_url: canonical.as_str().to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                state: state.as_str().to_owned(),
                verifier: verifier.secret().to_owned(),
                issuer: disc.issuer.clone(),
                iss_supported: disc.metadata.sends_iss(),
                resource,
                scope: scope_str,
                created_at: now_secs(),
            },
        ))
    }

    /// Finishes what [`Self::begin_authorization`] started, with the query string the
    /// authorization server sent to the callback: `state` (constant time), `iss` (RFC 9207),
    /// an error ([`Error::AuthorizationDenied`]), then the code exchange with the PKCE
    /// verifier; the tokens are stored with the registration, under the server's lock.
    pub async fn complete_authorization(
        &self,
        pending: &PendingAuthorization,
        callback_query: &str,
    ) -> Result<Token> {
        let store = &self.inner.store;
        let key = server_key(&pending.server_url);
        let code = crate::authorize::check_redirect(
            callback_query,
            &mcp_auth_types::CsrfState::from_string(pending.state.clone()),
            &pending.issuer,
            pending.iss_supported,
        )?;
        let verifier = mcp_auth_types::PkceVerifier::from_string(pending.verifier.clone())
            .ok_or_else(|| {
                Error::Config("the pending authorization's verifier is invalid".into())
            })?;
        let Some(mut rec) = store.get(&key).await? else {
            return Err(Error::LoginRequired {
                server: pending.server_url.clone(),
                reason: "the authorization was started elsewhere (no registration stored)".into(),
            });
        };
        let Some(client) = rec.client.clone().filter(|_| rec.issuer == pending.issuer) else {
            return Err(Error::LoginRequired {
                server: pending.server_url.clone(),
                reason: "the stored registration is for another authorization server".into(),
            });
        };
        let grant = TokenRequest::AuthorizationCode {
            code: &code,
            redirect_uri: &pending.redirect_uri,
            verifier: &verifier,
            resource: pending.resource.as_deref(),
        };
        let dpop_key = stored_dpop_key(&rec)?;
        let resp = request_token_with(
            &self.inner.http,
            Step::CodeExchange,
            &rec.token_endpoint,
            &rec.issuer,
            &client,
            &grant,
            self.dpop(dpop_key.as_ref()),
        )
        .await?;
        let record = to_record(resp, None, pending.scope.as_deref());
        let _lock = store.lock(&key).await?;
        if let Some(latest) = store.get(&key).await? {
            rec = latest;
        }
        rec.tokens = Some(record.clone());
        rec.requested_scope = pending.scope.clone();
        rec.grant = Some("authorization_code".into());
        rec.updated_at = now_secs();
        store.put(&key, &rec).await?;
        Ok(Token {
            server_url: pending.server_url.clone(),
            record,
            dpop_key: rec.dpop_key.clone(),
        })
    }
}

/// The DPoP key stored with a server, if any.
fn stored_dpop_key(rec: &ServerRecord) -> Result<Option<DpopKey>> {
    rec.dpop_key.as_ref().map(decode_key).transpose()
}

/// The discovered authorization endpoint, checked to be https (or allowed http).
fn authorization_endpoint(disc: &Discovered, allow_http: bool) -> Result<HttpUrl> {
    let endpoint = disc
        .metadata
        .authorization_endpoint
        .as_deref()
        .ok_or(Error::Metadata {
            step: Step::AuthorizationServerMetadata,
            source: mcp_auth_types::metadata::MetadataError::Missing("authorization_endpoint"),
        })?;
    HttpUrl::parse_secure(endpoint, allow_http).map_err(|source| Error::Url {
        what: "the authorization endpoint".into(),
        source,
    })
}

fn token_endpoint(disc: &Discovered) -> Result<&str> {
    disc.metadata
        .token_endpoint
        .as_deref()
        .ok_or(Error::Metadata {
            step: Step::AuthorizationServerMetadata,
            source: mcp_auth_types::metadata::MetadataError::Missing("token_endpoint"),
        })
}

fn empty_bearer() -> Challenge {
    Challenge {
        scheme: "Bearer".into(),
        token68: None,
        params: Vec::new(),
    }
}

/// The Bearer challenge of a response, if any.
pub fn challenge_of(headers: &http::HeaderMap) -> Option<Challenge> {
    find_bearer(
        headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn the_workload_token_is_read_each_time_and_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let source = WorkloadToken::File(path.clone());
        assert!(matches!(source.read(), Err(Error::Config(_))));
        std::fs::write(&path, "aaa.bbb.ccc\n").unwrap();
        assert_eq!(source.read().unwrap(), "aaa.bbb.ccc");
        // Rotated in place by the platform: the next read sees the new one.
        std::fs::write(&path, "ddd.eee.fff").unwrap();
        assert_eq!(source.read().unwrap(), "ddd.eee.fff");
        std::fs::write(&path, "not-a-jwt-secret").unwrap();
        let err = source.read().unwrap_err().to_string();
        assert!(!err.contains("not-a-jwt-secret"), "{err}");
        let env = WorkloadToken::Env("MCP_AUTH_TEST_SURELY_UNSET_VAR".into());
        assert!(env.read().is_err());
    }

    #[test]
    fn storm_brake_stops_the_seventh_authorization_in_a_minute() {
        let c = OAuthClient::new(
            Arc::new(MemoryStore::new()),
            ClientOptions::default(),
            HttpOptions::default(),
        )
        .unwrap();
        for _ in 0..STORM_LIMIT {
            c.storm_brake("k", "https://s").unwrap();
        }
        assert!(matches!(
            c.storm_brake("k", "https://s"),
            Err(Error::AuthorizationStorm {
                count: STORM_LIMIT,
                ..
            })
        ));
        // Other servers are not affected.
        c.storm_brake("other", "https://o").unwrap();
    }

    /// A server that issues tokens living 2 s would otherwise get a refresh per call; the
    /// token endpoint here does not exist, so any refresh attempt would fail.
    #[tokio::test]
    async fn a_token_just_obtained_is_not_refreshed_again() {
        let store = Arc::new(MemoryStore::new());
        let server = "http://127.0.0.1:9/mcp";
        let now = now_secs();
        let rec = ServerRecord {
            server_url: server.into(),
            name: None,
            resource: None,
            issuer: "http://127.0.0.1:9".into(),
            token_endpoint: "http://127.0.0.1:9/token".into(),
            revocation_endpoint: None,
            authorization_endpoint: None,
            requested_scope: None,
            client: None,
            dpop_key: None,
            tokens: Some(TokenRecord {
                access_token: mcp_auth_types::AccessToken::new("short-lived"),
                token_type: "Bearer".into(),
                expires_at: Some(now + 2),
                refresh_token: Some(RefreshToken::new("r")),
                scope: None,
                obtained_at: now,
            }),
            grant: None,
            updated_at: now,
        };
        store.put(&server_key(server), &rec).await.unwrap();
        let c = OAuthClient::new(store, ClientOptions::default(), HttpOptions::default()).unwrap();
        let t = c.token(server).await.unwrap();
        assert_eq!(t.record.access_token.secret(), "short-lived");
    }
}
