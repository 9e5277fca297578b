//! RFC 7592 client configuration (`/register/{client_id}`) end to end, with the router called
//! in-process: read, update and delete with the registration access token that registration
//! issued, and the 401s for everything else.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use mcp_auth_server::ratelimit::RateLimits;
use mcp_auth_server::store::{ClientRow, MemoryStore, RegistrationKind, Store, unix_now};
use mcp_auth_server::{AuthorizationServer, ServerConfig};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ISSUER: &str = "http://127.0.0.1:1";
const REDIRECT: &str = "http://127.0.0.1:4242/callback";
const NEW_REDIRECT: &str = "https://app.example.com/callback";
// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// RFC 7592 §2: every answer of the configuration endpoint is `no-store`.
    fn assert_no_store(&self) {
        assert_eq!(
            self.header(header::CACHE_CONTROL),
            Some("no-store"),
            "{} {}",
            self.status,
            self.body
        );
    }

    fn assert_bad_token(&self) {
        assert_eq!(self.status, StatusCode::UNAUTHORIZED, "{}", self.body);
        assert_eq!(
            self.header(header::WWW_AUTHENTICATE),
            Some("Bearer error=\"invalid_token\"")
        );
        assert_eq!(self.json()["error"], "invalid_token");
        self.assert_no_store();
    }
}

/// A client as registration answered it.
struct Registered {
    info: Value,
}

impl Registered {
    fn id(&self) -> &str {
        self.info["client_id"].as_str().unwrap()
    }

    fn token(&self) -> &str {
        self.info["registration_access_token"].as_str().unwrap()
    }

    /// The path of `registration_client_uri` (the issuer has no path).
    fn path(&self) -> String {
        let uri = self.info["registration_client_uri"].as_str().unwrap();
        uri.strip_prefix(ISSUER).unwrap().to_owned()
    }
}

struct As {
    server: AuthorizationServer,
    store: Arc<MemoryStore>,
}

impl As {
    async fn new() -> Self {
        Self::with_client_cache(ServerConfig::new(ISSUER).client_cache_ttl).await
    }

    async fn with_client_cache(ttl: std::time::Duration) -> Self {
        let mut c = ServerConfig::new(ISSUER);
        c.client_cache_ttl = ttl;
        c.rate_limits = RateLimits::off();
        c.dev_auto_approve = true;
        let store = Arc::new(MemoryStore::new());
        let server = AuthorizationServer::new(c, store.clone()).await.unwrap();
        Self { server, store }
    }

    async fn call(&self, req: Request<Body>) -> Reply {
        let resp = self.server.router().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn register(&self, metadata: Value) -> Registered {
        let req = Request::post("/register")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(metadata.to_string()))
            .unwrap();
        let r = self.call(req).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.assert_no_store();
        Registered { info: r.json() }
    }

    /// A request to the configuration endpoint at `path`, with `token` as bearer token.
    async fn configure(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.call(req.unwrap()).await
    }

