//! End-to-end tests: a fake authorization server (JWKS + introspection) on 127.0.0.1:0,
//! tokens signed with keys generated here, and the protected router called with `oneshot`
//! or over a real socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use axum::body::Body;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderMap, Request, StatusCode, header};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_auth_resource::{
    Authenticated, Claims, Clock as _, IntrospectionConfig, JwtConfig, ManualClock, ProtectedLayer,
    Rejection, ResourceConfig, ResourceServer, TokenVerifier, Verifier, VerifyError, prm_router,
};
use mcp_auth_types::{
    Challenge, ClientId, ClientSecret, HttpUrl, Issuer, ResourceUrl, ScopeSet,
    parse_www_authenticate,
};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// The resource of the `oneshot` tests (nothing listens there; the PRM test binds its own).
const RESOURCE: &str = "http://127.0.0.1:8931/mcp";
const RS_CLIENT: &str = "resource-server";
const RS_SECRET: &str = "s3cret:&=";

// ---------------------------------------------------------------------------------------
// The fake authorization server.

#[derive(Clone, Default)]
struct AsState {
    jwks: Arc<Mutex<Vec<Value>>>,
    jwks_hits: Arc<AtomicUsize>,
    introspection_hits: Arc<AtomicUsize>,
    answers: Arc<Mutex<HashMap<String, Value>>>,
}

struct FakeAs {
    issuer: String,
    state: AsState,
}

impl FakeAs {
    async fn spawn() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AsState::default();
        let app = Router::new()
            .route("/jwks", get(jwks))
            .route("/introspect", post(introspect))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            issuer: format!("http://{addr}"),
            state,
        }
    }

    fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    fn introspection_hits(&self) -> usize {
        self.state.introspection_hits.load(Ordering::SeqCst)
    }

    fn publish(&self, jwk: Value) {
        self.state.jwks.lock().unwrap().push(jwk);
    }

    fn answer(&self, token: &str, answer: Value) {
        self.state
            .answers
            .lock()
            .unwrap()
            .insert(token.to_owned(), answer);
    }
}

async fn jwks(State(s): State<AsState>) -> Json<Value> {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let keys = s.jwks.lock().unwrap().clone();
    Json(json!({ "keys": keys }))
}

async fn introspect(
    State(s): State<AsState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    s.introspection_hits.fetch_add(1, Ordering::SeqCst);
    // RFC 6749 §2.3.1: both parts form-urlencoded before Basic encoding.
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{RS_CLIENT}:{}", "s3cret%3A%26%3D"))
    );
    if headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) != Some(expected.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    assert_eq!(
        form.get("token_type_hint").map(String::as_str),
        Some("access_token")
    );
    let token = form.get("token").cloned().unwrap_or_default();
    let answer = s
        .answers
        .lock()
        .unwrap()
        .get(&token)
        .cloned()
        .unwrap_or(json!({"active": false}));
    Json(answer).into_response()
}

// ---------------------------------------------------------------------------------------
// Keys and tokens.

struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    /// The raw public key, for the algorithm confusion attack.
    public: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn es256(kid: &str) -> SigningKey {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let pkcs8 = pair.to_pkcs8v1().unwrap();
    let public = pair.public_key().as_ref().to_vec();
    assert_eq!(public.len(), 65);
    SigningKey {
        kid: kid.to_owned(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": b64(&public[1..33]), "y": b64(&public[33..]),
        }),
        public,
    }
}

fn ed25519(kid: &str) -> SigningKey {
    let pair = Ed25519KeyPair::generate().unwrap();
    let pkcs8 = pair.to_pkcs8().unwrap();
    let public = pair.public_key().as_ref().to_vec();
    SigningKey {
        kid: kid.to_owned(),
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&public)}),
        public,
    }
}

fn sign_with(key: &SigningKey, typ: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(key.alg);
    h.typ = typ.map(str::to_owned);
    h.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&h, claims, &key.encoding).unwrap()
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    sign_with(key, Some("at+jwt"), claims)
}

// ---------------------------------------------------------------------------------------
// The protected application.

async fn whoami(auth: Authenticated) -> Json<Value> {
    Json(json!({
        "sub": auth.subject,
        "client_id": auth.client_id,
        "scopes": auth.scopes.to_string(),
        "iss": auth.issuer,
        "aud": auth.audience,
        "jti": auth.jti,
        "iat": auth.extra.get("iat"),
    }))
}

async fn write_tool(auth: Authenticated) -> Result<&'static str, Rejection> {
    auth.ensure_scopes(&"tools:write".parse().unwrap())?;
    Ok("written")
}

fn app(server: &ResourceServer) -> Router {
    Router::new()
        .route(
            "/mcp",
            post(whoami).layer(ProtectedLayer::new(server.clone()).require_scopes(["mcp:read"])),
        )
        .route(
            "/admin",
            post(whoami).layer(server.layer().require_scopes(["mcp:read", "mcp:admin"])),
        )
        .route(
            "/tool",
            post(write_tool).layer(server.layer().require_scopes(["mcp:read"])),
        )
        .route("/forgot-the-layer", post(whoami))
        // The same three routes with the handlers wrapped instead of layered
        // (`ProtectedLayer::protect`): they must answer exactly as the layered ones.
        .route(
            "/h/mcp",
            post(server.layer().require_scopes(["mcp:read"]).protect(whoami)),
        )
        .route(
            "/h/admin",
            post(
                server
                    .layer()
                    .require_scopes(["mcp:read", "mcp:admin"])
                    .protect(whoami),
            ),
        )
        .route(
            "/h/tool",
            post(
                server
                    .layer()
                    .require_scopes(["mcp:read"])
                    .protect(write_tool),
            ),
        )
        .merge(server.metadata_router())
}

struct Fixture {
    fake: FakeAs,
    clock: ManualClock,
    key: SigningKey,
    server: ResourceServer,
    app: Router,
}

