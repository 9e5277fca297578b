//! DPoP (RFC 9449) at the token endpoint: a proof binds the access token to the client's key
//! (`cnf.jkt`, `token_type: DPoP`); a proof is accepted once, also across two instances that
//! share one store; without DPoP configured the header is ignored and tokens are bearer
//! tokens.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_auth_resource::dpop::DpopOptions;
use mcp_auth_server::ratelimit::RateLimits;
use mcp_auth_server::store::{MemoryStore, Store};
use mcp_auth_server::{AuthorizationServer, ServerConfig};
use mcp_auth_types::dpop::DpopKey;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ISSUER: &str = "https://as.example.com";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn instance(store: Arc<dyn Store>, dpop: bool) -> axum::Router {
    let mut config = ServerConfig::new(ISSUER);
    config.rate_limits = RateLimits::off();
    if dpop {
        config.dpop = Some(DpopOptions::default());
    }
    AuthorizationServer::new(config, store)
        .await
        .unwrap()
        .router()
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A confidential client for the client credentials grant; (id, secret).
async fn client(app: &axum::Router) -> (String, String) {
    let req = Request::post("/register")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"client_name": "machine", "grant_types": ["client_credentials"],
                   "token_endpoint_auth_method": "client_secret_post"})
            .to_string(),
        ))
        .unwrap();
    let (status, reg) = send(app, req).await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    (
        reg["client_id"].as_str().unwrap().to_owned(),
        reg["client_secret"].as_str().unwrap().to_owned(),
    )
}

fn token_request(id: &str, secret: &str, proof: Option<&str>) -> Request<Body> {
    let form = serde_urlencoded::to_string([
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("client_secret", secret),
    ])
    .unwrap();
    let mut req =
        Request::post("/token").header("content-type", "application/x-www-form-urlencoded");
    if let Some(p) = proof {
        req = req.header("dpop", p);
    }
    req.body(Body::from(form)).unwrap()
}

fn claims(jwt: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_proof_binds_the_token_and_is_good_once_across_instances() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = instance(store.clone(), true).await;
    let b = instance(store, true).await;
    let (id, secret) = client(&a).await;
    let key = DpopKey::generate().unwrap();
    let token_url = format!("{ISSUER}/token");

    let proof = key.proof("POST", &token_url, None, None, now()).unwrap();
    let (status, body) = send(&a, token_request(&id, &secret, Some(&proof))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let at = claims(body["access_token"].as_str().unwrap());
    assert_eq!(at["cnf"]["jkt"], key.thumbprint());

    // The same proof at the other instance (and at the first again): a replay.
    for app in [&b, &a] {
        let (status, body) = send(app, token_request(&id, &secret, Some(&proof))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_dpop_proof");
    }

    // A proof for another URL, or a malformed one.
    let wrong = key
        .proof("POST", "https://as.example.com/other", None, None, now())
        .unwrap();
    for p in [wrong.as_str(), "not.a.proof"] {
        let (status, body) = send(&b, token_request(&id, &secret, Some(p))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_dpop_proof");
    }

    // No proof: a bearer token, no cnf.
    let (status, body) = send(&b, token_request(&id, &secret, None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        claims(body["access_token"].as_str().unwrap())
            .get("cnf")
            .is_none()
    );

    // The metadata says so.
    let (_, meta) = send(
        &a,
        Request::get("/.well-known/oauth-authorization-server")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(
        meta["dpop_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("ES256"))
    );
}

#[tokio::test]
async fn without_dpop_configured_the_header_is_ignored() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let app = instance(store, false).await;
    let (id, secret) = client(&app).await;
    let key = DpopKey::generate().unwrap();
    let proof = key
        .proof("POST", &format!("{ISSUER}/token"), None, None, now())
        .unwrap();
    let (status, body) = send(&app, token_request(&id, &secret, Some(&proof))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let (_, meta) = send(
        &app,
        Request::get("/.well-known/oauth-authorization-server")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(meta.get("dpop_signing_alg_values_supported").is_none());
}
