//! `OidcProvider` against a fake OpenID Connect provider on 127.0.0.1:0: discovery (issuer
//! with a path), a JWKS with ES256 and RS256 keys generated at test start, a token endpoint
//! that checks client authentication and PKCE, userinfo, refresh with or without rotation,
//! and RFC 7009 revocation. The fake signs each id_token as a test asks, good or forged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use mcp_auth_types::{PkceChallenge, PkceVerifier, SecretString};
use mcp_auth_upstream::id_token::IdTokenError;
use mcp_auth_upstream::{
    AuthorizationRequest, Completion, OidcConfig, OidcProvider, Upstream, UpstreamConfig,
    UpstreamError, UpstreamLogin, http_client,
};
use serde_json::{Value, json};

const CLIENT_ID: &str = "fake-client";
const CLIENT_SECRET: &str = "fake-client-secret-value";
const REDIRECT: &str = "https://as.example.com/upstream/oidc/callback";
const SUBJECT: &str = "248289761001";

// ---------------------------------------------------------------------------------------
// Keys.

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

enum Signer {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

struct TestKey {
    kid: String,
    signer: Signer,
    jwk: Value,
}

impl TestKey {
    fn es256(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        Self {
            kid: kid.into(),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                        "x": b64(&public[1..33]), "y": b64(&public[33..])}),
            signer: Signer::Es256(pair),
        }
    }

    fn rs256(kid: &str) -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let public = pair.public_key();
        Self {
            kid: kid.into(),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                        "n": b64(public.modulus().big_endian_without_leading_zero()),
                        "e": b64(public.exponent().big_endian_without_leading_zero())}),
            signer: Signer::Rs256(pair),
        }
    }

    fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Es256(_) => "ES256",
            Signer::Rs256(_) => "RS256",
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).unwrap()),
            b64(&serde_json::to_vec(claims).unwrap())
        );
        let rng = SystemRandom::new();
        let sig = match &self.signer {
            Signer::Es256(p) => p.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Signer::Rs256(p) => {
                let mut sig = vec![0; p.public_modulus_len()];
                p.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
        };
        format!("{input}.{}", b64(&sig))
    }
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).unwrap()),
        b64(&serde_json::to_vec(claims).unwrap())
    )
}

// ---------------------------------------------------------------------------------------
// The fake provider.

/// How the fake makes the next id_tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Good,
    WrongNonce,
    /// Signed by a key that is not in the JWKS, under a published kid.
    OtherKey,
    AlgNone,
    /// HS256 with the client secret as the MAC key.
    Hs256,
    WrongAudience,
    WrongIssuer,
    Expired,
    /// No id_token in the token response.
    Missing,
}

struct Grant {
    challenge: String,
    nonce: String,
    redirect_uri: String,
}

struct Inner {
    issuer: String,
    /// Overrides the discovery document's `issuer`.
    doc_issuer: Option<String>,
    auth_methods: Option<Vec<&'static str>>,
    revocation: bool,
    userinfo: bool,
    userinfo_sub: Option<String>,
    mode: Mode,
    rotate_refresh: bool,
    keys: HashMap<String, TestKey>,
    published: Vec<String>,
    signing_kid: String,
    /// A key never published, for `Mode::OtherKey`.
    impostor: TestKey,
    codes: HashMap<String, Grant>,
    access: HashMap<String, String>,
    refresh: HashMap<String, String>,
    revoked: Vec<(String, String)>,
    client_auth: Vec<&'static str>,
    discovery_fetches: usize,
    jwks_fetches: usize,
    counter: u64,
    public_client: bool,
}

#[derive(Clone)]
struct Fake {
    inner: Arc<Mutex<Inner>>,
    issuer: String,
}

