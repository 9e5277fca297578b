//! `[[trusted_issuer]]` in `server.toml`, end to end: `mcp-auth serve` trusts a fake
//! workload identity platform (on 127.0.0.1:0, keys found by OpenID discovery), a public
//! client registers for the jwt-bearer grant, trades a platform token for an access token,
//! and the protected MCP endpoint accepts it.

mod common;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Json;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{ServeProcess, free_port, http};
use reqwest::header;
use serde_json::{Value, json};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Serves `/.well-known/openid-configuration` and `/keys` for the issuer it returns.
async fn platform(pair: &EcdsaKeyPair) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let p = pair.public_key().as_ref();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ci-1", "use": "sig",
                                "x": b64(&p[1..33]), "y": b64(&p[33..])}]});
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route("/keys", get(move || async move { Json(jwks) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

fn sign(pair: &EcdsaKeyPair, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"ES256","kid":"ci-1"}"#),
        b64(&serde_json::to_vec(claims).unwrap())
    );
    let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", b64(sig.as_ref()))
}

#[tokio::test]
async fn a_workload_token_from_a_trusted_issuer_reaches_the_mcp_endpoint() {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let platform = platform(&pair).await;
    let toml = format!(
        r#"
        [[trusted_issuer]]
        id = "ci"
        kind = "workload"
        issuer = "{platform}"
        allowed_subjects = ["repo:acme/*:ref:refs/heads/main"]
        required_claims = {{ repository_owner = "acme" }}
        allow_http = true
        "#
    );
    let serve = ServeProcess::start_with(&[], Some(&toml), &[], free_port()).await;
    let meta: Value = http()
        .get(serve.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(GRANT)),
        "{meta}"
    );
    let reg: Value = http()
        .post(serve.url("/register"))
        .json(&json!({"client_name": "deploy-bot", "grant_types": [GRANT],
                      "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = reg["client_id"].as_str().unwrap_or_else(|| panic!("{reg}"));
    let token = |sub: &str, jti: &str| {
        sign(
            &pair,
            &json!({"iss": platform, "sub": sub, "aud": serve.base, "iat": now(),
                    "exp": now() + 300, "jti": jti, "repository_owner": "acme"}),
        )
    };
    let exchange = |assertion: String| {
        http()
            .post(serve.url("/token"))
            .form(&[
                ("grant_type", GRANT),
                ("assertion", assertion.as_str()),
                ("client_id", client_id),
            ])
            .send()
    };
    let sub = "repo:acme/app:ref:refs/heads/main";
    let r = exchange(token(sub, "run-1")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", serve.stderr());
    let body: Value = r.json().await.unwrap();
    let at = body["access_token"].as_str().unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");

    let r = http()
        .post(serve.url("/mcp"))
        .header(header::ACCEPT, "application/json, text/event-stream")
        .bearer_auth(at)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "whoami", "arguments": {}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    let who: Value =
        serde_json::from_str(body["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(who["sub"], format!("workload:ci:{sub}"));
    assert_eq!(who["client_id"], client_id);

    // Another branch of the repository is not an allowed subject.
    let r = exchange(token("repo:acme/app:ref:refs/heads/dev", "run-2"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

#[tokio::test]
async fn an_unusable_trusted_issuer_stops_serve_with_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("server.toml"),
        "[[trusted_issuer]]\nid = \"gha\"\nkind = \"workload\"\n\
         issuer = \"https://token.actions.githubusercontent.com\"\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-auth"))
        .env("MCP_AUTH_HOME", home.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("allowed_subjects"), "{err}");
}
