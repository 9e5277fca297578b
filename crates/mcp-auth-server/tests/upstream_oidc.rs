//! Proxy-provider mode end to end with the real OpenID Connect relying party
//! (`mcp_auth_upstream::OidcProvider`) against a fake OpenID Connect provider served on
//! 127.0.0.1:0 (discovery, a JWKS with an ES256 key generated at test start, a token endpoint
//! that checks client authentication, the redirect URI and PKCE). The authorization server's
//! router is driven in-process by a browser that keeps its cookies.
//!
//! Each scenario logs in once: register a public client, `/authorize` with PKCE, approve the
//! consent page, follow the redirect to the fake (where the "user" logs in and gets a code),
//! then come back to `/oauth/callback`. The fake's token endpoint answers with an `id_token`
//! the scenario chose: a valid one lets the client get our code and tokens; a forged,
//! misdirected or expired one must end on an error page with nothing stored.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::body::Body;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use mcp_auth_server::store::{MemoryStore, Store, unix_now};
use mcp_auth_server::{
    AuthorizationServer, IdentityProvider, SealKeys, ServerConfig, UpstreamIdentity, UpstreamVault,
};
use mcp_auth_types::SecretString;
use mcp_auth_upstream::{OidcConfig, OidcProvider, Upstream, http_client};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt as _;

/// Our authorization server (driven in-process, never listening).
const ISSUER: &str = "http://127.0.0.1:1";
const CALLBACK: &str = "http://127.0.0.1:1/oauth/callback";
/// The MCP client's redirect URI.
const REDIRECT: &str = "http://127.0.0.1:4242/callback";
// RFC 7636 appendix B: the MCP client's PKCE pair.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
/// Our client registration at the fake provider.
const UP_CLIENT_ID: &str = "mcp-auth-as";
const UP_CLIENT_SECRET: &str = "fake-client-secret-value";
/// The user at the fake provider, and so our account `oidc:<SUBJECT>`.
const SUBJECT: &str = "248289761001";
const ACCOUNT: &str = "oidc:248289761001";

// ---------------------------------------------------------------------------------------
// Signing keys.

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn json_b64(v: &Value) -> String {
    b64(&serde_json::to_vec(v).unwrap())
}

/// An ES256 key with its kid and public JWK.
struct TestKey {
    kid: String,
    pair: EcdsaKeyPair,
}

impl TestKey {
    fn es256(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }

    fn jwk(&self) -> Value {
        let public = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": "ES256",
               "x": b64(&public[1..33]), "y": b64(&public[33..])})
    }

    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let input = format!("{}.{}", json_b64(&header), json_b64(claims));
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

// ---------------------------------------------------------------------------------------
// The fake OpenID Connect provider.

/// The `id_token` the fake's token endpoint returns for a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdToken {
    /// Signed with the published key, with the login's nonce: accepted.
    Valid,
    /// A nonce other than the one sent with the authorization request.
    WrongNonce,
    /// Signed by an impostor key under the published kid.
    ForgedSameKid,
    /// Signed by an impostor key under a kid the JWKS does not have.
    ForgedUnknownKid,
    /// `alg: none`, no signature.
    Unsigned,
    /// Issued to another client.
    WrongAudience,
    /// `iss` is another provider.
    WrongIssuer,
    /// `exp` an hour ago.
    Expired,
    /// HS256, MACed with our client secret (anyone holding the secret could make it).
    Hs256ClientSecret,
}

/// A code the fake gave the browser.
struct Grant {
    challenge: String,
    nonce: String,
    redirect_uri: String,
    id_token: IdToken,
}

/// What the fake's token endpoint answered.
#[derive(Clone, Debug)]
struct Issued {
    id_token: String,
    access_token: String,
    refresh_token: String,
}

struct FakeState {
    issuer: String,
    key: TestKey,
    /// Never published; same kid as `key`.
    impostor: TestKey,
    /// Never published; a kid the JWKS does not have.
    ghost: TestKey,
    codes: HashMap<String, Grant>,
    issued: Vec<Issued>,
    token_requests: usize,
    jwks_fetches: usize,
    counter: u64,
}