impl Fake {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        // An issuer with a path, as Keycloak and Auth0 tenants have.
        let issuer = format!("http://{addr}/realms/test");
        let es = TestKey::es256("es-1");
        let rs = TestKey::rs256("rs-1");
        let inner = Inner {
            issuer: issuer.clone(),
            doc_issuer: None,
            auth_methods: Some(vec!["client_secret_basic", "client_secret_post"]),
            revocation: true,
            userinfo: true,
            userinfo_sub: None,
            mode: Mode::Good,
            rotate_refresh: true,
            published: vec!["es-1".into(), "rs-1".into()],
            keys: HashMap::from([("es-1".into(), es), ("rs-1".into(), rs)]),
            signing_kid: "es-1".into(),
            impostor: TestKey::es256("es-1"),
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            revoked: Vec::new(),
            client_auth: Vec::new(),
            discovery_fetches: 0,
            jwks_fetches: 0,
            counter: 0,
            public_client: false,
        };
        let fake = Self {
            inner: Arc::new(Mutex::new(inner)),
            issuer,
        };
        let app = Router::new()
            .route(
                "/realms/test/.well-known/openid-configuration",
                get(discovery),
            )
            .route("/realms/test/jwks", get(jwks))
            .route("/realms/test/token", post(token))
            .route("/realms/test/userinfo", get(userinfo))
            .route("/realms/test/revoke", post(revoke))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap())
    }

    fn config(&self) -> OidcConfig {
        let mut c = OidcConfig::new(
            self.issuer.clone(),
            CLIENT_ID,
            Some(SecretString::new(CLIENT_SECRET)),
        );
        c.label = "Example SSO".into();
        c.allow_http = true;
        c.extra_authorize_params = vec![("prompt".into(), "login".into())];
        c
    }

    fn provider(&self) -> OidcProvider {
        OidcProvider::new(self.config(), http_client().unwrap()).unwrap()
    }

    /// What the browser does: the user logs in at the authorization endpoint, which
    /// redirects back with a code. Checks the request as a real provider would.
    fn authorize(&self, url: &url::Url) -> String {
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(url.path(), "/realms/test/authorize");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], CLIENT_ID);
        assert_eq!(q["code_challenge_method"], "S256");
        self.with(|s| {
            s.counter += 1;
            let code = format!("code-{}", s.counter);
            s.codes.insert(
                code.clone(),
                Grant {
                    challenge: q["code_challenge"].clone(),
                    nonce: q["nonce"].clone(),
                    redirect_uri: q["redirect_uri"].clone(),
                },
            );
            code
        })
    }
}

async fn discovery(State(f): State<Fake>) -> Json<Value> {
    f.with(|s| {
        s.discovery_fetches += 1;
        let base = &s.issuer;
        let mut doc = json!({
            "issuer": s.doc_issuer.clone().unwrap_or_else(|| base.clone()),
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"),
            "jwks_uri": format!("{base}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
            "code_challenge_methods_supported": ["S256"],
        });
        if let Some(m) = &s.auth_methods {
            doc["token_endpoint_auth_methods_supported"] = json!(m);
        }
        if s.userinfo {
            doc["userinfo_endpoint"] = json!(format!("{base}/userinfo"));
        }
        if s.revocation {
            doc["revocation_endpoint"] = json!(format!("{base}/revoke"));
        }
        Json(doc)
    })
}

async fn jwks(State(f): State<Fake>) -> Json<Value> {
    f.with(|s| {
        s.jwks_fetches += 1;
        let keys: Vec<Value> = s.published.iter().map(|k| s.keys[k].jwk.clone()).collect();
        Json(json!({ "keys": keys }))
    })
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": "from the fake"})),
    )
        .into_response()
}

/// Client authentication: Basic (form-urlencoded id and secret, RFC 6749 §2.3.1), the
/// secret in the body, or none for a public client. Records which.
fn client_auth(s: &mut Inner, headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    if let Some(h) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let Some(b) = h.strip_prefix("Basic ") else {
            return false;
        };
        let raw = String::from_utf8(STANDARD.decode(b).unwrap()).unwrap();
        let (id, secret) = raw.split_once(':').unwrap();
        let dec = |x: &str| {
            url::form_urlencoded::parse(format!("x={x}").as_bytes())
                .next()
                .unwrap()
                .1
                .into_owned()
        };
        s.client_auth.push("basic");
        return dec(id) == CLIENT_ID && dec(secret) == CLIENT_SECRET;
    }
    if let Some(secret) = form.get("client_secret") {
        s.client_auth.push("post");
        return form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && secret == CLIENT_SECRET;
    }
    s.client_auth.push("none");
    s.public_client && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
}

