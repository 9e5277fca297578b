//! Any OpenID Connect provider: discovery (OpenID Connect Discovery 1.0), the authorization
//! code flow with PKCE, ID token verification against the provider's JWKS, userinfo,
//! refresh (RFC 6749 §6) and revocation (RFC 7009).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mcp_auth_types::SecretString;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, OnceCell};
use url::Url;

use crate::error::sanitize;
use crate::http::{self, Reply, basic_auth, check_endpoint, expect_success, token_reply, unix_now};
use crate::id_token::{self, Expected, IdTokenError, SigningAlgorithm};
use crate::{
    AuthorizationRequest, Completion, DEFAULT_TIMEOUT, Upstream, UpstreamError, UpstreamLogin,
    UpstreamTokens, check_id,
};

/// A key set older than this is refetched on next use (the old one is kept if that fails).
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);

/// An unknown `kid` triggers a JWKS refetch at most this often, so tokens with made-up key
/// ids cannot make us hammer the provider.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);

/// Authorization request parameters set by the protocol, which extra parameters must not
/// override.
const RESERVED_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
];

/// The configuration of an OpenID Connect provider. Start from [`OidcConfig::new`] (or
/// [`google`]) and change fields.
///
/// `Debug` redacts the client secret.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Provider id, the account prefix (`"oidc"` by default): 1-64 of `[a-z0-9_-]`.
    pub id: String,
    /// Label for the login button (the issuer's host by default).
    pub label: String,
    /// The issuer, exactly as the provider writes it in its discovery document and tokens
    /// (`https://accounts.google.com`).
    pub issuer: String,
    /// This server's client id at the provider.
    pub client_id: String,
    /// The client secret; `None` for a public client (token endpoint auth `none`).
    pub client_secret: Option<SecretString>,
    /// Scopes to request; must include `openid`. Default `openid email profile`.
    pub scopes: Vec<String>,
    /// Extra authorization request parameters (`prompt`, `access_type`, `hd`, ...). May not
    /// override the protocol's own (`state`, `nonce`, ...).
    pub extra_authorize_params: Vec<(String, String)>,
    /// Also call the userinfo endpoint at login (its `sub` must equal the `id_token`'s) and
    /// take the profile from it. Default `false`: the `id_token` claims suffice.
    pub use_userinfo: bool,
    /// JWS algorithms accepted for `id_token`s. Default `RS256 ES256 EdDSA`. `none` and
    /// `HS*` are dropped even when listed: an ID token MACed with the client secret proves
    /// nothing anyone holding the secret could not forge.
    pub allowed_algs: Vec<String>,
    /// Allow plain `http` for the issuer and the endpoints: for tests against a loopback
    /// provider. Default `false`: `https` only.
    pub allow_http: bool,
    /// Deadline of each request to the provider.
    pub timeout: Duration,
    /// Other exact `iss` values accepted in `id_token`s. Google documents both
    /// `https://accounts.google.com` and `accounts.google.com`. Default empty.
    pub issuer_aliases: Vec<String>,
}

impl OidcConfig {
    /// A configuration with the defaults: id `oidc`, the issuer's host as label, scopes
    /// `openid email profile`, algorithms `RS256 ES256 EdDSA`, no userinfo call, `https`
    /// only, [`DEFAULT_TIMEOUT`].
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Option<SecretString>,
    ) -> Self {
        let issuer = issuer.into();
        let label = Url::parse(&issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "Single sign-on".to_owned());
        Self {
            id: "oidc".to_owned(),
            label,
            issuer,
            client_id: client_id.into(),
            client_secret,
            scopes: ["openid", "email", "profile"].map(String::from).to_vec(),
            extra_authorize_params: Vec::new(),
            use_userinfo: false,
            allowed_algs: ["RS256", "ES256", "EdDSA"].map(String::from).to_vec(),
            allow_http: false,
            timeout: DEFAULT_TIMEOUT,
            issuer_aliases: Vec::new(),
        }
    }
}

