//! The `mcp-auth` binary against a loopback authorization server and MCP server
//! (mcp-auth-testkit), as users and scripts run it: separate processes sharing one store.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use mcp_auth_client::store::{CredentialStore, FileStore, server_key};
use mcp_auth_testkit::{Config, TestServer};
use tokio::process::Command;

const BROWSER: &str = "curl -sS -L -o /dev/null";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-auth")
}

fn cmd(home: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env("MCP_AUTH_HOME", home)
        .env_remove("BROWSER")
        .env_remove("MCP_AUTH_LOG")
        .env_remove("MCP_AUTH_CLIENT_SECRET")
        .kill_on_drop(true);
    c
}

async fn run(home: &Path, args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(60), cmd(home).args(args).output())
        .await
        .expect("mcp-auth did not finish within 60 s")
        .expect("mcp-auth could not be started")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

async fn login(home: &Path, url: &str, name: &str) {
    let o = run(
        home,
        &[
            "login",
            url,
            "--name",
            name,
            "--browser",
            BROWSER,
            "--callback-port",
            "0",
        ],
    )
    .await;
    ok(&o);
}

/// Opens the same store the CLI uses, to inspect or age what it wrote.
fn store(home: &Path) -> FileStore {
    FileStore::open(home.join("store")).expect("store opens")
}

/// Makes the stored access token look expired to every client (the server agrees).
async fn age_token(home: &Path, server: &TestServer) {
    let store = store(home);
    let key = server_key(&server.mcp_url());
    let _lock = store.lock(&key).await.unwrap();
    let mut rec = store.get(&key).await.unwrap().expect("a record");
    rec.tokens.as_mut().expect("tokens").expires_at = Some(1);
    store.put(&key, &rec).await.unwrap();
    server.expire_access_tokens();
}

fn home() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("home");
    (dir, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_token_header_test_list_logout() {
    let server = TestServer::start(Config::default()).await;
    let (_d, home) = home();
    let url = server.mcp_url();
    login(&home, &url, "demo").await;

    let token = ok(&run(&home, &["token", "demo"]).await);
    let token = token.trim();
    assert!(
        !token.is_empty() && !token.contains(' '),
        "one token on one line: {token:?}"
    );
    assert_eq!(ok(&run(&home, &["token", &url]).await).trim(), token);
    assert_eq!(
        ok(&run(&home, &["header", "demo"]).await).trim(),
        format!("Authorization: Bearer {token}")
    );

    let out = ok(&run(
        &home,
        &[
            "test",
            &url,
            "--call",
            "echo",
            "--args",
            r#"{"text":"hi there"}"#,
        ],
    )
    .await);
    assert_eq!(out.trim(), "hi there");

    let list = ok(&run(&home, &["list", "--json"]).await);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v[0]["name"], "demo");
    assert_eq!(v[0]["server"], url.as_str());
    assert_eq!(v[0]["issuer"], server.issuer().as_str());
    assert_eq!(v[0]["has_refresh_token"], true);
    assert!(!list.contains(token), "list must not print tokens");

    // Only one authorization and one code exchange for all of that.
    let s = server.stats();
    assert_eq!(s.authorizations, 1);
    assert_eq!(s.code_exchanges, 1);

    ok(&run(&home, &["logout", "demo"]).await);
    assert!(server.stats().revocations >= 1);
    let o = run(&home, &["token", "demo"]).await;
    assert_eq!(o.status.code(), Some(3), "not logged in: exit 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_refresh_rotates_the_refresh_token() {
    let server = TestServer::start(Config::default()).await;
    let (_d, home) = home();
    login(&home, &server.mcp_url(), "s").await;
    let key = server_key(&server.mcp_url());
    let before = store(&home).get(&key).await.unwrap().unwrap();
    let old_token = ok(&run(&home, &["token", "s"]).await);

    age_token(&home, &server).await;
    let new_token = ok(&run(&home, &["token", "s"]).await);
    assert_ne!(old_token, new_token);
    let after = store(&home).get(&key).await.unwrap().unwrap();
    let (b, a) = (before.tokens.unwrap(), after.tokens.unwrap());
    assert!(
        !b.refresh_token
            .unwrap()
            .ct_eq(a.refresh_token.as_ref().unwrap()),
        "the rotated refresh token is stored"
    );
    let s = server.stats();
    assert_eq!(s.refreshes, 1);
    assert_eq!(s.refresh_reuse_detected, 0);
    // The refreshed token works.
    ok(&run(&home, &["test", &server.mcp_url(), "--call", "whoami"]).await);
}

/// 16 processes share one store while the server rotates refresh tokens: every one of them
/// gets a working token, the server sees exactly one refresh per expiry, and no rotated
/// refresh token is ever replayed (which would revoke the whole family).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_processes_share_one_store() {
    let server = TestServer::start(Config::default()).await;
    server.set_refresh_delay(Duration::from_millis(50));
    let (_d, home) = home();
    login(&home, &server.mcp_url(), "shared").await;
    for round in 1..=3u64 {
        age_token(&home, &server).await;
        let procs: Vec<_> = (0..16)
            .map(|_| {
                let mut c = cmd(&home);
                c.args(["token", "shared"]);
                tokio::spawn(async move { c.output().await.unwrap() })
            })
            .collect();
        let mut tokens = Vec::new();
        for p in procs {
            tokens.push(ok(&p.await.unwrap()));
        }
        assert!(
            tokens.iter().all(|t| t == &tokens[0]),
            "round {round}: all got the same token"
        );
        let s = server.stats();
        assert_eq!(s.refreshes, round, "exactly one refresh per expiry");
        assert_eq!(s.refresh_reuse_detected, 0);
        ok(&run(&home, &["test", &server.mcp_url(), "--call", "whoami"]).await);
    }
}