fn id_token(s: &Inner, nonce: &str) -> Option<String> {
    let t = now();
    let mut claims = json!({
        "iss": s.issuer, "sub": SUBJECT, "aud": CLIENT_ID, "exp": t + 300, "iat": t,
        "nonce": nonce, "name": "Ada Lovelace", "email": "ada@example.com",
        "email_verified": true, "preferred_username": "ada", "at_hash": "ignored",
    });
    let key = &s.keys[&s.signing_kid];
    Some(match s.mode {
        Mode::Good => key.sign(&claims),
        Mode::WrongNonce => {
            claims["nonce"] = json!("someone-elses-nonce");
            key.sign(&claims)
        }
        Mode::OtherKey => s.impostor.sign(&claims),
        Mode::AlgNone => format!(
            "{}.",
            unsigned(&json!({"alg": "none", "kid": key.kid}), &claims)
        ),
        Mode::Hs256 => {
            use aws_lc_rs::hmac;
            let input = unsigned(&json!({"alg": "HS256", "typ": "JWT"}), &claims);
            let k = hmac::Key::new(hmac::HMAC_SHA256, CLIENT_SECRET.as_bytes());
            format!("{input}.{}", b64(hmac::sign(&k, input.as_bytes()).as_ref()))
        }
        Mode::WrongAudience => {
            claims["aud"] = json!("another-client");
            key.sign(&claims)
        }
        Mode::WrongIssuer => {
            claims["iss"] = json!("https://evil.example.com");
            key.sign(&claims)
        }
        Mode::Expired => {
            claims["exp"] = json!(t - 3600);
            claims["iat"] = json!(t - 7200);
            key.sign(&claims)
        }
        Mode::Missing => return None,
    })
}

async fn token(
    State(f): State<Fake>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut s = f.inner.lock().unwrap();
    if !client_auth(&mut s, &headers, &form) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    s.counter += 1;
    let n = s.counter;
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(grant) = form.get("code").and_then(|c| s.codes.remove(c)) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            if form.get("redirect_uri") != Some(&grant.redirect_uri) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            if !PkceChallenge::from_string(grant.challenge).verify(&verifier) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            let (at, rt) = (format!("at-{n}"), format!("rt-{n}"));
            s.access.insert(at.clone(), SUBJECT.into());
            s.refresh.insert(rt.clone(), SUBJECT.into());
            let mut body = json!({"access_token": at, "token_type": "Bearer", "expires_in": 3600,
                                  "refresh_token": rt, "scope": "openid email profile"});
            if let Some(t) = id_token(&s, &grant.nonce) {
                body["id_token"] = json!(t);
            }
            Json(body).into_response()
        }
        Some("refresh_token") => {
            let old = form.get("refresh_token").cloned().unwrap_or_default();
            let Some(sub) = s.refresh.get(&old).cloned() else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            let at = format!("at-{n}");
            s.access.insert(at.clone(), sub.clone());
            let mut body = json!({"access_token": at, "token_type": "Bearer", "expires_in": 3600});
            if s.rotate_refresh {
                s.refresh.remove(&old);
                let rt = format!("rt-{n}");
                s.refresh.insert(rt.clone(), sub);
                body["refresh_token"] = json!(rt);
            }
            Json(body).into_response()
        }
        _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    }
}

async fn userinfo(State(f): State<Fake>, headers: HeaderMap) -> Response {
    let s = f.inner.lock().unwrap();
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(sub) = token.and_then(|t| s.access.get(t)) else {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer error=\"invalid_token\"")],
        )
            .into_response();
    };
    Json(json!({
        "sub": s.userinfo_sub.clone().unwrap_or_else(|| sub.clone()),
        "name": "Ada King", "email": "ada@example.org", "email_verified": true,
        "preferred_username": "ada", "picture": "https://example.com/ada.png",
        "locale": "en",
    }))
    .into_response()
}

async fn revoke(
    State(f): State<Fake>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut s = f.inner.lock().unwrap();
    if !client_auth(&mut s, &headers, &form) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let hint = form.get("token_type_hint").cloned().unwrap_or_default();
    s.refresh.remove(&token);
    s.access.remove(&token);
    s.revoked.push((token, hint));
    StatusCode::OK.into_response()
}

