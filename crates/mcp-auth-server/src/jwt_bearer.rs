//! The JWT bearer authorization grant (RFC 7523 §2.1, §3) from configured trusted issuers
//! ([`TrustedIssuer`]): `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an
//! `assertion` that is
//! - an **Identity Assertion JWT Authorization Grant** (ID-JAG) from an enterprise identity
//!   provider (MCP enterprise-managed authorization, SEP-990;
//!   draft-ietf-oauth-identity-assertion-authz-grant): `typ: oauth-id-jag+jwt`, issued to
//!   one of our clients (`client_id`) for one of our resources (`resource`), or
//! - a **workload identity token** (MCP workload identity federation, SEP-1933): a
//!   Kubernetes service account token, a GitHub Actions OIDC token, a cloud workload
//!   identity token, from a platform whose allowed subjects are configured.
//!
//! [`verify`] is pure (the assertion, the issuer's key set, the context and the time in; a
//! [`VerifiedAssertion`] or an [`AssertionError`] out), so every refusal is unit-tested and
//! fuzzed. [`IssuerKeys`] fetches and caches the issuers' key sets; the token endpoint ties
//! them to the store (single use of each `jti`) and mints the tokens.
//!
//! Neither an assertion nor any of its claims ever reaches a log or an error description.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_auth_types::{ErrorCode, ScopeSet};
use mcp_auth_upstream::id_token::{self, IdTokenError};
use serde_json::{Map, Value};

use crate::config::{SubjectMapping, TrustKind, TrustedIssuer};
use crate::error::OAuthError;
use crate::handlers::AppState;
use crate::store::{ClientRow, hash_secret, unix_now};

/// The grant type (RFC 7523 §2.1).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The `typ` of an Identity Assertion JWT Authorization Grant.
pub const ID_JAG_TYPE: &str = "oauth-id-jag+jwt";

/// Claim values longer than this are refused (subjects, `jti`, `client_id`).
const MAX_CLAIM_LEN: usize = 1024;

/// Why an assertion was refused. Each maps to one RFC 6749 §5.2 error code
/// ([`error_code`](Self::error_code)); the messages name the check that failed and never
/// quote the assertion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssertionError {
    /// Not a compact JWS with a JSON header and a JSON object payload, or too long.
    #[error("the assertion is not a well-formed signed JWT")]
    Malformed,
    /// `iss` names no configured trusted issuer (RFC 7523 §3 point 1).
    #[error("the assertion's issuer is not trusted")]
    UntrustedIssuer,
    /// The header's `alg` is not in the issuer's allow-list (`none` and `HS*` never are).
    #[error("the assertion's signature algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// The header marks extensions critical (RFC 7515 §4.1.11).
    #[error("the assertion's header marks extensions critical")]
    UnsupportedCritical,
    /// An enterprise assertion whose `typ` is not `oauth-id-jag+jwt`.
    #[error("the assertion's typ is not oauth-id-jag+jwt")]
    WrongType,
    /// No key of the issuer matches the assertion's `kid` (or its algorithm).
    #[error("no key of the issuer matches the assertion")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the assertion's signature does not verify")]
    BadSignature,
    /// `aud` does not name this authorization server (RFC 7523 §3 point 3).
    #[error("the assertion's audience is not this authorization server")]
    WrongAudience,
    /// `exp` has passed, beyond the leeway (RFC 7523 §3 point 4).
    #[error("the assertion has expired")]
    Expired,
    /// `nbf` is in the future, beyond the leeway (RFC 7523 §3 point 5).
    #[error("the assertion is not valid yet")]
    NotYetValid,
    /// `iat` is in the future, beyond the leeway (RFC 7523 §3 point 6).
    #[error("the assertion was issued in the future")]
    IssuedInFuture,
    /// `exp - iat` exceeds the issuer's `max_assertion_lifetime` (RFC 7523 §3 point 4: the
    /// server "may reject JWTs with an exp claim value that is unreasonably far in the
    /// future").
    #[error("the assertion's lifetime exceeds {max} seconds")]
    LifetimeTooLong {
        /// The bound, in seconds.
        max: u64,
    },
    /// A required claim is absent.
    #[error("the assertion has no {0} claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or an unusable value.
    #[error("the assertion's {0} claim is invalid")]
    InvalidClaim(&'static str),
    /// A claim the issuer's `required_claims` asks for is absent or has another value.
    #[error("the assertion's {0} claim does not have the required value")]
    RequiredClaim(String),
    /// The ID-JAG's `client_id` is not the authenticated client.
    #[error("the assertion was issued to another client")]
    WrongClient,
    /// The client may not present this issuer's assertions (`allowed_clients`).
    #[error("this client may not use assertions from this issuer")]
    ClientNotAllowed,
    /// The subject is not in the issuer's `allowed_subjects`.
    #[error("the assertion's subject is not allowed")]
    SubjectNotAllowed,
    /// `subject_mapping = "local_account"` and no such local account exists.
    #[error("the assertion's subject has no account at this server")]
    NoAccount,
    /// The requested resource is not one the assertion was issued for.
    #[error("the requested resource is not the one the assertion was issued for")]
    ResourceMismatch,
    /// The assertion names several resources and the request none.
    #[error("the assertion names several resources: the request must name one")]
    ResourceAmbiguous,
    /// The requested scope is beyond what the assertion or the issuer grants.
    #[error("{0}")]
    Scope(&'static str),
    /// The assertion's `jti` was already used (RFC 7523 §3 point 7).
    #[error("the assertion was already used")]
    Replayed,
    /// The issuer's keys could not be fetched: nobody's fault we can name, try later.
    #[error("the issuer's keys are unavailable")]
    KeysUnavailable,
}

impl AssertionError {
    /// The RFC 6749 §5.2 / RFC 8707 error code.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::ClientNotAllowed => ErrorCode::UnauthorizedClient,
            Self::ResourceMismatch | Self::ResourceAmbiguous => ErrorCode::InvalidTarget,
            Self::Scope(_) => ErrorCode::InvalidScope,
            Self::KeysUnavailable => ErrorCode::TemporarilyUnavailable,
            _ => ErrorCode::InvalidGrant,
        }
    }
}

impl From<AssertionError> for OAuthError {
    fn from(e: AssertionError) -> Self {
        OAuthError::new(e.error_code(), e.to_string())
    }
}

/// What [`verify`] checks an assertion against besides the issuer's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// This server's issuer; `aud` must name it (with or without a trailing slash) or its
    /// token endpoint, or the issuer's configured `audience`.
    pub server_issuer: &'a str,
    /// The authenticated client of the token request.
    pub client_id: &'a str,
    /// The request's `resource` (RFC 8707), if any.
    pub requested_resource: Option<&'a str>,
    /// Now, in seconds since the Unix epoch.
    pub now: u64,
}