/// Google as an OpenID Connect provider: id `google`, label `Google`, issuer
/// `https://accounts.google.com`, scopes `openid email profile`, and `access_type=offline`
/// with `prompt=consent` so that Google issues a refresh token at every login.
pub fn google(client_id: impl Into<String>, client_secret: SecretString) -> OidcConfig {
    OidcConfig {
        id: "google".to_owned(),
        label: "Google".to_owned(),
        extra_authorize_params: vec![
            ("access_type".to_owned(), "offline".to_owned()),
            ("prompt".to_owned(), "consent".to_owned()),
        ],
        // https://developers.google.com/identity/openid-connect/openid-connect#validatinganidtoken
        issuer_aliases: vec!["accounts.google.com".to_owned()],
        ..OidcConfig::new(
            "https://accounts.google.com",
            client_id,
            Some(client_secret),
        )
    }
}

/// Client authentication at the token and revocation endpoints (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthMethod {
    Basic,
    Post,
    None,
}

/// The parts of the discovery document used here, checked.
#[derive(Debug)]
struct Metadata {
    authorization_endpoint: Url,
    token_endpoint: Url,
    jwks_uri: Url,
    userinfo_endpoint: Option<Url>,
    revocation_endpoint: Option<Url>,
    auth_method: AuthMethod,
}

struct KeySet {
    /// Counts downloads, so a task that waited for another's download sees it happened.
    generation: u64,
    fetched: Instant,
    jwks: Value,
}

