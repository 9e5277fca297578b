//! Client ID metadata documents end to end: a real HTTP server on 127.0.0.1:0 serves the
//! documents, the authorization server's router is called in-process.
//!
//! The test server is a few lines over a TCP listener rather than a framework, so it can
//! count connections (not just requests), stall mid-response, and send bodies without a
//! length.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use mcp_auth_server::cimd::{CimdError, DocumentFetcher};
use mcp_auth_server::store::{MemoryStore, RegistrationKind, Store, unix_now};
use mcp_auth_server::{AuthorizationServer, CimdConfig, ServerConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

// ---------------------------------------------------------------- the document server

/// What the document server answers on a path.
#[derive(Clone)]
enum Reply {
    /// A complete response with `Content-Length`.
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// `200`, JSON, no `Content-Length`: the body ends when the connection closes.
    Unsized(Vec<u8>),
    /// Sends nothing for this long, then closes.
    Silent(Duration),
    /// Sends the headers of a 100-byte JSON body, then nothing for this long.
    StallBody(Duration),
}

impl Reply {
    fn json(body: &Value) -> Self {
        Self::json_with(body, &[])
    }

    fn json_with(body: &Value, headers: &[(&'static str, &str)]) -> Self {
        let mut h = vec![("Content-Type", "application/json".to_owned())];
        h.extend(headers.iter().map(|(k, v)| (*k, (*v).to_owned())));
        Self::Full {
            status: 200,
            headers: h,
            body: serde_json::to_vec(body).unwrap(),
        }
    }
}

#[derive(Clone)]
struct DocServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
}

impl DocServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
            hits: Arc::default(),
            routes: Arc::default(),
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(s.clone().serve(sock));
            }
        });
        server
    }

    /// `http://127.0.0.1:{port}{path}`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn set(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_owned(), reply);
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    async fn serve(self, mut sock: tokio::net::TcpStream) {
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&req);
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        *self.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        let reply = self.routes.lock().unwrap().get(&path).cloned();
        let head = |status: u16, headers: &[(&str, String)], len: Option<usize>| {
            let mut h = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
            for (k, v) in headers {
                h.push_str(&format!("{k}: {v}\r\n"));
            }
            if let Some(n) = len {
                h.push_str(&format!("Content-Length: {n}\r\n"));
            }
            h.push_str("\r\n");
            h.into_bytes()
        };
        let out = match reply {
            None => head(404, &[], Some(0)),
            Some(Reply::Full {
                status,
                headers,
                body,
            }) => [head(status, &headers, Some(body.len())), body].concat(),
            Some(Reply::Unsized(body)) => {
                let ct = [("Content-Type", "application/json".to_owned())];
                [head(200, &ct, None), body].concat()
            }
            Some(Reply::Silent(d)) => {
                tokio::time::sleep(d).await;
                return;
            }
            Some(Reply::StallBody(d)) => {
                let ct = [("Content-Type", "application/json".to_owned())];
                let _ = sock.write_all(&head(200, &ct, Some(100))).await;
                let _ = sock.write_all(b"{\"client_id\":").await;
                tokio::time::sleep(d).await;
                return;
            }
        };
        let _ = sock.write_all(&out).await;
        let _ = sock.shutdown().await;
    }
}

// ---------------------------------------------------------------- the authorization server

const ISSUER: &str = "http://127.0.0.1:9999";
const REDIRECT: &str = "http://127.0.0.1:4242/callback";
// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// What the tests allow: plain http to a loopback server.
fn test_config() -> CimdConfig {
    CimdConfig {
        allow_private_addresses: true,
        allow_http: true,
        timeout: Duration::from_millis(500),
        ..CimdConfig::default()
    }
}

struct As {
    server: AuthorizationServer,
    store: Arc<MemoryStore>,
}

impl As {
    async fn new(cimd: CimdConfig) -> Self {
        let mut c = ServerConfig::new(ISSUER);
        c.dev_auto_approve = true;
        c.client_id_metadata_documents = cimd;
        // Tests here age documents by editing the store behind the server's back, as another
        // process sharing it would: no client cache in between. (A row's own expiry, which
        // the HTTP caching of its document sets, is checked on every cache hit anyway.)
        c.client_cache_ttl = std::time::Duration::ZERO;
        let store = Arc::new(MemoryStore::new());
        let server = AuthorizationServer::new(c, store.clone()).await.unwrap();
        Self { server, store }
    }