/// An assertion that passed every check of [`verify`]. Holds no part of the assertion that
/// could be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedAssertion {
    /// The trusted issuer's id.
    pub issuer_id: String,
    /// The subject of the tokens to issue ([`SubjectMapping`]).
    pub subject: String,
    /// The subject as the issuer wrote it (the `subject_claim`).
    pub external_subject: String,
    /// What single use is keyed on: a hash of the `jti`, or of the whole assertion when a
    /// workload token has no `jti`.
    pub replay_key: String,
    /// The assertion's `exp`.
    pub expires_at: u64,
    /// The assertion's `scope`, if any.
    pub scope: Option<ScopeSet>,
    /// The resource the tokens are for: the request's, else the assertion's.
    pub resource: Option<String>,
}

/// The `iss` of an assertion, read without verifying anything, to find its issuer's keys.
/// Nothing else of the payload is trusted before [`verify`].
pub fn unverified_issuer(assertion: &str) -> Result<String, AssertionError> {
    if assertion.len() > id_token::MAX_TOKEN_LEN {
        return Err(AssertionError::Malformed);
    }
    let mut parts = assertion.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AssertionError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AssertionError::Malformed)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| AssertionError::Malformed)?;
    match claims.get("iss") {
        Some(Value::String(s)) => Ok(s.clone()),
        None => Err(AssertionError::MissingClaim("iss")),
        Some(_) => Err(AssertionError::InvalidClaim("iss")),
    }
}

/// The trusted issuer whose `issuer` is exactly `iss`.
pub fn find_issuer<'a>(trusted: &'a [TrustedIssuer], iss: &str) -> Option<&'a TrustedIssuer> {
    trusted.iter().find(|t| t.issuer == iss)
}

/// Verifies `assertion` from `issuer` against its key set `jwks` (`{"keys": [...]}`),
/// following RFC 7523 §3 and, for enterprise issuers, the ID-JAG profile:
///
/// 1. signature: an allowed algorithm, the key named by `kid`, no critical extensions;
/// 2. `typ` = `oauth-id-jag+jwt` (enterprise);
/// 3. `iss` = the issuer exactly (§3 point 1);
/// 4. `aud` names this server (§3 point 3);
/// 5. `exp` present and not passed, `nbf` and `iat` not in the future, all with the
///    issuer's leeway; `iat` present and `exp - iat` within `max_assertion_lifetime`
///    (§3 points 4-6);
/// 6. `jti` present for enterprise assertions (§3 point 7; single use is the token
///    endpoint's, through [`Store::claim_once`](crate::store::Store::claim_once));
/// 7. `client_id` = the authenticated client (enterprise) and the client in
///    `allowed_clients` (when set);
/// 8. the subject claim present and in `allowed_subjects` (when set), `required_claims`;
/// 9. `resource` (enterprise) matching the request's, `scope` well-formed.
pub fn verify(
    assertion: &str,
    issuer: &TrustedIssuer,
    jwks: &Value,
    ctx: &Context<'_>,
) -> Result<VerifiedAssertion, AssertionError> {
    let jws =
        id_token::verify_signature(assertion, jwks, &issuer.algorithms).map_err(|e| match e {
            IdTokenError::AlgorithmNotAllowed(_) => AssertionError::AlgorithmNotAllowed,
            IdTokenError::UnsupportedCritical => AssertionError::UnsupportedCritical,
            IdTokenError::UnknownKey { .. }
            | IdTokenError::AmbiguousKey
            | IdTokenError::KeyAlgorithmMismatch { .. } => AssertionError::UnknownKey,
            IdTokenError::BadSignature => AssertionError::BadSignature,
            _ => AssertionError::Malformed,
        })?;
    let enterprise = issuer.kind == TrustKind::Enterprise;
    // draft-ietf-oauth-identity-assertion-authz-grant §3: "typ" is "oauth-id-jag+jwt"; media
    // type names compare case-insensitively, and the "application/" prefix may be written
    // (RFC 7515 §4.1.9).
    if enterprise {
        let typ = jws.typ.as_deref().unwrap_or("");
        let typ = typ
            .get(..12)
            .filter(|p| p.eq_ignore_ascii_case("application/"))
            .map_or(typ, |_| &typ[12..]);
        if !typ.eq_ignore_ascii_case(ID_JAG_TYPE) {
            return Err(AssertionError::WrongType);
        }
    }
    let c = &jws.payload;
    let iss = string_claim(c, "iss")?.ok_or(AssertionError::MissingClaim("iss"))?;
    if iss != issuer.issuer {
        return Err(AssertionError::UntrustedIssuer);
    }
    check_audience(c, issuer, ctx.server_issuer)?;
    let leeway = issuer.leeway_secs;
    let now = ctx.now;
    let exp = numeric_date(c, "exp")?.ok_or(AssertionError::MissingClaim("exp"))?;
    if now > exp.saturating_add(leeway) {
        return Err(AssertionError::Expired);
    }
    if let Some(nbf) = numeric_date(c, "nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return Err(AssertionError::NotYetValid);
    }
    let iat = numeric_date(c, "iat")?.ok_or(AssertionError::MissingClaim("iat"))?;
    if iat > now.saturating_add(leeway) {
        return Err(AssertionError::IssuedInFuture);
    }
    if exp < iat {
        return Err(AssertionError::InvalidClaim("exp"));
    }
    if exp - iat > issuer.max_assertion_lifetime_secs {
        return Err(AssertionError::LifetimeTooLong {
            max: issuer.max_assertion_lifetime_secs,
        });
    }
    let jti = bounded(string_claim(c, "jti")?, "jti")?;
    if enterprise && jti.is_none() {
        return Err(AssertionError::MissingClaim("jti"));
    }
    if enterprise {
        let client = bounded(string_claim(c, "client_id")?, "client_id")?
            .ok_or(AssertionError::MissingClaim("client_id"))?;
        if client != ctx.client_id {
            return Err(AssertionError::WrongClient);
        }
    }
    if !issuer.allowed_clients.is_empty()
        && !issuer.allowed_clients.iter().any(|a| a == ctx.client_id)
    {
        return Err(AssertionError::ClientNotAllowed);
    }
    let external_subject = match c.get(issuer.subject_claim.as_str()) {
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= MAX_CLAIM_LEN && !s.chars().any(char::is_control) =>
        {
            s.clone()
        }
        Some(_) => return Err(AssertionError::InvalidClaim("subject")),
        None => return Err(AssertionError::MissingClaim("subject")),
    };
    if !issuer.allowed_subjects.is_empty()
        && !issuer
            .allowed_subjects
            .iter()
            .any(|p| glob_match(p, &external_subject))
    {
        return Err(AssertionError::SubjectNotAllowed);
    }
    for (name, want) in &issuer.required_claims {
        let ok = match (c.get(name.as_str()), want) {
            (Some(Value::Array(items)), Value::String(_)) => items.contains(want),
            (Some(have), _) => have == want,
            (None, _) => false,
        };
        if !ok {
            return Err(AssertionError::RequiredClaim(name.clone()));
        }
    }
    let resource = if enterprise {
        pick_resource(c, ctx.requested_resource)?
    } else {
        ctx.requested_resource.map(str::to_owned)
    };
    let scope = match c.get("scope") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            s.parse::<ScopeSet>()
                .map_err(|_| AssertionError::InvalidClaim("scope"))?,
        ),
        Some(_) => return Err(AssertionError::InvalidClaim("scope")),
    };
    let subject = match issuer.subject_mapping {
        SubjectMapping::Prefixed => {
            format!("{}:{}:{external_subject}", issuer.kind.as_str(), issuer.id)
        }
        // Usernames never contain ':' (`LocalAccounts::add`).
        SubjectMapping::LocalAccount if external_subject.contains(':') => {
            return Err(AssertionError::NoAccount);
        }
        SubjectMapping::LocalAccount => format!("local:{external_subject}"),
    };
    let replay_key = match &jti {
        Some(j) => hash_secret(j),
        None => hash_secret(assertion),
    };
    Ok(VerifiedAssertion {
        issuer_id: issuer.id.clone(),
        subject,
        external_subject,
        replay_key,
        expires_at: exp,
        scope,
        resource,
    })
}