// ---------------------------------------------------------------------------------------
// Helpers.

struct Login {
    verifier: PkceVerifier,
    nonce: String,
    code: String,
}

async fn start_login(fake: &Fake, p: &dyn Upstream) -> Login {
    let verifier = PkceVerifier::generate();
    let challenge = verifier.challenge();
    let nonce = format!("nonce-{}", b64(&now().to_be_bytes()));
    let url = p
        .authorization_url(&AuthorizationRequest {
            redirect_uri: REDIRECT,
            state: "state-123",
            code_challenge: challenge.as_str(),
            nonce: &nonce,
        })
        .await
        .unwrap();
    let code = fake.authorize(&url);
    Login {
        verifier,
        nonce,
        code,
    }
}

async fn finish(p: &dyn Upstream, l: &Login) -> Result<UpstreamLogin, UpstreamError> {
    p.complete(&Completion {
        redirect_uri: REDIRECT,
        code: &l.code,
        code_verifier: l.verifier.secret(),
        nonce: &l.nonce,
    })
    .await
}

async fn login(fake: &Fake, p: &dyn Upstream) -> Result<UpstreamLogin, UpstreamError> {
    let l = start_login(fake, p).await;
    finish(p, &l).await
}

fn id_token_error(r: Result<UpstreamLogin, UpstreamError>) -> IdTokenError {
    match r {
        Err(UpstreamError::InvalidIdToken(e)) => e,
        other => panic!("expected an id_token refusal, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn authorization_url_has_every_parameter() {
    let fake = Fake::start().await;
    let p = fake.provider();
    assert_eq!(p.id(), "oidc");
    assert_eq!(p.label(), "Example SSO");
    let url = p
        .authorization_url(&AuthorizationRequest {
            redirect_uri: REDIRECT,
            state: "st&ate",
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            nonce: "n-0S6_WzA2Mj",
        })
        .await
        .unwrap();
    assert_eq!(
        url.as_str().split('?').next().unwrap(),
        format!("{}/authorize", fake.issuer)
    );
    let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let expected: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT),
        ("scope", "openid email profile"),
        ("state", "st&ate"),
        (
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        ),
        ("code_challenge_method", "S256"),
        ("nonce", "n-0S6_WzA2Mj"),
        ("prompt", "login"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(q, expected);
}

#[tokio::test]
async fn happy_path_login_refresh_profile_revoke() {
    let fake = Fake::start().await;
    let p = fake.provider();
    let before = now();
    let login = login(&fake, &p).await.unwrap();
    assert_eq!(login.subject, SUBJECT);
    assert_eq!(
        login.profile,
        json!({"name": "Ada Lovelace", "email": "ada@example.com", "email_verified": true,
               "login": "ada"})
    );
    let t = &login.tokens;
    assert!(t.access_token.secret().starts_with("at-"));
    assert_eq!(t.token_type, "Bearer");
    let first_rt = t.refresh_token.as_ref().unwrap().secret().to_owned();
    assert!(t.expires_at.unwrap() >= before + 3600 && t.expires_at.unwrap() <= now() + 3600);
    assert_eq!(t.scope.as_deref(), Some("openid email profile"));
    // client_secret_basic, since discovery lists it.
    assert_eq!(fake.with(|s| s.client_auth.clone()), ["basic"]);

    // Refresh with rotation: the new refresh token replaces the old one.
    let refreshed = p.refresh(&first_rt).await.unwrap();
    let new_rt = refreshed
        .refresh_token
        .as_ref()
        .unwrap()
        .secret()
        .to_owned();
    assert_ne!(new_rt, first_rt);
    assert_ne!(refreshed.access_token.secret(), t.access_token.secret());
    // The old one is spent: invalid_grant.
    let e = p.refresh(&first_rt).await.unwrap_err();
    assert!(e.is_invalid_grant(), "{e:?}");

    // The profile, from userinfo with the user's token.
    let profile = p.profile(refreshed.access_token.secret()).await.unwrap();
    assert_eq!(profile["sub"], SUBJECT);
    assert_eq!(profile["locale"], "en");
    let e = p.profile("not-a-token").await.unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");

    // Revocation sends the refresh token.
    assert!(p.revoke(&refreshed).await.unwrap());
    assert_eq!(
        fake.with(|s| s.revoked.clone()),
        [(new_rt.clone(), "refresh_token".to_owned())]
    );
    assert!(p.refresh(&new_rt).await.unwrap_err().is_invalid_grant());

    // Discovery and the JWKS were fetched once.
    assert_eq!(fake.with(|s| (s.discovery_fetches, s.jwks_fetches)), (1, 1));
}

#[tokio::test]
async fn rs256_id_token_and_client_secret_post() {
    let fake = Fake::start().await;
    fake.with(|s| {
        s.signing_kid = "rs-1".into();
        s.auth_methods = Some(vec!["client_secret_post", "private_key_jwt"]);
    });
    let p = fake.provider();
    let login = login(&fake, &p).await.unwrap();
    assert_eq!(login.subject, SUBJECT);
    assert_eq!(fake.with(|s| s.client_auth.clone()), ["post"]);
}

#[tokio::test]
async fn public_client_authenticates_with_client_id_only() {
    let fake = Fake::start().await;
    fake.with(|s| {
        s.public_client = true;
        s.auth_methods = None;
    });
    let mut config = fake.config();
    config.client_secret = None;
    let p = OidcProvider::new(config, http_client().unwrap()).unwrap();
    assert_eq!(login(&fake, &p).await.unwrap().subject, SUBJECT);
    assert_eq!(fake.with(|s| s.client_auth.clone()), ["none"]);
}

#[tokio::test]
async fn refresh_without_rotation_keeps_the_refresh_token() {
    let fake = Fake::start().await;
    fake.with(|s| s.rotate_refresh = false);
    let p = fake.provider();
    let login = login(&fake, &p).await.unwrap();
    let rt = login.tokens.refresh_token.unwrap().secret().to_owned();
    let refreshed = p.refresh(&rt).await.unwrap();
    assert_eq!(refreshed.refresh_token.unwrap().secret(), rt);
    assert_ne!(
        refreshed.access_token.secret(),
        login.tokens.access_token.secret()
    );
}

#[tokio::test]
async fn revoke_access_token_without_refresh_token_and_no_endpoint() {
    let fake = Fake::start().await;
    let p = fake.provider();
    let mut tokens = login(&fake, &p).await.unwrap().tokens;
    tokens.refresh_token = None;
    assert!(p.revoke(&tokens).await.unwrap());
    assert_eq!(
        fake.with(|s| s.revoked.clone()),
        [(
            tokens.access_token.secret().to_owned(),
            "access_token".to_owned()
        )]
    );

    // A provider without a revocation endpoint: Ok(false), nothing sent.
    let other = Fake::start().await;
    other.with(|s| s.revocation = false);
    let p = other.provider();
    let tokens = login(&other, &p).await.unwrap().tokens;
    assert!(!p.revoke(&tokens).await.unwrap());
    assert!(other.with(|s| s.revoked.is_empty()));
}

#[tokio::test]
async fn userinfo_at_login_merges_the_profile() {
    let fake = Fake::start().await;
    let mut config = fake.config();
    config.use_userinfo = true;
    let p = OidcProvider::new(config, http_client().unwrap()).unwrap();
    let login = login(&fake, &p).await.unwrap();
    assert_eq!(
        login.profile,
        json!({"name": "Ada King", "email": "ada@example.org", "email_verified": true,
               "login": "ada", "picture": "https://example.com/ada.png"})
    );
}

#[tokio::test]
async fn refuses_userinfo_about_someone_else() {
    let fake = Fake::start().await;
    fake.with(|s| s.userinfo_sub = Some("someone-else".into()));
    let mut config = fake.config();
    config.use_userinfo = true;
    let p = OidcProvider::new(config, http_client().unwrap()).unwrap();
    assert!(matches!(
        login(&fake, &p).await,
        Err(UpstreamError::SubjectMismatch)
    ));
}

#[tokio::test]
async fn profile_needs_a_userinfo_endpoint() {
    let fake = Fake::start().await;
    fake.with(|s| s.userinfo = false);
    let p = fake.provider();
    let tokens = login(&fake, &p).await.unwrap().tokens;
    assert!(matches!(
        p.profile(tokens.access_token.secret()).await,
        Err(UpstreamError::Unsupported(_))
    ));
}

#[tokio::test]
async fn refuses_a_wrong_nonce() {
    let fake = Fake::start().await;
    fake.with(|s| s.mode = Mode::WrongNonce);
    let p = fake.provider();
    assert_eq!(
        id_token_error(login(&fake, &p).await),
        IdTokenError::NonceMismatch
    );
}

#[tokio::test]
async fn refuses_a_token_signed_by_another_key() {
    let fake = Fake::start().await;
    fake.with(|s| s.mode = Mode::OtherKey);
    let p = fake.provider();
    assert_eq!(
        id_token_error(login(&fake, &p).await),
        IdTokenError::BadSignature
    );
}

#[tokio::test]
async fn refuses_alg_none() {
    let fake = Fake::start().await;
    fake.with(|s| s.mode = Mode::AlgNone);
    let p = fake.provider();
    assert_eq!(
        id_token_error(login(&fake, &p).await),
        IdTokenError::AlgorithmNotAllowed("none".into())
    );
}

#[tokio::test]
async fn refuses_hs256_with_the_client_secret_even_if_configured() {
    let fake = Fake::start().await;
    fake.with(|s| s.mode = Mode::Hs256);
    let mut config = fake.config();
    config.allowed_algs = vec!["HS256".into(), "ES256".into()];
    let p = OidcProvider::new(config, http_client().unwrap()).unwrap();
    assert_eq!(
        id_token_error(login(&fake, &p).await),
        IdTokenError::AlgorithmNotAllowed("HS256".into())
    );
}

#[tokio::test]
async fn refuses_a_wrong_audience() {
    let fake = Fake::start().await;
    fake.with(|s| s.mode = Mode::WrongAudience);
    let p = fake.provider();
    assert!(matches!(
        id_token_error(login(&fake, &p).await),
        IdTokenError::WrongAudience { .. }
    ));
}

#[tokio::test]
async fn refuses_a_wrong_issuer() {
    let fake = Fake::start().await;
    fake.with(|s| s.mode = Mode::WrongIssuer);
    let p = fake.provider();
    assert!(matches!(
        id_token_error(login(&fake, &p).await),
        IdTokenError::WrongIssuer { found, .. } if found == "https://evil.example.com"
    ));
}

#[tokio::test]
async fn refuses_an_expired_id_token() {
    let fake = Fake::start().await;
    fake.with(|s| s.mode = Mode::Expired);
    let p = fake.provider();
    assert!(matches!(
        id_token_error(login(&fake, &p).await),
        IdTokenError::Expired { .. }
    ));
}

#[tokio::test]
async fn refuses_a_token_response_without_id_token() {
    let fake = Fake::start().await;
    fake.with(|s| s.mode = Mode::Missing);
    let p = fake.provider();
    assert!(matches!(
        login(&fake, &p).await,
        Err(UpstreamError::InvalidResponse(_))
    ));
}

#[tokio::test]
async fn refuses_a_discovery_document_for_another_issuer_and_retries_later() {
    let fake = Fake::start().await;
    fake.with(|s| s.doc_issuer = Some(format!("{}/", s.issuer)));
    let p = fake.provider();
    let req = AuthorizationRequest {
        redirect_uri: REDIRECT,
        state: "s",
        code_challenge: "c",
        nonce: "n",
    };
    let e = p.authorization_url(&req).await.unwrap_err();
    assert!(
        matches!(&e, UpstreamError::Discovery { reason, .. } if reason.contains("issuer")),
        "{e:?}"
    );
    // The failure is not cached: once the provider is fixed, discovery succeeds.
    fake.with(|s| s.doc_issuer = None);
    assert!(p.authorization_url(&req).await.is_ok());
    assert_eq!(fake.with(|s| s.discovery_fetches), 2);
}

#[tokio::test]
async fn token_endpoint_errors_are_provider_errors() {
    let fake = Fake::start().await;
    let p = fake.provider();
    // A code used twice: invalid_grant.
    let l = start_login(&fake, &p).await;
    finish(&p, &l).await.unwrap();
    let e = finish(&p, &l).await.unwrap_err();
    assert!(
        matches!(&e, UpstreamError::Provider { error, description } if error == "invalid_grant" && description.as_deref() == Some("from the fake"))
    );
    assert!(e.is_invalid_grant());
    // A wrong PKCE verifier: invalid_grant too.
    let l = start_login(&fake, &p).await;
    let wrong = PkceVerifier::generate();
    let e = p
        .complete(&Completion {
            redirect_uri: REDIRECT,
            code: &l.code,
            code_verifier: wrong.secret(),
            nonce: &l.nonce,
        })
        .await
        .unwrap_err();
    assert!(e.is_invalid_grant());
    // A wrong client secret: invalid_client, which is not invalid_grant.
    let mut config = fake.config();
    config.client_secret = Some(SecretString::new("wrong-secret"));
    let p = OidcProvider::new(config, http_client().unwrap()).unwrap();
    let e = login(&fake, &p).await.unwrap_err();
    assert!(matches!(&e, UpstreamError::Provider { error, .. } if error == "invalid_client"));
    assert!(!e.is_invalid_grant());
}

#[tokio::test]
async fn unknown_kid_refetches_the_jwks_once() {
    let fake = Fake::start().await;
    let p = fake.provider();
    login(&fake, &p).await.unwrap();
    assert_eq!(fake.with(|s| s.jwks_fetches), 1);
    // The provider rotates to a new key: the first login with it refetches the JWKS.
    fake.with(|s| {
        s.keys.insert("es-2".into(), TestKey::es256("es-2"));
        s.published.push("es-2".into());
        s.signing_kid = "es-2".into();
    });
    login(&fake, &p).await.unwrap();
    assert_eq!(fake.with(|s| s.jwks_fetches), 2);
    // Known keys need no fetch.
    login(&fake, &p).await.unwrap();
    assert_eq!(fake.with(|s| s.jwks_fetches), 2);
    // A kid nobody published: refused, and no new fetch within 30 s of the last forced one.
    fake.with(|s| {
        s.keys.insert("ghost".into(), TestKey::es256("ghost"));
        s.signing_kid = "ghost".into();
    });
    let e = id_token_error(login(&fake, &p).await);
    assert_eq!(
        e,
        IdTokenError::UnknownKey {
            kid: Some("ghost".into())
        }
    );
    assert_eq!(fake.with(|s| s.jwks_fetches), 2);
}

#[tokio::test]
async fn built_through_upstream_config() {
    let fake = Fake::start().await;
    let upstream = UpstreamConfig::from(fake.config())
        .build(http_client().unwrap())
        .unwrap();
    assert_eq!(upstream.id(), "oidc");
    assert_eq!(
        login(&fake, upstream.as_ref()).await.unwrap().subject,
        SUBJECT
    );
}

#[tokio::test]
async fn transport_errors_are_http_errors() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut config = OidcConfig::new(format!("http://{addr}"), CLIENT_ID, None);
    config.allow_http = true;
    let p = OidcProvider::new(config, http_client().unwrap()).unwrap();
    let e = p.refresh("rt").await.unwrap_err();
    assert!(matches!(e, UpstreamError::Http { .. }), "{e:?}");
}

#[tokio::test]
async fn nothing_secret_in_debug_or_errors() {
    let fake = Fake::start().await;
    let p = fake.provider();
    let login_ok = login(&fake, &p).await.unwrap();
    let config = fake.config();
    let shown = format!("{config:?} {p:?} {login_ok:?} {:?}", login_ok.tokens);
    assert!(!shown.contains(CLIENT_SECRET), "{shown}");
    assert!(
        !shown.contains(login_ok.tokens.access_token.secret()),
        "{shown}"
    );
    assert!(
        !shown.contains(login_ok.tokens.refresh_token.as_ref().unwrap().secret()),
        "{shown}"
    );
    // A failed redemption mentions neither the code nor the verifier.
    let l = start_login(&fake, &p).await;
    finish(&p, &l).await.unwrap();
    let e = finish(&p, &l).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains(&l.code) && !shown.contains(l.verifier.secret()),
        "{shown}"
    );
}
