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

/// Runs the CLI with a private home; returns stdout, panicking with stderr on failure.
async fn cli_ok(home: &std::path::Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-auth"))
        .env("MCP_AUTH_HOME", home)
        .env_remove("BROWSER")
        .env_remove("MCP_AUTH_CLIENT_SECRET")
        .env_remove("MCP_AUTH_IDP_CLIENT_SECRET")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "mcp-auth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Our own client against our own server: `mcp-auth test --workload-token-file` chooses the
/// jwt-bearer grant from the metadata, and the workload reaches `whoami`; a platform token
/// rotated in place is what the next token request sends.
#[tokio::test]
async fn the_cli_uses_a_workload_token_against_serve() {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let platform = platform(&pair).await;
    let toml = format!(
        r#"
        [[trusted_issuer]]
        id = "k8s"
        kind = "workload"
        issuer = "{platform}"
        allowed_subjects = ["system:serviceaccount:prod:*"]
        allow_http = true
        "#
    );
    let serve = ServeProcess::start_with(&[], Some(&toml), &[], free_port()).await;
    let reg: Value = http()
        .post(serve.url("/register"))
        .json(&json!({"client_name": "agent", "grant_types": [GRANT],
                      "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = reg["client_id"].as_str().unwrap().to_owned();
    let home = tempfile::tempdir().unwrap();
    let jwt_file = home.path().join("token.jwt");
    let sub = "system:serviceaccount:prod:agent";
    let write_token = |jti: &str| {
        let jwt = sign(
            &pair,
            &json!({"iss": platform, "sub": sub, "aud": serve.base, "iat": now(),
                    "exp": now() + 300, "jti": jti}),
        );
        std::fs::write(&jwt_file, jwt).unwrap();
    };
    write_token("pod-1");
    let mcp = serve.url("/mcp");
    let jwt_path = jwt_file.to_str().unwrap();
    let out = cli_ok(
        home.path(),
        &[
            "test",
            "--client-id",
            &client_id,
            "--workload-token-file",
            jwt_path,
            "--call",
            "whoami",
            &mcp,
        ],
    )
    .await;
    assert!(out.contains(&format!("workload:k8s:{sub}")), "{out}");
    // Each assertion is single use: after a logout, the same platform token is refused …
    cli_ok(home.path(), &["logout", &mcp]).await;
    let again = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-auth"))
        .env("MCP_AUTH_HOME", home.path())
        .args([
            "test",
            "--client-id",
            &client_id,
            "--workload-token-file",
            jwt_path,
            &mcp,
        ])
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("invalid_grant"), "{err}");
    // … and the token the platform rotated into the file meanwhile is read and accepted.
    write_token("pod-2");
    let out = cli_ok(
        home.path(),
        &[
            "test",
            "--client-id",
            &client_id,
            "--workload-token-file",
            jwt_path,
            "--call",
            "whoami",
            &mcp,
        ],
    )
    .await;
    assert!(out.contains(&format!("workload:k8s:{sub}")), "{out}");
}

/// A fake enterprise identity provider: OpenID discovery, and RFC 8693 token exchange of
/// the user's ID token for an ID-JAG (SEP-990) signed with `pair`, for the MCP client
/// `client_id` at the authorization server named in `audience`.
async fn enterprise_idp(pair: EcdsaKeyPair, id_token: &'static str, client_id: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let p = pair.public_key().as_ref();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "idp-1", "use": "sig",
                                "x": b64(&p[1..33]), "y": b64(&p[33..])}]});
    let discovery = json!({
        "issuer": issuer, "jwks_uri": format!("{issuer}/keys"),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code",
                                  "urn:ietf:params:oauth:grant-type:token-exchange"],
    });
    let pair = std::sync::Arc::new(pair);
    let iss = issuer.clone();
    let exchange = move |axum::Form(f): axum::Form<std::collections::HashMap<String, String>>| {
        let pair = pair.clone();
        let iss = iss.clone();
        let client_id = client_id.clone();
        async move {
            let want = [
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:id-jag",
                ),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:id_token",
                ),
                ("subject_token", id_token),
                ("client_id", "mcp-cli"),
            ];
            if want
                .iter()
                .any(|(k, v)| f.get(*k).map(String::as_str) != Some(*v))
            {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    Json(
                        json!({"error": "invalid_request", "error_description": format!("{f:?}")}),
                    ),
                );
            }
            let header = br#"{"alg":"ES256","kid":"idp-1","typ":"oauth-id-jag+jwt"}"#;
            let claims = json!({"iss": iss, "sub": "alice", "aud": f["audience"],
                "client_id": client_id, "resource": f["resource"], "iat": now(),
                "exp": now() + 300, "jti": format!("jag-{}", now())});
            let input = format!(
                "{}.{}",
                b64(header),
                b64(&serde_json::to_vec(&claims).unwrap())
            );
            let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
            (
                axum::http::StatusCode::OK,
                Json(
                    json!({"access_token": format!("{input}.{}", b64(sig.as_ref())),
                    "issued_token_type": "urn:ietf:params:oauth:token-type:id-jag",
                    "token_type": "N_A", "expires_in": 300}),
                ),
            )
        }
    };
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route("/keys", get(move || async move { Json(jwks) }))
        .route("/token", axum::routing::post(exchange));
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