    async fn call(&self, req: Request<Body>) -> (StatusCode, Option<String>, String) {
        let resp = self.server.router().oneshot(req).await.unwrap();
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            location,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    async fn authorize(
        &self,
        client_id: &str,
        redirect_uri: &str,
    ) -> (StatusCode, Option<String>, String) {
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

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        let (status, _, body) = self.call(req).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

fn document(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "client_name": "Test MCP Client",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
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

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn a_valid_document_authorizes_once_fetched_and_then_from_the_cache() {
    let docs = DocServer::start().await;
    let id = docs.url("/client.json");
    docs.set(
        "/client.json",
        Reply::json_with(&document(&id), &[("Cache-Control", "public, max-age=600")]),
    );
    let a = As::new(test_config()).await;

    let (status, location, body) = a.authorize(&id, REDIRECT).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let location = location.unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    let code = query_param(&location, "code").expect("a code");
    assert_eq!(query_param(&location, "iss").as_deref(), Some(ISSUER));
    assert_eq!(docs.hits("/client.json"), 1);

    let row = a
        .store
        .get_client("default", &id, unix_now())
        .await
        .unwrap()
        .expect("cached");
    assert_eq!(row.registration_kind, RegistrationKind::MetadataDocument);
    assert_eq!(row.secret_hash, None);
    assert_eq!(row.metadata, document(&id));
    let expires = row.expires_at.unwrap();
    let now = unix_now();
    assert!(
        (now + 590..=now + 600).contains(&expires),
        "{expires} vs {now}"
    );

    // The second authorization, and the code exchange, read the cache.
    let (status, _, _) = a.authorize(&id, REDIRECT).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, tokens) = a
        .post(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", &id),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert!(tokens["access_token"].is_string());
    assert!(tokens["refresh_token"].is_string());
    assert_eq!(docs.hits("/client.json"), 1);
    assert_eq!(docs.connections(), 1);
}

#[tokio::test]
async fn metadata_advertises_documents_when_enabled() {
    for enabled in [true, false] {
        let a = As::new(CimdConfig {
            enabled,
            ..test_config()
        })
        .await;
        let req = Request::get("/.well-known/oauth-authorization-server")
            .body(Body::empty())
            .unwrap();
        let (_, _, body) = a.call(req).await;
        let m: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(m["client_id_metadata_document_supported"], enabled);
    }
}

#[tokio::test]
async fn a_disabled_server_does_not_fetch_url_client_ids() {
    let docs = DocServer::start().await;
    let id = docs.url("/client.json");
    docs.set("/client.json", Reply::json(&document(&id)));
    let a = As::new(CimdConfig {
        enabled: false,
        ..test_config()
    })
    .await;
    let (status, _, body) = a.authorize(&id, REDIRECT).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("unknown client_id"), "{body}");
    assert_eq!(docs.connections(), 0);
}

#[tokio::test]
async fn the_token_endpoint_fetches_a_document_it_has_not_seen() {
    let docs = DocServer::start().await;
    let id = docs.url("/client.json");
    docs.set("/client.json", Reply::json(&document(&id)));
    let a = As::new(test_config()).await;
    // Revocation authenticates the client like the token endpoint does.
    let (status, body) = a
        .post("/revoke", &[("client_id", &id), ("token", "not-a-token")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(docs.hits("/client.json"), 1);

    // A client id whose document is refused is an invalid client.
    let other = docs.url("/other.json");
    docs.set("/other.json", Reply::json(&document(&id)));
    let (status, body) = a
        .post(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &other),
                ("code", "x"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn a_client_id_mismatch_is_refused_and_not_cached() {
    let docs = DocServer::start().await;
    let id = docs.url("/client.json");
    docs.set(
        "/client.json",
        Reply::json(&document("https://app.example.com/client.json")),
    );
    let a = As::new(test_config()).await;
    for attempt in 1..=2 {
        let (status, location, body) = a.authorize(&id, REDIRECT).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(location, None, "never redirect for an unverified client");
        assert!(body.contains("client_id is not its URL"), "{body}");
        // Draft §4.4: invalid documents are not cached, so each attempt fetches.
        assert_eq!(docs.hits("/client.json"), attempt);
    }
    let cached = a
        .store
        .get_client("default", &id, unix_now())
        .await
        .unwrap();
    assert_eq!(cached, None);
}

#[tokio::test]
async fn a_redirect_uri_missing_from_the_document_is_refused() {
    let docs = DocServer::start().await;
    let id = docs.url("/client.json");
    docs.set("/client.json", Reply::json(&document(&id)));
    let a = As::new(test_config()).await;
    let (status, location, body) = a.authorize(&id, "https://evil.example/callback").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(location, None);
    assert!(body.contains("redirect_uri is not registered"), "{body}");
}

#[tokio::test]
async fn an_oversized_document_is_refused_with_or_without_a_length() {
    let docs = DocServer::start().await;
    let id = docs.url("/big.json");
    let mut big = document(&id);
    big["padding"] = json!("x".repeat(17 * 1024));
    docs.set("/big.json", Reply::json(&big));
    let unsized_id = docs.url("/unsized.json");
    let mut big2 = document(&unsized_id);
    big2["padding"] = json!("x".repeat(17 * 1024));
    docs.set(
        "/unsized.json",
        Reply::Unsized(serde_json::to_vec(&big2).unwrap()),
    );
    let a = As::new(test_config()).await;
    for id in [&id, &unsized_id] {
        let (status, _, body) = a.authorize(id, REDIRECT).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{id}");
        assert!(body.contains("larger than 16384 bytes"), "{body}");
    }
    // Just under the limit is fine, even without a length.
    let ok_id = docs.url("/fits.json");
    let mut fits = document(&ok_id);
    let room = 16 * 1024 - serde_json::to_vec(&fits).unwrap().len() - r#","padding":"""#.len();
    fits["padding"] = json!("x".repeat(room));
    assert_eq!(serde_json::to_vec(&fits).unwrap().len(), 16 * 1024);
    docs.set(
        "/fits.json",
        Reply::Unsized(serde_json::to_vec(&fits).unwrap()),
    );
    let (status, _, body) = a.authorize(&ok_id, REDIRECT).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
}

#[tokio::test]
async fn a_redirect_is_refused_and_not_followed() {
    let docs = DocServer::start().await;
    let id = docs.url("/moved");
    docs.set(
        "/moved",
        Reply::Full {
            status: 302,
            headers: vec![("Location", docs.url("/client.json"))],
            body: Vec::new(),
        },
    );
    docs.set("/client.json", Reply::json(&document(&id)));
    let a = As::new(test_config()).await;
    let (status, _, body) = a.authorize(&id, REDIRECT).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not followed"), "{body}");
    assert_eq!(docs.hits("/moved"), 1);
    assert_eq!(docs.hits("/client.json"), 0);
}

#[tokio::test]
async fn a_slow_server_is_abandoned_at_the_timeout() {
    let docs = DocServer::start().await;
    docs.set("/silent.json", Reply::Silent(Duration::from_secs(10)));
    docs.set("/stall.json", Reply::StallBody(Duration::from_secs(10)));
    let a = As::new(test_config()).await;
    for path in ["/silent.json", "/stall.json"] {
        let started = Instant::now();
        let (status, _, body) = a.authorize(&docs.url(path), REDIRECT).await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(body.contains("not served in time"), "{path}: {body}");
        assert!(took < Duration::from_secs(3), "{path} took {took:?}");
        assert_eq!(docs.hits(path), 1);
    }
}

#[tokio::test]
async fn loopback_urls_are_refused_without_connecting() {
    let docs = DocServer::start().await;
    let port = docs.addr.port();
    let ids = [
        format!("http://127.0.0.1:{port}/client.json"),
        // A name, so the check happens in the resolver.
        format!("http://localhost:{port}/client.json"),
        format!("http://[::ffff:127.0.0.1]:{port}/client.json"),
        format!("http://[::1]:{port}/client.json"),
        // 2130706433 is 127.0.0.1 written as one number.
        format!("http://2130706433:{port}/client.json"),
    ];
    for id in &ids {
        docs.set("/client.json", Reply::json(&document(id)));
    }
    let strict = CimdConfig {
        allow_private_addresses: false,
        ..test_config()
    };
    let a = As::new(strict.clone()).await;
    for id in &ids {
        let (status, _, body) = a.authorize(id, REDIRECT).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{id}");
        assert!(body.contains("non-public network address"), "{id}: {body}");
    }
    let fetcher = DocumentFetcher::new(strict);
    for id in &ids {
        match fetcher.fetch_document(id).await {
            Err(CimdError::NonPublicAddress { addr, .. }) => assert!(
                addr.is_loopback() || addr.to_canonical().is_loopback(),
                "{id}: {addr}"
            ),
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(docs.connections(), 0);
}

#[tokio::test]
async fn refusals_name_the_rule_that_was_broken() {
    type Case = (&'static str, fn(&str) -> Reply, fn(&CimdError) -> bool);
    let cases: [Case; 8] = [
        (
            "/404",
            |_| Reply::Full {
                status: 404,
                headers: vec![],
                body: vec![],
            },
            |e| matches!(e, CimdError::Status(404)),
        ),
        (
            "/html",
            |_| Reply::Full {
                status: 200,
                headers: vec![("Content-Type", "text/html".into())],
                body: b"<html></html>".to_vec(),
            },
            |e| matches!(e, CimdError::NotJson(Some(ct)) if ct == "text/html"),
        ),
        (
            "/secret",
            |id| {
                let mut d = document(id);
                d["client_secret"] = json!("s3cret");
                Reply::json(&d)
            },
            |e| matches!(e, CimdError::SecretField("client_secret")),
        ),
        (
            "/basic",
            |id| {
                let mut d = document(id);
                d["token_endpoint_auth_method"] = json!("client_secret_basic");
                Reply::json(&d)
            },
            |e| matches!(e, CimdError::AuthMethod(m) if m == "client_secret_basic"),
        ),
        (
            "/mismatch",
            |_| Reply::json(&document("https://other.example/c")),
            |e| {
                matches!(e, CimdError::ClientIdMismatch { found: Some(f) }
                    if f == "https://other.example/c")
            },
        ),
        (
            "/redirect",
            |_| Reply::Full {
                status: 307,
                headers: vec![("Location", "http://169.254.169.254/latest".into())],
                body: vec![],
            },
            |e| {
                matches!(e, CimdError::Redirect { status: 307, location: Some(l) }
                    if l.contains("169.254"))
            },
        ),
        (
            "/silent",
            |_| Reply::Silent(Duration::from_secs(5)),
            |e| matches!(e, CimdError::Timeout(_)),
        ),
        (
            "/notjson",
            |_| Reply::Unsized(b"{oops".to_vec()),
            |e| matches!(e, CimdError::Malformed { body, .. } if body == "{oops"),
        ),
    ];
    let docs = DocServer::start().await;
    let fetcher = DocumentFetcher::new(test_config());
    for (path, reply, expected) in cases {
        let id = docs.url(path);
        docs.set(path, reply(&id));
        let e = fetcher.fetch_document(&id).await.unwrap_err();
        assert!(expected(&e), "{path}: {e:?}");
        assert!(
            fetcher
                .resolve(&MemoryStore::new(), "default", &id, unix_now())
                .await
                .is_err()
        );
    }
    // URL rules are checked before any connection.
    let before = docs.connections();
    for (id, expected) in [
        (format!("{}#frag", docs.url("/c")), "Fragment"),
        (docs.url("/a/../c"), "DotSegment"),
        (docs.url("/"), "NoPath"),
        (format!("ftp://{}/c", docs.addr), "NotHttps"),
    ] {
        let e = fetcher.fetch_document(&id).await.unwrap_err();
        assert!(format!("{e:?}").starts_with(expected), "{id}: {e:?}");
    }
    assert_eq!(docs.connections(), before);
}

#[tokio::test]
async fn http_client_ids_are_refused_unless_allowed() {
    let docs = DocServer::start().await;
    let id = docs.url("/client.json");
    docs.set("/client.json", Reply::json(&document(&id)));
    let a = As::new(CimdConfig {
        allow_http: false,
        ..test_config()
    })
    .await;
    let (status, _, body) = a.authorize(&id, REDIRECT).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Not a document URL at all without allow_http: an unknown client.
    assert!(body.contains("unknown client_id"), "{body}");
    let fetcher = DocumentFetcher::new(CimdConfig {
        allow_http: false,
        ..test_config()
    });
    assert!(matches!(
        fetcher.fetch_document(&id).await,
        Err(CimdError::NotHttps)
    ));
    assert_eq!(docs.connections(), 0);
}

#[tokio::test]
async fn a_stale_document_is_fetched_again() {
    let docs = DocServer::start().await;
    let id = docs.url("/client.json");
    docs.set(
        "/client.json",
        Reply::json_with(&document(&id), &[("Cache-Control", "no-store")]),
    );
    let a = As::new(test_config()).await;
    let (status, _, _) = a.authorize(&id, REDIRECT).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let now = unix_now();
    let mut row = a
        .store
        .get_client("default", &id, now)
        .await
        .unwrap()
        .unwrap();
    // no-store: kept only for the configured minimum.
    assert!(row.expires_at.unwrap() <= now + 10);

    // Age the cached row past its expiry; the next request fetches the new document.
    row.expires_at = Some(now - 1);
    a.store.put_client(&row).await.unwrap();
    let mut changed = document(&id);
    changed["redirect_uris"] = json!(["https://app.example.com/new-callback"]);
    docs.set("/client.json", Reply::json(&changed));
    let (status, _, body) = a.authorize(&id, REDIRECT).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the old redirect URI is gone"
    );
    assert!(body.contains("redirect_uri is not registered"), "{body}");
    assert_eq!(docs.hits("/client.json"), 2);
}

#[tokio::test]
async fn private_key_jwt_keys_are_fetched_from_jwks_uri() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(pkcs8.as_ref())
    );
    let key = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();

    let docs = DocServer::start().await;
    let id = docs.url("/client.json");
    docs.set(
        "/client.json",
        Reply::json(&json!({
            "client_id": id,
            "client_name": "Backend",
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": docs.url("/jwks.json"),
        })),
    );
    docs.set(
        "/jwks.json",
        Reply::json_with(&jwks, &[("Content-Type", "application/jwk-set+json")]),
    );
    let a = As::new(test_config()).await;

    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let now = unix_now();
    let assertion = jsonwebtoken::encode(
        &header,
        &json!({"iss": id, "sub": id, "aud": format!("{ISSUER}/token"), "exp": now + 60, "iat": now, "jti": "j1"}),
        &key,
    )
    .unwrap();
    let (status, body) = a
        .post(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].is_string());
    assert_eq!(docs.hits("/client.json"), 1);
    assert_eq!(docs.hits("/jwks.json"), 1);

    // The same assertion again (RFC 7523 §3: single use), even from several requests at
    // once: refused every time.
    let again = |assertion: String| {
        let a = &a;
        let id = id.clone();
        async move {
            a.post(
                "/token",
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &id),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ],
            )
            .await
        }
    };
    let (r1, r2) = tokio::join!(again(assertion.clone()), again(assertion.clone()));
    for (status, body) in [r1, r2] {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"], "invalid_client");
    }
    // A new assertion sent twice at the same moment: exactly one of the two passes.
    let second = jsonwebtoken::encode(
        &header,
        &json!({"iss": id, "sub": id, "aud": format!("{ISSUER}/token"), "exp": now + 60, "iat": now, "jti": "j2"}),
        &key,
    )
    .unwrap();
    let (r1, r2) = tokio::join!(again(second.clone()), again(second));
    let passed = [&r1, &r2]
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!(passed, 1, "{r1:?} {r2:?}");

    // Without the assertion the client is refused: it registered a key, not "none".
    let (status, body) = a
        .post(
            "/token",
            &[("grant_type", "client_credentials"), ("client_id", &id)],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
}
