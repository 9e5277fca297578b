//! The login flow with an upstream identity provider (proxy-provider mode), with the router
//! called in-process and a browser that keeps its cookies: provider choice, consent before
//! anything goes upstream, the callback bound to the browser that started it, our own code
//! and tokens for the MCP client, upstream tokens sealed and refreshed single-flight, and
//! revocation reaching upstream. The upstream provider is a test double behind the
//! `Upstream` seam that checks what the server sends it (PKCE verifier, nonce, redirect URI).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_auth_server::store::{MemoryStore, Store, unix_now};
use mcp_auth_server::{
    AuthorizationServer, IdentityProvider, LocalAccounts, SealKeys, ServerConfig, UpstreamIdentity,
    UpstreamVault,
};
use mcp_auth_types::SecretString;
use mcp_auth_upstream::{
    AuthorizationRequest, Completion, Upstream, UpstreamError, UpstreamLogin, UpstreamTokens,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt as _;

const ISSUER: &str = "http://127.0.0.1:1";
const REDIRECT: &str = "http://127.0.0.1:4242/callback";
const WEB_REDIRECT: &str = "https://app.example.com/callback";
// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// What the fake provider saw and did.
#[derive(Debug, Default)]
struct Seen {
    /// nonce -> PKCE challenge, from authorization URLs.
    started: HashMap<String, String>,
    refreshes: AtomicUsize,
    revoked: Mutex<Vec<String>>,
    issued: AtomicUsize,
}

#[derive(Debug, Clone, Default)]
struct FakeUpstream {
    seen: Arc<Mutex<Seen>>,
    counters: Arc<Seen>,
    /// Access token lifetime for issued tokens.
    ttl: Arc<Mutex<u64>>,
}

fn tokens(n: usize, ttl: u64) -> UpstreamTokens {
    UpstreamTokens {
        access_token: SecretString::new(format!("UPSTREAM-AT-{n}")),
        token_type: "Bearer".into(),
        refresh_token: Some(SecretString::new(format!("UPSTREAM-RT-{n}"))),
        expires_at: Some(unix_now() + ttl),
        refresh_token_expires_at: None,
        scope: Some("read".into()),
    }
}

#[async_trait]
impl Upstream for FakeUpstream {
    fn id(&self) -> &str {
        "fake"
    }

    fn label(&self) -> &str {
        "Fake IdP"
    }

    async fn authorization_url(
        &self,
        req: &AuthorizationRequest<'_>,
    ) -> Result<url::Url, UpstreamError> {
        assert_eq!(req.redirect_uri, format!("{ISSUER}/oauth/callback"));
        self.seen
            .lock()
            .unwrap()
            .started
            .insert(req.nonce.to_owned(), req.code_challenge.to_owned());
        let mut u = url::Url::parse("https://upstream.test/authorize").unwrap();
        u.query_pairs_mut()
            .append_pair("state", req.state)
            .append_pair("nonce", req.nonce)
            .append_pair("code_challenge", req.code_challenge);
        Ok(u)
    }

    async fn complete(&self, req: &Completion<'_>) -> Result<UpstreamLogin, UpstreamError> {
        assert_eq!(req.redirect_uri, format!("{ISSUER}/oauth/callback"));
        let challenge = self.seen.lock().unwrap().started.get(req.nonce).cloned();
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(req.code_verifier.as_bytes()));
        if challenge.as_deref() != Some(computed.as_str()) {
            return Err(UpstreamError::InvalidResponse(
                "PKCE verifier or nonce mismatch".into(),
            ));
        }
        let Some(sub) = req.code.strip_prefix("good:") else {
            return Err(UpstreamError::InvalidResponse(
                "the id_token nonce does not match".into(),
            ));
        };
        let n = self.counters.issued.fetch_add(1, Ordering::SeqCst);
        Ok(UpstreamLogin {
            subject: sub.to_owned(),
            profile: json!({"name": sub}),
            tokens: tokens(n, *self.ttl.lock().unwrap()),
        })
    }

    async fn refresh(&self, refresh_token: &str) -> Result<UpstreamTokens, UpstreamError> {
        assert!(refresh_token.starts_with("UPSTREAM-RT-"));
        self.counters.refreshes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = self.counters.issued.fetch_add(1, Ordering::SeqCst);
        Ok(tokens(n, 3600))
    }

    async fn revoke(&self, t: &UpstreamTokens) -> Result<bool, UpstreamError> {
        let which = t
            .refresh_token
            .as_ref()
            .unwrap_or(&t.access_token)
            .secret()
            .to_owned();
        self.counters.revoked.lock().unwrap().push(which);
        Ok(true)
    }

    async fn profile(&self, access_token: &str) -> Result<Value, UpstreamError> {
        Ok(json!({"fetched_with": access_token.len()}))
    }
}