/// An OpenID Connect provider. Cheap to share behind an `Arc`; the discovery document and
/// the JWKS are fetched on first use and cached.
pub struct OidcProvider {
    config: OidcConfig,
    algs: Vec<SigningAlgorithm>,
    http: reqwest::Client,
    metadata: OnceCell<Arc<Metadata>>,
    /// The current key set, swapped whole. A std lock: held only to clone an `Arc`.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Serializes JWKS downloads and remembers when an unknown `kid` last forced one.
    key_gate: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("id", &self.config.id)
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl OidcProvider {
    /// Checks `config` and makes the provider; nothing is fetched yet. `http` should not
    /// follow redirects (see [`crate::http_client`]).
    pub fn new(config: OidcConfig, http: reqwest::Client) -> Result<Self, UpstreamError> {
        check_id(&config.id)?;
        if config.label.trim().is_empty() {
            return Err(UpstreamError::config("the label is empty"));
        }
        let issuer = check_endpoint(&config.issuer, "issuer", config.allow_http)
            .map_err(UpstreamError::Config)?;
        // OpenID Connect Discovery §2 / RFC 8414 §2: no query or fragment in an issuer.
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(UpstreamError::config(
                "the issuer must not have a query or fragment",
            ));
        }
        if config.client_id.is_empty() {
            return Err(UpstreamError::config("the client id is empty"));
        }
        if !config.scopes.iter().any(|s| s == "openid") {
            return Err(UpstreamError::config(
                "the scopes must include openid (OpenID Connect Core §3.1.2.1)",
            ));
        }
        if let Some((k, _)) = config
            .extra_authorize_params
            .iter()
            .find(|(k, _)| RESERVED_PARAMS.contains(&k.as_str()))
        {
            return Err(UpstreamError::config(format!(
                "extra authorization parameter {k:?} would override the protocol's own"
            )));
        }
        let mut algs = Vec::new();
        for name in &config.allowed_algs {
            match SigningAlgorithm::from_name(name) {
                Some(a) if !algs.contains(&a) => algs.push(a),
                Some(_) => {}
                None => tracing::warn!(
                    provider = %config.id,
                    alg = %name,
                    "ignoring an id_token algorithm that is never accepted (none, HS*, unknown)"
                ),
            }
        }
        if algs.is_empty() {
            return Err(UpstreamError::config(
                "no usable id_token algorithm (allowed: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)",
            ));
        }
        if config.timeout.is_zero() {
            return Err(UpstreamError::config("the timeout is zero"));
        }
        Ok(Self {
            config,
            algs,
            http,
            metadata: OnceCell::new(),
            keys: RwLock::new(None),
            key_gate: Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    fn discovery_error(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Discovery {
            issuer: self.config.issuer.clone(),
            reason: reason.into(),
        }
    }

    /// The checked discovery document, fetched once; a failure is not cached.
    async fn metadata(&self) -> Result<Arc<Metadata>, UpstreamError> {
        self.metadata
            .get_or_try_init(|| async { self.discover().await.map(Arc::new) })
            .await
            .cloned()
    }

    async fn discover(&self) -> Result<Metadata, UpstreamError> {
        // OpenID Connect Discovery §4.1: remove a terminating "/" and append the suffix, so
        // an issuer with a path keeps it.
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let reply = http::send(
            "discovery endpoint",
            self.http.get(&url).header(ACCEPT, "application/json"),
            self.config.timeout,
        )
        .await?;
        if !reply.status.is_success() {
            return Err(self.discovery_error(format!("{url} answered HTTP {}", reply.status)));
        }
        let doc = reply
            .json_object("the discovery document")
            .map_err(|e| self.discovery_error(e.to_string()))?;
        // Discovery §4.3: "The issuer value returned MUST be identical to the Issuer URL
        // that was used as the prefix to /.well-known/openid-configuration".
        let found = doc.get("issuer").and_then(Value::as_str);
        if found != Some(self.config.issuer.as_str()) {
            return Err(self.discovery_error(format!(
                "the document's issuer is {:?}, not the configured one",
                found.map(|f| sanitize(f, 200))
            )));
        }
        let allow_http = self.config.allow_http;
        let endpoint = |name: &str| -> Result<Option<Url>, UpstreamError> {
            match doc.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => check_endpoint(s, name, allow_http)
                    .map(Some)
                    .map_err(|e| self.discovery_error(e)),
                Some(_) => Err(self.discovery_error(format!("{name} is not a string"))),
            }
        };
        let required = |name: &'static str| -> Result<Url, UpstreamError> {
            endpoint(name)?.ok_or_else(|| self.discovery_error(format!("no {name}")))
        };
        let methods: Vec<&str> = doc
            .get("token_endpoint_auth_methods_supported")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let auth_method = choose_auth_method(
            self.config.client_secret.is_some(),
            doc.contains_key("token_endpoint_auth_methods_supported")
                .then_some(methods.as_slice()),
        );
        let md = Metadata {
            authorization_endpoint: required("authorization_endpoint")?,
            token_endpoint: required("token_endpoint")?,
            jwks_uri: required("jwks_uri")?,
            userinfo_endpoint: endpoint("userinfo_endpoint")?,
            revocation_endpoint: endpoint("revocation_endpoint")?,
            auth_method,
        };
        tracing::info!(provider = %self.config.id, issuer = %self.config.issuer, ?auth_method, "fetched OpenID Connect discovery");
        Ok(md)
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key set: cached, or downloaded when absent or older than [`JWKS_MAX_AGE`] (an
    /// old set is kept if the download fails).
    async fn key_set(&self, md: &Metadata) -> Result<Arc<KeySet>, UpstreamError> {
        if let Some(ks) = self.snapshot()
            && ks.fetched.elapsed() < JWKS_MAX_AGE
        {
            return Ok(ks);
        }
        let _gate = self.key_gate.lock().await;
        let current = self.snapshot();
        if let Some(ks) = &current
            && ks.fetched.elapsed() < JWKS_MAX_AGE
        {
            return Ok(ks.clone());
        }
        match self.download_keys(md, current.as_ref()).await {
            Ok(ks) => Ok(ks),
            Err(e) => match current {
                Some(old) => {
                    tracing::warn!(provider = %self.config.id, error = %e, "JWKS refresh failed; using the keys we have");
                    Ok(old)
                }
                None => Err(e),
            },
        }
    }

    /// After an unknown `kid`: a fresh key set, unless one was forced less than
    /// [`JWKS_MIN_REFETCH`] ago (`None`). If another task downloaded since `seen`, its set.
    async fn refetch_keys(
        &self,
        md: &Metadata,
        seen: u64,
    ) -> Result<Option<Arc<KeySet>>, UpstreamError> {
        let mut last_forced = self.key_gate.lock().await;
        let current = self.snapshot();
        if let Some(ks) = &current
            && ks.generation != seen
        {
            return Ok(Some(ks.clone()));
        }
        if last_forced.is_some_and(|t| t.elapsed() < JWKS_MIN_REFETCH) {
            tracing::debug!(provider = %self.config.id, "JWKS refetch rate-limited");
            return Ok(None);
        }
        *last_forced = Some(Instant::now());
        self.download_keys(md, current.as_ref()).await.map(Some)
    }

    /// Downloads the JWKS. Called with the key gate held.
    async fn download_keys(
        &self,
        md: &Metadata,
        previous: Option<&Arc<KeySet>>,
    ) -> Result<Arc<KeySet>, UpstreamError> {
        let reply = http::send(
            "JWKS endpoint",
            self.http
                .get(md.jwks_uri.clone())
                .header(ACCEPT, "application/json, application/jwk-set+json"),
            self.config.timeout,
        )
        .await?;
        expect_success("JWKS endpoint", &reply, false)?;
        let doc = reply.json_object("the JWKS")?;
        if !doc.get("keys").is_some_and(Value::is_array) {
            return Err(UpstreamError::invalid("the JWKS has no keys array"));
        }
        let ks = Arc::new(KeySet {
            generation: previous.map_or(1, |p| p.generation + 1),
            fetched: Instant::now(),
            jwks: Value::Object(doc),
        });
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Some(ks.clone());
        tracing::info!(provider = %self.config.id, "fetched JWKS");
        Ok(ks)
    }

    /// Verifies the `id_token`, refetching the JWKS once when its key is unknown (the
    /// provider may have rotated its keys since we last looked).
    async fn verify_id_token(
        &self,
        md: &Metadata,
        token: &str,
        nonce: &str,
    ) -> Result<id_token::IdTokenClaims, UpstreamError> {
        let ks = self.key_set(md).await?;
        let expected = Expected {
            issuer: &self.config.issuer,
            issuer_aliases: &self.config.issuer_aliases,
            client_id: &self.config.client_id,
            nonce,
            now: unix_now(),
            allowed_algs: &self.algs,
            leeway: id_token::DEFAULT_LEEWAY,
        };
        match id_token::verify(token, &ks.jwks, &expected) {
            Err(unknown @ IdTokenError::UnknownKey { .. }) => {
                match self.refetch_keys(md, ks.generation).await? {
                    Some(fresh) => Ok(id_token::verify(token, &fresh.jwks, &expected)?),
                    None => Err(unknown.into()),
                }
            }
            other => Ok(other?),
        }
    }

    /// A POST to the token or revocation endpoint with client authentication.
    fn authenticated_post<'a>(
        &'a self,
        url: &Url,
        md: &Metadata,
        mut form: Vec<(&'static str, &'a str)>,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(url.clone())
            .header(ACCEPT, "application/json");
        match (md.auth_method, &self.config.client_secret) {
            (AuthMethod::Basic, Some(secret)) => {
                req = req.header(AUTHORIZATION, basic_auth(&self.config.client_id, secret));
            }
            (AuthMethod::Post, Some(secret)) => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", secret.secret()));
            }
            // RFC 6749 §4.1.3: a public client identifies itself with client_id.
            _ => form.push(("client_id", &self.config.client_id)),
        }
        req.form(&form)
    }

    async fn userinfo(
        &self,
        md: &Metadata,
        access_token: &str,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let url = md
            .userinfo_endpoint
            .as_ref()
            .ok_or(UpstreamError::Unsupported(
                "userinfo (the provider has no userinfo_endpoint)",
            ))?;
        let reply: Reply = http::send(
            "userinfo endpoint",
            self.http
                .get(url.clone())
                .bearer_auth(access_token)
                .header(ACCEPT, "application/json"),
            self.config.timeout,
        )
        .await?;
        expect_success("userinfo endpoint", &reply, false)?;
        if reply
            .content_type
            .to_ascii_lowercase()
            .starts_with("application/jwt")
        {
            return Err(UpstreamError::Unsupported(
                "signed or encrypted userinfo responses",
            ));
        }
        reply.json_object("the userinfo response")
    }
}

/// OpenID Connect Discovery §3: `token_endpoint_auth_methods_supported` defaults to
/// `client_secret_basic`. `post` only when the provider lists it and not basic.
fn choose_auth_method(has_secret: bool, supported: Option<&[&str]>) -> AuthMethod {
    if !has_secret {
        return AuthMethod::None;
    }
    match supported {
        Some(m) if !m.contains(&"client_secret_basic") && m.contains(&"client_secret_post") => {
            AuthMethod::Post
        }
        _ => AuthMethod::Basic,
    }
}

/// The profile: standard claims (OpenID Connect Core §5.1) under our names. `login` is
/// `preferred_username`.
fn profile_from(claims: &Map<String, Value>) -> Value {
    let mut p = Map::new();
    for (ours, theirs) in [
        ("name", "name"),
        ("email", "email"),
        ("email_verified", "email_verified"),
        ("login", "preferred_username"),
        ("picture", "picture"),
    ] {
        if let Some(v) = claims
            .get(theirs)
            .filter(|v| v.is_string() || v.is_boolean())
        {
            p.insert(ours.to_owned(), v.clone());
        }
    }
    Value::Object(p)
}

#[async_trait]
impl Upstream for OidcProvider {
    fn id(&self) -> &str {
        &self.config.id
    }