#[derive(Clone)]
struct Fake {
    state: Arc<Mutex<FakeState>>,
    issuer: String,
}

impl Fake {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let state = FakeState {
            issuer: issuer.clone(),
            key: TestKey::es256("es-1"),
            impostor: TestKey::es256("es-1"),
            ghost: TestKey::es256("ghost-1"),
            codes: HashMap::new(),
            issued: Vec::new(),
            token_requests: 0,
            jwks_fetches: 0,
            counter: 0,
        };
        let fake = Self {
            state: Arc::new(Mutex::new(state)),
            issuer,
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token_endpoint))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// The provider as the server is configured with it.
    fn provider(&self) -> OidcProvider {
        let mut c = OidcConfig::new(
            self.issuer.clone(),
            UP_CLIENT_ID,
            Some(SecretString::new(UP_CLIENT_SECRET)),
        );
        c.label = "Example SSO".into();
        c.allow_http = true;
        OidcProvider::new(c, http_client().unwrap()).unwrap()
    }

    /// The user logs in at the fake's authorization endpoint, which would redirect the
    /// browser back with this code. Checks the request as a real provider would.
    fn login(&self, url: &url::Url, id_token: IdToken) -> String {
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(
            url.as_str().split('?').next(),
            Some(format!("{}/authorize", self.issuer).as_str())
        );
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], UP_CLIENT_ID);
        assert_eq!(q["redirect_uri"], CALLBACK);
        assert_eq!(q["scope"], "openid email profile");
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(!q["state"].is_empty() && !q["nonce"].is_empty());
        assert_ne!(q["state"], q["nonce"]);
        self.with(|s| {
            s.counter += 1;
            let code = format!(
                "fake-code-{}-{}",
                s.counter,
                b64(&Sha256::digest(&q["state"]))
            );
            s.codes.insert(
                code.clone(),
                Grant {
                    challenge: q["code_challenge"].clone(),
                    nonce: q["nonce"].clone(),
                    redirect_uri: q["redirect_uri"].clone(),
                    id_token,
                },
            );
            code
        })
    }

    fn issued(&self) -> Vec<Issued> {
        self.with(|s| s.issued.clone())
    }

    fn token_requests(&self) -> usize {
        self.with(|s| s.token_requests)
    }

    fn jwks_fetches(&self) -> usize {
        self.with(|s| s.jwks_fetches)
    }
}

async fn discovery(State(f): State<Fake>) -> Json<Value> {
    let base = f.issuer;
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }))
}

async fn jwks(State(f): State<Fake>) -> Json<Value> {
    f.with(|s| {
        s.jwks_fetches += 1;
        Json(json!({"keys": [s.key.jwk()]}))
    })
}

fn invalid_grant() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_grant", "error_description": "from the fake"})),
    )
        .into_response()
}

/// The id_token for a redeemed code, made as the scenario asks.
fn make_id_token(s: &FakeState, grant: &Grant) -> String {
    let t = unix_now();
    let mut claims = json!({
        "iss": s.issuer, "sub": SUBJECT, "aud": UP_CLIENT_ID, "exp": t + 300, "iat": t,
        "nonce": grant.nonce, "name": "Ada Lovelace", "email": "ada@example.com",
        "email_verified": true,
    });
    match grant.id_token {
        IdToken::Valid => s.key.sign(&claims),
        IdToken::WrongNonce => {
            claims["nonce"] = json!("someone-elses-nonce");
            s.key.sign(&claims)
        }
        IdToken::ForgedSameKid => s.impostor.sign(&claims),
        IdToken::ForgedUnknownKid => s.ghost.sign(&claims),
        IdToken::Unsigned => {
            let header = json!({"alg": "none", "kid": s.key.kid, "typ": "JWT"});
            format!("{}.{}.", json_b64(&header), json_b64(&claims))
        }
        IdToken::WrongAudience => {
            claims["aud"] = json!("another-client");
            s.key.sign(&claims)
        }
        IdToken::WrongIssuer => {
            claims["iss"] = json!("https://evil.example.com");
            s.key.sign(&claims)
        }
        IdToken::Expired => {
            claims["exp"] = json!(t - 3600);
            claims["iat"] = json!(t - 7200);
            s.key.sign(&claims)
        }
        IdToken::Hs256ClientSecret => {
            use aws_lc_rs::hmac;
            let header = json!({"alg": "HS256", "typ": "JWT"});
            let input = format!("{}.{}", json_b64(&header), json_b64(&claims));
            let k = hmac::Key::new(hmac::HMAC_SHA256, UP_CLIENT_SECRET.as_bytes());
            format!("{input}.{}", b64(hmac::sign(&k, input.as_bytes()).as_ref()))
        }
    }
}

