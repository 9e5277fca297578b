//! Several `mcp-auth serve` instances as one authorization server: two real processes on
//! different loopback ports, with the same `--issuer` (the public URL a load balancer would
//! give them), over one real Redis and, again, over one real PostgreSQL (`scripts/services`
//! starts both; `MCP_AUTH_TEST_REDIS_URL` and `MCP_AUTH_TEST_POSTGRES_URL` say where). Each
//! test has its own key prefix (Redis) or schema (PostgreSQL), so tests never share rows.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{ServeProcess, free_port, http};
use mcp_auth_types::PkceVerifier;
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use tokio::process::Command;

/// The public issuer both instances share. Never contacted: requests go to each instance's
/// own port, as a load balancer would send them.
const ISSUER: &str = "http://127.0.0.1:1";
const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn redis_url() -> String {
    std::env::var("MCP_AUTH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/15".into())
}

fn postgres_url() -> String {
    std::env::var("MCP_AUTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://mcp_auth:mcp_auth@127.0.0.1:5432/mcp_auth_test".into())
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}_{}_{nanos:08x}", std::process::id())
}

/// A fresh namespace of a backend: its `--store` URL, and what to remove after the test.
struct Namespace {
    store: String,
    backend: &'static str,
    name: String,
}

impl Namespace {
    fn new(backend: &str) -> Self {
        match backend {
            "redis" => {
                let name = format!("mcp-auth-test:{}:", unique("so"));
                Self {
                    store: format!("{}?prefix={name}", redis_url()),
                    backend: "redis",
                    name,
                }
            }
            "postgres" => {
                let name = unique("so");
                Self {
                    store: format!("{}?schema={name}", postgres_url()),
                    backend: "postgres",
                    name,
                }
            }
            other => panic!("unknown backend {other}"),
        }
    }