/// The scope to grant (RFC 6749 §3.3): the requested one, which must be within the
/// assertion's `scope` and the issuer's ceiling; without a request, the assertion's scope
/// narrowed to the ceiling, else the ceiling; `None` leaves the choice to the server's
/// defaults.
pub fn grant_scope(
    requested: Option<&str>,
    assertion: Option<&ScopeSet>,
    ceiling: Option<&ScopeSet>,
) -> Result<Option<ScopeSet>, AssertionError> {
    let requested = requested.map(str::trim).filter(|r| !r.is_empty());
    if let Some(r) = requested {
        let r: ScopeSet = r
            .parse()
            .map_err(|_| AssertionError::Scope("the requested scope is malformed"))?;
        if assertion.is_some_and(|a| !a.is_superset(&r)) {
            return Err(AssertionError::Scope(
                "the requested scope exceeds the assertion's scope",
            ));
        }
        if ceiling.is_some_and(|c| !c.is_superset(&r)) {
            return Err(AssertionError::Scope(
                "the requested scope exceeds what this issuer may grant",
            ));
        }
        return Ok(Some(r));
    }
    Ok(match (assertion, ceiling) {
        (Some(a), Some(c)) => Some(a.iter().filter(|s| c.contains(s.as_str())).cloned().fold(
            ScopeSet::new(),
            |mut set, s| {
                set.insert(s);
                set
            },
        )),
        (Some(a), None) => Some(a.clone()),
        (None, c) => c.cloned(),
    })
}

/// Glob matching for `allowed_subjects`: `*` matches any run of characters (`/` and `:`
/// included), `?` exactly one; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more character.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// RFC 7523 §3 point 3: `aud` (a string or an array) names this server: its issuer (with or
/// without a trailing slash), its token endpoint, or the issuer's configured audience.
fn check_audience(
    c: &Map<String, Value>,
    issuer: &TrustedIssuer,
    server_issuer: &str,
) -> Result<(), AssertionError> {
    let base = server_issuer.trim_end_matches('/');
    let token_endpoint = format!("{base}/token");
    let ours = |a: &str| {
        a.trim_end_matches('/') == base
            || a == token_endpoint
            || issuer.audience.as_deref() == Some(a)
    };
    let ok = match c.get("aud") {
        None | Some(Value::Null) => return Err(AssertionError::MissingClaim("aud")),
        Some(Value::String(a)) => ours(a),
        Some(Value::Array(items)) => items.iter().any(|v| v.as_str().is_some_and(ours)),
        Some(_) => return Err(AssertionError::InvalidClaim("aud")),
    };
    if ok {
        Ok(())
    } else {
        Err(AssertionError::WrongAudience)
    }
}

/// The resource an ID-JAG grants: its `resource` (a string or an array of strings) must
/// contain the requested one; without a request, its only resource.
fn pick_resource(
    c: &Map<String, Value>,
    requested: Option<&str>,
) -> Result<Option<String>, AssertionError> {
    let listed: Vec<&str> = match c.get("resource") {
        None | Some(Value::Null) => return Ok(requested.map(str::to_owned)),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .ok_or(AssertionError::InvalidClaim("resource"))?,
        Some(_) => return Err(AssertionError::InvalidClaim("resource")),
    };
    match (requested, listed.as_slice()) {
        (Some(r), l) if l.contains(&r) => Ok(Some(r.to_owned())),
        (Some(_), _) => Err(AssertionError::ResourceMismatch),
        (None, []) => Ok(None),
        (None, [one]) => Ok(Some((*one).to_owned())),
        (None, _) => Err(AssertionError::ResourceAmbiguous),
    }
}

fn string_claim(
    c: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, AssertionError> {
    match c.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(AssertionError::InvalidClaim(name)),
    }
}

/// A non-empty string claim of at most [`MAX_CLAIM_LEN`] bytes, if present.
fn bounded(v: Option<String>, name: &'static str) -> Result<Option<String>, AssertionError> {
    match v {
        Some(s) if s.is_empty() || s.len() > MAX_CLAIM_LEN => {
            Err(AssertionError::InvalidClaim(name))
        }
        v => Ok(v),
    }
}

/// A NumericDate (RFC 7519 §2), fractions truncated; negative or non-numeric is invalid.
fn numeric_date(c: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, AssertionError> {
    match c.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or(AssertionError::InvalidClaim(name)),
        Some(_) => Err(AssertionError::InvalidClaim(name)),
    }
}

// ---------------------------------------------------------------- key sets

/// How long a fetched key set is used before it is fetched again.
pub const KEY_SET_MAX_AGE: Duration = Duration::from_secs(300);

/// The shortest time between two fetches of one issuer's keys, so assertions naming unknown
/// `kid`s cannot make the server hammer the issuer.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);

/// The largest discovery document or key set read.
const MAX_BODY_BYTES: usize = 512 * 1024;

struct CachedKeys {
    jwks: Arc<Value>,
    fetched_at: std::time::Instant,
}

/// The trusted issuers' key sets: fetched on first use from `jwks_uri` (or the issuer's
/// discovery document), used for [`KEY_SET_MAX_AGE`], fetched again early when an
/// assertion names an unknown key (at most every [`MIN_REFETCH`]). Redirects are not
/// followed: keys come from the URL configured or published, not from wherever it points.
pub struct IssuerKeys {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, CachedKeys>>,
    /// One fetch at a time; remembers when each issuer's keys were last fetched.
    gate: tokio::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// [`MIN_REFETCH`], shorter in tests.
    min_refetch: Duration,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys").finish_non_exhaustive()
    }
}