impl Fixture {
    fn now(&self) -> u64 {
        self.clock.now_unix()
    }

    /// Good claims for RESOURCE from the fake issuer.
    fn claims(&self) -> Value {
        let now = self.now();
        json!({
            "iss": self.fake.issuer, "aud": RESOURCE, "sub": "user-1", "client_id": "client-1",
            "scope": "mcp:read mcp:write", "iat": now, "exp": now + 600, "jti": "jti-1",
        })
    }

    fn with(&self, changes: Value) -> Value {
        let mut c = self.claims();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }
}

fn jwt_config(fake: &FakeAs) -> ResourceConfig {
    let issuer = Issuer::parse(&fake.issuer).unwrap();
    let jwks = HttpUrl::parse(&format!("{}/jwks", fake.issuer)).unwrap();
    let mut config = ResourceConfig::new(
        ResourceUrl::parse_exact(RESOURCE).unwrap(),
        vec![issuer.clone()],
        Verifier::Jwt(JwtConfig::new(issuer, jwks)),
    );
    config.scopes_supported = Some("mcp:read mcp:write mcp:admin".parse().unwrap());
    config
}

async fn jwt_fixture() -> Fixture {
    let fake = FakeAs::spawn().await;
    let key = es256("k1");
    fake.publish(key.jwk.clone());
    let clock = ManualClock::starting_now();
    let server = ResourceServer::with_clock(jwt_config(&fake), Arc::new(clock.clone())).unwrap();
    Fixture {
        app: app(&server),
        server,
        fake,
        clock,
        key,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn challenge(&self) -> Challenge {
        let v = self
            .headers
            .get(header::WWW_AUTHENTICATE)
            .expect("a WWW-Authenticate header")
            .to_str()
            .unwrap();
        let mut all = parse_www_authenticate(v).unwrap();
        assert_eq!(all.len(), 1, "{v}");
        let ch = all.remove(0);
        assert!(ch.is_scheme("Bearer"), "{v}");
        ch
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn call_with(app: &Router, path: &str, authorization: &[&str]) -> Reply {
    let mut req = Request::builder().method("POST").uri(path);
    for a in authorization {
        req = req.header(header::AUTHORIZATION, *a);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

async fn call(app: &Router, path: &str, token: &str) -> Reply {
    call_with(app, path, &[&format!("Bearer {token}")]).await
}

const RM: &str = "http://127.0.0.1:8931/.well-known/oauth-protected-resource/mcp";

fn assert_invalid_token(r: &Reply) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let ch = r.challenge();
    assert_eq!(ch.error(), Some("invalid_token"));
    assert_eq!(ch.resource_metadata(), Some(RM));
}

/// Asserts the `/mcp` route answers `401 invalid_token`, and returns why (asking the
/// server directly; refusals are not cached, so this verifies again).
async fn refused(fx: &Fixture, token: &str) -> VerifyError {
    assert_invalid_token(&call(&fx.app, "/mcp", token).await);
    fx.server.verify(token).await.unwrap_err()
}

// ---------------------------------------------------------------------------------------
// JWT access tokens.

#[tokio::test]
async fn valid_token_reaches_handler_with_claims() {
    let fx = jwt_fixture().await;
    let token = sign(&fx.key, &fx.claims());
    let r = call(&fx.app, "/mcp", &token).await;
    assert_eq!(r.status, StatusCode::OK);
    let body = r.json();
    assert_eq!(body["sub"], "user-1");
    assert_eq!(body["client_id"], "client-1");
    assert_eq!(body["scopes"], "mcp:read mcp:write");
    assert_eq!(body["iss"], fx.fake.issuer);
    assert_eq!(body["aud"], json!([RESOURCE]));
    assert_eq!(body["jti"], "jti-1");
    assert_eq!(body["iat"], fx.now());
    // The key set was fetched once, and a repeated call uses the caches.
    assert_eq!(fx.fake.jwks_hits(), 1);
    let again = call(&fx.app, "/mcp", &token).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(fx.fake.jwks_hits(), 1);
}

#[tokio::test]
async fn eddsa_token_and_audience_array_accepted() {
    let fx = jwt_fixture().await;
    let ed = ed25519("ed1");
    fx.fake.publish(ed.jwk.clone());
    let token = sign(
        &ed,
        &fx.with(json!({"aud": ["https://other.example/mcp", RESOURCE]})),
    );
    let r = call(&fx.app, "/mcp", &token).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(ed.public.len(), 32);
}

#[tokio::test]
async fn no_token_gets_401_with_resource_metadata_and_scope() {
    let fx = jwt_fixture().await;
    let r = call_with(&fx.app, "/mcp", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let ch = r.challenge();
    assert_eq!(ch.resource_metadata(), Some(RM));
    assert_eq!(ch.param("scope"), Some("mcp:read"));
    assert_eq!(
        ch.error(),
        None,
        "RFC 6750 §3.1: no error code without a token"
    );
    // Another scheme is no bearer token either.
    let r = call_with(&fx.app, "/admin", &["Basic dXNlcjpwYXNz"]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.challenge().param("scope"), Some("mcp:read mcp:admin"));
    assert_eq!(r.challenge().error(), None);
}

#[tokio::test]
async fn garbage_tokens_are_invalid_token() {
    let fx = jwt_fixture().await;
    for garbage in [
        "garbage",
        "a.b.c",
        "a.b.c.d.e",
        "eyJhbGciOiJFUzI1NiJ9.e30.AAAA",
    ] {
        let r = call(&fx.app, "/mcp", garbage).await;
        assert_invalid_token(&r);
        assert_eq!(r.challenge().param("scope"), Some("mcp:read"));
        assert_eq!(r.json()["error"], "invalid_token");
        assert!(matches!(
            refused(&fx, garbage).await,
            VerifyError::Malformed(_) | VerifyError::WrongType { found: None }
        ));
    }
    // A good token carrying the signature of another token.
    let token = sign(&fx.key, &fx.claims());
    let other = sign(&fx.key, &fx.with(json!({"jti": "other"})));
    let (signed, _) = token.rsplit_once('.').unwrap();
    let (_, signature) = other.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{signature}");
    assert!(matches!(
        refused(&fx, &forged).await,
        VerifyError::BadSignature
    ));
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let fx = jwt_fixture().await;
    for iss in [
        json!("https://evil.example"),
        json!(format!("{}/", fx.fake.issuer)),
        json!(null),
    ] {
        let token = sign(&fx.key, &fx.with(json!({ "iss": iss })));
        assert!(matches!(
            refused(&fx, &token).await,
            VerifyError::WrongIssuer { .. } | VerifyError::MissingClaim("iss")
        ));
    }
}

#[tokio::test]
async fn token_for_another_resource_is_refused() {
    let fx = jwt_fixture().await;
    for aud in [
        json!("http://127.0.0.1:8931/other"),
        json!(["http://127.0.0.1:8931/other"]),
        json!("http://127.0.0.1:8931/mcp/"),
        json!([]),
        json!(null),
    ] {
        let token = sign(&fx.key, &fx.with(json!({ "aud": aud })));
        assert!(matches!(
            refused(&fx, &token).await,
            VerifyError::WrongAudience { .. } | VerifyError::MissingClaim("aud")
        ));
    }
}

#[tokio::test]
async fn expiry_with_leeway() {
    let fx = jwt_fixture().await;
    let now = fx.now();
    // 10 s past exp is inside the default 30 s leeway; 31 s is not.
    let recent = sign(
        &fx.key,
        &fx.with(json!({"exp": now - 10, "iat": now - 600})),
    );
    assert_eq!(call(&fx.app, "/mcp", &recent).await.status, StatusCode::OK);
    let old = sign(
        &fx.key,
        &fx.with(json!({"exp": now - 31, "iat": now - 600})),
    );
    assert!(matches!(
        refused(&fx, &old).await,
        VerifyError::Expired { .. }
    ));
    let no_exp = sign(&fx.key, &fx.with(json!({"exp": null})));
    assert!(matches!(
        refused(&fx, &no_exp).await,
        VerifyError::MissingClaim("exp")
    ));
    // nbf and iat in the future beyond the leeway.
    let nbf = sign(&fx.key, &fx.with(json!({"nbf": now + 31})));
    assert!(matches!(
        refused(&fx, &nbf).await,
        VerifyError::NotYetValid { .. }
    ));
    let iat = sign(&fx.key, &fx.with(json!({"iat": now + 31})));
    assert!(matches!(
        refused(&fx, &iat).await,
        VerifyError::IssuedInFuture { .. }
    ));
    let skewed = sign(&fx.key, &fx.with(json!({"iat": now + 20, "nbf": now + 20})));
    assert_eq!(call(&fx.app, "/mcp", &skewed).await.status, StatusCode::OK);
}

#[tokio::test]
async fn cached_token_still_expires() {
    let fx = jwt_fixture().await;
    let token = sign(&fx.key, &fx.with(json!({"exp": fx.now() + 5})));
    assert_eq!(call(&fx.app, "/mcp", &token).await.status, StatusCode::OK);
    fx.clock.advance(Duration::from_secs(5 + 30));
    assert!(matches!(
        refused(&fx, &token).await,
        VerifyError::Expired { .. }
    ));
}

/// A copy of a cached JWT with the same signature and another header or payload is not
/// answered from the cache (whose key covers every byte of the token) but verified, and
/// refused. The original still is answered.
#[tokio::test]
async fn altered_copies_of_a_cached_jwt_are_refused() {
    let fx = jwt_fixture().await;
    let token = sign(&fx.key, &fx.claims());
    assert_eq!(call(&fx.app, "/mcp", &token).await.status, StatusCode::OK);
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        panic!("not a JWS: {token}");
    };
    let mut claims = fx.claims();
    claims["scope"] = json!("mcp:read mcp:write mcp:admin");
    let other_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let other_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"at+jwt","x":1}"#);
    // One character of the payload changed to another of the base64url alphabet.
    let mut flipped = payload.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let altered = [
        format!("{header}.{other_payload}.{signature}"),
        format!("{other_header}.{payload}.{signature}"),
        format!("{header}.{flipped}.{signature}"),
        // Cut or extended: the same signature behind a prefix or suffix of the rest.
        format!("{header}.{}.{signature}", &payload[..payload.len() - 4]),
        format!("{header}.{payload}A.{signature}"),
        format!("A{header}.{payload}.{signature}"),
        // More segments than a JWS.
        format!("{header}.{payload}.x.{signature}"),
    ];
    for t in &altered {
        assert_invalid_token(&call(&fx.app, "/mcp", t).await);
        assert!(fx.server.verify(t).await.is_err(), "{t}");
    }
    assert_eq!(call(&fx.app, "/mcp", &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn typ_must_be_at_jwt() {
    let fx = jwt_fixture().await;
    let claims = fx.claims();
    for typ in [Some("JWT"), None, Some("id_token+jwt")] {
        let token = sign_with(&fx.key, typ, &claims);
        assert!(matches!(
            refused(&fx, &token).await,
            VerifyError::WrongType { .. }
        ));
    }
    let token = sign_with(&fx.key, Some("application/at+jwt"), &claims);
    assert_eq!(call(&fx.app, "/mcp", &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn algorithm_confusion_and_none_are_refused() {
    let fx = jwt_fixture().await;
    let claims = fx.claims();
    // The classic attack: HS256 "signed" with the public key as the HMAC secret, in each
    // form a careless verifier might feed to HMAC.
    for secret in [
        fx.key.public.clone(),
        serde_json::to_vec(&fx.key.jwk).unwrap(),
    ] {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(fx.key.kid.clone());
        let forged = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(&secret)).unwrap();
        assert!(
            matches!(refused(&fx, &forged).await, VerifyError::AlgorithmNotAllowed(alg) if alg == "HS256")
        );
    }
    // alg none with an empty signature.
    let header = b64(br#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#);
    let payload = b64(&serde_json::to_vec(&claims).unwrap());
    assert!(
        matches!(refused(&fx, &format!("{header}.{payload}.")).await, VerifyError::AlgorithmNotAllowed(alg) if alg == "none")
    );
    // ES384 claimed for a P-256 key.
    let mut h = Header::new(Algorithm::ES256);
    h.typ = Some("at+jwt".into());
    h.kid = Some("k1".into());
    let good = jsonwebtoken::encode(&h, &claims, &fx.key.encoding).unwrap();
    let (_, rest) = good.split_once('.').unwrap();
    let relabeled = format!(
        "{}.{rest}",
        b64(br#"{"alg":"ES384","typ":"at+jwt","kid":"k1"}"#)
    );
    assert!(
        matches!(refused(&fx, &relabeled).await, VerifyError::AlgorithmNotAllowed(alg) if alg == "ES384")
    );
    // A critical header extension nobody understands.
    let crit = format!(
        "{}.{rest}",
        b64(br#"{"alg":"ES256","typ":"at+jwt","kid":"k1","crit":["exp"]}"#)
    );
    assert!(matches!(
        refused(&fx, &crit).await,
        VerifyError::UnsupportedCritical(_)
    ));
}

#[tokio::test]
async fn algorithm_outside_the_allow_list_is_refused() {
    let fake = FakeAs::spawn().await;
    let key = ed25519("ed1");
    fake.publish(key.jwk.clone());
    let mut config = jwt_config(&fake);
    if let Verifier::Jwt(j) = &mut config.verifier {
        j.algorithms = vec![mcp_auth_resource::SigningAlgorithm::ES256];
    }
    let clock = ManualClock::starting_now();
    let server = ResourceServer::with_clock(config, Arc::new(clock.clone())).unwrap();
    let now = clock.now_unix();
    let token = sign(
        &key,
        &json!({"iss": fake.issuer, "aud": RESOURCE, "sub": "u", "client_id": "c",
                "scope": "mcp:read", "exp": now + 60}),
    );
    assert_invalid_token(&call(&app(&server), "/mcp", &token).await);
    assert!(
        matches!(server.verify(&token).await.unwrap_err(), VerifyError::AlgorithmNotAllowed(alg) if alg == "EdDSA")
    );
}

#[tokio::test]
async fn unknown_kid_refetches_the_key_set_then_succeeds() {
    let fx = jwt_fixture().await;
    assert_eq!(
        call(&fx.app, "/mcp", &sign(&fx.key, &fx.claims()))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(fx.fake.jwks_hits(), 1);
    // The authorization server rotates to a new key.
    let rotated = es256("k2");
    fx.fake.publish(rotated.jwk.clone());
    fx.clock.advance(Duration::from_secs(11));
    let r = call(&fx.app, "/mcp", &sign(&rotated, &fx.claims())).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(fx.fake.jwks_hits(), 2);
    // Both keys are now known: no further downloads.
    call(
        &fx.app,
        "/mcp",
        &sign(&fx.key, &fx.with(json!({"jti": "x"}))),
    )
    .await;
    call(
        &fx.app,
        "/mcp",
        &sign(&rotated, &fx.with(json!({"jti": "y"}))),
    )
    .await;
    assert_eq!(fx.fake.jwks_hits(), 2);
}

#[tokio::test]
async fn unknown_kid_refetch_is_rate_limited() {
    let fx = jwt_fixture().await;
    assert_eq!(
        call(&fx.app, "/mcp", &sign(&fx.key, &fx.claims()))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(fx.fake.jwks_hits(), 1);
    // Made-up key ids within the interval: refused without asking the server again.
    let stranger = es256("made-up");
    for i in 0..20 {
        let k = es256(&format!("kid-{i}"));
        assert!(matches!(
            refused(&fx, &sign(&k, &fx.claims())).await,
            VerifyError::UnknownKey { .. }
        ));
    }
    assert_eq!(fx.fake.jwks_hits(), 1);
    // After the interval one refetch happens; the key still is not there.
    fx.clock.advance(Duration::from_secs(11));
    assert_invalid_token(&call(&fx.app, "/mcp", &sign(&stranger, &fx.claims())).await);
    assert_eq!(fx.fake.jwks_hits(), 2);
    assert_invalid_token(&call(&fx.app, "/mcp", &sign(&stranger, &fx.claims())).await);
    assert_eq!(fx.fake.jwks_hits(), 2);
    // Concurrent unknown kids after the interval still cause a single download.
    fx.clock.advance(Duration::from_secs(11));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let app = fx.app.clone();
            let token = sign(&stranger, &fx.claims());
            tokio::spawn(async move { call(&app, "/mcp", &token).await })
        })
        .collect();
    for h in handles {
        assert_invalid_token(&h.await.unwrap());
    }
    assert_eq!(fx.fake.jwks_hits(), 3);
    // The known key keeps working throughout.
    let ok = sign(&fx.key, &fx.with(json!({"jti": "later"})));
    assert_eq!(call(&fx.app, "/mcp", &ok).await.status, StatusCode::OK);
}

#[tokio::test]
async fn withdrawn_key_stops_working_after_max_key_age() {
    let fx = jwt_fixture().await;
    assert_eq!(
        call(&fx.app, "/mcp", &sign(&fx.key, &fx.claims()))
            .await
            .status,
        StatusCode::OK
    );
    // The authorization server withdraws k1 and publishes k2.
    let k2 = es256("k2");
    *fx.fake.state.jwks.lock().unwrap() = vec![k2.jwk.clone()];
    fx.clock.advance(Duration::from_secs(3601));
    let token = sign(&fx.key, &fx.claims());
    assert!(matches!(
        refused(&fx, &token).await,
        VerifyError::UnknownKey { .. }
    ));
    assert_eq!(fx.fake.jwks_hits(), 2);
}

#[tokio::test]
async fn unreachable_key_set_is_503_not_401() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let issuer = Issuer::parse("http://127.0.0.1:9").unwrap();
    let jwks = HttpUrl::parse(&format!("http://127.0.0.1:{port}/jwks")).unwrap();
    let config = ResourceConfig::new(
        ResourceUrl::parse_exact(RESOURCE).unwrap(),
        vec![issuer.clone()],
        Verifier::Jwt(JwtConfig::new(issuer, jwks)),
    );
    let server = ResourceServer::new(config).unwrap();
    let key = es256("k1");
    let token = sign(&key, &json!({"iss": "http://127.0.0.1:9", "aud": RESOURCE}));
    let app = app(&server);
    for _ in 0..2 {
        let r = call(&app, "/mcp", &token).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers.get(header::WWW_AUTHENTICATE).is_none());
    }
    // The first attempt failed on the network; later ones are not even tried (backoff).
    let e = server.verify(&token).await.unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::Unavailable(mcp_auth_resource::FetchError::Backoff { .. })
        ),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Scopes and malformed requests.

#[tokio::test]
async fn insufficient_scope_is_403_naming_every_required_scope() {
    let fx = jwt_fixture().await;
    let token = sign(&fx.key, &fx.with(json!({"scope": "mcp:read"})));
    let r = call(&fx.app, "/admin", &token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let ch = r.challenge();
    assert_eq!(ch.error(), Some("insufficient_scope"));
    assert_eq!(ch.param("scope"), Some("mcp:read mcp:admin"));
    assert_eq!(ch.resource_metadata(), Some(RM));
    // The same token is fine where only mcp:read is needed.
    assert_eq!(call(&fx.app, "/mcp", &token).await.status, StatusCode::OK);
    // No scope claim at all.
    let none = sign(&fx.key, &fx.with(json!({"scope": null})));
    assert_eq!(
        call(&fx.app, "/mcp", &none).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn handler_scope_check_names_route_and_handler_scopes() {
    let fx = jwt_fixture().await;
    let token = sign(&fx.key, &fx.claims());
    let r = call(&fx.app, "/tool", &token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let ch = r.challenge();
    assert_eq!(ch.error(), Some("insufficient_scope"));
    assert_eq!(ch.param("scope"), Some("mcp:read tools:write"));
    let writer = sign(&fx.key, &fx.with(json!({"scope": "mcp:read tools:write"})));
    let r = call(&fx.app, "/tool", &writer).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"written");
}

#[tokio::test]
async fn malformed_requests_are_400_invalid_request() {
    let fx = jwt_fixture().await;
    let token = sign(&fx.key, &fx.claims());
    let bearer = format!("Bearer {token}");
    let bearer = bearer.as_str();
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("/mcp".into(), vec![bearer, bearer]),
        ("/mcp".into(), vec![bearer, "Bearer other"]),
        ("/mcp".into(), vec!["Bearer"]),
        ("/mcp".into(), vec!["Bearer not a token"]),
        (format!("/mcp?access_token={token}"), vec![]),
        (format!("/mcp?access_token={token}"), vec![bearer]),
    ];
    for (path, auth) in cases {
        let r = call_with(&fx.app, &path, &auth).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path} {auth:?}");
        let ch = r.challenge();
        assert_eq!(ch.error(), Some("invalid_request"));
        assert_eq!(ch.resource_metadata(), Some(RM));
    }
}

/// The layer answers requests whose token is in the cache without parsing the header the
/// slow way; a cached token must not make a malformed request acceptable.
#[tokio::test]
async fn malformed_requests_with_a_cached_token_are_still_400() {
    let fx = jwt_fixture().await;
    let token = sign(&fx.key, &fx.claims());
    assert_eq!(call(&fx.app, "/mcp", &token).await.status, StatusCode::OK);
    let bearer = format!("Bearer {token}");
    let bearer = bearer.as_str();
    let tab = format!("Bearer {token}\t");
    let padded = format!("Bearer {token} ");
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("/mcp".into(), vec![bearer, bearer]),
        ("/mcp".into(), vec![&tab]),
        ("/mcp".into(), vec![&padded]),
        (format!("/mcp?access_token={token}"), vec![bearer]),
        (format!("/mcp?a=1&access%5Ftoken={token}"), vec![bearer]),
    ];
    for (path, auth) in cases {
        let r = call_with(&fx.app, &path, &auth).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path} {auth:?}");
        assert_eq!(r.challenge().error(), Some("invalid_request"));
    }
    // Another scheme with the same bytes is no token at all (401 without an error code).
    let basic = format!("Basic {token}");
    let r = call_with(&fx.app, "/mcp", &[&basic]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.challenge().error(), None);
    // And the well-formed request is still served, scheme in any case, with a query.
    let lower = format!("bearer   {token}");
    assert_eq!(
        call_with(&fx.app, "/mcp?x=1", &[&lower]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn cached_token_still_needs_the_route_scopes() {
    let fx = jwt_fixture().await;
    let token = sign(&fx.key, &fx.with(json!({"scope": "mcp:read"})));
    assert_eq!(call(&fx.app, "/mcp", &token).await.status, StatusCode::OK);
    for _ in 0..2 {
        let r = call(&fx.app, "/admin", &token).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let ch = r.challenge();
        assert_eq!(ch.error(), Some("insufficient_scope"));
        assert_eq!(ch.param("scope"), Some("mcp:read mcp:admin"));
        assert_eq!(ch.resource_metadata(), Some(RM));
    }
}

#[tokio::test]
async fn extractor_without_the_layer_fails_closed() {
    let fx = jwt_fixture().await;
    let token = sign(&fx.key, &fx.claims());
    let r = call(&fx.app, "/forgot-the-layer", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------------------
// Custom verifiers.

struct CountingVerifier {
    calls: AtomicUsize,
    audience: Vec<String>,
}

#[async_trait::async_trait]
impl TokenVerifier for CountingVerifier {
    async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if token != "local-token" {
            return Err(VerifyError::Rejected("unknown token".into()));
        }
        Ok(Claims {
            subject: "local-user".into(),
            client_id: Some("local-client".into()),
            scopes: "mcp:read".parse().unwrap(),
            issuer: "https://as.local".into(),
            audience: self.audience.clone(),
            expires_at: None,
            jti: None,
            extra: Default::default(),
        })
    }
}

fn custom_server(audience: Vec<String>) -> (ResourceServer, Arc<CountingVerifier>) {
    let verifier = Arc::new(CountingVerifier {
        calls: AtomicUsize::new(0),
        audience,
    });
    let config = ResourceConfig::new(
        ResourceUrl::parse_exact(RESOURCE).unwrap(),
        vec![Issuer::parse("https://as.local").unwrap()],
        Verifier::Custom(verifier.clone()),
    );
    (ResourceServer::new(config).unwrap(), verifier)
}

#[tokio::test]
async fn custom_verifier_results_are_cached() {
    let (server, verifier) = custom_server(vec![RESOURCE.into()]);
    let app = app(&server);
    for _ in 0..3 {
        let r = call(&app, "/mcp", "local-token").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["sub"], "local-user");
    }
    assert_eq!(verifier.calls.load(Ordering::SeqCst), 1);
    assert_invalid_token(&call(&app, "/mcp", "other-token").await);
}

/// `ResourceServer::verify` takes any string; a verifier may accept one that is not a
/// b64token. Such a result is not cached, so the layer still refuses the header carrying it.
#[tokio::test]
async fn verified_token_that_is_not_a_b64token_is_not_served_from_the_cache() {
    struct AnyToken;
    #[async_trait::async_trait]
    impl TokenVerifier for AnyToken {
        async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
            Ok(Claims {
                subject: token.into(),
                client_id: None,
                scopes: "mcp:read".parse().unwrap(),
                issuer: "https://as.local".into(),
                audience: vec![RESOURCE.into()],
                expires_at: None,
                jti: None,
                extra: Default::default(),
            })
        }
    }
    let config = ResourceConfig::new(
        ResourceUrl::parse_exact(RESOURCE).unwrap(),
        vec![Issuer::parse("https://as.local").unwrap()],
        Verifier::Custom(Arc::new(AnyToken)),
    );
    let server = ResourceServer::new(config).unwrap();
    let app = app(&server);
    for odd in ["a b", "a=b", "a\"b", "a,b"] {
        assert_eq!(server.verify(odd).await.unwrap().subject, odd);
        let r = call(&app, "/mcp", odd).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{odd}");
        assert_eq!(r.challenge().error(), Some("invalid_request"));
    }
    assert_eq!(server.verify("ok-token").await.unwrap().subject, "ok-token");
    assert_eq!(call(&app, "/mcp", "ok-token").await.status, StatusCode::OK);
}

#[tokio::test]
async fn custom_verifier_cannot_accept_a_token_for_another_resource() {
    let (server, _) = custom_server(vec!["https://elsewhere.example/mcp".into()]);
    assert_invalid_token(&call(&app(&server), "/mcp", "local-token").await);
}

#[tokio::test]
async fn authenticate_without_axum() {
    let (server, _) = custom_server(vec![RESOURCE.into()]);
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, "Bearer local-token".parse().unwrap());
    let uri: http::Uri = "/mcp".parse().unwrap();
    let auth = server
        .authenticate(&http::Method::POST, &headers, &uri, &ScopeSet::new())
        .await
        .unwrap();
    assert_eq!(auth.subject, "local-user");
    let need: ScopeSet = "mcp:write".parse().unwrap();
    let refused = server
        .authenticate(&http::Method::POST, &headers, &uri, &need)
        .await
        .unwrap_err();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(
        refused
            .www_authenticate()
            .unwrap()
            .contains(r#"scope="mcp:write""#)
    );
}

// ---------------------------------------------------------------------------------------
// Introspection.

async fn introspection_fixture() -> (FakeAs, ManualClock, Router) {
    let fake = FakeAs::spawn().await;
    let issuer = Issuer::parse(&fake.issuer).unwrap();
    let endpoint = HttpUrl::parse(&format!("{}/introspect", fake.issuer)).unwrap();
    let config = ResourceConfig::new(
        ResourceUrl::parse_exact(RESOURCE).unwrap(),
        vec![issuer.clone()],
        Verifier::Introspection(IntrospectionConfig::new(
            issuer,
            endpoint,
            ClientId::new(RS_CLIENT).unwrap(),
            ClientSecret::new(RS_SECRET),
        )),
    );
    let clock = ManualClock::starting_now();
    let server = ResourceServer::with_clock(config, Arc::new(clock.clone())).unwrap();
    (fake, clock, app(&server))
}

#[tokio::test]
async fn introspection_active_token_is_accepted_and_cached() {
    let (fake, clock, app) = introspection_fixture().await;
    let now = clock.now_unix();
    fake.answer(
        "opaque-good",
        json!({"active": true, "sub": "user-2", "client_id": "client-2", "scope": "mcp:read",
               "aud": RESOURCE, "iss": fake.issuer, "exp": now + 600, "username": "ann"}),
    );
    let r = call(&app, "/mcp", "opaque-good").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let body = r.json();
    assert_eq!(body["sub"], "user-2");
    assert_eq!(body["client_id"], "client-2");
    assert_eq!(body["scopes"], "mcp:read");
    assert_eq!(fake.introspection_hits(), 1);
    assert_eq!(
        call(&app, "/mcp", "opaque-good").await.status,
        StatusCode::OK
    );
    assert_eq!(
        fake.introspection_hits(),
        1,
        "second request served from the cache"
    );
    // After the cache lifetime (60 s) the server is asked again.
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        call(&app, "/mcp", "opaque-good").await.status,
        StatusCode::OK
    );
    assert_eq!(fake.introspection_hits(), 2);
}

#[tokio::test]
async fn introspection_inactive_token_is_refused_and_remembered() {
    let (fake, _clock, app) = introspection_fixture().await;
    fake.answer("opaque-revoked", json!({"active": false}));
    fake.answer("opaque-stringly", json!({"active": "true", "sub": "x"}));
    assert_invalid_token(&call(&app, "/mcp", "opaque-revoked").await);
    assert_invalid_token(&call(&app, "/mcp", "opaque-revoked").await);
    assert_eq!(fake.introspection_hits(), 1);
    assert_invalid_token(&call(&app, "/mcp", "opaque-stringly").await);
    assert_invalid_token(&call(&app, "/mcp", "never-issued").await);
}

#[tokio::test]
async fn introspection_checks_audience_issuer_expiry_and_type() {
    let (fake, clock, app) = introspection_fixture().await;
    let now = clock.now_unix();
    let base = json!({"active": true, "sub": "u", "client_id": "c", "scope": "mcp:read",
                      "exp": now + 600});
    let with = |extra: Value| {
        let mut v = base.clone();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    fake.answer(
        "other-resource",
        with(json!({"aud": "http://127.0.0.1:8931/other"})),
    );
    fake.answer(
        "other-resource-list",
        with(json!({"aud": ["https://a.example", "https://b.example"]})),
    );
    fake.answer("other-issuer", with(json!({"iss": "https://evil.example"})));
    fake.answer("expired", with(json!({"exp": now - 100})));
    fake.answer("refresh", with(json!({"token_type": "refresh_token"})));
    for token in [
        "other-resource",
        "other-resource-list",
        "other-issuer",
        "expired",
        "refresh",
    ] {
        assert_invalid_token(&call(&app, "/mcp", token).await);
    }
    // Without aud or iss the answer is taken as the endpoint's, for this resource.
    fake.answer("plain", base.clone());
    let r = call(&app, "/mcp", "plain").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["iss"], fake.issuer);
}

#[tokio::test]
async fn introspection_endpoint_failure_is_503() {
    let fake = FakeAs::spawn().await;
    let issuer = Issuer::parse(&fake.issuer).unwrap();
    let endpoint = HttpUrl::parse(&format!("{}/introspect", fake.issuer)).unwrap();
    let config = ResourceConfig::new(
        ResourceUrl::parse_exact(RESOURCE).unwrap(),
        vec![issuer.clone()],
        Verifier::Introspection(IntrospectionConfig::new(
            issuer,
            endpoint,
            ClientId::new(RS_CLIENT).unwrap(),
            ClientSecret::new("wrong secret"),
        )),
    );
    let app = app(&ResourceServer::new(config).unwrap());
    let r = call(&app, "/mcp", "whatever").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.get(header::WWW_AUTHENTICATE).is_none());
    assert_eq!(fake.introspection_hits(), 1);
}

// ---------------------------------------------------------------------------------------
// Protected resource metadata, over a real socket.

#[tokio::test]
async fn metadata_at_both_urls_and_discovery_from_a_401() {
    let fake = FakeAs::spawn().await;
    let key = es256("k1");
    fake.publish(key.jwk.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let resource = format!("{origin}/mcp");
    let issuer = Issuer::parse(&fake.issuer).unwrap();
    let mut config = ResourceConfig::new(
        ResourceUrl::parse_exact(&resource).unwrap(),
        vec![issuer.clone()],
        Verifier::Jwt(JwtConfig::new(
            issuer,
            HttpUrl::parse(&format!("{}/jwks", fake.issuer)).unwrap(),
        )),
    );
    config.scopes_supported = Some("mcp:read mcp:write".parse().unwrap());
    config.resource_name = Some("Test MCP".into());
    config.metadata_extra.insert(
        "resource_documentation".into(),
        json!("https://docs.example"),
    );
    let server = ResourceServer::new(config.clone()).unwrap();
    // prm_router(&config) and server.metadata_router() serve the same document.
    let app = Router::new()
        .route(
            "/mcp",
            post(whoami).layer(server.layer().require_scopes(["mcp:read"])),
        )
        .merge(prm_router(&config));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();

    // A client without a token learns where the metadata is from the challenge.
    let r = http.post(&resource).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
    let ch = &parse_www_authenticate(challenge).unwrap()[0];
    let path_inserted = format!("{origin}/.well-known/oauth-protected-resource/mcp");
    assert_eq!(ch.resource_metadata(), Some(path_inserted.as_str()));

    for url in [
        path_inserted.clone(),
        format!("{origin}/.well-known/oauth-protected-resource"),
    ] {
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let h = r.headers().clone();
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
        assert_eq!(h[header::CACHE_CONTROL], "public, max-age=3600");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let doc: Value = r.json().await.unwrap();
        assert_eq!(doc["resource"], resource);
        assert_eq!(doc["authorization_servers"], json!([fake.issuer]));
        assert_eq!(doc["scopes_supported"], json!(["mcp:read", "mcp:write"]));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
        assert_eq!(doc["resource_name"], "Test MCP");
        assert_eq!(doc["resource_documentation"], "https://docs.example");
        // The client-side check of mcp-auth-types accepts it for this server.
        let prm: mcp_auth_types::ProtectedResourceMetadata = serde_json::from_value(doc).unwrap();
        let server_url = ResourceUrl::canonicalize(&resource).unwrap();
        assert_eq!(prm.check_resource(&server_url).unwrap().as_str(), resource);
    }
    assert_eq!(
        server.metadata().resource,
        resource,
        "ResourceServer publishes the same document"
    );

    // Two Authorization headers over the wire.
    let now = mcp_auth_resource::SystemClock.now_unix();
    let token = sign(
        &key,
        &json!({"iss": fake.issuer, "aud": resource, "sub": "u", "client_id": "c",
                "scope": "mcp:read", "iat": now, "exp": now + 60}),
    );
    let r = http
        .post(&resource)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(&resource)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["sub"], "u");
}

// ---------------------------------------------------------------------------------------
// Configuration.

#[test]
fn configuration_is_checked() {
    let issuer = Issuer::parse("https://as.example.com").unwrap();
    let jwks = HttpUrl::parse("https://as.example.com/jwks").unwrap();
    let resource = ResourceUrl::parse_exact("https://mcp.example.com/mcp").unwrap();
    let ok = ResourceConfig::new(
        resource.clone(),
        vec![issuer.clone()],
        Verifier::Jwt(JwtConfig::new(issuer.clone(), jwks.clone())),
    );
    assert!(ResourceServer::new(ok.clone()).is_ok());

    let mut none = ok.clone();
    none.authorization_servers.clear();
    assert!(ResourceServer::new(none).is_err());

    let mut unlisted = ok.clone();
    unlisted.authorization_servers = vec![Issuer::parse("https://other.example.com").unwrap()];
    assert!(ResourceServer::new(unlisted).is_err());

    let mut insecure = ok.clone();
    insecure.verifier = Verifier::Jwt(JwtConfig::new(
        issuer.clone(),
        HttpUrl::parse("http://as.example.com/jwks").unwrap(),
    ));
    assert!(ResourceServer::new(insecure.clone()).is_err());
    insecure.danger_allow_insecure_http = true;
    assert!(ResourceServer::new(insecure).is_ok());

    let mut no_algs = JwtConfig::new(issuer.clone(), jwks);
    no_algs.algorithms.clear();
    let mut c = ok;
    c.verifier = Verifier::Jwt(no_algs);
    assert!(ResourceServer::new(c).is_err());
}

#[test]
#[should_panic(expected = "require_scopes")]
fn invalid_required_scope_panics_at_startup() {
    let (server, _) = custom_server(vec![]);
    let _ = ProtectedLayer::new(server).require_scopes(["has space"]);
}

// ---------------------------------------------------------------------------------------
// `ProtectedLayer::protect`: the wrapped handler answers as the layered route does.

#[tokio::test]
async fn protected_handlers_answer_exactly_as_layered_routes() {
    let fx = jwt_fixture().await;
    let other = es256("unpublished");
    // Each case twice, with distinct tokens: once with the layered route first (the handler
    // then finds the token cached), once with the wrapped handler first.
    for round in 0..2 {
        let jti = |n: usize| format!("jti-{round}-{n}");
        let now = fx.now();
        let tokens = [
            sign(&fx.key, &fx.with(json!({"jti": jti(0)}))),
            sign(&fx.key, &fx.with(json!({"jti": jti(1), "scope": "mcp:write"}))),
            sign(&fx.key, &fx.with(json!({"jti": jti(2), "scope": "mcp:read mcp:admin tools:write"}))),
            sign(&fx.key, &fx.with(json!({"jti": jti(3), "exp": now - 3600}))),
            sign(&fx.key, &fx.with(json!({"jti": jti(4), "aud": "https://other.example/mcp"}))),
            sign(&fx.key, &fx.with(json!({"jti": jti(5), "iss": "https://evil.example"}))),
            sign(&other, &fx.with(json!({"jti": jti(6)}))),
            sign(&fx.key, &fx.with(json!({"jti": jti(7), "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}))),
        ];
        let mut cases: Vec<(String, Vec<String>)> = tokens
            .iter()
            .map(|t| (String::new(), vec![format!("Bearer {t}")]))
            .collect();
        let good = &tokens[0];
        cases.push((String::new(), vec![]));
        cases.push((String::new(), vec!["Basic dXNlcjpwYXNz".into()]));
        cases.push((String::new(), vec![format!("bearer   {good}")]));
        cases.push((
            String::new(),
            vec![format!("Bearer {good}"), format!("Bearer {good}")],
        ));
        cases.push((String::new(), vec![format!("Bearer {good}!")]));
        cases.push((String::new(), vec!["Bearer a.b.c".into()]));
        cases.push((
            format!("?access_token={good}"),
            vec![format!("Bearer {good}")],
        ));
        for (n, (query, headers)) in cases.iter().enumerate() {
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            for route in ["mcp", "admin", "tool"] {
                let layered = format!("/{route}{query}");
                let wrapped = format!("/h/{route}{query}");
                let order = if round == 0 {
                    [&layered, &wrapped]
                } else {
                    [&wrapped, &layered]
                };
                let mut replies = Vec::new();
                // Twice each: a cache hit must answer as the first, verifying, call did.
                for path in order.iter().chain(order.iter()) {
                    let r = call_with(&fx.app, path, &headers).await;
                    replies.push((
                        r.status,
                        r.headers.get(header::WWW_AUTHENTICATE).cloned(),
                        r.body,
                    ));
                }
                for r in &replies[1..] {
                    assert_eq!(r, &replies[0], "round {round}, case {n}, route {route}");
                }
                // The first token may call `/mcp`, the third every route.
                if (n == 0 && route == "mcp") || n == 2 {
                    assert_eq!(replies[0].0, StatusCode::OK, "case {n}, route {route}");
                }
            }
        }
    }
    // The wrapped handler sees the same claims as the layered one.
    let token = sign(&fx.key, &fx.claims());
    let (a, b) = (
        call(&fx.app, "/mcp", &token).await,
        call(&fx.app, "/h/mcp", &token).await,
    );
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(a.json(), b.json());
    assert_eq!(b.json()["sub"], "user-1");
    // Scopes the handler asks for itself are named with the route's.
    let r = call(&fx.app, "/h/tool", &token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.challenge().param("scope"), Some("mcp:read tools:write"));
}