/// `mcp-auth serve` trusting an enterprise IdP for one confidential client of its own. The
/// IdP's URL must be in server.toml before serve starts, and the client it grants to is
/// registered at serve afterwards: serve starts with a placeholder, the client registers,
/// `make_idp(client_id)` starts the IdP, and serve restarts with the real table. Returns
/// serve, the client's id and secret, and what `make_idp` returned (its URL first).
async fn serve_trusting_enterprise_idp<F, Fut, T>(
    env: &[(&str, &str)],
    make_idp: F,
) -> (ServeProcess, String, String, (String, T))
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = (String, T)>,
{
    let toml = |idp: &str, client: &str| {
        format!(
            r#"
            [[trusted_issuer]]
            id = "acme"
            kind = "enterprise"
            issuer = "{idp}"
            allowed_clients = ["{client}"]
            allow_http = true
            "#
        )
    };
    let mut serve = ServeProcess::start_with(
        &[],
        Some(&toml("http://127.0.0.1:9", "will-be-replaced")),
        env,
        free_port(),
    )
    .await;
    let reg: Value = http()
        .post(serve.url("/register"))
        .json(&json!({"client_name": "agent", "grant_types": [GRANT],
                      "token_endpoint_auth_method": "client_secret_basic"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = reg["client_id"].as_str().unwrap().to_owned();
    let secret = reg["client_secret"].as_str().unwrap().to_owned();
    let idp = make_idp(client_id.clone()).await;
    std::fs::write(serve.home().join("server.toml"), toml(&idp.0, &client_id)).unwrap();
    serve.restart().await;
    (serve, client_id, secret, idp)
}

/// Enterprise-managed authorization with our client and our server: the CLI exchanges the
/// user's ID token at the company IdP (found by discovery), redeems the ID-JAG at `serve`
/// with its own client secret, and calls `whoami` as the enterprise user; the same CLI with
/// a client that the trust configuration does not allow is refused.
#[tokio::test]
async fn the_cli_uses_enterprise_managed_authorization_against_serve() {
    const ID_TOKEN: &str = "header.alice-id-token.signature";
    let idp_key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let (serve, client_id, secret, (idp, ())) =
        serve_trusting_enterprise_idp(&[], |client| async move {
            (enterprise_idp(idp_key, ID_TOKEN, client).await, ())
        })
        .await;

    let home = tempfile::tempdir().unwrap();
    let id_token_file = home.path().join("id_token");
    std::fs::write(&id_token_file, ID_TOKEN).unwrap();
    let mcp = serve.url("/mcp");
    let args = |client: &str, secret: &str| -> Vec<String> {
        [
            "test",
            "--idp-issuer",
            &idp,
            "--idp-client-id",
            "mcp-cli",
            "--id-token-file",
            id_token_file.to_str().unwrap(),
            "--client-id",
            client,
            "--client-secret",
            secret,
            "--call",
            "whoami",
            &mcp,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = args(&client_id, &secret);
    let out = cli_ok(
        home.path(),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    assert!(out.contains("enterprise:acme:alice"), "{out}");
    assert!(out.contains(&client_id), "{out}");

    // Another confidential client, not in allowed_clients: the ID-JAG names the allowed one,
    // and this one may not use the issuer anyway.
    let other: Value = http()
        .post(serve.url("/register"))
        .json(&json!({"client_name": "other", "grant_types": [GRANT],
                      "token_endpoint_auth_method": "client_secret_basic"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let home2 = tempfile::tempdir().unwrap();
    std::fs::write(home2.path().join("id_token"), ID_TOKEN).unwrap();
    let mut b = args(
        other["client_id"].as_str().unwrap(),
        other["client_secret"].as_str().unwrap(),
    );
    b[6] = home2.path().join("id_token").to_str().unwrap().to_owned();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-auth"))
        .env("MCP_AUTH_HOME", home2.path())
        .args(&b)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid_grant") || err.contains("unauthorized_client"),
        "{err}"
    );
}

/// How the fake IdP's sign-in misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Sso {
    Good,
    WrongNonce,
    WrongAudience,
    Expired,
}

/// What the fake single sign-on IdP saw and will do.
struct SsoIdp {
    mode: Sso,
    /// Lifetime of the ID tokens it issues.
    id_token_ttl: u64,
    authorize_hits: u32,
    refresh_hits: u32,
    /// Authorization code → (nonce, PKCE challenge, redirect URI).
    codes: std::collections::HashMap<String, (String, String, String)>,
    refresh_tokens: std::collections::HashSet<String>,
    id_tokens: std::collections::HashSet<String>,
    serial: u64,
}

type SsoState = std::sync::Arc<std::sync::Mutex<SsoIdp>>;

/// A fake enterprise IdP where the user is already signed in: OpenID discovery, an
/// `/authorize` that redirects straight back with a code (PKCE, `state`, `nonce`, `iss`),
/// a token endpoint for the authorization code and refresh token grants (ID tokens signed
/// with `pair`, for the client `mcp-cli`) and for the RFC 8693 exchange of any ID token it
/// issued for an ID-JAG naming the MCP client `client_id`.
async fn sso_idp(pair: EcdsaKeyPair, client_id: String) -> (String, SsoState) {
    use axum::extract::{Query, State};
    use std::collections::HashMap;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let p = pair.public_key().as_ref();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "idp-1", "use": "sig",
                                "x": b64(&p[1..33]), "y": b64(&p[33..])}]});
    let discovery = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/keys"),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "grant_types_supported": ["authorization_code", "refresh_token",
                                  "urn:ietf:params:oauth:grant-type:token-exchange"],
    });
    let state: SsoState = std::sync::Arc::new(std::sync::Mutex::new(SsoIdp {
        mode: Sso::Good,
        id_token_ttl: 300,
        authorize_hits: 0,
        refresh_hits: 0,
        codes: HashMap::new(),
        refresh_tokens: Default::default(),
        id_tokens: Default::default(),
        serial: 0,
    }));
    let pair = std::sync::Arc::new(pair);
    let iss = issuer.clone();
    let authorize = move |State(st): State<SsoState>, Query(q): Query<HashMap<String, String>>| {
        let iss = iss.clone();
        async move {
            let ok = q.get("response_type").map(String::as_str) == Some("code")
                && q.get("client_id").map(String::as_str) == Some("mcp-cli")
                && q.get("code_challenge_method").map(String::as_str) == Some("S256")
                && q.get("scope")
                    .is_some_and(|s| s.split(' ').any(|s| s == "openid"))
                && q.contains_key("nonce")
                && q.contains_key("state");
            assert!(ok, "bad authorization request {q:?}");
            let mut s = st.lock().unwrap();
            s.authorize_hits += 1;
            s.serial += 1;
            let code = format!("code-{}", s.serial);
            s.codes.insert(
                code.clone(),
                (
                    q["nonce"].clone(),
                    q["code_challenge"].clone(),
                    q["redirect_uri"].clone(),
                ),
            );
            let mut to = url::Url::parse(&q["redirect_uri"]).unwrap();
            to.query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", &q["state"])
                .append_pair("iss", &iss);
            axum::response::Redirect::to(to.as_str())
        }
    };
    let iss = issuer.clone();
    let token = move |State(st): State<SsoState>,
                      axum::Form(f): axum::Form<HashMap<String, String>>| {
        let pair = pair.clone();
        let iss = iss.clone();
        let client_id = client_id.clone();
        async move {
            let bad = |what: &str| {
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    Json(json!({"error": "invalid_grant", "error_description": what})),
                )
            };
            let sign_with = |header: &[u8], claims: &Value| {
                let input = format!(
                    "{}.{}",
                    b64(header),
                    b64(&serde_json::to_vec(claims).unwrap())
                );
                let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
                format!("{input}.{}", b64(sig.as_ref()))
            };
            let mut s = st.lock().unwrap();
            s.serial += 1;
            let serial = s.serial;
            if f.get("client_id").map(String::as_str) != Some("mcp-cli") {
                return bad("unknown client");
            }
            let nonce = match f.get("grant_type").map(String::as_str) {
                Some("authorization_code") => {
                    let Some((nonce, challenge, redirect_uri)) =
                        f.get("code").and_then(|c| s.codes.remove(c))
                    else {
                        return bad("unknown code");
                    };
                    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
                    let digest =
                        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
                    if b64(digest.as_ref()) != challenge
                        || f.get("redirect_uri") != Some(&redirect_uri)
                    {
                        return bad("PKCE or redirect_uri mismatch");
                    }
                    Some(nonce)
                }
                Some("refresh_token") => {
                    if !f
                        .get("refresh_token")
                        .is_some_and(|r| s.refresh_tokens.remove(r))
                    {
                        return bad("unknown refresh token");
                    }
                    s.refresh_hits += 1;
                    None
                }
                Some("urn:ietf:params:oauth:grant-type:token-exchange") => {
                    if !f
                        .get("subject_token")
                        .is_some_and(|t| s.id_tokens.contains(t))
                    {
                        return bad("unknown subject token");
                    }
                    let claims = json!({"iss": iss, "sub": "alice", "aud": f["audience"],
                        "client_id": client_id, "resource": f["resource"], "iat": now(),
                        "exp": now() + 300, "jti": format!("jag-{serial}")});
                    let jag = sign_with(
                        br#"{"alg":"ES256","kid":"idp-1","typ":"oauth-id-jag+jwt"}"#,
                        &claims,
                    );
                    return (
                        axum::http::StatusCode::OK,
                        Json(json!({"access_token": jag,
                            "issued_token_type": "urn:ietf:params:oauth:token-type:id-jag",
                            "token_type": "N_A", "expires_in": 300})),
                    );
                }
                _ => return bad("unsupported grant"),
            };
            let mut claims = json!({"iss": iss, "sub": "alice", "aud": "mcp-cli",
                "iat": now(), "exp": now() + s.id_token_ttl});
            if let Some(n) = nonce {
                claims["nonce"] = json!(n);
            }
            match s.mode {
                Sso::Good => {}
                Sso::WrongNonce => claims["nonce"] = json!("someone-elses-nonce"),
                Sso::WrongAudience => claims["aud"] = json!("another-app"),
                Sso::Expired => claims["exp"] = json!(now() - 3600),
            }
            let id_token = sign_with(br#"{"alg":"ES256","kid":"idp-1","typ":"JWT"}"#, &claims);
            let refresh = format!("idp-refresh-{serial}");
            s.id_tokens.insert(id_token.clone());
            s.refresh_tokens.insert(refresh.clone());
            (
                axum::http::StatusCode::OK,
                Json(
                    json!({"access_token": format!("idp-at-{serial}"), "token_type": "Bearer",
                    "expires_in": 300, "id_token": id_token, "refresh_token": refresh,
                    "scope": "openid email profile"}),
                ),
            )
        }
    };
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route("/keys", get(move || async move { Json(jwks) }))
        .route("/authorize", get(authorize))
        .route("/token", axum::routing::post(token))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (issuer, state)
}

