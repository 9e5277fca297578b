//! Single sign-on at the company identity provider, for enterprise-managed authorization:
//! an OpenID Connect authorization code flow (PKCE S256, `state`, `nonce`) through the
//! user's browser and a loopback redirect, whose ID token is then exchanged for identity
//! assertion grants ([`crate::enterprise`]).
//!
//! The IdP session (the ID token and the IdP's refresh token) is kept encrypted in the
//! credential store, in a record of its own keyed by the IdP issuer ([`session_key`]), so
//! one sign-in serves every MCP server the IdP lets the user reach, and the browser is only
//! opened again when the ID token has expired and cannot be refreshed.

use mcp_auth_types::metadata::MetadataError;
use mcp_auth_types::{
    AccessToken, AuthMethod, CsrfState, HttpUrl, RefreshToken, Scope, ScopeSet, SecretString,
    TokenRequest, TokenResponse,
};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::authorize::{
    AuthorizationRequest, Interaction, Listener, authorization_url, new_request_secrets,
    wait_for_code,
};
use crate::client::{OAuthClient, WorkloadToken};
use crate::discovery::fetch_as_metadata;
use crate::enterprise::{EnterpriseIdp, IdTokenSource};
use crate::error::{Error, Result, Step};
use crate::store::{ClientRecord, ServerRecord, TokenRecord, now_secs, server_key};
use crate::token::request_token;

/// [`ServerRecord::grant`] of an identity provider session record.
pub const IDP_SESSION_GRANT: &str = "urn:mcp-auth:idp-session";

/// Allowed clock difference with the identity provider, seconds: an ID token is accepted
/// until this long after its `exp`, and reused only while it has at least this long left.
pub const LEEWAY: u64 = 60;

/// The store key of the session at the identity provider `issuer`: a server key of
/// `idp:<issuer>`, which no MCP server URL can produce (they are http(s) URLs).
pub fn session_key(issuer: &str) -> String {
    server_key(&session_url(issuer))
}

/// What a session record stores as its "server URL".
fn session_url(issuer: &str) -> String {
    format!("idp:{issuer}")
}

impl ServerRecord {
    /// Whether this record is a single sign-on session at an identity provider, not an MCP
    /// server (listings skip it).
    pub fn is_idp_session(&self) -> bool {
        self.grant.as_deref() == Some(IDP_SESSION_GRANT)
    }
}

/// Why an ID token from the identity provider was refused (OpenID Connect Core §3.1.3.7).
/// Never carries the token or its claims' values beyond the issuer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdTokenError {
    /// Not a JWS in compact serialization, or its header or claims are not JSON.
    #[error("the ID token is not a well-formed JWT")]
    Malformed,
    /// `alg: none`: an unsigned token is never accepted.
    #[error("the ID token is unsigned (alg none)")]
    Unsigned,
    /// A required claim is missing or has the wrong type.
    #[error("the ID token has no valid {0} claim")]
    MissingClaim(&'static str),
    /// `iss` is not the identity provider's issuer (§3.1.3.7 item 2).
    #[error("the ID token was issued by {found:?}, not by the identity provider {expected}")]
    Issuer {
        /// The IdP's issuer.
        expected: String,
        /// What the token says.
        found: String,
    },
    /// `aud` does not contain this client's ID, or `azp` names another client (items 3–5).
    #[error("the ID token is not meant for this client ({client_id})")]
    Audience {
        /// This client's ID at the IdP.
        client_id: String,
    },
    /// `exp` has passed (item 9).
    #[error("the ID token expired {seconds} s ago")]
    Expired {
        /// How long ago, seconds.
        seconds: u64,
    },
    /// `nonce` is not the one sent in the authorization request (item 11): a token from
    /// another login, possibly replayed.
    #[error("the ID token's nonce does not match this login")]
    Nonce,
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    aud: Option<Audience>,
    azp: Option<String>,
    exp: Option<u64>,
    nonce: Option<String>,
}

