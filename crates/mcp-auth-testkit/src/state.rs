//! The server's memory: clients, codes, tokens, sessions, counters, and the clock.
//!
//! Everything sits behind one `std::sync::Mutex`: no handler holds it across an `.await`
//! (delays are slept before taking it), so a blocking mutex is both correct and simpler than
//! an async one, and one lock makes every grant atomic (a code is spent, a refresh token
//! rotated, in one critical section).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mcp_auth_types::{AuthMethod, ClientSecret, ScopeSet};

use crate::config::{ClientConfig, Config};
use crate::stats::Stats;

/// How long an authorization code stays redeemable (OAuth 2.1 §4.1.2 recommends at most
/// 10 minutes).
pub(crate) const CODE_TTL: Duration = Duration::from_secs(300);

/// State shared by every request.
pub(crate) struct Shared {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    started: Instant,
    inner: Mutex<Inner>,
}

/// What the lock protects.
pub(crate) struct Inner {
    pub config: Config,
    /// Added to the real elapsed time: [`crate::TestServer::advance_clock`].
    pub clock_offset: Duration,
    pub registered: HashMap<String, Client>,
    pub codes: HashMap<String, CodeRecord>,
    pub access: HashMap<String, AccessRecord>,
    pub refresh: HashMap<String, RefreshRecord>,
    /// Token families (one per authorization grant); `true` once revoked.
    pub families: HashMap<u64, bool>,
    next_family: u64,
    pub sessions: HashSet<String>,
    pub stats: Stats,
}

/// A client, pre-registered or dynamic.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub id: String,
    pub secret: Option<ClientSecret>,
    /// `None`: any secret method (pre-registered confidential clients).
    pub auth_method: Option<AuthMethod>,
    pub redirect_uris: Vec<String>,
    pub client_credentials_allowed: bool,
}

impl Client {
    fn from_config(c: &ClientConfig) -> Self {
        let auth_method = match (&c.token_endpoint_auth_method, &c.client_secret) {
            (Some(m), _) => Some(m.clone()),
            (None, None) => Some(AuthMethod::None),
            (None, Some(_)) => None,
        };
        Self {
            id: c.client_id.clone(),
            secret: c.client_secret.clone(),
            auth_method,
            redirect_uris: c.redirect_uris.clone(),
            client_credentials_allowed: c.client_secret.is_some(),
        }
    }

    pub fn is_confidential(&self) -> bool {
        self.secret.is_some()
    }
}

/// An authorization code and the request it answers.
#[derive(Debug, Clone)]
pub(crate) struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub challenge: String,
    pub scopes: ScopeSet,
    pub resource: Option<String>,
    pub expires_at: Duration,
    /// Set when exchanged; a second exchange revokes this family (OAuth 2.1 §4.1.3).
    pub spent_family: Option<u64>,
}

/// An access token.
#[derive(Debug, Clone)]
pub(crate) struct AccessRecord {
    pub client_id: String,
    pub scopes: ScopeSet,
    pub resource: Option<String>,
    pub expires_at: Duration,
    pub revoked: bool,
    pub family: Option<u64>,
}

/// A refresh token.
#[derive(Debug, Clone)]
pub(crate) struct RefreshRecord {
    pub client_id: String,
    pub scopes: ScopeSet,
    pub resource: Option<String>,
    pub family: u64,
    /// `false` once rotated or revoked.
    pub active: bool,
}

/// Why a bearer token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    Unknown,
    Expired,
    Revoked,
}

impl Shared {
    pub fn new(base_url: String, config: Config) -> Self {
        Self {
            base_url,
            started: Instant::now(),
            inner: Mutex::new(Inner {
                config,
                clock_offset: Duration::ZERO,
                registered: HashMap::new(),
                codes: HashMap::new(),
                access: HashMap::new(),
                refresh: HashMap::new(),
                families: HashMap::new(),
                next_family: 1,
                sessions: HashSet::new(),
                stats: Stats::default(),
            }),
        }
    }

