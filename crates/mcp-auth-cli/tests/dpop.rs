//! DPoP (RFC 9449) end to end on loopback: our CLI logs in to `mcp-auth serve --dpop-nonce`
//! and gets DPoP-bound tokens; the MCP endpoint then accepts such a token only with a fresh
//! proof of the CLI's key — a stolen token alone, a token with another key's proof, and a
//! replayed proof are all refused — and the bound refresh token is useless without the key.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{ServeProcess, http};
use mcp_auth_client::store::{CredentialStore as _, FileStore, ServerRecord, server_key};
use mcp_auth_types::dpop::DpopKey;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::Command;

async fn cli(home: &Path, args: &[&str]) -> std::process::Output {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_mcp-auth"))
            .env("MCP_AUTH_HOME", home)
            .env_remove("BROWSER")
            .env_remove("MCP_AUTH_LOG")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("mcp-auth finishes within 60 s")
    .expect("mcp-auth starts");
    assert!(
        out.status.success(),
        "mcp-auth {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn record(home: &Path, url: &str) -> ServerRecord {
    FileStore::open(home.join("store"))
        .unwrap()
        .get(&server_key(url))
        .await
        .unwrap()
        .expect("the CLI stored the server")
}

fn key_of(rec: &ServerRecord) -> DpopKey {
    let stored = rec.dpop_key.as_ref().expect("a DPoP key is stored");
    DpopKey::from_pkcs8(&URL_SAFE_NO_PAD.decode(stored.secret()).unwrap()).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `tools/list` on /mcp with these headers.
async fn list_tools(url: &str, headers: &[(&str, String)]) -> reqwest::Response {
    let mut req = http()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap()
}

fn dpop_error(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("DPoP"))
        .and_then(|v| v.split("error=\"").nth(1))
        .and_then(|v| v.split('"').next())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_bound_tokens_are_useless_without_the_key() {
    let serve = ServeProcess::start(&["--dev-auto-approve", "--dpop-nonce"], None).await;
    let mcp = serve.url("/mcp");
    let home = tempfile::tempdir().unwrap();

    // Metadata: both documents say DPoP.
    let asm: Value = http()
        .get(serve.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        asm["dpop_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("ES256"))
    );

    // The CLI logs in (AS nonce challenge included) and calls whoami (RS nonce challenge).
    let out = cli(
        home.path(),
        &[
            "test",
            "--browser",
            "curl -sS -L -o /dev/null",
            "--callback-port",
            "0",
            "--call",
            "whoami",
            &mcp,
        ],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("dev:user"));
    let rec = record(home.path(), &mcp).await;
    let tokens = rec.tokens.clone().unwrap();
    assert_eq!(tokens.token_type, "DPoP");
    let key = key_of(&rec);
    let at = tokens.access_token.secret().to_owned();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(at.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["cnf"]["jkt"], key.thumbprint());
    let rt = tokens.refresh_token.clone().unwrap();

    // A stolen token used as a bearer token, or with the DPoP scheme and no proof.
    let r = list_tools(&mcp, &[("authorization", format!("Bearer {at}"))]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = list_tools(&mcp, &[("authorization", format!("DPoP {at}"))]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(dpop_error(&r).as_deref(), Some("invalid_dpop_proof"));

    // The thief's own key: a valid proof, of the wrong key. First the nonce dance.
    let thief = DpopKey::generate().unwrap();
    let r = list_tools(
        &mcp,
        &[
            ("authorization", format!("DPoP {at}")),
            (
                "dpop",
                thief.proof("POST", &mcp, Some(&at), None, now()).unwrap(),
            ),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(dpop_error(&r).as_deref(), Some("use_dpop_nonce"));
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let r = list_tools(
        &mcp,
        &[
            ("authorization", format!("DPoP {at}")),
            (
                "dpop",
                thief
                    .proof("POST", &mcp, Some(&at), Some(&nonce), now())
                    .unwrap(),
            ),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(dpop_error(&r).as_deref(), Some("invalid_token"));

    // The right key: accepted once; the same proof again is a replay.
    let proof = key
        .proof("POST", &mcp, Some(&at), Some(&nonce), now())
        .unwrap();
    let headers = [
        ("authorization", format!("DPoP {at}")),
        ("dpop", proof.clone()),
    ];
    assert_eq!(list_tools(&mcp, &headers).await.status(), StatusCode::OK);
    let r = list_tools(&mcp, &headers).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(dpop_error(&r).as_deref(), Some("invalid_dpop_proof"));
    // A proof for another URL or method is refused too.
    let other = key
        .proof("GET", &mcp, Some(&at), Some(&nonce), now())
        .unwrap();
    let r = list_tools(
        &mcp,
        &[("authorization", format!("DPoP {at}")), ("dpop", other)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The refresh token (a public client's: bound) without a proof, or with the thief's.
    let token_url = serve.url("/token");
    let client_id = rec.client.as_ref().unwrap().client_id.clone();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt.secret()),
        ("client_id", &client_id),
    ];
    let r = http().post(&token_url).form(&form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_dpop_proof"
    );
    // The authorization server has nonces of its own: the resource's is not one of them.
    let thief_at_token = |nonce: String| {
        let proof = thief
            .proof("POST", &token_url, None, Some(&nonce), now())
            .unwrap();
        http()
            .post(&token_url)
            .header("dpop", proof)
            .form(&form)
            .send()
    };
    let r = thief_at_token(nonce.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let as_nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_ne!(as_nonce, nonce);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "use_dpop_nonce");
    let r = thief_at_token(as_nonce).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_dpop_proof"
    );

    // The CLI, which has the key, still refreshes (the family was not harmed) and calls.
    cli(home.path(), &["refresh", &mcp]).await;
    let after = record(home.path(), &mcp).await.tokens.unwrap();
    assert_ne!(after.access_token.secret(), at);
    assert_ne!(after.refresh_token.unwrap().secret(), rt.secret());
    let out = cli(home.path(), &["test", "--call", "whoami", &mcp]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("dev:user"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dpop_the_server_issues_bearer_tokens_and_ignores_proofs() {
    let serve = ServeProcess::start(&["--dev-auto-approve"], None).await;
    let mcp = serve.url("/mcp");
    let home = tempfile::tempdir().unwrap();
    cli(
        home.path(),
        &[
            "test",
            "--browser",
            "curl -sS -L -o /dev/null",
            "--callback-port",
            "0",
            "--call",
            "whoami",
            &mcp,
        ],
    )
    .await;
    let rec = record(home.path(), &mcp).await;
    assert_eq!(rec.tokens.unwrap().token_type, "Bearer");
    assert!(
        rec.dpop_key.is_none(),
        "no key is made for a server without DPoP"
    );
}