/// Checks an ID token received from the identity provider's token endpoint (OpenID Connect
/// Core §3.1.3.7) and returns its `exp`.
///
/// `iss` must equal `issuer` (string comparison), `aud` must contain `client_id` (and a
/// present `azp` must be it), `exp` must not be more than [`LEEWAY`] seconds past, and when
/// `nonce` is given the token's `nonce` must equal it (constant time); `alg: none` is
/// refused.
///
/// The signature is not verified here, as §3.1.3.7 item 6 allows: the token comes directly
/// from the IdP's token endpoint over TLS in answer to our own authenticated request, and
/// the IdP verifies it again itself when it is exchanged (RFC 8693) for an identity
/// assertion grant, which is the only use this client makes of it.
pub fn check_id_token(
    raw: &str,
    issuer: &str,
    client_id: &str,
    nonce: Option<&str>,
    now: u64,
) -> Result<u64, IdTokenError> {
    use base64::Engine as _;
    let parts: Vec<&str> = raw.split('.').collect();
    let [header, claims, _signature] = parts.as_slice() else {
        return Err(IdTokenError::Malformed);
    };
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|_| IdTokenError::Malformed)
    };
    let header: Header =
        serde_json::from_slice(&decode(header)?).map_err(|_| IdTokenError::Malformed)?;
    match header.alg.as_deref() {
        None => return Err(IdTokenError::MissingClaim("alg (header)")),
        Some(alg) if alg.eq_ignore_ascii_case("none") => return Err(IdTokenError::Unsigned),
        Some(_) => {}
    }
    let claims: Claims =
        serde_json::from_slice(&decode(claims)?).map_err(|_| IdTokenError::Malformed)?;
    let iss = claims.iss.ok_or(IdTokenError::MissingClaim("iss"))?;
    if iss != issuer {
        return Err(IdTokenError::Issuer {
            expected: issuer.to_owned(),
            found: crate::error::sanitize(&iss, 200),
        });
    }
    let audience = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(IdTokenError::Audience {
                client_id: client_id.to_owned(),
            })
        }
    };
    match claims.aud.ok_or(IdTokenError::MissingClaim("aud"))? {
        Audience::One(a) => audience(a == client_id)?,
        Audience::Many(all) => audience(all.iter().any(|a| a == client_id))?,
    }
    if let Some(azp) = &claims.azp {
        audience(azp == client_id)?;
    }
    let exp = claims.exp.ok_or(IdTokenError::MissingClaim("exp"))?;
    if exp.saturating_add(LEEWAY) <= now {
        return Err(IdTokenError::Expired { seconds: now - exp });
    }
    if let Some(expected) = nonce {
        let found = claims.nonce.ok_or(IdTokenError::MissingClaim("nonce"))?;
        if !bool::from(found.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(IdTokenError::Nonce);
        }
    }
    Ok(exp)
}

/// A signed-in session at an identity provider: the ID token and what renews it.
#[derive(Clone)]
pub struct IdpSession {
    /// The IdP's issuer.
    pub issuer: String,
    /// This client's ID at the IdP (the ID token's audience).
    pub client_id: String,
    /// The IdP's token endpoint (for the refresh).
    pub token_endpoint: String,
    /// The ID token, checked when it was received.
    pub id_token: SecretString,
    /// Its `exp`.
    pub expires_at: u64,
    /// The IdP's refresh token, if it gave one.
    pub refresh_token: Option<RefreshToken>,
    /// The scopes the session was signed in with.
    pub scope: String,
}

