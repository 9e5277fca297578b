//! `mcp-auth serve --tenant NAME`: several issuers on one server whose clients, keys and
//! tokens never cross; and the per-address rate limits.

use std::process::Stdio;
use std::time::Duration;

use mcp_auth_types::PkceVerifier;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn register(base: &str) -> String {
    let r = http()
        .post(format!("{base}/register"))
        .json(
            &json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
                      "grant_types": ["authorization_code", "refresh_token"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn authorize(base: &str, client_id: &str, v: &PkceVerifier) -> reqwest::Response {
    let ch = v.challenge();
    http()
        .get(format!("{base}/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", ch.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "s"),
        ])
        .send()
        .await
        .unwrap()
}

/// Starts `mcp-auth serve --dev-auto-approve` with `extra` flags; returns it and its issuer.
async fn serve(home: &std::path::Path, extra: &[&str]) -> (tokio::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-auth"))
        .env("MCP_AUTH_HOME", home)
        .args(["serve", "--listen", "127.0.0.1:0", "--dev-auto-approve"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut issuer = None;
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(i) = l.strip_prefix("Authorization server:") {
                issuer = Some(i.trim().to_owned());
            }
            if l.starts_with("(clients compare") {
                break;
            }
        }
    })
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, issuer.expect("serve printed its issuer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_rate_limited_per_address() {
    let home = tempfile::tempdir().unwrap();
    let (mut child, issuer) = serve(home.path(), &[]).await;
    let mut limited = None;
    for i in 0..80 {
        let r = http()
            .post(format!("{issuer}/register"))
            .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((i, r));
            break;
        }
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let (i, r) = limited.expect("a burst of registrations is limited");
    assert!(i >= 30, "the burst of 30 is allowed first (limited at {i})");
    assert!(r.headers().contains_key("retry-after"));
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_issuers() {
    let home = tempfile::tempdir().unwrap();
    let (mut child, issuer) = serve(home.path(), &["--tenant", "acme", "--tenant", "beta"]).await;
    let acme = format!("{issuer}/t/acme");
    let beta = format!("{issuer}/t/beta");

    // Each tenant publishes its own metadata (RFC 8414 §3.1 path insertion) and keys.
    let origin = issuer.clone();
    for (t, iss) in [("acme", &acme), ("beta", &beta)] {
        let m: Value = http()
            .get(format!(
                "{origin}/.well-known/oauth-authorization-server/t/{t}"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(m["issuer"], iss.as_str());
        assert_eq!(m["token_endpoint"], format!("{iss}/token"));
    }
    let jwks = |b: String| async move {
        http()
            .get(format!("{b}/jwks"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_ne!(
        jwks(acme.clone()).await,
        jwks(beta.clone()).await,
        "keys differ"
    );

    // A client of one tenant is unknown to the other.
    let client = register(&acme).await;
    let v = PkceVerifier::generate();
    let r = authorize(&beta, &client, &v).await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "beta does not know acme's client"
    );
    let r = authorize(&issuer, &client, &v).await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "nor does the default tenant"
    );

    // At its own tenant the flow works and iss names that tenant.
    let r = authorize(&acme, &client, &v).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["iss"], acme);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", v.secret()),
        ("client_id", client.as_str()),
    ];
    // The code is not redeemable at another tenant.
    let r = http()
        .post(format!("{beta}/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "unknown client at beta"
    );
    let r = http()
        .post(format!("{acme}/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tokens: Value = r.json().await.unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap();

    // Acme's refresh token means nothing at beta, even for a beta client.
    let beta_client = register(&beta).await;
    let r = http()
        .post(format!("{beta}/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", beta_client.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "invalid_grant");
    let _ = child.kill().await;
}
