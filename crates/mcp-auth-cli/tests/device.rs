//! The device flow (RFC 8628) end to end on loopback: `mcp-auth login --device --json`
//! against `mcp-auth serve --dpop`, while the test plays the person who opens the
//! verification link on another device, logs in and approves. The tokens are DPoP-bound:
//! the MCP endpoint accepts them only with a proof of the CLI's key.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Person, ServeProcess, http};
use mcp_auth_client::store::{CredentialStore as _, FileStore, server_key};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

const PASSWORD: &str = "correct horse battery staple";

fn cli(home: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcp-auth"));
    c.env("MCP_AUTH_HOME", home)
        .env_remove("BROWSER")
        .env_remove("MCP_AUTH_LOG")
        .kill_on_drop(true);
    c
}

async fn add_user(serve: &ServeProcess, name: &str) {
    let mut child = cli(serve.home())
        .args(["users", "add", name])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    assert!(child.wait().await.unwrap().success());
}

/// Starts `mcp-auth login URL --device --json ARGS…` and returns it with the device
/// authorization it printed.
async fn start_login(
    home: &std::path::Path,
    url: &str,
    args: &[&str],
) -> (tokio::process::Child, Value) {
    let mut child = cli(home)
        .args(["--json", "login", url, "--device"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the device authorization is printed")
        .unwrap()
        .expect("a line");
    let v: Value = serde_json::from_str(&first).unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, v["device_authorization"].clone())
}

async fn finished(mut child: tokio::process::Child) -> (bool, String) {
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("login finishes")
        .unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt as _;
        let _ = e.read_to_string(&mut err).await;
    }
    (status.success(), err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_logs_in_by_the_device_flow_with_dpop_bound_tokens() {
    let serve = ServeProcess::start(&["--dpop"], None).await;
    add_user(&serve, "alice").await;
    let mcp = serve.url("/mcp");
    let home = tempfile::tempdir().unwrap();

    let (login, device) = start_login(home.path(), &mcp, &[]).await;
    let user_code = device["user_code"].as_str().unwrap().to_owned();
    assert_eq!(device["verification_uri"], serve.url("/device"));
    assert!(device["expires_in"].as_u64().unwrap() > 0);

    // The person opens the complete link on their phone: the code is filled in.
    let mut person = Person::default();
    let entry = person
        .open(device["verification_uri_complete"].as_str().unwrap())
        .await;
    assert_eq!(entry.status, StatusCode::OK, "{}", entry.body);
    assert!(entry.body.contains(&user_code), "{}", entry.body);
    let consent = person.submit(&entry, &[("user_code", &user_code)]).await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    assert!(
        consent
            .body
            .contains("Only allow this if you started signing in"),
        "{}",
        consent.body
    );
    let done = person
        .submit(
            &consent,
            &[
                ("username", "alice"),
                ("password", PASSWORD),
                ("decision", "approve"),
            ],
        )
        .await;
    assert!(
        done.body.contains("You may return to your device"),
        "{}",
        done.body
    );
    let (ok, err) = finished(login).await;
    assert!(ok, "login failed: {err}");

    // DPoP-bound tokens, and whoami says alice.
    let rec = FileStore::open(home.path().join("store"))
        .unwrap()
        .get(&server_key(&mcp))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.grant.as_deref(),
        Some(mcp_auth_client::device::DEVICE_CODE_GRANT)
    );
    let tokens = rec.tokens.unwrap();
    assert_eq!(tokens.token_type, "DPoP");
    assert!(rec.dpop_key.is_some());
    let out = cli(home.path())
        .args(["test", "--call", "whoami", &mcp])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("alice"), "{stdout}");

    // The token alone, without the key, is refused.
    let r = http()
        .post(&mcp)
        .header(
            "authorization",
            format!("Bearer {}", tokens.access_token.secret()),
        )
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_device_login_fails_with_access_denied() {
    let serve = ServeProcess::start(&[], None).await;
    add_user(&serve, "bob").await;
    let mcp = serve.url("/mcp");
    let home = tempfile::tempdir().unwrap();
    let (login, device) = start_login(home.path(), &mcp, &[]).await;
    let user_code = device["user_code"].as_str().unwrap().to_owned();

    let mut person = Person::default();
    let entry = person.open(&serve.url("/device")).await;
    let consent = person.submit(&entry, &[("user_code", &user_code)]).await;
    let done = person
        .submit(
            &consent,
            &[
                ("username", "bob"),
                ("password", PASSWORD),
                ("decision", "deny"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let (ok, err) = finished(login).await;
    assert!(!ok, "a denied login must fail");
    assert!(err.contains("denied"), "{err}");
    let rec = FileStore::open(home.path().join("store"))
        .unwrap()
        .get(&server_key(&mcp))
        .await
        .unwrap();
    assert!(rec.and_then(|r| r.tokens).is_none(), "no tokens stored");
}
