//! The resource layer with DPoP (RFC 9449 §7): a bound token (`cnf.jkt`) is accepted only
//! with the `DPoP` scheme and a fresh proof of its key for this request; everything else gets
//! the right challenge. Tokens come from a custom verifier, so only the DPoP checks differ.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::{HeaderMap, Request, StatusCode, header};
use mcp_auth_resource::dpop::DpopOptions;
use mcp_auth_resource::{
    Authenticated, Claims, ManualClock, ProtectedLayer, ResourceConfig, ResourceServer,
    TokenVerifier, Verifier, VerifyError,
};
use mcp_auth_types::dpop::DpopKey;
use mcp_auth_types::{Issuer, ResourceUrl, parse_www_authenticate};
use serde_json::json;
use tower::ServiceExt as _;

const RESOURCE: &str = "https://mcp.example.com/mcp";
const NOW: u64 = 1_700_000_000;

/// `bound-…` tokens are bound to the thumbprint after the dash; `plain` is a bearer token.
struct Tokens;

#[async_trait::async_trait]
impl TokenVerifier for Tokens {
    async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let mut extra = serde_json::Map::new();
        if let Some(jkt) = token.strip_prefix("bound-") {
            extra.insert("cnf".into(), json!({"jkt": jkt}));
        } else if token != "plain" {
            return Err(VerifyError::Rejected("unknown".into()));
        }
        Ok(Claims {
            subject: "alice".into(),
            client_id: Some("c".into()),
            scopes: "mcp:read".parse().unwrap(),
            issuer: "https://as.example.com".into(),
            audience: vec![RESOURCE.into()],
            expires_at: None,
            jti: None,
            extra,
        })
    }
}

async fn whoami(auth: Authenticated) -> String {
    auth.subject.clone()
}

fn app(opts: DpopOptions) -> (Router, Arc<ManualClock>) {
    app_mounted(opts, false)
}

/// `/mcp` behind the layer, or with its handler wrapped by `ProtectedLayer::protect`.
fn app_mounted(opts: DpopOptions, wrapped: bool) -> (Router, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(NOW));
    let mut config = ResourceConfig::new(
        ResourceUrl::parse_exact(RESOURCE).unwrap(),
        vec![Issuer::parse("https://as.example.com").unwrap()],
        Verifier::Custom(Arc::new(Tokens)),
    );
    config.dpop = Some(opts);
    let server = ResourceServer::with_clock(config, clock.clone()).unwrap();
    let layer = ProtectedLayer::new(server.clone()).require_scopes(["mcp:read"]);
    let mcp = if wrapped {
        post(layer.protect(whoami))
    } else {
        post(whoami).layer(layer)
    };
    let app = Router::new()
        .route("/mcp", mcp)
        .merge(server.metadata_router());
    (app, clock)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
}

impl Reply {
    /// The error of the challenge with this scheme.
    fn error(&self, scheme: &str) -> Option<String> {
        self.headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .flat_map(|v| parse_www_authenticate(v.to_str().unwrap()).unwrap())
            .find(|c| c.is_scheme(scheme))
            .and_then(|c| c.error().map(str::to_owned))
    }

    fn schemes(&self) -> Vec<String> {
        self.headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap().split(' ').next().unwrap().to_owned())
            .collect()
    }
}

async fn call(app: &Router, method: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri("/mcp");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
    }
}

#[tokio::test]
async fn a_bound_token_needs_a_fresh_proof_of_its_key() {
    bound_token_battery(false).await;
}

#[tokio::test]
async fn a_wrapped_handler_needs_the_same_proofs() {
    bound_token_battery(true).await;
}