struct Env {
    router: axum::Router,
    store: Arc<MemoryStore>,
    vault: UpstreamVault,
    fake: FakeUpstream,
}

async fn env(with_local: bool) -> Env {
    let store = Arc::new(MemoryStore::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let fake = FakeUpstream::default();
    *fake.ttl.lock().unwrap() = 3600;
    let up: Arc<dyn Upstream> = Arc::new(fake.clone());
    let vault = UpstreamVault::new(
        dyn_store.clone(),
        "default",
        SealKeys::new("k1", [9u8; 32]).unwrap(),
        [up.clone()],
        Duration::from_secs(86400),
    );
    let mut idps: Vec<Arc<dyn IdentityProvider>> = Vec::new();
    if with_local {
        let local = LocalAccounts::new(dyn_store.clone());
        local
            .add("default", "alice", "correct horse")
            .await
            .unwrap();
        idps.push(Arc::new(local));
    }
    idps.push(Arc::new(UpstreamIdentity(up)));
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
}

/// A browser: cookies kept per name.
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
            assert_eq!(
                mcp_auth_server::flow::cookie_name(ISSUER, k),
                kv.split_once('=').unwrap().0
            );
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

async fn register(router: &axum::Router, redirect: &str) -> String {
    let req = Request::post("/register")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"redirect_uris": [redirect], "client_name": "Test Client",
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

fn authorize_url(client_id: &str, redirect: &str, scope: &str) -> String {
    let mut u = url::Url::parse(&format!("{ISSUER}/authorize")).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", scope)
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

/// Runs the flow up to the redirect upstream: returns the upstream URL's `state`.
async fn to_upstream(e: &Env, b: &mut Browser, client_id: &str, redirect: &str) -> String {
    let started = e.fake.seen.lock().unwrap().started.len();
    let page = b
        .get(&e.router, &authorize_url(client_id, redirect, "read"))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let page = if page.body.contains("name=provider") {
        let pending = page.field("pending");
        let csrf = page.field("csrf");
        b.post(
            &e.router,
            "/authorize/provider",
            &[("pending", &pending), ("csrf", &csrf), ("provider", "fake")],
        )
        .await
    } else {
        page
    };
    assert!(
        page.body.contains("Allow and continue with Fake IdP"),
        "{}",
        page.body
    );
    let host = url::Url::parse(redirect).unwrap();
    assert!(page.body.contains("Test Client") && page.body.contains(host.host_str().unwrap()));
    // Nothing has gone upstream before the user approved.
    assert_eq!(e.fake.seen.lock().unwrap().started.len(), started);
    let pending = page.field("pending");
    let csrf = page.field("csrf");
    let go = b
        .post(
            &e.router,
            "/authorize",
            &[
                ("pending", &pending),
                ("csrf", &csrf),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(go.status, StatusCode::SEE_OTHER, "{}", go.body);
    assert_eq!(go.location().host_str(), Some("upstream.test"));
    go.param("state").unwrap()
}

#[tokio::test]
async fn an_upstream_login_gives_the_client_our_tokens_and_keeps_the_upstream_ones() {
    let e = env(true).await;
    let client_id = register(&e.router, REDIRECT).await;
    let mut b = Browser::default();
    let page = b
        .get(&e.router, &authorize_url(&client_id, REDIRECT, "read"))
        .await;
    // Two providers: the choice page lists both.
    assert!(page.body.contains("Continue with Username and password"));
    assert!(page.body.contains("Continue with Fake IdP"));
    let state = to_upstream(&e, &mut b, &client_id, REDIRECT).await;
    let back = b
        .get(
            &e.router,
            &format!("/oauth/callback?code=good:u1&state={state}"),
        )
        .await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.body);
    assert!(back.location().as_str().starts_with(REDIRECT));
    assert_eq!(back.param("state").as_deref(), Some("client-state"));
    assert_eq!(back.param("iss").as_deref(), Some(ISSUER));
    let code = back.param("code").unwrap();
    let (status, t) = token(
        &e.router,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let text = t.to_string();
    assert!(
        !text.contains("UPSTREAM-"),
        "an upstream token reached the client: {text}"
    );
    // The access token is ours, for the account fake:u1.
    let payload = t["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["sub"], "fake:u1");
    // The upstream tokens are kept, sealed.
    let kept = e.vault.tokens("fake:u1").await.unwrap().unwrap();
    assert_eq!(kept.access_token.secret(), "UPSTREAM-AT-0");
    let row = e
        .store
        .get_upstream("default", "fake:u1", unix_now())
        .await
        .unwrap()
        .unwrap();
    assert!(!row.sealed.contains("UPSTREAM"), "stored in plaintext");
    assert!(format!("{row:?}").contains("[redacted]"));
    // Consent remembered per user and client.
    let consent = e
        .store
        .get_consent("default", "fake:u1", &client_id)
        .await
        .unwrap();
    assert_eq!(consent.unwrap().scope, "read");
    assert_eq!(
        e.vault.access_token("fake:u1").await.unwrap().secret(),
        "UPSTREAM-AT-0"
    );

    // The same callback again: refused, nothing issued.
    let replay = b
        .get(
            &e.router,
            &format!("/oauth/callback?code=good:u1&state={state}"),
        )
        .await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert!(replay.body.contains("already used"), "{}", replay.body);

    // Revoking our refresh token revokes the upstream grant and forgets it.
    let rt = t["refresh_token"].as_str().unwrap();
    let req = Request::post("/revoke")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(
            serde_urlencoded::to_string([("token", rt), ("client_id", &client_id)]).unwrap(),
        ))
        .unwrap();
    assert_eq!(
        e.router.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        *e.fake.counters.revoked.lock().unwrap(),
        vec!["UPSTREAM-RT-0".to_owned()]
    );
    assert!(e.vault.tokens("fake:u1").await.unwrap().is_none());
}

#[tokio::test]
async fn a_callback_from_another_browser_is_refused_and_consumes_nothing() {
    let e = env(false).await;
    let client_id = register(&e.router, REDIRECT).await;
    let mut victim = Browser::default();
    let state = to_upstream(&e, &mut victim, &client_id, REDIRECT).await;
    // An attacker's browser (no binding cookie, or its own) with the victim's state.
    let mut attacker = Browser::default();
    attacker
        .cookies
        .insert("mcp_auth_upstream".into(), "forged".into());
    let r = attacker
        .get(
            &e.router,
            &format!("/oauth/callback?code=good:evil&state={state}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("another browser"), "{}", r.body);
    assert!(e.vault.tokens("fake:evil").await.unwrap().is_none());
    // The right browser still finishes.
    let ok = victim
        .get(
            &e.router,
            &format!("/oauth/callback?code=good:u2&state={state}"),
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert!(ok.param("code").is_some());
}

#[tokio::test]
async fn a_refused_upstream_login_shows_a_page_and_stores_nothing() {
    let e = env(false).await;
    let client_id = register(&e.router, REDIRECT).await;
    let mut b = Browser::default();
    let state = to_upstream(&e, &mut b, &client_id, REDIRECT).await;
    let r = b
        .get(
            &e.router,
            &format!("/oauth/callback?code=forged&state={state}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body.contains("signing in with Fake IdP failed"),
        "{}",
        r.body
    );
    assert!(
        r.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert!(
        e.store
            .list_consents("default", None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(e.fake.counters.issued.load(Ordering::SeqCst), 0);
    // An unknown state: a clear page.
    let r = b
        .get(&e.router, "/oauth/callback?code=good:x&state=never-issued")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // The upstream said no: the client hears access_denied.
    let state = to_upstream(&e, &mut b, &client_id, REDIRECT).await;
    let r = b
        .get(
            &e.router,
            &format!("/oauth/callback?error=access_denied&state={state}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.param("error").as_deref(), Some("access_denied"));
    assert_eq!(r.param("state").as_deref(), Some("client-state"));
}

#[tokio::test]
async fn consent_without_the_csrf_cookie_or_token_is_refused_before_going_upstream() {
    let e = env(false).await;
    let client_id = register(&e.router, REDIRECT).await;
    let mut b = Browser::default();
    let page = b
        .get(&e.router, &authorize_url(&client_id, REDIRECT, "read"))
        .await;
    let pending = page.field("pending");
    let csrf = page.field("csrf");
    // A forged cross-site post: the browser would not send the SameSite cookie.
    let mut other = Browser::default();
    let r = other
        .post(
            &e.router,
            "/authorize",
            &[
                ("pending", &pending),
                ("csrf", &csrf),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The right cookie, a wrong token.
    let r = b
        .post(
            &e.router,
            "/authorize",
            &[
                ("pending", &pending),
                ("csrf", "guess"),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        e.fake.seen.lock().unwrap().started.is_empty(),
        "went upstream"
    );
    // The genuine form still works.
    let r = b
        .post(
            &e.router,
            "/authorize",
            &[
                ("pending", &pending),
                ("csrf", &csrf),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn deny_answers_access_denied_without_going_upstream() {
    let e = env(false).await;
    let client_id = register(&e.router, REDIRECT).await;
    let mut b = Browser::default();
    let page = b
        .get(&e.router, &authorize_url(&client_id, REDIRECT, "read"))
        .await;
    // One provider: no choice page.
    assert!(!page.body.contains("name=provider"));
    let r = b
        .post(
            &e.router,
            "/authorize",
            &[
                ("pending", &page.field("pending")),
                ("csrf", &page.field("csrf")),
                ("decision", "deny"),
            ],
        )
        .await;
    assert_eq!(r.param("error").as_deref(), Some("access_denied"));
    assert!(e.fake.seen.lock().unwrap().started.is_empty());
}

#[tokio::test]
async fn a_signed_in_browser_that_consented_is_not_asked_again_except_for_loopback_clients() {
    let e = env(false).await;
    let web = register(&e.router, WEB_REDIRECT).await;
    let mut b = Browser::default();
    let state = to_upstream(&e, &mut b, &web, WEB_REDIRECT).await;
    let r = b
        .get(
            &e.router,
            &format!("/oauth/callback?code=good:u3&state={state}"),
        )
        .await;
    assert!(r.param("code").is_some());
    assert!(b.cookies.contains_key("mcp_auth_session"));
    // Again: straight back with a code, nothing upstream.
    let before = e.fake.counters.issued.load(Ordering::SeqCst);
    let again = b
        .get(&e.router, &authorize_url(&web, WEB_REDIRECT, "read"))
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    assert!(again.param("code").is_some());
    assert_eq!(e.fake.counters.issued.load(Ordering::SeqCst), before);
    // A wider scope asks again.
    let wider = b
        .get(&e.router, &authorize_url(&web, WEB_REDIRECT, "read write"))
        .await;
    assert_eq!(wider.status, StatusCode::OK);
    assert!(wider.body.contains("Signed in as <strong>fake:u3</strong>"));
    // A loopback client of the same user: the consent page, without a new login.
    let cli = register(&e.router, REDIRECT).await;
    let page = b
        .get(&e.router, &authorize_url(&cli, REDIRECT, "read"))
        .await;
    assert!(page.body.contains("Signed in as"), "{}", page.body);
    let r = b
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
    assert!(r.location().as_str().starts_with(REDIRECT), "{}", r.body);
    assert!(r.param("code").is_some());
    // Signing out ends the session and revokes upstream.
    let page = b.get(&e.router, "/logout").await;
    let out = b
        .post(&e.router, "/logout", &[("csrf", &page.field("csrf"))])
        .await;
    assert!(out.body.contains("You are signed out"));
    assert!(!b.cookies.contains_key("mcp_auth_session"));
    assert!(e.vault.tokens("fake:u3").await.unwrap().is_none());
    assert_eq!(e.fake.counters.revoked.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_requests_at_expiry_refresh_upstream_once() {
    let e = env(false).await;
    *e.fake.ttl.lock().unwrap() = 10; // inside the 30 s margin: due for refresh
    let client_id = register(&e.router, REDIRECT).await;
    let mut b = Browser::default();
    let state = to_upstream(&e, &mut b, &client_id, REDIRECT).await;
    b.get(
        &e.router,
        &format!("/oauth/callback?code=good:u4&state={state}"),
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let v = e.vault.clone();
        tasks.push(tokio::spawn(async move { v.access_token("fake:u4").await }));
    }
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        seen.insert(t.await.unwrap().unwrap().secret().to_owned());
    }
    assert_eq!(e.fake.counters.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let kept = e.vault.tokens("fake:u4").await.unwrap().unwrap();
    assert_eq!(kept.refresh_token.unwrap().secret(), "UPSTREAM-RT-1");
    // A second vault over the same store (another instance) sees the rotated tokens.
    let row = e
        .store
        .get_upstream("default", "fake:u4", unix_now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.version % 2, 0);
}

#[tokio::test]
async fn openid_scope_gets_an_id_token_and_userinfo() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut config = ServerConfig::new(ISSUER);
    config.dev_auto_approve = true;
    config.dev_subject = "local:alice".into();
    let server = AuthorizationServer::new(config, store).await.unwrap();
    let router = server.router();
    let client_id = register(&router, REDIRECT).await;
    let mut b = Browser::default();
    let url = format!(
        "{}&nonce=n-0S6_WzA2Mj",
        authorize_url(&client_id, REDIRECT, "openid")
    );
    let r = b.get(&router, &url).await;
    let code = r.param("code").unwrap();
    let (status, t) = token(
        &router,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let id_token = t["id_token"].as_str().expect("an id_token");
    let mut parts = id_token.split('.');
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], client_id.as_str());
    assert_eq!(claims["sub"], "local:alice");
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    let at = t["access_token"].as_str().unwrap();
    let digest = Sha256::digest(at.as_bytes());
    assert_eq!(claims["at_hash"], URL_SAFE_NO_PAD.encode(&digest[..16]));
    // UserInfo with the access token.
    let req = Request::get("/userinfo")
        .header(header::AUTHORIZATION, format!("Bearer {at}"))
        .body(Body::empty())
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(info["sub"], "local:alice");
    // Without a token, or with a bad one: 401.
    let req = Request::get("/userinfo").body(Body::empty()).unwrap();
    assert_eq!(
        router.clone().oneshot(req).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let req = Request::get("/userinfo")
        .header(header::AUTHORIZATION, "Bearer x.y.z")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        router.clone().oneshot(req).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // Discovery advertises it.
    let req = Request::get("/.well-known/openid-configuration")
        .body(Body::empty())
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let meta: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(meta["userinfo_endpoint"], format!("{ISSUER}/userinfo"));
    assert!(
        meta["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("openid"))
    );
}