/// The stored records (`*.json`) under a CLI home.
fn stored_records(home: &std::path::Path) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        let p = e.path();
                        if p.is_dir() {
                            walk(&p)
                        } else {
                            usize::from(p.extension().is_some_and(|x| x == "json"))
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&home.join("store"))
}

/// Enterprise-managed authorization where the CLI signs the user in at the IdP itself
/// (no --id-token-*): the first command goes through the IdP's `/authorize` once; later
/// commands that need a new identity assertion grant use the stored ID token, or refresh it
/// at the IdP, and never send the user there again. ID tokens that are not for this login
/// (another nonce, another audience, expired) are refused and nothing is stored.
#[tokio::test]
async fn the_cli_signs_in_at_the_enterprise_idp_once() {
    let idp_key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let (serve, client_id, secret, (idp, sso)) =
        serve_trusting_enterprise_idp(&[], |client| sso_idp(idp_key, client)).await;

    let mcp = serve.url("/mcp");
    let test_args: Vec<&str> = vec![
        "test",
        "--idp-issuer",
        &idp,
        "--idp-client-id",
        "mcp-cli",
        "--client-id",
        &client_id,
        "--client-secret",
        &secret,
        "--browser",
        "curl -sS -L -o /dev/null",
        "--call",
        "whoami",
        &mcp,
    ];
    let hits = || {
        let s = sso.lock().unwrap();
        (s.authorize_hits, s.refresh_hits)
    };

    // The first ID token lives 30 s: less than the minute left that reusing it needs.
    sso.lock().unwrap().id_token_ttl = 30;
    let home = tempfile::tempdir().unwrap();
    let out = cli_ok(home.path(), &test_args).await;
    assert!(out.contains("enterprise:acme:alice"), "{out}");
    assert_eq!(hits(), (1, 0));
    assert_eq!(
        stored_records(home.path()),
        2,
        "the server and the IdP session"
    );
    // The IdP session is not a server.
    let list = cli_ok(home.path(), &["--json", "list"]).await;
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // A new identity assertion grant after a logout: the short-lived ID token is refreshed
    // at the IdP, not signed in again.
    sso.lock().unwrap().id_token_ttl = 300;
    cli_ok(home.path(), &["logout", &mcp]).await;
    let out = cli_ok(home.path(), &test_args).await;
    assert!(out.contains("enterprise:acme:alice"), "{out}");
    assert_eq!(hits(), (1, 1));

    // And again: the refreshed ID token is still good, so the IdP is not even asked.
    cli_ok(home.path(), &["logout", &mcp]).await;
    let out = cli_ok(home.path(), &test_args).await;
    assert!(out.contains("enterprise:acme:alice"), "{out}");
    assert_eq!(hits(), (1, 1));

    // Signing out of the IdP session: the next grant needs the IdP's login page again.
    cli_ok(home.path(), &["logout", &mcp]).await;
    let out = cli_ok(home.path(), &["--json", "logout", "--idp", &idp]).await;
    assert!(out.contains("\"forgotten\":true"), "{out}");
    let out = cli_ok(home.path(), &test_args).await;
    assert!(out.contains("enterprise:acme:alice"), "{out}");
    assert_eq!(hits(), (2, 1));

    for (mode, expected) in [
        (Sso::WrongNonce, "nonce does not match"),
        (Sso::WrongAudience, "not meant for this client (mcp-cli)"),
        (Sso::Expired, "ID token expired"),
    ] {
        sso.lock().unwrap().mode = mode;
        let home = tempfile::tempdir().unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-auth"))
            .env("MCP_AUTH_HOME", home.path())
            .env_remove("MCP_AUTH_IDP_CLIENT_SECRET")
            .args(&test_args)
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(err.contains("single sign-on at"), "{err}");
        assert!(!err.contains("eyJ"), "no token in the error: {err}");
        assert_eq!(stored_records(home.path()), 0, "nothing stored: {expected}");
    }
}