    fn label(&self) -> &str {
        &self.config.label
    }

    async fn authorization_url(
        &self,
        req: &AuthorizationRequest<'_>,
    ) -> Result<Url, UpstreamError> {
        let md = self.metadata().await?;
        let mut url = md.authorization_endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", req.redirect_uri)
                .append_pair("scope", &self.config.scopes.join(" "))
                .append_pair("state", req.state)
                .append_pair("code_challenge", req.code_challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("nonce", req.nonce);
            for (k, v) in &self.config.extra_authorize_params {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    async fn complete(&self, req: &Completion<'_>) -> Result<UpstreamLogin, UpstreamError> {
        let md = self.metadata().await?;
        let reply = http::send(
            "token endpoint",
            self.authenticated_post(
                &md.token_endpoint,
                &md,
                vec![
                    ("grant_type", "authorization_code"),
                    ("code", req.code),
                    ("redirect_uri", req.redirect_uri),
                    ("code_verifier", req.code_verifier),
                ],
            ),
            self.config.timeout,
        )
        .await?;
        let parsed = token_reply(&reply, false, None)?;
        let tokens = parsed.tokens;
        let verified = async {
            let raw = parsed
                .id_token
                .ok_or_else(|| UpstreamError::invalid("the token response has no id_token"))?;
            let claims = self.verify_id_token(&md, &raw, req.nonce).await?;
            let mut profile_claims = claims.claims;
            if self.config.use_userinfo {
                let info = self.userinfo(&md, tokens.access_token.secret()).await?;
                // Core §5.3.2: the sub in the UserInfo Response MUST be verified to exactly
                // match the sub in the ID Token.
                if info.get("sub").and_then(Value::as_str) != Some(claims.subject.as_str()) {
                    return Err(UpstreamError::SubjectMismatch);
                }
                profile_claims.extend(info);
            }
            Ok((claims.subject, profile_from(&profile_claims)))
        }
        .await;
        match verified {
            Ok((subject, profile)) => Ok(UpstreamLogin {
                subject,
                profile,
                tokens,
            }),
            Err(e) => {
                // The login is refused, but the code was redeemed: do not leave the grant
                // open at the provider (best effort; the error is the refusal's).
                if let Err(r) = self.revoke(&tokens).await {
                    tracing::debug!(error = %r, "revoking the tokens of a refused login failed");
                }
                Err(e)
            }
        }
    }

    async fn refresh(&self, refresh_token: &str) -> Result<UpstreamTokens, UpstreamError> {
        let md = self.metadata().await?;
        let reply = http::send(
            "token endpoint",
            self.authenticated_post(
                &md.token_endpoint,
                &md,
                vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                ],
            ),
            self.config.timeout,
        )
        .await?;
        // An id_token in a refresh response (Core §12.2) is not needed: the user is known.
        Ok(token_reply(&reply, false, Some(refresh_token))?.tokens)
    }

    async fn revoke(&self, tokens: &UpstreamTokens) -> Result<bool, UpstreamError> {
        let md = self.metadata().await?;
        let Some(endpoint) = &md.revocation_endpoint else {
            return Ok(false);
        };
        // RFC 7009 §2.1: revoking the refresh token also ends the access tokens of the same
        // grant where the provider supports it, which is what logging out means.
        let (token, hint) = match &tokens.refresh_token {
            Some(rt) => (rt.secret(), "refresh_token"),
            None => (tokens.access_token.secret(), "access_token"),
        };
        let reply = http::send(
            "revocation endpoint",
            self.authenticated_post(
                endpoint,
                &md,
                vec![("token", token), ("token_type_hint", hint)],
            ),
            self.config.timeout,
        )
        .await?;
        expect_success("revocation endpoint", &reply, false)?;
        Ok(true)
    }

    async fn profile(&self, access_token: &str) -> Result<Value, UpstreamError> {
        let md = self.metadata().await?;
        self.userinfo(&md, access_token).await.map(Value::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_method_choice() {
        assert_eq!(choose_auth_method(false, None), AuthMethod::None);
        assert_eq!(choose_auth_method(true, None), AuthMethod::Basic);
        assert_eq!(
            choose_auth_method(true, Some(&["client_secret_post"])),
            AuthMethod::Post
        );
        assert_eq!(
            choose_auth_method(true, Some(&["client_secret_post", "client_secret_basic"])),
            AuthMethod::Basic
        );
        assert_eq!(
            choose_auth_method(true, Some(&["private_key_jwt"])),
            AuthMethod::Basic
        );
    }

    #[test]
    fn config_checks() {
        let http = reqwest::Client::new();
        let ok = OidcConfig::new("https://idp.example.com", "c", None);
        assert_eq!(ok.label, "idp.example.com");
        assert!(OidcProvider::new(ok.clone(), http.clone()).is_ok());
        let bad = |f: &dyn Fn(&mut OidcConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            matches!(
                OidcProvider::new(c, http.clone()),
                Err(UpstreamError::Config(_))
            )
        };
        assert!(bad(&|c| c.issuer = "http://idp.example.com".into()));
        assert!(bad(&|c| c.issuer = "http://127.0.0.1:9".into()));
        assert!(bad(&|c| c.issuer = "https://idp.example.com?x=1".into()));
        assert!(bad(&|c| c.client_id.clear()));
        assert!(bad(&|c| c.scopes = vec!["email".into()]));
        assert!(bad(
            &|c| c.extra_authorize_params = vec![("nonce".into(), "x".into())]
        ));
        assert!(bad(
            &|c| c.allowed_algs = vec!["none".into(), "HS256".into()]
        ));
        assert!(bad(&|c| c.id = "a:b".into()));
        // none and HS256 are dropped, RS256 stays.
        let mut c = ok.clone();
        c.allowed_algs = vec!["none".into(), "HS256".into(), "RS256".into()];
        assert_eq!(
            OidcProvider::new(c, http.clone()).unwrap().algs,
            [SigningAlgorithm::RS256]
        );
        let mut c = ok;
        c.issuer = "http://127.0.0.1:9".into();
        c.allow_http = true;
        assert!(OidcProvider::new(c, http).is_ok());
    }

    #[test]
    fn google_preset() {
        let g = google("cid", SecretString::new("google-secret-value"));
        assert_eq!(g.id, "google");
        assert_eq!(g.label, "Google");
        assert_eq!(g.issuer, "https://accounts.google.com");
        assert_eq!(g.scopes, ["openid", "email", "profile"]);
        assert!(
            g.extra_authorize_params
                .contains(&("access_type".into(), "offline".into()))
        );
        assert!(
            g.extra_authorize_params
                .contains(&("prompt".into(), "consent".into()))
        );
        assert!(!format!("{g:?}").contains("google-secret-value"));
    }

    #[test]
    fn profile_mapping() {
        let claims = serde_json::json!({"sub": "1", "name": "Ada", "email": "ada@example.com",
            "email_verified": true, "preferred_username": "ada", "picture": "https://p/x.png",
            "at_hash": "xyz"});
        let p = profile_from(claims.as_object().unwrap());
        assert_eq!(
            p,
            serde_json::json!({"name": "Ada", "email": "ada@example.com", "email_verified": true,
                               "login": "ada", "picture": "https://p/x.png"})
        );
    }
}