async fn bound_token_battery(wrapped: bool) {
    let (app, _) = app_mounted(DpopOptions::default(), wrapped);
    let key = DpopKey::generate().unwrap();
    let token = format!("bound-{}", key.thumbprint());
    let auth = format!("DPoP {token}");

    // No token: both challenges, no error.
    let r = call(&app, "POST", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.schemes(), ["Bearer", "DPoP"]);
    assert_eq!(r.error("Bearer"), None);

    // A good proof.
    let proof = key
        .proof("POST", RESOURCE, Some(&token), None, NOW)
        .unwrap();
    let ok = call(&app, "POST", &[("authorization", &auth), ("dpop", &proof)]).await;
    assert_eq!(ok.status, StatusCode::OK);
    // The same proof again: a replay.
    let r = call(&app, "POST", &[("authorization", &auth), ("dpop", &proof)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error("DPoP").as_deref(), Some("invalid_dpop_proof"));
    assert_eq!(
        r.error("Bearer"),
        None,
        "the error goes on the DPoP challenge"
    );

    // The token used as a bearer token, or with no proof, or another key's proof.
    let r = call(
        &app,
        "POST",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(r.error("Bearer").as_deref(), Some("invalid_token"));
    let r = call(&app, "POST", &[("authorization", &auth)]).await;
    assert_eq!(r.error("DPoP").as_deref(), Some("invalid_dpop_proof"));
    let thief = DpopKey::generate().unwrap();
    let p = thief
        .proof("POST", RESOURCE, Some(&token), None, NOW)
        .unwrap();
    let r = call(&app, "POST", &[("authorization", &auth), ("dpop", &p)]).await;
    assert_eq!(r.error("DPoP").as_deref(), Some("invalid_token"));

    // A proof for another method, another URL, another token, or too old.
    for p in [
        key.proof("GET", RESOURCE, Some(&token), None, NOW).unwrap(),
        key.proof(
            "POST",
            "https://mcp.example.com/other",
            Some(&token),
            None,
            NOW,
        )
        .unwrap(),
        key.proof("POST", RESOURCE, Some("plain"), None, NOW)
            .unwrap(),
        key.proof("POST", RESOURCE, Some(&token), None, NOW - 600)
            .unwrap(),
    ] {
        let r = call(&app, "POST", &[("authorization", &auth), ("dpop", &p)]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.error("DPoP").as_deref(), Some("invalid_dpop_proof"));
    }
    // Two proofs at once.
    let p1 = key
        .proof("POST", RESOURCE, Some(&token), None, NOW)
        .unwrap();
    let p2 = key
        .proof("POST", RESOURCE, Some(&token), None, NOW)
        .unwrap();
    let r = call(
        &app,
        "POST",
        &[("authorization", &auth), ("dpop", &p1), ("dpop", &p2)],
    )
    .await;
    assert_eq!(r.error("DPoP").as_deref(), Some("invalid_dpop_proof"));

    // An unbound token with the DPoP scheme is refused; as a bearer token it is fine here.
    let p = key
        .proof("POST", RESOURCE, Some("plain"), None, NOW)
        .unwrap();
    let r = call(
        &app,
        "POST",
        &[("authorization", "DPoP plain"), ("dpop", &p)],
    )
    .await;
    assert_eq!(r.error("DPoP").as_deref(), Some("invalid_token"));
    let r = call(&app, "POST", &[("authorization", "Bearer plain")]).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn nonces_and_the_required_mode() {
    let (app, clock) = app(DpopOptions {
        require_nonce: true,
        required: true,
        ..DpopOptions::default()
    });
    let key = DpopKey::generate().unwrap();
    let token = format!("bound-{}", key.thumbprint());
    let auth = format!("DPoP {token}");

    let p = key
        .proof("POST", RESOURCE, Some(&token), None, NOW)
        .unwrap();
    let r = call(&app, "POST", &[("authorization", &auth), ("dpop", &p)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error("DPoP").as_deref(), Some("use_dpop_nonce"));
    let nonce = r.headers["dpop-nonce"].to_str().unwrap().to_owned();
    let p = key
        .proof("POST", RESOURCE, Some(&token), Some(&nonce), NOW)
        .unwrap();
    let r = call(&app, "POST", &[("authorization", &auth), ("dpop", &p)]).await;
    assert_eq!(r.status, StatusCode::OK);

    // Two periods later the nonce is stale.
    clock.advance(Duration::from_secs(240));
    let now = NOW + 240;
    let p = key
        .proof("POST", RESOURCE, Some(&token), Some(&nonce), now)
        .unwrap();
    let r = call(&app, "POST", &[("authorization", &auth), ("dpop", &p)]).await;
    assert_eq!(r.error("DPoP").as_deref(), Some("use_dpop_nonce"));
    assert_ne!(r.headers["dpop-nonce"].to_str().unwrap(), nonce);

    // Required: an unbound bearer token is refused.
    let r = call(&app, "POST", &[("authorization", "Bearer plain")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error("Bearer").as_deref(), Some("invalid_token"));
}

#[tokio::test]
async fn the_metadata_says_dpop() {
    let (app, _) = app(DpopOptions {
        required: true,
        ..DpopOptions::default()
    });
    let resp = app
        .oneshot(
            Request::get("/.well-known/oauth-protected-resource/mcp")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        doc["dpop_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("ES256"))
    );
    assert_eq!(doc["dpop_bound_access_tokens_required"], true);
}