    /// Removes the test's rows (a failed test leaves them, to look at).
    async fn remove(self) {
        if self.backend == "redis" {
            let mut conn = ::redis::Client::open(redis_url().as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{}*", self.name))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if !keys.is_empty() {
                    ::redis::cmd("UNLINK")
                        .arg(&keys)
                        .query_async::<i64>(&mut conn)
                        .await
                        .unwrap();
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        } else {
            let (client, conn) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
                .await
                .unwrap();
        }
    }
}

/// One instance behind the (imaginary) load balancer.
type Instance = ServeProcess;

/// An instance over `store` with the shared issuer.
async fn instance(store: &str) -> Instance {
    ServeProcess::start(
        &["--dev-auto-approve", "--issuer", ISSUER, "--store", store],
        None,
    )
    .await
}

async fn register(s: &Instance, auth_method: &str) -> Value {
    let r = http()
        .post(s.url("/register"))
        .json(&json!({
            "client_name": "scale-out test",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": auth_method,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

async fn code(s: &Instance, client_id: &str, verifier: &PkceVerifier) -> String {
    let ch = verifier.challenge();
    let r = http()
        .get(s.url("/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", ch.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "s1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let loc = r.headers()[header::LOCATION].to_str().unwrap();
    let q: HashMap<String, String> = url::Url::parse(loc)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q.get("iss").map(String::as_str), Some(ISSUER));
    q["code"].clone()
}

async fn token(s: &Instance, client: &Client, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = client
        .post(s.url("/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn exchange(
    s: &Instance,
    client_id: &str,
    code: &str,
    verifier: &str,
) -> (StatusCode, Value) {
    token(
        s,
        &http(),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn refresh(s: &Instance, client_id: &str, rt: &str) -> (StatusCode, Value) {
    token(
        s,
        &http(),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", rt),
        ],
    )
    .await
}

async fn introspect(s: &Instance, tok: &str, id: &str, secret: &str) -> Value {
    let r = http()
        .post(s.url("/introspect"))
        .basic_auth(id, Some(secret))
        .form(&[("token", tok)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[track_caller]
fn assert_invalid_grant(got: &(StatusCode, Value)) {
    assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.1);
    assert_eq!(got.1["error"], "invalid_grant", "{}", got.1);
}

/// A confidential client (so it can introspect): `(id, secret)`.
async fn confidential(s: &Instance) -> (String, String) {
    let c = register(s, "client_secret_basic").await;
    (
        c["client_id"].as_str().unwrap().into(),
        c["client_secret"].as_str().unwrap().into(),
    )
}

async fn exchange_confidential(
    s: &Instance,
    id: &str,
    secret: &str,
    code: &str,
    verifier: &str,
) -> (StatusCode, Value) {
    let r = http()
        .post(s.url("/token"))
        .basic_auth(id, Some(secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// Authorize on A, redeem on B; the code then fails on A (and its replay revokes what it
/// issued, on both); a code redeemed on A fails on B.
async fn a_flow_crosses_instances(store: &str) {
    let (a, b) = (instance(store).await, instance(store).await);
    let (id, secret) = confidential(&a).await;

    let v = PkceVerifier::generate();
    let c = code(&a, &id, &v).await;
    let (status, t) = exchange_confidential(&b, &id, &secret, &c, v.secret()).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(introspect(&a, at, &id, &secret).await["active"], true);
    let again = exchange_confidential(&a, &id, &secret, &c, v.secret()).await;
    assert_invalid_grant(&again);
    // RFC 6749 §4.1.2: the replay revoked what the code issued, everywhere.
    assert_eq!(introspect(&a, at, &id, &secret).await["active"], false);
    assert_eq!(introspect(&b, at, &id, &secret).await["active"], false);
    let rt = t["refresh_token"].as_str().unwrap();
    assert_eq!(introspect(&b, rt, &id, &secret).await["active"], false);

    let v2 = PkceVerifier::generate();
    let c2 = code(&b, &id, &v2).await;
    let first = exchange_confidential(&a, &id, &secret, &c2, v2.secret()).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_invalid_grant(&exchange_confidential(&b, &id, &secret, &c2, v2.secret()).await);
}

/// Refresh on A, replay the old token on B: the family is revoked on both.
async fn refresh_reuse_revokes_everywhere(store: &str) {
    let (a, b) = (instance(store).await, instance(store).await);
    let id = register(&a, "none").await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = PkceVerifier::generate();
    let c = code(&b, &id, &v).await;
    let (status, t) = exchange(&a, &id, &c, v.secret()).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let rt1 = t["refresh_token"].as_str().unwrap().to_owned();

    let (status, t2) = refresh(&a, &id, &rt1).await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    let rt2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2);
    assert_invalid_grant(&refresh(&b, &id, &rt1).await);
    // The newest token of the family went with it, on either instance.
    assert_invalid_grant(&refresh(&a, &id, &rt2).await);
    assert_invalid_grant(&refresh(&b, &id, &rt2).await);
}

/// A token revoked on B is inactive at A's introspection at once; both publish one JWKS and
/// accept each other's access tokens at `/mcp`.
async fn revocation_and_keys_are_shared(store: &str) {
    let (a, b) = (instance(store).await, instance(store).await);
    let jwks_a: Value = http()
        .get(a.url("/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks_b: Value = http()
        .get(b.url("/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks_a, jwks_b);
    assert_eq!(jwks_a["keys"].as_array().map(Vec::len), Some(1), "{jwks_a}");

    let (id, secret) = confidential(&a).await;
    let v = PkceVerifier::generate();
    let c = code(&a, &id, &v).await;
    let (status, t) = exchange_confidential(&a, &id, &secret, &c, v.secret()).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let at = t["access_token"].as_str().unwrap();

    // A's token works at B's MCP endpoint (B verifies A's signature with the shared keys).
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "whoami", "arguments": {}}});
    let r = http()
        .post(b.url("/mcp"))
        .bearer_auth(at)
        .header(header::ACCEPT, "application/json, text/event-stream")
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let r = http()
        .post(b.url("/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", at)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(introspect(&a, at, &id, &secret).await["active"], false);
    let rt = t["refresh_token"].as_str().unwrap();
    let r = http()
        .post(a.url("/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", rt)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(introspect(&b, rt, &id, &secret).await["active"], false);
}

/// 64 concurrent redemptions of one code, half on each instance: exactly one succeeds. 64
/// concurrent refreshes of one refresh token: exactly one new token; the others are refused,
/// and since they presented a rotated token, the family (the winner's new token included)
/// is revoked, as RFC 9700 §4.14.2 asks: nothing half-written, no second live chain.
async fn races_across_instances_have_one_winner(store: &str) {
    let (a, b) = (
        Arc::new(instance(store).await),
        Arc::new(instance(store).await),
    );
    let (id, secret) = confidential(&a).await;
    let v = PkceVerifier::generate();
    let c = code(&a, &id, &v).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (id, secret, c, v) = (id.clone(), secret.clone(), c.clone(), v.secret().to_owned());
        tasks.spawn(async move { exchange_confidential(&s, &id, &secret, &c, &v).await });
    }
    let mut won = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        match r.0 {
            StatusCode::OK => won.push(r.1),
            _ => assert_invalid_grant(&r),
        }
    }
    assert_eq!(won.len(), 1, "exactly one redemption wins");

    // A fresh grant for the refresh race.
    let v = PkceVerifier::generate();
    let c = code(&b, &id, &v).await;
    let (status, t) = exchange_confidential(&b, &id, &secret, &c, v.secret()).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let rt = t["refresh_token"].as_str().unwrap().to_owned();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (id, secret, rt) = (id.clone(), secret.clone(), rt.clone());
        tasks.spawn(async move {
            let r = http()
                .post(s.url("/token"))
                .basic_auth(&id, Some(&secret))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)])
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        });
    }
    let mut new_tokens = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        match r.0 {
            StatusCode::OK => new_tokens.push(r.1["refresh_token"].as_str().unwrap().to_owned()),
            _ => assert_invalid_grant(&r),
        }
    }
    assert_eq!(new_tokens.len(), 1, "exactly one rotation wins");
    for s in [&a, &b] {
        assert_eq!(
            introspect(s, &new_tokens[0], &id, &secret).await["active"],
            false,
            "the reuse revoked the family, the winner's token included"
        );
        assert_eq!(introspect(s, &rt, &id, &secret).await["active"], false);
    }
}

macro_rules! backend_tests {
    ($backend:ident) => {
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_flow_crosses_instances() {
                let ns = super::Namespace::new(stringify!($backend));
                super::a_flow_crosses_instances(&ns.store).await;
                ns.remove().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn refresh_reuse_revokes_everywhere() {
                let ns = super::Namespace::new(stringify!($backend));
                super::refresh_reuse_revokes_everywhere(&ns.store).await;
                ns.remove().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn revocation_and_keys_are_shared() {
                let ns = super::Namespace::new(stringify!($backend));
                super::revocation_and_keys_are_shared(&ns.store).await;
                ns.remove().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn races_across_instances_have_one_winner() {
                let ns = super::Namespace::new(stringify!($backend));
                super::races_across_instances_have_one_winner(&ns.store).await;
                ns.remove().await;
            }
        }
    };
}

backend_tests!(redis);
backend_tests!(postgres);

/// A store URL naming an unreachable service: `serve` refuses to start, with a message that
/// names the store and not its password.
#[tokio::test]
async fn unreachable_store_refuses_to_start() {
    let port = free_port();
    for url in [
        format!("redis://:hunter2@127.0.0.1:{port}/0"),
        format!("postgres://mcp_auth:hunter2@127.0.0.1:{port}/x"),
    ] {
        let home = tempfile::tempdir().unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(env!("CARGO_BIN_EXE_mcp-auth"))
                .env("MCP_AUTH_HOME", home.path())
                .args(["serve", "--listen", "127.0.0.1:0", "--store", &url])
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .expect("serve gives up within 60 s")
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {err}");
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(!err.contains("hunter2"), "the password leaked: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