    async fn read(&self, c: &Registered) -> Value {
        let r = self
            .configure(Method::GET, &c.path(), Some(c.token()), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.assert_no_store();
        r.json()
    }

    async fn update(&self, c: &Registered, body: &Value) -> Reply {
        let r = self
            .configure(Method::PUT, &c.path(), Some(c.token()), Some(body))
            .await;
        r.assert_no_store();
        r
    }

    /// `GET /authorize` for the code flow (auto-approved).
    async fn authorize(&self, client_id: &str, redirect_uri: &str) -> Reply {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_challenge", CHALLENGE)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "st")
            .finish();
        let req = Request::get(format!("/authorize?{q}"))
            .body(Body::empty())
            .unwrap();
        self.call(req).await
    }

    async fn token(&self, form: &[(&str, &str)]) -> Reply {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = Request::post("/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.call(req).await
    }
}

fn public_client() -> Value {
    json!({
        "client_name": "Test MCP Client",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
    })
}

fn query_param(location: &str, name: &str) -> Option<String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `redirect_uris` of a client information response.
fn redirects(info: &Value) -> Vec<&str> {
    info["redirect_uris"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn registration_issues_a_token_and_a_configuration_uri() {
    let a = As::new().await;
    let c = a.register(public_client()).await;
    assert_eq!(
        c.info["registration_client_uri"],
        format!("{ISSUER}/register/{}", c.id())
    );
    assert!(c.token().len() >= 43, "256 random bits");
    // RFC 7592 §3: only a hash of the token is kept.
    let row = a
        .store
        .get_client("default", c.id(), unix_now())
        .await
        .unwrap()
        .unwrap();
    let stored = row.registration_token_hash.expect("a token hash");
    assert_ne!(stored, c.token());
    assert!(!row.metadata.to_string().contains(c.token()));
}

#[tokio::test]
async fn the_token_reads_the_client_without_its_credentials() {
    let a = As::new().await;
    let c = a.register(public_client()).await;
    let info = a.read(&c).await;
    assert_eq!(info["client_id"], c.id());
    assert_eq!(info["client_name"], "Test MCP Client");
    assert_eq!(redirects(&info), [REDIRECT]);
    assert_eq!(info["token_endpoint_auth_method"], "none");
    assert_eq!(info["client_id_issued_at"], c.info["client_id_issued_at"]);
    assert_eq!(
        info["registration_client_uri"],
        c.info["registration_client_uri"]
    );
    assert!(info.get("registration_access_token").is_none(), "{info}");
    assert!(!info.to_string().contains(c.token()));
    assert!(info.get("client_secret").is_none(), "{info}");
}

#[tokio::test]
async fn reading_a_confidential_client_does_not_return_its_secret() {
    let a = As::new().await;
    let mut meta = public_client();
    meta["token_endpoint_auth_method"] = json!("client_secret_basic");
    let c = a.register(meta).await;
    let secret = c.info["client_secret"].as_str().unwrap();
    let info = a.read(&c).await;
    assert!(info.get("client_secret").is_none(), "{info}");
    assert!(!info.to_string().contains(secret));
    // RFC 7591 §3.2.1: the expiry of the secret the client holds is still reported.
    assert_eq!(
        info["client_secret_expires_at"],
        c.info["client_secret_expires_at"]
    );
}

#[tokio::test]
async fn a_missing_wrong_or_foreign_token_is_refused_for_every_method() {
    let a = As::new().await;
    let c = a.register(public_client()).await;
    let other = a.register(public_client()).await;
    let update = json!({"client_id": c.id(), "redirect_uris": [NEW_REDIRECT]});
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let body = (method == Method::PUT).then_some(&update);
        for token in ["wrong", other.token()] {
            a.configure(method.clone(), &c.path(), Some(token), body)
                .await
                .assert_bad_token();
        }
        // RFC 6750 §3.1: a request without credentials gets a bare challenge.
        let r = a.configure(method.clone(), &c.path(), None, body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method}");
        assert_eq!(r.header(header::WWW_AUTHENTICATE), Some("Bearer"));
        r.assert_no_store();
        // Another scheme is no bearer token either.
        let req = Request::builder()
            .method(method.clone())
            .uri(c.path())
            .header(header::AUTHORIZATION, format!("Basic {}", c.token()))
            .body(Body::empty())
            .unwrap();
        assert_eq!(a.call(req).await.status, StatusCode::UNAUTHORIZED);
    }
    // None of that changed or removed anything.
    assert_eq!(redirects(&a.read(&c).await), [REDIRECT]);
}

#[tokio::test]
async fn an_unknown_client_looks_like_a_wrong_token() {
    let a = As::new().await;
    let c = a.register(public_client()).await;
    // RFC 7592 §2.1: 401, not 404, so the endpoint does not reveal which ids exist.
    a.configure(
        Method::GET,
        "/register/no-such-client",
        Some(c.token()),
        None,
    )
    .await
    .assert_bad_token();
}

#[tokio::test]
async fn clients_without_a_registration_token_cannot_be_configured() {
    let a = As::new().await;
    let now = unix_now();
    let document = "https://app.example.com/client.json";
    for (id, kind) in [
        (document, RegistrationKind::MetadataDocument),
        ("legacy-dynamic", RegistrationKind::Dynamic),
        ("operator", RegistrationKind::Static),
    ] {
        a.store
            .put_client(&ClientRow {
                tenant: "default".into(),
                client_id: id.into(),
                secret_hash: None,
                metadata: json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}),
                registration_kind: kind,
                registration_token_hash: None,
                created_at: now,
                expires_at: None,
            })
            .await
            .unwrap();
    }
    let encoded: String = url::form_urlencoded::byte_serialize(document.as_bytes()).collect();
    for path in [
        format!("/register/{encoded}"),
        "/register/legacy-dynamic".into(),
        "/register/operator".into(),
    ] {
        for method in [Method::GET, Method::DELETE] {
            a.configure(method, &path, Some("anything"), None)
                .await
                .assert_bad_token();
        }
    }
    assert!(
        a.store
            .get_client("default", "operator", now)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn an_update_replaces_the_redirect_uris_that_authorize_accepts() {
    let a = As::new().await;
    let c = a.register(public_client()).await;
    // Used once before the update, so the server has it in its client cache.
    let r = a.authorize(c.id(), REDIRECT).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let mut body = public_client();
    body["client_id"] = json!(c.id());
    body["redirect_uris"] = json!([NEW_REDIRECT]);
    let r = a.update(&c, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let updated = r.json();
    assert_eq!(redirects(&updated), [NEW_REDIRECT]);
    assert!(updated.get("registration_access_token").is_none());
    assert_eq!(
        updated["client_id_issued_at"],
        c.info["client_id_issued_at"]
    );

    assert_eq!(redirects(&a.read(&c).await), [NEW_REDIRECT]);

    let r = a.authorize(c.id(), NEW_REDIRECT).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let location = r.header(header::LOCATION).unwrap();
    assert!(location.starts_with(NEW_REDIRECT), "{location}");
    assert!(query_param(location, "code").is_some(), "{location}");
    // The old redirect URI was replaced, not kept beside the new one.
    let r = a.authorize(c.id(), REDIRECT).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}

#[tokio::test]
async fn an_invalid_update_is_refused_and_changes_nothing() {
    let a = As::new().await;
    let c = a.register(public_client()).await;
    let before = a.read(&c).await;
    let mut body = public_client();
    body["client_id"] = json!(c.id());
    body["redirect_uris"] = json!(["javascript:alert(1)"]);
    let r = a.update(&c, &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_redirect_uri");
    assert_eq!(a.read(&c).await, before);
}

#[tokio::test]
async fn an_update_must_name_the_client_and_keep_what_the_server_issued() {
    let a = As::new().await;
    let mut meta = public_client();
    meta["token_endpoint_auth_method"] = json!("client_secret_post");
    let c = a.register(meta).await;
    let before = a.read(&c).await;
    let with = |name: &str, value: Value| {
        let mut b = before.clone();
        b["redirect_uris"] = json!([NEW_REDIRECT]);
        b[name] = value;
        b
    };
    let mut without_id = with("client_name", json!("x"));
    without_id.as_object_mut().unwrap().remove("client_id");
    for body in [
        without_id,
        with("client_id", json!("another-client")),
        with("client_secret", json!("a-secret-of-my-choosing")),
        with("registration_access_token", json!("something-else")),
        with("registration_client_uri", json!("https://evil.example/x")),
        with("client_id_issued_at", json!(1)),
        with("client_secret_expires_at", json!(1)),
    ] {
        let r = a.update(&c, &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.json()["error"], "invalid_client_metadata", "{body}");
    }
    assert_eq!(a.read(&c).await, before);

    // Sending back what the server issued, unchanged, is fine; so is the current secret.
    let mut echo = with("client_secret", c.info["client_secret"].clone());
    echo["registration_access_token"] = json!(c.token());
    let r = a.update(&c, &echo).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(redirects(&r.json()), [NEW_REDIRECT]);
    // The secret was kept (not returned, not replaced).
    assert!(r.json().get("client_secret").is_none());
    let r = a
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "unknown"),
            ("client_id", c.id()),
            ("client_secret", c.info["client_secret"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.body);
}

#[tokio::test]
async fn a_client_that_moves_to_a_secret_gets_one_the_token_endpoint_accepts() {
    let a = As::new().await;
    let c = a.register(public_client()).await;
    let mut body = a.read(&c).await;
    body["grant_types"] = json!(["client_credentials"]);
    body["token_endpoint_auth_method"] = json!("client_secret_post");
    let r = a.update(&c, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let info = r.json();
    let secret = info["client_secret"].as_str().expect("a new secret");
    assert!(info["client_secret_expires_at"].is_u64());

    let r = a
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", c.id()),
            ("client_secret", secret),
        ])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.json()["access_token"].is_string());

    // And back to a public client: the secret is dropped, the client id alone identifies it.
    let mut body = a.read(&c).await;
    body["grant_types"] = json!(["authorization_code"]);
    body["token_endpoint_auth_method"] = json!("none");
    let r = a.update(&c, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.json().get("client_secret_expires_at").is_none());
    let row = a
        .store
        .get_client("default", c.id(), unix_now())
        .await
        .unwrap()
        .unwrap();
    assert!(row.secret_hash.is_none());
}

#[tokio::test]
async fn delete_removes_the_client_and_what_it_was_issued() {
    let a = As::new().await;
    let c = a.register(public_client()).await;
    // A refresh token issued before the deletion.
    let r = a.authorize(c.id(), REDIRECT).await;
    let code = query_param(r.header(header::LOCATION).unwrap(), "code").unwrap();
    let r = a
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", c.id()),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();

    let r = a
        .configure(Method::DELETE, &c.path(), Some(c.token()), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(r.body.is_empty());
    r.assert_no_store();

    // The token went with the client.
    a.configure(Method::GET, &c.path(), Some(c.token()), None)
        .await
        .assert_bad_token();
    a.configure(Method::DELETE, &c.path(), Some(c.token()), None)
        .await
        .assert_bad_token();
    let r = a.authorize(c.id(), REDIRECT).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.header(header::CONTENT_TYPE)
            .is_some_and(|t| t.starts_with("text/html")),
        "an error page, not a redirect"
    );
    assert!(r.header(header::LOCATION).is_none());
    let r = a
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", c.id()),
        ])
        .await;
    assert!(r.status.is_client_error(), "{}", r.body);
    assert!(
        a.store
            .get_refresh(
                "default",
                &mcp_auth_server::store::hash_secret(&refresh),
                unix_now()
            )
            .await
            .unwrap()
            .is_none()
    );
}

/// A client deleted behind the server's back (another process sharing the store) is seen
/// within the client cache's lifetime, and at once without the cache.
#[tokio::test]
async fn a_change_made_elsewhere_is_seen_within_the_client_cache_ttl() {
    let ttl = std::time::Duration::from_millis(300);
    let a = As::with_client_cache(ttl).await;
    let c = a.register(public_client()).await;
    let r = a.authorize(c.id(), REDIRECT).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(a.store.delete_client("default", c.id()).await.unwrap());
    tokio::time::sleep(ttl + std::time::Duration::from_millis(50)).await;
    let r = a.authorize(c.id(), REDIRECT).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    let a = As::with_client_cache(std::time::Duration::ZERO).await;
    let c = a.register(public_client()).await;
    let r = a.authorize(c.id(), REDIRECT).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(a.store.delete_client("default", c.id()).await.unwrap());
    let r = a.authorize(c.id(), REDIRECT).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}