/// The token endpoint: `client_secret_basic`, the code once, the same redirect URI, PKCE.
async fn token_endpoint(
    State(f): State<Fake>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut s = f.state.lock().unwrap();
    s.token_requests += 1;
    let expected_auth = format!(
        "Basic {}",
        STANDARD.encode(format!("{UP_CLIENT_ID}:{UP_CLIENT_SECRET}"))
    );
    if headers
        .get(header::AUTHORIZATION)
        .is_none_or(|h| h.as_bytes() != expected_auth.as_bytes())
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return invalid_grant();
    }
    let Some(grant) = form.get("code").and_then(|c| s.codes.remove(c)) else {
        return invalid_grant();
    };
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return invalid_grant();
    }
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if b64(&Sha256::digest(verifier.as_bytes())) != grant.challenge {
        return invalid_grant();
    }
    s.counter += 1;
    let issued = Issued {
        id_token: make_id_token(&s, &grant),
        access_token: format!("fake-at-{}", s.counter),
        refresh_token: format!("fake-rt-{}", s.counter),
    };
    s.issued.push(issued.clone());
    Json(json!({
        "access_token": issued.access_token, "token_type": "Bearer", "expires_in": 3600,
        "refresh_token": issued.refresh_token, "scope": "openid email profile",
        "id_token": issued.id_token,
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------
// The authorization server, and a browser.

struct Env {
    router: axum::Router,
    store: Arc<MemoryStore>,
    vault: UpstreamVault,
    fake: Fake,
}

async fn env() -> Env {
    let fake = Fake::start().await;
    let store = Arc::new(MemoryStore::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let up: Arc<dyn Upstream> = Arc::new(fake.provider());
    let vault = UpstreamVault::new(
        dyn_store.clone(),
        "default",
        SealKeys::new("k1", [7u8; 32]).unwrap(),
        [up.clone()],
        Duration::from_secs(86400),
    );
    let idps: Vec<Arc<dyn IdentityProvider>> = vec![Arc::new(UpstreamIdentity(up))];
    let mut config = ServerConfig::new(ISSUER);
    config.rate_limits = mcp_auth_server::ratelimit::RateLimits::off();
    let server =
        AuthorizationServer::with_identity_providers(config, dyn_store, idps, Some(vault.clone()))
            .await
            .unwrap();
    Env {
        router: server.router(),
        store,
        vault,
        fake,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> url::Url {
        let l = self
            .headers
            .get(header::LOCATION)
            .unwrap_or_else(|| panic!("no Location: {} {}", self.status, self.body));
        url::Url::parse(l.to_str().unwrap()).unwrap()
    }

    fn param(&self, name: &str) -> Option<String> {
        self.location()
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// A hidden input's value on the page.
    fn field(&self, name: &str) -> String {
        let marker = format!("name={name} value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} on {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_owned()
    }

    /// Whether the response sets (not clears) the cookie `base` of our issuer.
    fn sets_cookie(&self, base: &str) -> bool {
        let name = format!("{}=", mcp_auth_server::flow::cookie_name(ISSUER, base));
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.starts_with(&name) && !v.contains("Max-Age=0"))
    }
}

/// A browser: cookies kept per base name.
#[derive(Default, Clone)]
struct Browser {
    cookies: HashMap<String, String>,
}

impl Browser {
    async fn send(
        &mut self,
        router: &axum::Router,
        method: Method,
        uri: &str,
        form: Option<&[(&str, &str)]>,
    ) -> Reply {
        let path = uri.strip_prefix(ISSUER).unwrap_or(uri);
        let mut req = Request::builder().method(method).uri(path);
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{}={v}", mcp_auth_server::flow::cookie_name(ISSUER, k)))
                .collect();
            req = req.header(header::COOKIE, c.join("; "));
        }
        let body = match form {
            Some(f) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(serde_urlencoded::to_string(f).unwrap())
            }
            None => Body::empty(),
        };
        let resp = router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        for v in headers.get_all(header::SET_COOKIE) {
            let v = v.to_str().unwrap();
            let (kv, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            // Names carry a hash of the issuer; the tests use the base name.
            let k = k.rsplit_once('_').map_or(k, |(base, _)| base);
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), val.to_owned());
            }
        }
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&mut self, router: &axum::Router, uri: &str) -> Reply {
        self.send(router, Method::GET, uri, None).await
    }

    async fn post(&mut self, router: &axum::Router, uri: &str, form: &[(&str, &str)]) -> Reply {
        self.send(router, Method::POST, uri, Some(form)).await
    }
}

/// Registers a public client (RFC 7591) and returns its id.
async fn register(router: &axum::Router) -> String {
    let req = Request::post("/register")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"redirect_uris": [REDIRECT], "client_name": "Test Client",
                   "token_endpoint_auth_method": "none",
                   "grant_types": ["authorization_code", "refresh_token"]})
            .to_string(),
        ))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["client_id"].as_str().unwrap().to_owned()
}