/// Why an issuer's keys could not be fetched (logged; the client sees
/// [`AssertionError::KeysUnavailable`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFetchError {
    /// The request failed.
    #[error("fetching {url} failed: {source}")]
    Network {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// An answer other than 200, too large, or not the expected JSON.
    #[error("{url}: {reason}")]
    Invalid {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

impl IssuerKeys {
    /// An empty cache with its HTTP client (10 s per fetch, no redirects).
    pub fn new() -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mcp-auth-server/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            cache: Mutex::new(HashMap::new()),
            gate: tokio::sync::Mutex::new(HashMap::new()),
            min_refetch: MIN_REFETCH,
        })
    }

    fn cached(&self, id: &str, fresh_only: bool) -> Option<Arc<Value>> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(id)
            .filter(|c| !fresh_only || c.fetched_at.elapsed() < KEY_SET_MAX_AGE)
            .map(|c| c.jwks.clone())
    }

    /// The issuer's key set: the cached one while fresh, unless `refresh` (an unknown `kid`)
    /// asks for a new one, which is fetched at most every [`MIN_REFETCH`]. A failed refetch
    /// falls back to the keys already known.
    pub async fn key_set(
        &self,
        issuer: &TrustedIssuer,
        refresh: bool,
    ) -> Result<Arc<Value>, AssertionError> {
        if !refresh && let Some(k) = self.cached(&issuer.id, true) {
            return Ok(k);
        }
        let mut gate = self.gate.lock().await;
        // Another task may have fetched while this one waited.
        if let Some(last) = gate.get(&issuer.id)
            && last.elapsed() < self.min_refetch
            && let Some(k) = self.cached(&issuer.id, false)
        {
            return Ok(k);
        }
        gate.insert(issuer.id.clone(), std::time::Instant::now());
        match self.fetch(issuer).await {
            Ok(jwks) => {
                let jwks = Arc::new(jwks);
                self.cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(
                        issuer.id.clone(),
                        CachedKeys {
                            jwks: jwks.clone(),
                            fetched_at: std::time::Instant::now(),
                        },
                    );
                tracing::info!(issuer = %issuer.id, "fetched a trusted issuer's key set");
                Ok(jwks)
            }
            Err(e) => {
                tracing::warn!(issuer = %issuer.id, error = %e, "fetching a trusted issuer's keys failed");
                self.cached(&issuer.id, false)
                    .ok_or(AssertionError::KeysUnavailable)
            }
        }
    }

    async fn fetch(&self, issuer: &TrustedIssuer) -> Result<Value, KeyFetchError> {
        let jwks_uri = match &issuer.jwks_uri {
            Some(u) => u.clone(),
            None => self.discover_jwks_uri(issuer).await?,
        };
        let jwks = self.get_json(&jwks_uri).await?;
        if !jwks.get("keys").is_some_and(Value::is_array) {
            return Err(KeyFetchError::Invalid {
                url: jwks_uri,
                reason: "not a JWK set (no keys array)".into(),
            });
        }
        Ok(jwks)
    }

    /// OpenID Connect Discovery 1.0 §4, then RFC 8414 §3: the document whose `issuer` is
    /// the configured issuer, and its `jwks_uri` (https unless `allow_http`).
    async fn discover_jwks_uri(&self, issuer: &TrustedIssuer) -> Result<String, KeyFetchError> {
        let base = issuer.issuer.trim_end_matches('/');
        let rfc8414 = url::Url::parse(&issuer.issuer)
            .map(|u| {
                let path = u.path().trim_end_matches('/');
                let origin = u.origin().ascii_serialization();
                format!("{origin}/.well-known/oauth-authorization-server{path}")
            })
            .ok();
        let mut last = None;
        for url in
            std::iter::once(format!("{base}/.well-known/openid-configuration")).chain(rfc8414)
        {
            let doc = match self.get_json(&url).await {
                Ok(d) => d,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let invalid = |reason: &str| KeyFetchError::Invalid {
                url: url.clone(),
                reason: reason.into(),
            };
            if doc.get("issuer").and_then(Value::as_str) != Some(issuer.issuer.as_str()) {
                return Err(invalid("the discovery document names another issuer"));
            }
            let jwks_uri = doc
                .get("jwks_uri")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("the discovery document has no jwks_uri"))?;
            let u = url::Url::parse(jwks_uri).map_err(|_| invalid("jwks_uri is not a URL"))?;
            let loopback = u.host_str().is_some_and(crate::handlers::is_loopback_host);
            if !(u.scheme() == "https" || (u.scheme() == "http" && issuer.allow_http && loopback)) {
                return Err(invalid("jwks_uri is not an https URL"));
            }
            return Ok(jwks_uri.to_owned());
        }
        Err(last.unwrap_or_else(|| KeyFetchError::Invalid {
            url: base.to_owned(),
            reason: "no discovery document".into(),
        }))
    }

    async fn get_json(&self, url: &str) -> Result<Value, KeyFetchError> {
        let network = |source| KeyFetchError::Network {
            url: url.to_owned(),
            source,
        };
        let invalid = |reason: String| KeyFetchError::Invalid {
            url: url.to_owned(),
            reason,
        };
        let mut resp = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(network)?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(invalid(format!("answered HTTP {}", resp.status().as_u16())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(network)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(invalid(format!("larger than {MAX_BODY_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|_| invalid("not JSON".into()))
    }
}

// ---------------------------------------------------------------- the grant

/// The jwt-bearer grant at the token endpoint, for an authenticated `client` that
/// registered the grant type: verifies the assertion, uses its `jti` once, and mints an
/// access token (and a refresh token only where the issuer's `issue_refresh_tokens` says so:
/// RFC 7523 §3.1 does not call for one).
pub(crate) async fn grant(
    s: &AppState,
    client: &ClientRow,
    form: &HashMap<String, String>,
    dpop: Option<&crate::handlers::DpopBinding>,
) -> Result<Value, OAuthError> {
    let assertion = form
        .get("assertion")
        .filter(|a| !a.is_empty())
        .ok_or_else(|| OAuthError::invalid_request("assertion is missing"))?;
    let issuer = unverified_issuer(assertion)
        .and_then(|iss| {
            find_issuer(&s.config.trusted_issuers, &iss).ok_or(AssertionError::UntrustedIssuer)
        })
        .inspect_err(|e| tracing::info!(client = %client.client_id, error = %e, "jwt-bearer assertion refused"))?;
    let requested_resource = crate::handlers::checked_resource(s, form.get("resource"))?;
    let now = unix_now();
    let ctx = Context {
        server_issuer: &s.config.issuer,
        client_id: &client.client_id,
        requested_resource: requested_resource.as_deref(),
        now,
    };
    let refused = |e: AssertionError| {
        tracing::info!(issuer = %issuer.id, client = %client.client_id, error = %e, "jwt-bearer assertion refused");
        OAuthError::from(e)
    };
    let jwks = s
        .issuer_keys
        .key_set(issuer, false)
        .await
        .map_err(refused)?;
    let verified = match verify(assertion, issuer, &jwks, &ctx) {
        // The issuer may have rotated its keys since they were fetched.
        Err(AssertionError::UnknownKey) => {
            let jwks = s.issuer_keys.key_set(issuer, true).await.map_err(refused)?;
            verify(assertion, issuer, &jwks, &ctx)
        }
        other => other,
    }
    .map_err(refused)?;
    // The assertion's resource must be one this server serves, like /authorize's.
    let resource = crate::handlers::checked_resource(s, verified.resource.as_ref())?;
    if issuer.subject_mapping == SubjectMapping::LocalAccount
        && s.store
            .get_user(&s.config.tenant, &verified.external_subject)
            .await?
            .is_none()
    {
        return Err(refused(AssertionError::NoAccount));
    }
    let scope = grant_scope(
        form.get("scope").map(String::as_str),
        verified.scope.as_ref(),
        issuer.scopes.as_ref(),
    )
    .map_err(refused)?
    .map(|sc| sc.to_string());
    let scope = crate::handlers::checked_scope(s, client, scope.as_deref())?;
    // RFC 7523 §3 point 7: single use, for as long as the assertion could be accepted.
    let until = verified.expires_at.saturating_add(issuer.leeway_secs) + 1;
    let namespace = format!("jwt-bearer:{}", issuer.id);
    if !s
        .store
        .claim_once(
            &s.config.tenant,
            &namespace,
            &verified.replay_key,
            until,
            now,
        )
        .await?
    {
        tracing::warn!(issuer = %issuer.id, client = %client.client_id, "jwt-bearer assertion replayed");
        return Err(AssertionError::Replayed.into());
    }
    let with_refresh = issuer.issue_refresh_tokens
        && s.config.issue_refresh_tokens
        && crate::handlers::client_allows_grant(client, "refresh_token");
    let family = with_refresh.then(crate::handlers::random_token);
    tracing::info!(issuer = %issuer.id, client = %client.client_id, "jwt-bearer grant accepted");
    crate::handlers::mint(
        s,
        &client.client_id,
        &verified.subject,
        &scope.to_string(),
        resource.as_deref(),
        family.as_deref(),
        with_refresh,
        dpop,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use proptest::prelude::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const IDP: &str = "https://idp.example.com";
    const K8S: &str = "https://kubernetes.default.svc";
    const US: &str = "https://auth.example.com";
    const CLIENT: &str = "client-1";
    const RESOURCE: &str = "https://mcp.example.com/mcp";

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    struct Key {
        kid: String,
        pair: EcdsaKeyPair,
    }

    impl Key {
        fn new(kid: &str) -> Self {
            Self {
                kid: kid.into(),
                pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            }
        }

        fn jwk(&self) -> Value {
            let p = self.pair.public_key().as_ref();
            json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig",
                   "x": b64(&p[1..33]), "y": b64(&p[33..])})
        }

        fn jwks(&self) -> Value {
            json!({"keys": [self.jwk()]})
        }

        fn sign_with(&self, header: &Value, claims: &Value) -> String {
            let input = format!(
                "{}.{}",
                b64(&serde_json::to_vec(header).unwrap()),
                b64(&serde_json::to_vec(claims).unwrap())
            );
            let sig = self
                .pair
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap();
            format!("{input}.{}", b64(sig.as_ref()))
        }

        fn id_jag(&self, claims: &Value) -> String {
            self.sign_with(
                &json!({"alg": "ES256", "kid": self.kid, "typ": "oauth-id-jag+jwt"}),
                claims,
            )
        }

        fn jwt(&self, claims: &Value) -> String {
            self.sign_with(&json!({"alg": "ES256", "kid": self.kid}), claims)
        }
    }

    fn enterprise() -> TrustedIssuer {
        let mut t = TrustedIssuer::new("acme", TrustKind::Enterprise, IDP);
        t.allowed_clients = vec![CLIENT.into()];
        t
    }

    fn workload() -> TrustedIssuer {
        let mut t = TrustedIssuer::new("k8s", TrustKind::Workload, K8S);
        t.allowed_subjects = vec!["system:serviceaccount:tools:*".into()];
        t
    }

    fn id_jag_claims() -> Value {
        json!({"iss": IDP, "sub": "00u1abc", "aud": US, "client_id": CLIENT,
               "resource": RESOURCE, "exp": NOW + 300, "iat": NOW, "jti": "jti-1",
               "scope": "files:read files:write", "email": "alice@acme.example"})
    }

    fn workload_claims() -> Value {
        json!({"iss": K8S, "sub": "system:serviceaccount:tools:deployer", "aud": [US],
               "exp": NOW + 600, "iat": NOW, "nbf": NOW, "jti": "w-1",
               "kubernetes.io": {"namespace": "tools"}})
    }

    fn ctx() -> Context<'static> {
        Context {
            server_issuer: US,
            client_id: CLIENT,
            requested_resource: None,
            now: NOW,
        }
    }

    fn with(mut c: Value, name: &str, v: Value) -> Value {
        c[name] = v;
        c
    }

    fn without(mut c: Value, name: &str) -> Value {
        c.as_object_mut().unwrap().remove(name);
        c
    }

    fn check_jag(key: &Key, claims: &Value) -> Result<VerifiedAssertion, AssertionError> {
        verify(&key.id_jag(claims), &enterprise(), &key.jwks(), &ctx())
    }

    fn check_workload(key: &Key, claims: &Value) -> Result<VerifiedAssertion, AssertionError> {
        verify(&key.jwt(claims), &workload(), &key.jwks(), &ctx())
    }

    #[test]
    fn an_id_jag_is_accepted() {
        let key = Key::new("k1");
        let v = check_jag(&key, &id_jag_claims()).unwrap();
        assert_eq!(v.issuer_id, "acme");
        assert_eq!(v.subject, "enterprise:acme:00u1abc");
        assert_eq!(v.external_subject, "00u1abc");
        assert_eq!(v.replay_key, hash_secret("jti-1"));
        assert_eq!(v.expires_at, NOW + 300);
        assert_eq!(v.resource.as_deref(), Some(RESOURCE));
        assert_eq!(
            v.scope.map(|s| s.to_string()).as_deref(),
            Some("files:read files:write")
        );
    }

    #[test]
    fn the_application_media_type_prefix_is_accepted() {
        let key = Key::new("k1");
        let jwt = key.sign_with(
            &json!({"alg": "ES256", "kid": "k1", "typ": "application/OAUTH-ID-JAG+JWT"}),
            &id_jag_claims(),
        );
        assert!(verify(&jwt, &enterprise(), &key.jwks(), &ctx()).is_ok());
    }

    #[test]
    fn an_enterprise_assertion_needs_the_id_jag_type() {
        let key = Key::new("k1");
        for header in [
            json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}),
            json!({"alg": "ES256", "kid": "k1"}),
            json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}),
        ] {
            let jwt = key.sign_with(&header, &id_jag_claims());
            assert_eq!(
                verify(&jwt, &enterprise(), &key.jwks(), &ctx()),
                Err(AssertionError::WrongType)
            );
        }
    }

    #[test]
    fn a_workload_token_is_accepted_without_a_type() {
        let key = Key::new("k1");
        let v = check_workload(&key, &workload_claims()).unwrap();
        assert_eq!(
            v.subject,
            "workload:k8s:system:serviceaccount:tools:deployer"
        );
        assert_eq!(v.resource, None);
        let c = Context {
            requested_resource: Some(RESOURCE),
            ..ctx()
        };
        let v = verify(&key.jwt(&workload_claims()), &workload(), &key.jwks(), &c).unwrap();
        assert_eq!(v.resource.as_deref(), Some(RESOURCE));
    }

    #[test]
    fn a_workload_token_without_jti_is_single_use_by_its_hash() {
        let key = Key::new("k1");
        let jwt = key.jwt(&without(workload_claims(), "jti"));
        let v = verify(&jwt, &workload(), &key.jwks(), &ctx()).unwrap();
        assert_eq!(v.replay_key, hash_secret(&jwt));
    }

    #[test]
    fn an_id_jag_for_another_client_is_refused() {
        let key = Key::new("k1");
        let c = with(id_jag_claims(), "client_id", json!("client-2"));
        assert_eq!(check_jag(&key, &c), Err(AssertionError::WrongClient));
        let c = without(id_jag_claims(), "client_id");
        assert_eq!(
            check_jag(&key, &c),
            Err(AssertionError::MissingClaim("client_id"))
        );
    }

    #[test]
    fn a_client_not_allowed_for_the_issuer_is_unauthorized() {
        let key = Key::new("k1");
        let mut t = enterprise();
        t.allowed_clients = vec!["other".into()];
        let err = verify(&key.id_jag(&id_jag_claims()), &t, &key.jwks(), &ctx()).unwrap_err();
        assert_eq!(err, AssertionError::ClientNotAllowed);
        assert_eq!(err.error_code(), ErrorCode::UnauthorizedClient);
        let mut w = workload();
        w.allowed_clients = vec!["ci-client".into()];
        assert_eq!(
            verify(&key.jwt(&workload_claims()), &w, &key.jwks(), &ctx()),
            Err(AssertionError::ClientNotAllowed)
        );
    }

    #[test]
    fn the_audience_must_be_this_server() {
        let key = Key::new("k1");
        for aud in [
            json!(US),
            json!(format!("{US}/")),
            json!(format!("{US}/token")),
            json!(["https://other.example.com", US]),
        ] {
            let c = with(id_jag_claims(), "aud", aud.clone());
            assert!(check_jag(&key, &c).is_ok(), "{aud}");
        }
        for aud in [
            json!("https://other.example.com"),
            json!(format!("{US}/mcp")),
            json!([]),
        ] {
            let c = with(id_jag_claims(), "aud", aud.clone());
            assert_eq!(
                check_jag(&key, &c),
                Err(AssertionError::WrongAudience),
                "{aud}"
            );
        }
        assert_eq!(
            check_jag(&key, &without(id_jag_claims(), "aud")),
            Err(AssertionError::MissingClaim("aud"))
        );
        // A configured audience is accepted besides the issuer.
        let mut w = workload();
        w.audience = Some("mcp-auth".into());
        let c = with(workload_claims(), "aud", json!("mcp-auth"));
        assert!(verify(&key.jwt(&c), &w, &key.jwks(), &ctx()).is_ok());
        assert_eq!(check_workload(&key, &c), Err(AssertionError::WrongAudience));
    }

    #[test]
    fn an_expired_assertion_is_refused_after_the_leeway() {
        let key = Key::new("k1");
        let c = with(
            with(id_jag_claims(), "exp", json!(NOW - 30)),
            "iat",
            json!(NOW - 300),
        );
        assert!(check_jag(&key, &c).is_ok(), "within the 60 s leeway");
        let c = with(id_jag_claims(), "exp", json!(NOW - 1));
        assert_eq!(
            check_jag(&key, &c),
            Err(AssertionError::InvalidClaim("exp"))
        );
        let c = with(
            with(id_jag_claims(), "exp", json!(NOW - 61)),
            "iat",
            json!(NOW - 400),
        );
        assert_eq!(check_jag(&key, &c), Err(AssertionError::Expired));
        assert_eq!(
            check_jag(&key, &without(id_jag_claims(), "exp")),
            Err(AssertionError::MissingClaim("exp"))
        );
        assert_eq!(
            check_jag(&key, &with(id_jag_claims(), "exp", json!("soon"))),
            Err(AssertionError::InvalidClaim("exp"))
        );
    }

    #[test]
    fn an_assertion_not_valid_yet_is_refused() {
        let key = Key::new("k1");
        let c = with(workload_claims(), "nbf", json!(NOW + 120));
        assert_eq!(check_workload(&key, &c), Err(AssertionError::NotYetValid));
        let c = with(id_jag_claims(), "iat", json!(NOW + 120));
        assert_eq!(check_jag(&key, &c), Err(AssertionError::IssuedInFuture));
        assert_eq!(
            check_jag(&key, &without(id_jag_claims(), "iat")),
            Err(AssertionError::MissingClaim("iat"))
        );
    }

    #[test]
    fn a_long_lived_assertion_is_refused() {
        let key = Key::new("k1");
        let c = with(id_jag_claims(), "exp", json!(NOW + 3601));
        assert_eq!(
            check_jag(&key, &c),
            Err(AssertionError::LifetimeTooLong { max: 3600 })
        );
        let c = with(id_jag_claims(), "exp", json!(NOW + 3600));
        assert!(check_jag(&key, &c).is_ok());
        let mut t = enterprise();
        t.max_assertion_lifetime_secs = 120;
        assert_eq!(
            verify(&key.id_jag(&id_jag_claims()), &t, &key.jwks(), &ctx()),
            Err(AssertionError::LifetimeTooLong { max: 120 })
        );
    }

    #[test]
    fn unsigned_and_hmac_assertions_are_refused() {
        let key = Key::new("k1");
        let payload = b64(&serde_json::to_vec(&id_jag_claims()).unwrap());
        let none = format!(
            "{}.{payload}.",
            b64(br#"{"alg":"none","typ":"oauth-id-jag+jwt"}"#)
        );
        assert_eq!(
            verify(&none, &enterprise(), &key.jwks(), &ctx()),
            Err(AssertionError::AlgorithmNotAllowed)
        );
        // An HMAC "signed" with the public key's bytes: the algorithm confusion attack.
        let header = b64(br#"{"alg":"HS256","kid":"k1","typ":"oauth-id-jag+jwt"}"#);
        let input = format!("{header}.{payload}");
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                key.pair.public_key().as_ref(),
            ),
            input.as_bytes(),
        );
        let hs = format!("{input}.{}", b64(mac.as_ref()));
        assert_eq!(
            verify(&hs, &enterprise(), &key.jwks(), &ctx()),
            Err(AssertionError::AlgorithmNotAllowed)
        );
        // ES256 when the issuer allows only RS256.
        let mut t = enterprise();
        t.algorithms = vec![crate::config::SigningAlgorithm::RS256];
        assert_eq!(
            verify(&key.id_jag(&id_jag_claims()), &t, &key.jwks(), &ctx()),
            Err(AssertionError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn an_unknown_kid_is_reported_so_the_keys_are_refetched() {
        let key = Key::new("k1");
        let other = Key::new("k2");
        assert_eq!(
            verify(
                &key.id_jag(&id_jag_claims()),
                &enterprise(),
                &other.jwks(),
                &ctx()
            ),
            Err(AssertionError::UnknownKey)
        );
        assert_eq!(
            verify(
                &key.id_jag(&id_jag_claims()),
                &enterprise(),
                &json!({"keys": []}),
                &ctx()
            ),
            Err(AssertionError::UnknownKey)
        );
    }

    #[test]
    fn a_bad_signature_is_refused() {
        let key = Key::new("k1");
        // Another key published under the same kid.
        let impostor = Key::new("k1");
        assert_eq!(
            verify(
                &impostor.id_jag(&id_jag_claims()),
                &enterprise(),
                &key.jwks(),
                &ctx()
            ),
            Err(AssertionError::BadSignature)
        );
        // A changed payload under a valid signature.
        let jwt = key.id_jag(&id_jag_claims());
        let mut parts: Vec<&str> = jwt.split('.').collect();
        let forged =
            b64(&serde_json::to_vec(&with(id_jag_claims(), "sub", json!("root"))).unwrap());
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), &enterprise(), &key.jwks(), &ctx()),
            Err(AssertionError::BadSignature)
        );
    }

    #[test]
    fn an_untrusted_issuer_is_refused() {
        let key = Key::new("k1");
        let c = with(id_jag_claims(), "iss", json!("https://evil.example.com"));
        let jwt = key.id_jag(&c);
        let iss = unverified_issuer(&jwt).unwrap();
        assert_eq!(iss, "https://evil.example.com");
        assert!(find_issuer(&[enterprise(), workload()], &iss).is_none());
        // Even signed by the trusted issuer's key, another `iss` is not that issuer.
        assert_eq!(
            verify(&jwt, &enterprise(), &key.jwks(), &ctx()),
            Err(AssertionError::UntrustedIssuer)
        );
        // Issuers compare exactly.
        assert!(find_issuer(&[enterprise()], &format!("{IDP}/")).is_none());
        assert_eq!(
            find_issuer(&[enterprise(), workload()], K8S).map(|t| t.id.as_str()),
            Some("k8s")
        );
        assert_eq!(unverified_issuer("a.b"), Err(AssertionError::Malformed));
        let no_iss = key.jwt(&json!({"sub": "x"}));
        assert_eq!(
            unverified_issuer(&no_iss),
            Err(AssertionError::MissingClaim("iss"))
        );
    }

    #[test]
    fn a_subject_outside_the_allowed_ones_is_refused() {
        let key = Key::new("k1");
        let c = with(
            workload_claims(),
            "sub",
            json!("system:serviceaccount:prod:deployer"),
        );
        assert_eq!(
            check_workload(&key, &c),
            Err(AssertionError::SubjectNotAllowed)
        );
        assert_eq!(
            check_workload(&key, &without(workload_claims(), "sub")),
            Err(AssertionError::MissingClaim("subject"))
        );
        assert_eq!(
            check_workload(&key, &with(workload_claims(), "sub", json!(""))),
            Err(AssertionError::InvalidClaim("subject"))
        );
    }

    #[test]
    fn required_claims_must_be_present_with_their_values() {
        let key = Key::new("k1");
        let mut w = workload();
        w.required_claims
            .insert("repository".into(), json!("acme/app"));
        w.required_claims
            .insert("groups".into(), json!("deployers"));
        let good = with(
            with(workload_claims(), "repository", json!("acme/app")),
            "groups",
            json!(["devs", "deployers"]),
        );
        assert!(verify(&key.jwt(&good), &w, &key.jwks(), &ctx()).is_ok());
        let missing = without(good.clone(), "repository");
        assert_eq!(
            verify(&key.jwt(&missing), &w, &key.jwks(), &ctx()),
            Err(AssertionError::RequiredClaim("repository".into()))
        );
        let wrong = with(good, "groups", json!(["devs"]));
        assert_eq!(
            verify(&key.jwt(&wrong), &w, &key.jwks(), &ctx()),
            Err(AssertionError::RequiredClaim("groups".into()))
        );
    }

    #[test]
    fn the_requested_resource_must_be_the_assertions() {
        let key = Key::new("k1");
        let jwt = key.id_jag(&id_jag_claims());
        let other = Context {
            requested_resource: Some("https://other.example.com/mcp"),
            ..ctx()
        };
        let err = verify(&jwt, &enterprise(), &key.jwks(), &other).unwrap_err();
        assert_eq!(err, AssertionError::ResourceMismatch);
        assert_eq!(err.error_code(), ErrorCode::InvalidTarget);
        let same = Context {
            requested_resource: Some(RESOURCE),
            ..ctx()
        };
        assert!(verify(&jwt, &enterprise(), &key.jwks(), &same).is_ok());
        let two = with(
            id_jag_claims(),
            "resource",
            json!([RESOURCE, "https://b.example.com/mcp"]),
        );
        assert_eq!(
            check_jag(&key, &two),
            Err(AssertionError::ResourceAmbiguous)
        );
        let v = verify(&key.id_jag(&two), &enterprise(), &key.jwks(), &same).unwrap();
        assert_eq!(v.resource.as_deref(), Some(RESOURCE));
        assert_eq!(
            check_jag(&key, &with(id_jag_claims(), "resource", json!(7))),
            Err(AssertionError::InvalidClaim("resource"))
        );
    }

    #[test]
    fn an_id_jag_needs_a_jti() {
        let key = Key::new("k1");
        assert_eq!(
            check_jag(&key, &without(id_jag_claims(), "jti")),
            Err(AssertionError::MissingClaim("jti"))
        );
        assert_eq!(
            check_jag(&key, &with(id_jag_claims(), "jti", json!(""))),
            Err(AssertionError::InvalidClaim("jti"))
        );
    }

    #[test]
    fn subjects_map_to_local_accounts_when_configured() {
        let key = Key::new("k1");
        let mut t = enterprise();
        t.subject_claim = "email".into();
        t.subject_mapping = SubjectMapping::LocalAccount;
        let v = verify(&key.id_jag(&id_jag_claims()), &t, &key.jwks(), &ctx()).unwrap();
        assert_eq!(v.subject, "local:alice@acme.example");
        assert_eq!(v.external_subject, "alice@acme.example");
        let c = with(id_jag_claims(), "email", json!("a:b"));
        assert_eq!(
            verify(&key.id_jag(&c), &t, &key.jwks(), &ctx()),
            Err(AssertionError::NoAccount)
        );
    }

    #[test]
    fn the_granted_scope_stays_within_the_assertion_and_the_issuer() {
        let set = |s: &str| s.parse::<ScopeSet>().unwrap();
        let a = set("files:read files:write");
        let ceiling = set("files:read admin");
        assert_eq!(
            grant_scope(Some("files:read"), Some(&a), Some(&ceiling)).unwrap(),
            Some(set("files:read"))
        );
        assert_eq!(
            grant_scope(Some("admin"), Some(&a), None),
            Err(AssertionError::Scope(
                "the requested scope exceeds the assertion's scope"
            ))
        );
        assert_eq!(
            grant_scope(Some("files:write"), Some(&a), Some(&ceiling)),
            Err(AssertionError::Scope(
                "the requested scope exceeds what this issuer may grant"
            ))
        );
        assert_eq!(
            grant_scope(None, Some(&a), Some(&ceiling)).unwrap(),
            Some(set("files:read"))
        );
        assert_eq!(grant_scope(None, Some(&a), None).unwrap(), Some(a.clone()));
        assert_eq!(
            grant_scope(Some("  "), None, Some(&ceiling)).unwrap(),
            Some(ceiling)
        );
        assert_eq!(grant_scope(None, None, None).unwrap(), None);
        assert_eq!(
            grant_scope(Some("bad\"scope"), None, None).map_err(|e| e.error_code()),
            Err(ErrorCode::InvalidScope)
        );
    }

    #[test]
    fn globs_match_subjects() {
        assert!(glob_match(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/app:ref:refs/heads/main"
        ));
        assert!(!glob_match(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/app:ref:refs/heads/dev"
        ));
        assert!(glob_match(
            "system:serviceaccount:tools:*",
            "system:serviceaccount:tools:a"
        ));
        assert!(!glob_match(
            "system:serviceaccount:tools:*",
            "system:serviceaccount:toolsx"
        ));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(!glob_match("exact", "exact2"));
    }

    #[test]
    fn error_descriptions_never_quote_the_assertion() {
        let key = Key::new("k1");
        let claims = with(id_jag_claims(), "exp", json!(NOW - 1000));
        let jwt = key.id_jag(&with(claims, "iat", json!(NOW - 1100)));
        let err = OAuthError::from(verify(&jwt, &enterprise(), &key.jwks(), &ctx()).unwrap_err());
        assert_eq!(err.code, ErrorCode::InvalidGrant);
        assert_eq!(err.description, "the assertion has expired");
        for part in jwt.split('.') {
            assert!(!err.description.contains(part));
        }
        assert_eq!(
            OAuthError::from(AssertionError::Replayed).description,
            "the assertion was already used"
        );
        assert_eq!(
            AssertionError::KeysUnavailable.error_code(),
            ErrorCode::TemporarilyUnavailable
        );
    }

    #[test]
    fn the_configuration_is_checked() {
        assert!(enterprise().check().is_ok());
        assert!(workload().check().is_ok());
        let mut w = workload();
        w.allowed_subjects.clear();
        assert!(w.check().unwrap_err().reason.contains("allowed_subjects"));
        let mut e = enterprise();
        e.allowed_clients.clear();
        assert!(e.check().unwrap_err().reason.contains("allowed_clients"));
        let mut e = enterprise();
        e.issuer = "http://idp.example.com".into();
        assert!(e.check().is_err());
        e.allow_http = true;
        assert!(e.check().is_err(), "http only on loopback");
        e.issuer = "http://127.0.0.1:8080".into();
        assert!(e.check().is_ok());
        let mut e = enterprise();
        e.id = "Acme Corp".into();
        assert!(e.check().is_err());
        let mut e = enterprise();
        e.algorithms.clear();
        assert!(e.check().is_err());
        let mut e = enterprise();
        e.max_assertion_lifetime_secs = 0;
        assert!(e.check().is_err());
        let mut c = crate::ServerConfig::new(US);
        c.trusted_issuers = vec![enterprise(), enterprise()];
        assert!(
            c.check_trusted_issuers()
                .unwrap_err()
                .reason
                .contains("two")
        );
    }

    #[test]
    fn metadata_advertises_the_grant_only_with_trusted_issuers() {
        let mut c = crate::ServerConfig::new(US);
        let has = |c: &crate::ServerConfig| {
            crate::handlers::metadata_document(c, false)["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(GRANT_TYPE))
        };
        assert!(!has(&c));
        c.trusted_issuers = vec![enterprise()];
        assert!(has(&c));
    }

    /// The key cache: fetched once, reused while fresh, refetched on request (an unknown
    /// `kid`) no more often than the rate limit allows, and kept when a refetch fails.
    #[tokio::test]
    async fn key_sets_are_cached_and_refetched_at_a_limited_rate() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, f) = (hits.clone(), failing.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (h, f) = (h.clone(), f.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    if f.load(Ordering::SeqCst) {
                        Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                    } else {
                        Ok(axum::Json(json!({"keys": [Key::new("k1").jwk()]})))
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut t = enterprise();
        t.jwks_uri = Some(format!("{base}/jwks"));
        let mut keys = IssuerKeys::new().unwrap();
        keys.min_refetch = Duration::ZERO;
        let first = keys.key_set(&t, false).await.unwrap();
        assert_eq!(first["keys"][0]["kid"], "k1");
        keys.key_set(&t, false).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1, "fresh keys are reused");
        keys.key_set(&t, true).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2, "an unknown kid refetches");
        failing.store(true, Ordering::SeqCst);
        let kept = keys.key_set(&t, true).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        assert_eq!(
            kept["keys"][0]["kid"], "k1",
            "a failed refetch keeps the keys"
        );
        keys.min_refetch = Duration::from_secs(3600);
        keys.key_set(&t, true).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 3, "refetches are rate-limited");
        // No keys at all and the issuer down: the grant cannot be decided now.
        let fresh = IssuerKeys::new().unwrap();
        assert_eq!(
            fresh.key_set(&t, false).await.unwrap_err(),
            AssertionError::KeysUnavailable
        );
    }

    proptest! {
        #[test]
        fn arbitrary_assertions_never_panic(s in ".{0,400}") {
            let key = Key::new("k1");
            let _ = unverified_issuer(&s);
            let _ = verify(&s, &enterprise(), &key.jwks(), &ctx());
            let _ = verify(&s, &workload(), &key.jwks(), &ctx());
        }

        #[test]
        fn arbitrary_dotted_parts_never_panic(a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,90}") {
            let key = Key::new("k1");
            let s = format!("{a}.{b}.{c}");
            let _ = unverified_issuer(&s);
            let _ = verify(&s, &enterprise(), &key.jwks(), &ctx());
        }

        #[test]
        fn arbitrary_signed_claims_never_panic(k in "[a-z_]{1,12}", v in any::<i64>(), t in ".{0,40}") {
            let key = Key::new("k1");
            let c = with(with(id_jag_claims(), &k, json!(v)), "sub", json!(t));
            let _ = check_jag(&key, &c);
        }

        #[test]
        fn globs_never_panic_and_literals_match_themselves(p in ".{0,30}", t in ".{0,30}") {
            let _ = glob_match(&p, &t);
            prop_assert!(glob_match("*", &t));
            if !t.contains(['*', '?']) {
                prop_assert!(glob_match(&t, &t));
            }
        }
    }
}