/// SIGKILL during refreshes (which write the store) never leaves an unreadable store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_write_leaves_the_store_readable() {
    let server = TestServer::start(Config::default()).await;
    let (_d, home) = home();
    login(&home, &server.mcp_url(), "k").await;
    for i in 0..20u64 {
        let mut child = cmd(&home).args(["refresh", "k"]).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(2 + (i * 7) % 40)).await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        // Every record still decrypts and parses.
        let list = run(&home, &["list", "--json"]).await;
        let out = ok(&list);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(1), "iteration {i}");
        store(&home)
            .get(&server_key(&server.mcp_url()))
            .await
            .expect("the record reads back after a kill")
            .expect("and is still there");
    }
}

async fn refused(config: Config, expect: &str) {
    let server = TestServer::start(config).await;
    let (dir, home) = home();
    let marker = dir.path().join("browser-ran");
    let browser = format!("touch {}", marker.display());
    let o = run(
        &home,
        &[
            "login",
            &server.mcp_url(),
            "--browser",
            &browser,
            "--callback-port",
            "0",
        ],
    )
    .await;
    let err = text(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(5),
        "refused as an unsafe server: {err}"
    );
    assert!(
        err.contains(expect),
        "error names the problem ({expect}): {err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(!marker.exists(), "the browser must not be opened");
    assert_eq!(server.stats().authorizations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_http_authorization_endpoint_is_refused() {
    refused(
        Config {
            authorization_endpoint_override: Some("file:///etc/passwd".into()),
            ..Default::default()
        },
        "authorization_endpoint",
    )
    .await;
    refused(
        Config {
            authorization_endpoint_override: Some("javascript:alert(1)".into()),
            ..Default::default()
        },
        "authorization_endpoint",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_issuer_is_refused() {
    refused(
        Config {
            metadata_issuer_override: Some("https://attacker.example.com".into()),
            ..Default::default()
        },
        "issuer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_resource_is_refused() {
    refused(
        Config {
            prm_resource_override: Some("https://evil.example.com/mcp".into()),
            ..Default::default()
        },
        "evil.example.com",
    )
    .await;
}

/// Trace-level logs of a whole session (login, MCP calls, refresh, logout) contain no
/// access token, refresh token, client secret, code or verifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_trace_logs() {
    let server = TestServer::start(Config {
        // A confidential registration, so there is a client secret to leak.
        registration_forced_auth_method: Some(mcp_auth_types::AuthMethod::ClientSecretPost),
        ..Default::default()
    })
    .await;
    let (_d, home) = home();
    let url = server.mcp_url();
    let mut logs = String::new();
    let traced = |args: &[&str]| {
        let mut c = cmd(&home);
        c.args(args).arg("-vvv").env("MCP_AUTH_LOG", "trace");
        c
    };
    let o = traced(&[
        "login",
        &url,
        "--name",
        "t",
        "--browser",
        BROWSER,
        "--callback-port",
        "0",
    ])
    .output()
    .await
    .unwrap();
    logs.push_str(&text(&o.stderr));
    ok(&o);
    let key = server_key(&url);
    let rec = store(&home).get(&key).await.unwrap().unwrap();
    let first = rec.tokens.clone().unwrap();
    let client = rec.client.clone().unwrap();
    let secret = client.client_secret.clone().expect("a confidential client");

    age_token(&home, &server).await;
    for args in [
        vec!["token", "t"],
        vec!["test", url.as_str(), "--call", "whoami"],
        vec!["refresh", "t"],
    ] {
        let o = traced(&args).output().await.unwrap();
        logs.push_str(&text(&o.stderr));
        ok(&o);
    }
    let last = store(&home)
        .get(&key)
        .await
        .unwrap()
        .unwrap()
        .tokens
        .unwrap();
    let o = traced(&["logout", "t"]).output().await.unwrap();
    logs.push_str(&text(&o.stderr));
    ok(&o);

    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "trace logging was on"
    );
    let secrets = [
        first.access_token.secret().to_owned(),
        first.refresh_token.as_ref().unwrap().secret().to_owned(),
        last.access_token.secret().to_owned(),
        last.refresh_token.as_ref().unwrap().secret().to_owned(),
        secret.secret().to_owned(),
    ];
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a secret reached the logs");
    }
    for needle in [
        "code_verifier=",
        "code=",
        "refresh_token=",
        "client_secret=",
    ] {
        assert!(!logs.contains(needle), "{needle} reached the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_for_loopback() {
    let (_d, home) = home();
    let o = run(
        &home,
        &["login", "http://mcp.example.com/mcp", "--browser", "true"],
    )
    .await;
    assert_eq!(o.status.code(), Some(5));
    assert!(
        text(&o.stderr).contains("plain http"),
        "{}",
        text(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_server_is_a_clear_error() {
    let (_d, home) = home();
    let o = run(&home, &["token", "nope"]).await;
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o.stdout).is_empty(), "nothing on stdout");
    assert!(
        text(&o.stderr).contains("mcp-auth login"),
        "{}",
        text(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_callback_port_is_a_clear_error() {
    let server = TestServer::start(Config::default()).await;
    let (_d, home) = home();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let o = run(
        &home,
        &[
            "login",
            &server.mcp_url(),
            "--browser",
            BROWSER,
            "--callback-port",
            &port,
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(8));
    assert!(
        text(&o.stderr).contains("--callback-port"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(server.stats().authorizations, 0);
}

/// A redirect URI naming `localhost` works whichever loopback address the browser picks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_redirect_uri() {
    let server = TestServer::start(Config::default()).await;
    let (_d, home) = home();
    let o = run(
        &home,
        &[
            "login",
            &server.mcp_url(),
            "--browser",
            BROWSER,
            "--callback-port",
            "0",
            "--callback-host",
            "localhost",
        ],
    )
    .await;
    ok(&o);
    let s = server.stats();
    let redirect = s.authorization_requests[0]
        .iter()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(redirect.starts_with("http://localhost:"), "{redirect}");
    assert_eq!(s.code_exchanges, 1);
}