impl std::fmt::Debug for IdpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpSession")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("token_endpoint", &self.token_endpoint)
            .field("expires_at", &self.expires_at)
            .field("refreshable", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

impl IdpSession {
    /// Whether the ID token still has at least [`LEEWAY`] seconds left at `now`.
    pub fn is_usable(&self, now: u64) -> bool {
        now + LEEWAY <= self.expires_at
    }

    /// The session in the shape the credential store keeps: a [`ServerRecord`] marked with
    /// [`IDP_SESSION_GRANT`], the ID token where a server's access token goes (the record
    /// is encrypted whole), and the client ID without its secret (that comes from the
    /// configuration each time).
    pub(crate) fn to_record(&self, auth_method: mcp_auth_types::AuthMethod) -> ServerRecord {
        let now = now_secs();
        ServerRecord {
            server_url: session_url(&self.issuer),
            name: None,
            resource: None,
            issuer: self.issuer.clone(),
            token_endpoint: self.token_endpoint.clone(),
            revocation_endpoint: None,
            authorization_endpoint: None,
            requested_scope: Some(self.scope.clone()),
            client: Some(ClientRecord {
                issuer: self.issuer.clone(),
                client_id: self.client_id.clone(),
                client_secret: None,
                client_secret_expires_at: None,
                auth_method,
                private_key_pem: None,
                signing_alg: None,
                redirect_uri: None,
                registration: crate::store::Registration::PreRegistered,
                registration_access_token: None,
                registration_client_uri: None,
            }),
            tokens: Some(TokenRecord {
                access_token: AccessToken::new(self.id_token.secret()),
                token_type: "id_token".into(),
                expires_at: Some(self.expires_at),
                refresh_token: self.refresh_token.clone(),
                scope: Some(self.scope.clone()),
                obtained_at: now,
            }),
            grant: Some(IDP_SESSION_GRANT.into()),
            dpop_key: None,
            updated_at: now,
        }
    }

    /// The session a record holds, if it is one.
    pub(crate) fn from_record(rec: &ServerRecord) -> Option<Self> {
        if !rec.is_idp_session() {
            return None;
        }
        let tokens = rec.tokens.as_ref()?;
        Some(Self {
            issuer: rec.issuer.clone(),
            client_id: rec.client.as_ref()?.client_id.clone(),
            token_endpoint: rec.token_endpoint.clone(),
            id_token: SecretString::new(tokens.access_token.secret()),
            expires_at: tokens.expires_at?,
            refresh_token: tokens.refresh_token.clone(),
            scope: rec.requested_scope.clone().unwrap_or_default(),
        })
    }
}

impl OAuthClient {
    /// Forgets the single sign-on session at the identity provider `issuer` (its ID token
    /// and refresh token), so that the next identity assertion grant signs the user in
    /// again. `Ok(false)` when there was none. Tokens already obtained for MCP servers stay
    /// (log out of those servers to end them).
    pub async fn forget_idp_session(&self, issuer: &str) -> Result<bool> {
        let key = session_key(issuer);
        let store = self.store();
        let _lock = store.lock(&key).await?;
        let existed = store.get(&key).await?.is_some_and(|r| r.is_idp_session());
        if existed {
            store.delete(&key).await?;
        }
        Ok(existed)
    }

    /// The user's ID token for an exchange at the enterprise IdP, from wherever
    /// [`EnterpriseIdp::id_token`] says. For [`IdTokenSource::Login`], under the session's
    /// lock: the stored ID token while it has [`LEEWAY`] seconds left; else one refreshed
    /// with the stored refresh token; else, when `interactive` and the options allow it, a
    /// new sign-in in the browser; else [`Error::LoginRequired`] for `server` (the MCP
    /// server that needs it).
    pub(crate) async fn enterprise_id_token(
        &self,
        idp: &EnterpriseIdp,
        interactive: bool,
        server: &str,
    ) -> Result<SecretString> {
        let scopes = match &idp.id_token {
            IdTokenSource::File(p) => {
                return WorkloadToken::File(p.clone()).read().map(SecretString::new);
            }
            IdTokenSource::Env(v) => {
                return WorkloadToken::Env(v.clone()).read().map(SecretString::new);
            }
            IdTokenSource::Login { scopes } => scopes,
        };
        let issuer = idp.issuer.as_deref().ok_or_else(|| {
            Error::Config(
                "signing in at the identity provider needs its issuer (--idp-issuer)".into(),
            )
        })?;
        let store = self.store();
        let key = session_key(issuer);
        // One sign-in per IdP at a time, across processes: whoever waited here finds the
        // session the other one stored.
        let _lock = store.lock(&key).await?;
        let stored = store
            .get(&key)
            .await?
            .as_ref()
            .and_then(IdpSession::from_record)
            .filter(|s| s.issuer == issuer && s.client_id == idp.client_id);
        if let Some(session) = &stored {
            if session.is_usable(now_secs()) {
                tracing::debug!(idp = %issuer, "using the stored ID token");
                return Ok(session.id_token.clone());
            }
            if let Some(refresh_token) = &session.refresh_token {
                match self.refresh_idp_session(idp, session, refresh_token).await {
                    Ok(Some(new)) => {
                        store.put(&key, &new.to_record(auth_method(idp))).await?;
                        tracing::info!(idp = %issuer, "refreshed the ID token at the identity provider");
                        return Ok(new.id_token);
                    }
                    Ok(None) => tracing::info!(
                        idp = %issuer,
                        "the identity provider's refresh gave no new ID token; signing in again"
                    ),
                    Err(e) if e.is_invalid_grant() => tracing::info!(
                        idp = %issuer,
                        "the identity provider refused the refresh token; signing in again"
                    ),
                    Err(e) => return Err(e),
                }
            }
            // Expired and not refreshable: nothing in it is of use any more.
            store.delete(&key).await?;
        }
        if !interactive || matches!(self.options().interaction, Interaction::NonInteractive) {
            return Err(Error::LoginRequired {
                server: server.to_owned(),
                reason: format!(
                    "the sign-in at the identity provider {issuer} expired and cannot be refreshed"
                ),
            });
        }
        self.storm_brake(&key, issuer)?;
        let session = self.sign_in_at_idp(idp, issuer, scopes, server).await?;
        store
            .put(&key, &session.to_record(auth_method(idp)))
            .await?;
        Ok(session.id_token)
    }

    /// The OpenID Connect authorization code flow at the IdP (Core §3.1): PKCE S256,
    /// `state`, `nonce`, the loopback redirect, `iss` on the response when the IdP
    /// advertises it (RFC 9207), then the code at the token endpoint and the ID token
    /// checked ([`check_id_token`]).
    async fn sign_in_at_idp(
        &self,
        idp: &EnterpriseIdp,
        issuer: &str,
        scopes: &ScopeSet,
        server: &str,
    ) -> Result<IdpSession> {
        let opts = self.options();
        let http = self.http();
        let (meta, _) = fetch_as_metadata(http, issuer, opts.allow_http).await?;
        let missing = |field| Error::Metadata {
            step: Step::AuthorizationServerMetadata,
            source: MetadataError::Missing(field),
        };
        let endpoint = meta
            .authorization_endpoint
            .as_deref()
            .ok_or_else(|| missing("authorization_endpoint"))?;
        let endpoint =
            HttpUrl::parse_secure(endpoint, opts.allow_http).map_err(|source| Error::Url {
                what: "the identity provider's authorization endpoint".into(),
                source,
            })?;
        let token_endpoint = match (&idp.token_endpoint, &meta.token_endpoint) {
            (Some(e), _) | (None, Some(e)) => e.clone(),
            (None, None) => return Err(missing("token_endpoint")),
        };
        let scope = openid_scopes(scopes)?;
        // A port derived from the IdP (not from an MCP server), so the redirect URI that
        // must be registered for this client at the IdP stays the same.
        let port = opts.redirect.port_for(&session_url(issuer));
        let mut listener = Listener::bind_dual(
            port,
            &opts.redirect.path,
            opts.redirect.host.eq_ignore_ascii_case("localhost"),
        )
        .await?;
        let redirect_uri = opts.redirect.redirect_uri(listener.port());
        let (verifier, challenge, state) = new_request_secrets();
        // OpenID Connect Core §3.1.2.1: binds the ID token to this request (§15.5.2).
        let nonce = CsrfState::generate();
        let extra = [("nonce".to_owned(), nonce.as_str().to_owned())];
        let url = authorization_url(
            &AuthorizationRequest {
                endpoint: &endpoint,
                client_id: &idp.client_id,
                redirect_uri: &redirect_uri,
                scope: Some(&scope),
                resource: None,
                extra: &extra,
            },
            &state,
            &challenge,
        );
        tracing::info!(
            endpoint = endpoint.as_str(),
            client_id = %idp.client_id,
            %redirect_uri,
            scope = %scope,
            "sending the user to the identity provider to sign in"
        );
        let paste = self.send_user(&url, server)?;
        let code = wait_for_code(
            &mut listener,
            paste,
            &state,
            &meta.issuer,
            meta.sends_iss(),
            opts.flow_timeout,
        )
        .await?;
        drop(listener);
        tracing::info!("authorization code received from the identity provider; exchanging it");
        let grant = TokenRequest::AuthorizationCode {
            code: &code,
            redirect_uri: &redirect_uri,
            verifier: &verifier,
            resource: None,
        };
        let client = idp_client(idp, issuer);
        let resp = request_token(
            http,
            Step::IdpLogin,
            &token_endpoint,
            issuer,
            &client,
            &grant,
        )
        .await?;
        session_from(
            resp,
            idp,
            issuer,
            &token_endpoint,
            &scope,
            Some(nonce.as_str()),
            None,
        )?
        .ok_or_else(|| Error::InvalidResponse {
            step: Step::IdpLogin,
            url: token_endpoint.clone(),
            message: "the identity provider sent no id_token (is `openid` among the client's allowed scopes?)".into(),
        })
    }

    /// The refresh token grant at the IdP. `Ok(None)` when it answered without an ID token.
    async fn refresh_idp_session(
        &self,
        idp: &EnterpriseIdp,
        session: &IdpSession,
        refresh_token: &RefreshToken,
    ) -> Result<Option<IdpSession>> {
        let grant = TokenRequest::RefreshToken {
            refresh_token,
            scope: None,
            resource: None,
        };
        let client = idp_client(idp, &session.issuer);
        let resp = request_token(
            self.http(),
            Step::IdpLogin,
            &session.token_endpoint,
            &session.issuer,
            &client,
            &grant,
        )
        .await?;
        let scope: ScopeSet = session.scope.parse().unwrap_or_default();
        // OpenID Connect Core §12.2: a refreshed ID token carries no nonce of its own.
        session_from(
            resp,
            idp,
            &session.issuer,
            &session.token_endpoint,
            &scope,
            None,
            Some(refresh_token),
        )
    }
}

/// `openid` first, then the configured scopes.
fn openid_scopes(scopes: &ScopeSet) -> Result<ScopeSet> {
    let openid =
        Scope::new("openid").map_err(|e| Error::Config(format!("the openid scope: {e}")))?;
    let mut all = ScopeSet::new();
    all.insert(openid);
    Ok(all.union(scopes))
}

/// How this client authenticates at the IdP: `client_secret_basic` with a secret, else as
/// a public client (its `client_id` in the form).
fn auth_method(idp: &EnterpriseIdp) -> AuthMethod {
    if idp.client_secret.is_some() {
        AuthMethod::ClientSecretBasic
    } else {
        AuthMethod::None
    }
}

fn idp_client(idp: &EnterpriseIdp, issuer: &str) -> ClientRecord {
    ClientRecord {
        issuer: issuer.to_owned(),
        client_id: idp.client_id.clone(),
        client_secret: idp.client_secret.clone(),
        client_secret_expires_at: None,
        auth_method: auth_method(idp),
        private_key_pem: None,
        signing_alg: None,
        redirect_uri: None,
        registration: crate::store::Registration::PreRegistered,
        registration_access_token: None,
        registration_client_uri: None,
    }
}

/// The session a token response from the IdP makes, its ID token checked; `None` when it
/// has no ID token. A response without a new refresh token keeps `previous_refresh`.
fn session_from(
    resp: TokenResponse,
    idp: &EnterpriseIdp,
    issuer: &str,
    token_endpoint: &str,
    scope: &ScopeSet,
    nonce: Option<&str>,
    previous_refresh: Option<&RefreshToken>,
) -> Result<Option<IdpSession>> {
    let Some(id_token) = resp.id_token else {
        return Ok(None);
    };
    let expires_at = check_id_token(id_token.secret(), issuer, &idp.client_id, nonce, now_secs())
        .map_err(|source| Error::IdToken {
        issuer: issuer.to_owned(),
        source,
    })?;
    Ok(Some(IdpSession {
        issuer: issuer.to_owned(),
        client_id: idp.client_id.clone(),
        token_endpoint: token_endpoint.to_owned(),
        id_token,
        expires_at,
        refresh_token: resp.refresh_token.or_else(|| previous_refresh.cloned()),
        scope: resp.scope.as_ref().unwrap_or(scope).to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::{Value, json};

    const ISS: &str = "https://acme.okta.com";
    const NOW: u64 = 1_800_000_000;

    fn jwt(header: &Value, claims: &Value) -> String {
        let e = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        format!("{}.{}.c2ln", e(header), e(claims))
    }

    fn token(claims: Value) -> String {
        jwt(&json!({"alg": "RS256", "kid": "k"}), &claims)
    }

    fn good() -> Value {
        json!({"iss": ISS, "sub": "alice", "aud": "mcp-cli", "exp": NOW + 300,
               "iat": NOW, "nonce": "n-123"})
    }

    fn with(key: &str, value: Value) -> String {
        let mut c = good();
        c[key] = value;
        token(c)
    }

    fn check(raw: &str) -> Result<u64, IdTokenError> {
        check_id_token(raw, ISS, "mcp-cli", Some("n-123"), NOW)
    }

    #[test]
    fn a_good_id_token_is_accepted_with_its_expiry() {
        assert_eq!(check(&token(good())), Ok(NOW + 300));
        assert_eq!(
            check(&with("aud", json!(["other", "mcp-cli"]))),
            Ok(NOW + 300)
        );
        // Within the leeway.
        assert!(check(&with("exp", json!(NOW - 30))).is_ok());
        // A refreshed ID token: no nonce to compare.
        let mut c = good();
        c.as_object_mut().unwrap().remove("nonce");
        assert!(check_id_token(&token(c), ISS, "mcp-cli", None, NOW).is_ok());
    }

    #[test]
    fn another_issuer_is_refused() {
        assert!(matches!(
            check(&with("iss", json!("https://evil.example"))),
            Err(IdTokenError::Issuer { .. })
        ));
        // Exact string comparison: a trailing slash is another issuer.
        assert!(matches!(
            check(&with("iss", json!(format!("{ISS}/")))),
            Err(IdTokenError::Issuer { .. })
        ));
    }

    #[test]
    fn another_audience_is_refused() {
        for aud in [json!("other"), json!(["a", "b"]), json!([])] {
            assert!(
                matches!(check(&with("aud", aud)), Err(IdTokenError::Audience { .. })),
                "audience refused"
            );
        }
        let mut c = good();
        c["aud"] = json!(["mcp-cli", "other"]);
        c["azp"] = json!("other");
        assert!(matches!(
            check(&token(c)),
            Err(IdTokenError::Audience { .. })
        ));
    }

    #[test]
    fn an_expired_id_token_is_refused() {
        assert_eq!(
            check(&with("exp", json!(NOW - 61))),
            Err(IdTokenError::Expired { seconds: 61 })
        );
    }

    #[test]
    fn another_nonce_is_refused() {
        assert_eq!(
            check(&with("nonce", json!("n-124"))),
            Err(IdTokenError::Nonce)
        );
        let mut c = good();
        c.as_object_mut().unwrap().remove("nonce");
        assert_eq!(check(&token(c)), Err(IdTokenError::MissingClaim("nonce")));
    }

    #[test]
    fn missing_claims_are_refused() {
        for claim in ["iss", "aud", "exp"] {
            let mut c = good();
            c.as_object_mut().unwrap().remove(claim);
            assert_eq!(check(&token(c)), Err(IdTokenError::MissingClaim(claim)));
        }
        assert_eq!(
            check(&with("exp", json!("tomorrow"))),
            Err(IdTokenError::Malformed)
        );
    }

    #[test]
    fn an_unsigned_or_malformed_id_token_is_refused() {
        for alg in ["none", "NONE"] {
            assert_eq!(
                check(&jwt(&json!({"alg": alg}), &good())),
                Err(IdTokenError::Unsigned)
            );
        }
        assert_eq!(
            check(&jwt(&json!({"typ": "JWT"}), &good())),
            Err(IdTokenError::MissingClaim("alg (header)"))
        );
        for raw in [
            "",
            "a.b",
            "a.b.c.d",
            "!!!.???.sig",
            "eyJhbGciOiJSUzI1NiJ9.eHh4.sig",
        ] {
            assert_eq!(check(raw), Err(IdTokenError::Malformed), "{raw}");
        }
    }

    #[test]
    fn a_session_survives_the_store_and_hides_its_secrets() {
        let s = IdpSession {
            issuer: ISS.into(),
            client_id: "mcp-cli".into(),
            token_endpoint: format!("{ISS}/token"),
            id_token: SecretString::new("id.token.secret"),
            expires_at: NOW,
            refresh_token: Some(RefreshToken::new("refresh-secret")),
            scope: "openid email".into(),
        };
        let rec = s.to_record(mcp_auth_types::AuthMethod::None);
        assert!(rec.is_idp_session());
        assert_ne!(session_key(ISS), server_key(ISS));
        let back = IdpSession::from_record(&rec).unwrap();
        assert_eq!(back.id_token.secret(), "id.token.secret");
        assert_eq!(back.expires_at, NOW);
        assert!(back.is_usable(NOW - LEEWAY) && !back.is_usable(NOW - LEEWAY + 1));
        let debug = format!("{back:?} {rec:?}");
        assert!(!debug.contains("id.token.secret"), "{debug}");
        assert!(!debug.contains("refresh-secret"), "{debug}");
    }
}