    /// Locks the state. A handler that panicked while holding the lock leaves counters, not
    /// broken invariants, so a poisoned lock is still usable.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A snapshot of the configuration.
    pub fn config(&self) -> Config {
        self.lock().config.clone()
    }

    /// The server's clock: time since start plus the test's offset.
    pub fn now(&self, inner: &Inner) -> Duration {
        self.started.elapsed() + inner.clock_offset
    }
}

impl Inner {
    /// A client by id: pre-registered (from the live config), dynamic, or a client ID
    /// metadata document.
    pub fn client(&self, id: &str) -> Option<Client> {
        if let Some(c) = self.config.clients.iter().find(|c| c.client_id == id) {
            return Some(Client::from_config(c));
        }
        if let Some(c) = self.registered.get(id) {
            return Some(c.clone());
        }
        if self.config.client_id_metadata_document_supported && id.starts_with("https://") {
            let (_, doc) = self
                .config
                .client_metadata_documents
                .iter()
                .find(|(url, doc)| url == id && doc.client_id.as_deref() == Some(id))?;
            // Client ID metadata documents describe public clients (or `private_key_jwt`
            // ones, which this server does not support).
            return Some(Client {
                id: id.to_owned(),
                secret: None,
                auth_method: Some(AuthMethod::None),
                redirect_uris: doc.redirect_uris.clone(),
                client_credentials_allowed: false,
            });
        }
        None
    }

    /// Starts a token family (one authorization grant and everything refreshed from it).
    pub fn new_family(&mut self) -> u64 {
        let f = self.next_family;
        self.next_family += 1;
        self.families.insert(f, false);
        f
    }

    pub fn family_revoked(&self, family: u64) -> bool {
        self.families.get(&family).copied().unwrap_or(true)
    }

    /// Revokes a family: every access and refresh token descended from one grant.
    pub fn revoke_family(&mut self, family: u64) {
        self.families.insert(family, true);
        for r in self.refresh.values_mut().filter(|r| r.family == family) {
            r.active = false;
        }
        for a in self
            .access
            .values_mut()
            .filter(|a| a.family == Some(family))
        {
            a.revoked = true;
        }
    }

    /// Issues an access token.
    pub fn issue_access(
        &mut self,
        now: Duration,
        client_id: &str,
        scopes: &ScopeSet,
        resource: Option<&str>,
        family: Option<u64>,
    ) -> String {
        let token = random_token("at_");
        let ttl = Duration::from_secs(self.config.access_token_ttl);
        self.access.insert(
            token.clone(),
            AccessRecord {
                client_id: client_id.to_owned(),
                scopes: scopes.clone(),
                resource: resource.map(str::to_owned),
                expires_at: now + ttl,
                revoked: false,
                family,
            },
        );
        token
    }

    /// Issues a refresh token in `family`.
    pub fn issue_refresh(
        &mut self,
        client_id: &str,
        scopes: &ScopeSet,
        resource: Option<&str>,
        family: u64,
    ) -> String {
        let token = random_token("rt_");
        self.refresh.insert(
            token.clone(),
            RefreshRecord {
                client_id: client_id.to_owned(),
                scopes: scopes.clone(),
                resource: resource.map(str::to_owned),
                family,
                active: true,
            },
        );
        token
    }

    /// Looks up a bearer token for the resource server.
    pub fn check_access(&self, token: &str, now: Duration) -> Result<AccessRecord, TokenProblem> {
        let rec = self.access.get(token).ok_or(TokenProblem::Unknown)?;
        if rec.revoked || rec.family.is_some_and(|f| self.family_revoked(f)) {
            return Err(TokenProblem::Revoked);
        }
        if now >= rec.expires_at {
            return Err(TokenProblem::Expired);
        }
        Ok(rec.clone())
    }
}

/// 32 random bytes, base64url, behind a prefix that says what the token is (handy when a
/// test prints one).
pub(crate) fn random_token(prefix: &str) -> String {
    let mut buf = [0u8; 32];
    // A test server without randomness cannot do anything useful; the OS source failing is
    // not something to recover from.
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
    )
}
