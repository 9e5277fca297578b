//! `mcp-auth doctor` against the real `mcp-auth serve`: every MUST check passes and the exit
//! status is 0; with `--login` (curl playing the browser, auto-approval) the login, refresh
//! and tool call pass too. And a server that is not there is a MUST violation, exit 5.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::ServeProcess;
use serde_json::Value;
use tokio::process::Command;

async fn doctor(home: &Path, args: &[&str]) -> Output {
    let run = Command::new(env!("CARGO_BIN_EXE_mcp-auth"))
        .env("MCP_AUTH_HOME", home)
        .env_remove("BROWSER")
        .env_remove("MCP_AUTH_LOG")
        .env_remove("MCP_AUTH_CLIENT_SECRET")
        .arg("doctor")
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("mcp-auth doctor did not finish within 90 s")
        .expect("mcp-auth could not be started")
}

fn report(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn status_of<'a>(r: &'a Value, id: &str) -> &'a str {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .and_then(|f| f["status"].as_str())
        .unwrap_or_else(|| panic!("no finding {id} in {r:#}"))
}

#[track_caller]
fn assert_no_must_violation(r: &Value) {
    let failed: Vec<&Value> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "must" && f["status"] == "fail")
        .collect();
    assert!(failed.is_empty(), "MUST violations: {failed:#?}");
    assert_eq!(r["verdict"]["ok"], true);
    assert_eq!(r["verdict"]["must_violations"], 0);
}

#[tokio::test]
async fn serve_passes_every_must_check() {
    let server = ServeProcess::start(&["--dev-auto-approve"], None).await;
    let home = tempfile::tempdir().unwrap();
    let o = doctor(home.path(), &[&server.url("/mcp"), "--json"]).await;
    let r = report(&o);
    assert_eq!(o.status.code(), Some(0), "{r:#}");
    assert_no_must_violation(&r);
    // Not even a SHOULD is missed: CORS for browser clients included.
    assert_eq!(r["verdict"]["warnings"], 0, "{r:#}");
    for id in [
        "challenge.status",
        "challenge.bearer",
        "challenge.resource-metadata",
        "prm.found",
        "prm.resource-match",
        "as.found",
        "as.issuer-match",
        "as.pkce-s256",
        "as.iss-parameter",
        "as.refresh-token",
        "as.revocation",
        "registration.dcr",
    ] {
        assert_eq!(status_of(&r, id), "pass", "{id}: {r:#}");
    }
    // The human rendering of the same run.
    let o = doctor(home.path(), &[&server.url("/mcp")]).await;
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("✓ as.issuer-match"), "{text}");
    assert!(text.contains("Verdict: 0 MUST violations"), "{text}");
}

#[tokio::test]
async fn serve_login_refresh_and_tool_call() {
    let server = ServeProcess::start(&["--dev-auto-approve"], None).await;
    let home = tempfile::tempdir().unwrap();
    let o = doctor(
        home.path(),
        &[
            &server.url("/mcp"),
            "--json",
            "--login",
            "--browser",
            "curl -sS -L -o /dev/null",
            "--callback-port",
            "0",
        ],
    )
    .await;
    let r = report(&o);
    assert_eq!(o.status.code(), Some(0), "{r:#}");
    assert_no_must_violation(&r);
    for id in [
        "login.authorize",
        "login.refresh",
        "mcp.connect",
        "mcp.tools-list",
        "mcp.tool-call",
    ] {
        assert_eq!(status_of(&r, id), "pass", "{id}: {r:#}");
    }
    // Doctor never shows a token.
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("eyJ"), "{out}");
}

#[tokio::test]
async fn unreachable_server_exits_5() {
    let home = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/mcp", common::free_port());
    let o = doctor(home.path(), &[&url, "--json"]).await;
    let r = report(&o);
    assert_eq!(o.status.code(), Some(5), "{r:#}");
    assert_eq!(status_of(&r, "challenge.status"), "fail");
    assert_eq!(r["verdict"]["ok"], false);
}