/// Enterprise SSO when the MCP access token expires (serve issues 2-second tokens): the next
/// command renews the identity assertion grant by itself — the refresh path, no browser —
/// from the stored ID token, without the IdP's login page.
#[tokio::test]
async fn an_expired_access_token_is_renewed_from_the_stored_idp_session() {
    let idp_key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let (serve, client_id, secret, (idp, sso)) =
        serve_trusting_enterprise_idp(&[("OAUTH_ACCESS_TOKEN_TTL", "2")], |client| {
            sso_idp(idp_key, client)
        })
        .await;
    sso.lock().unwrap().id_token_ttl = 300;
    let mcp = serve.url("/mcp");
    let home = tempfile::tempdir().unwrap();
    let args = |browser: &'static str| -> Vec<String> {
        [
            "test",
            "--idp-issuer",
            &idp,
            "--idp-client-id",
            "mcp-cli",
            "--client-id",
            &client_id,
            "--client-secret",
            &secret,
            "--browser",
            browser,
            "--call",
            "whoami",
            &mcp,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let first = args("curl -sS -L -o /dev/null");
    let out = cli_ok(
        home.path(),
        &first.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    assert!(out.contains("enterprise:acme:alice"), "{out}");
    let authorized = sso.lock().unwrap().authorize_hits;
    assert_eq!(authorized, 1);

    // The access token has expired; a "browser" that fails proves none is opened.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let second = args("false");
    let out = cli_ok(
        home.path(),
        &second.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    assert!(out.contains("enterprise:acme:alice"), "{out}");
    assert_eq!(
        sso.lock().unwrap().authorize_hits,
        authorized,
        "no new sign-in at the IdP"
    );
}