fn authorize_url(client_id: &str) -> String {
    let mut u = url::Url::parse(&format!("{ISSUER}/authorize")).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "read")
        .append_pair("state", "client-state")
        .append_pair("code_challenge", CHALLENGE)
        .append_pair("code_challenge_method", "S256");
    u.to_string()
}

async fn token(router: &axum::Router, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let req = Request::post("/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A login that reached the callback.
struct Attempt {
    client_id: String,
    browser: Browser,
    /// The browser's cookies just before the callback (the upstream binding cookie set).
    before_callback: Browser,
    /// The `/oauth/callback` URL the browser came back to.
    callback: String,
    code: String,
    reply: Reply,
}

/// The whole login: authorize, consent, the fake's login with `id_token`, the callback.
async fn log_in(e: &Env, id_token: IdToken) -> Attempt {
    let client_id = register(&e.router).await;
    let mut b = Browser::default();
    let page = b.get(&e.router, &authorize_url(&client_id)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // One provider: the consent page straight away, no provider choice.
    assert!(!page.body.contains("name=provider"), "{}", page.body);
    assert!(
        page.body.contains("Allow and continue with Example SSO"),
        "{}",
        page.body
    );
    // Nothing has gone upstream before the user approved.
    assert_eq!(e.fake.token_requests(), 0);
    let go = b
        .post(
            &e.router,
            "/authorize",
            &[
                ("pending", &page.field("pending")),
                ("csrf", &page.field("csrf")),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(go.status, StatusCode::SEE_OTHER, "{}", go.body);
    assert!(b.cookies.contains_key("mcp_auth_upstream"));
    let upstream = go.location();
    let state = go.param("state").unwrap();
    let code = e.fake.login(&upstream, id_token);
    let callback = format!("/oauth/callback?code={code}&state={state}");
    let before_callback = b.clone();
    let reply = b.get(&e.router, &callback).await;
    Attempt {
        client_id,
        browser: b,
        before_callback,
        callback,
        code,
        reply,
    }
}

/// Nothing of a login is kept: no upstream tokens, no consent, no session.
async fn assert_nothing_stored(e: &Env) {
    assert!(e.vault.tokens(ACCOUNT).await.unwrap().is_none());
    assert!(!e.vault.is_connected(ACCOUNT).await.unwrap());
    assert!(
        e.store
            .get_upstream("default", ACCOUNT, unix_now())
            .await
            .unwrap()
            .is_none()
    );
    let consents = e.store.list_consents("default", None).await.unwrap();
    assert!(consents.is_empty(), "{consents:?}");
}

/// A clear error page: 400, HTML, not framable, no redirect, no session.
fn assert_error_page(r: &Reply, says: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        r.headers
    );
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(r.body.contains(says), "{says:?} not on {}", r.body);
    assert!(r.headers.get(header::LOCATION).is_none(), "redirected");
    assert!(!r.sets_cookie("mcp_auth_session"), "{:?}", r.headers);
}

/// A login whose `id_token` is refused: an error page naming the reason, and nothing stored.
async fn assert_refused(id_token: IdToken, reason: &str) -> Env {
    let e = env().await;
    let a = log_in(&e, id_token).await;
    let r = &a.reply;
    assert_error_page(
        r,
        "signing in with Example SSO failed: the id_token was refused",
    );
    assert!(r.body.contains(reason), "{reason:?} not on {}", r.body);
    // The code was redeemed (with our PKCE verifier): the refusal is the id_token's.
    let issued = e.fake.issued();
    assert_eq!(issued.len(), 1);
    let issued = &issued[0];
    for secret in [
        issued.id_token.as_str(),
        issued.id_token.split('.').nth(1).unwrap(),
        issued.access_token.as_str(),
        issued.refresh_token.as_str(),
        a.code.as_str(),
    ] {
        assert!(!r.body.contains(secret), "the page shows {secret}");
    }
    assert!(!a.browser.cookies.contains_key("mcp_auth_session"));
    // The binding cookie of the finished login is cleared.
    assert!(!a.browser.cookies.contains_key("mcp_auth_upstream"));
    assert_nothing_stored(&e).await;

    // The callback cannot be retried: the login was consumed.
    let mut again = a.before_callback;
    let r = again.get(&e.router, &a.callback).await;
    assert_error_page(&r, "already used");
    assert_eq!(e.fake.token_requests(), 1);
    assert_nothing_stored(&e).await;
    e
}

// ---------------------------------------------------------------------------------------
// Scenarios.

#[tokio::test]
async fn a_valid_id_token_logs_the_user_in_and_keeps_the_upstream_tokens() {
    let e = env().await;
    let a = log_in(&e, IdToken::Valid).await;
    let back = &a.reply;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.body);
    assert!(back.location().as_str().starts_with(REDIRECT));
    assert_eq!(back.param("state").as_deref(), Some("client-state"));
    assert_eq!(back.param("iss").as_deref(), Some(ISSUER));
    assert!(back.sets_cookie("mcp_auth_session"));
    assert!(!a.browser.cookies.contains_key("mcp_auth_upstream"));
    assert_eq!(e.fake.token_requests(), 1);
    assert_eq!(e.fake.jwks_fetches(), 1);

    // The client redeems our code.
    let code = back.param("code").unwrap();
    let (status, t) = token(
        &e.router,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &a.client_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["refresh_token"].is_string());
    let text = t.to_string();
    assert!(
        !text.contains("fake-"),
        "an upstream token reached the client"
    );
    let payload = t["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["sub"], ACCOUNT);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["client_id"], a.client_id.as_str());

    // The fake's tokens are kept, sealed.
    let issued = &e.fake.issued()[0];
    let kept = e.vault.tokens(ACCOUNT).await.unwrap().unwrap();
    assert_eq!(kept.access_token.secret(), issued.access_token);
    assert_eq!(
        kept.refresh_token.as_ref().unwrap().secret(),
        issued.refresh_token
    );
    assert_eq!(kept.scope.as_deref(), Some("openid email profile"));
    let row = e
        .store
        .get_upstream("default", ACCOUNT, unix_now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.provider, "oidc");
    assert!(!row.sealed.contains("fake-"), "stored in plaintext");

    // The consent is remembered, for this user and client only.
    let consents = e.store.list_consents("default", None).await.unwrap();
    assert_eq!(consents.len(), 1, "{consents:?}");
    assert_eq!(consents[0].subject, ACCOUNT);
    assert_eq!(consents[0].client_id, a.client_id);
    assert_eq!(consents[0].scope, "read");
}

#[tokio::test]
async fn a_replayed_callback_is_refused_and_stores_nothing_new() {
    let e = env().await;
    let a = log_in(&e, IdToken::Valid).await;
    assert_eq!(a.reply.status, StatusCode::SEE_OTHER, "{}", a.reply.body);
    let first = e.vault.tokens(ACCOUNT).await.unwrap().unwrap();
    let row = e
        .store
        .get_upstream("default", ACCOUNT, unix_now())
        .await
        .unwrap()
        .unwrap();

    // The same browser again (its binding cookie was cleared by the first callback), and a
    // copy of the browser taken before the callback (the binding cookie still set).
    for mut b in [a.browser.clone(), a.before_callback.clone()] {
        let r = b.get(&e.router, &a.callback).await;
        assert_error_page(&r, "already used");
        assert!(!r.body.contains(&a.code));
    }
    // The code was not redeemed upstream again, and nothing changed here.
    assert_eq!(e.fake.token_requests(), 1);
    let now = e
        .store
        .get_upstream("default", ACCOUNT, unix_now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((now.version, &now.sealed), (row.version, &row.sealed));
    let kept = e.vault.tokens(ACCOUNT).await.unwrap().unwrap();
    assert_eq!(kept.access_token.secret(), first.access_token.secret());
    assert_eq!(
        e.store.list_consents("default", None).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn an_id_token_with_another_nonce_is_refused() {
    assert_refused(
        IdToken::WrongNonce,
        "the id_token nonce does not match the authorization request",
    )
    .await;
}

#[tokio::test]
async fn an_id_token_signed_by_another_key_under_the_published_kid_is_refused() {
    let e = assert_refused(
        IdToken::ForgedSameKid,
        "the id_token signature does not verify",
    )
    .await;
    // The kid is known: no refetch of the JWKS.
    assert_eq!(e.fake.jwks_fetches(), 1);
}

#[tokio::test]
async fn an_id_token_signed_by_a_key_missing_from_the_jwks_is_refused() {
    let e = assert_refused(IdToken::ForgedUnknownKid, "in the provider&#39;s JWKS").await;
    // The provider may have rotated its keys: the JWKS was fetched again, once.
    assert_eq!(e.fake.jwks_fetches(), 2);
}

#[tokio::test]
async fn an_unsigned_id_token_is_refused() {
    assert_refused(
        IdToken::Unsigned,
        "id_token algorithm &quot;none&quot; is not allowed",
    )
    .await;
}

#[tokio::test]
async fn an_id_token_for_another_client_is_refused() {
    assert_refused(
        IdToken::WrongAudience,
        "id_token audience [&quot;another-client&quot;] does not include this client",
    )
    .await;
}

#[tokio::test]
async fn an_id_token_from_another_issuer_is_refused() {
    assert_refused(
        IdToken::WrongIssuer,
        "id_token issuer &quot;https://evil.example.com&quot; is not",
    )
    .await;
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    assert_refused(IdToken::Expired, "the id_token expired at").await;
}

#[tokio::test]
async fn an_id_token_maced_with_the_client_secret_is_refused() {
    assert_refused(
        IdToken::Hs256ClientSecret,
        "id_token algorithm &quot;HS256&quot; is not allowed",
    )
    .await;
}
