//! `mcp-auth proxy` as a stdio client sees it, against `mcp-auth serve`: the OAuth flow on
//! the first 401 (curl plays the browser), relaying both ways, a server notification on a
//! request's SSE stream, `--ignore-tool`, a session the server forgot (restart) recovered
//! without the client noticing, clean exit on stdin EOF, and eight proxies started together
//! sharing one authorization.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::ServeProcess;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A browser that counts its launches in `count_file`, then follows the authorization URL
/// with curl (the server approves automatically).
fn browser(count_file: &Path) -> String {
    format!(
        "sh -c 'echo opened >> {}; curl -sfL -o /dev/null \"$1\"' browser",
        count_file.display()
    )
}

struct Proxy {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Proxy {
    fn start(home: &Path, mcp: &str, browser: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-auth"))
            .env("MCP_AUTH_HOME", home)
            .env_remove("MCP_AUTH_LOG")
            .env_remove("BROWSER")
            .args(["proxy", mcp, "--browser", browser])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("mcp-auth proxy starts");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            lines,
        }
    }

    async fn send(&mut self, msg: Value) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{msg}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// The next message from the proxy (every stdout line must be one JSON message).
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("the proxy answers within 60 s")
            .unwrap()
            .expect("the proxy's stdout is open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout line {line:?}: {e}"))
    }

    /// Messages until the answer to `id`; returns (answer, everything before it).
    async fn answer(&mut self, id: i64) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let m = self.next().await;
            if m.get("id") == Some(&json!(id)) && m.get("method").is_none() {
                return (m, before);
            }
            before.push(m);
        }
    }

    async fn initialize(&mut self) {
        self.send(
            json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{},
            "clientInfo":{"name":"proxy-test","version":"1"}}}),
        )
        .await;
        let (init, _) = self.answer(1).await;
        assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
        self.send(json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await;
    }

    async fn call(&mut self, id: i64, tool: &str, text: &str) -> (Value, Vec<Value>) {
        self.send(json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
            "params":{"name":tool,"arguments":{"text":text}}}))
            .await;
        self.answer(id).await
    }

    /// Closes stdin; the proxy must exit 0 promptly.
    async fn close(mut self) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the proxy exits within 10 s of stdin closing")
            .unwrap();
        assert!(status.success(), "proxy exit status {status}");
    }
}

fn launches(count_file: &Path) -> usize {
    std::fs::read_to_string(count_file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn text(result: &Value) -> &str {
    result["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn relays_notifications_hides_tools_and_survives_a_server_restart() {
    let mut server = ServeProcess::start(&["--dev-auto-approve"], None).await;
    let mcp = server.url("/mcp");
    let home = tempfile::tempdir().unwrap();
    let count = home.path().join("browser-launches");
    let mut proxy = Proxy::start(
        home.path(),
        &mcp,
        &browser(&count),
        &["--ignore-tool", "who*"],
    );

    proxy.initialize().await;
    assert_eq!(launches(&count), 1, "the first 401 ran one authorization");

    proxy
        .send(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
        .await;
    let (list, _) = proxy.answer(2).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["echo", "notify"],
        "whoami is hidden by --ignore-tool"
    );

    let (refused, _) = proxy.call(3, "whoami", "").await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");

    // A notification on the request's SSE stream arrives before the answer.
    let (done, before) = proxy.call(4, "notify", "hello from the server").await;
    assert_eq!(text(&done), "sent");
    assert!(
        before.iter().any(|m| m["method"] == "notifications/message"
            && m["params"]["data"] == "hello from the server"),
        "notification relayed: {before:?}"
    );

    let (echo, _) = proxy.call(5, "echo", "before").await;
    assert_eq!(text(&echo), "before");

    // The server restarts and forgets every session: the proxy's next request gets 404, it
    // initializes a new session itself and the client only sees the answer.
    server.restart().await;
    let (echo, before) = proxy.call(6, "echo", "after the restart").await;
    assert_eq!(text(&echo), "after the restart", "{echo}");
    assert!(
        before.is_empty(),
        "the re-initialization is invisible to the client: {before:?}"
    );
    assert_eq!(
        launches(&count),
        1,
        "the stored tokens outlive the restart: no new authorization"
    );

    // Malformed input gets a JSON-RPC parse error, and the proxy goes on.
    proxy
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"this is not json\n")
        .await
        .unwrap();
    let err = proxy.next().await;
    assert_eq!(err["error"]["code"], -32700, "{err}");
    let (echo, _) = proxy.call(7, "echo", "still here").await;
    assert_eq!(text(&echo), "still here");

    proxy.close().await;
}

#[tokio::test]
async fn eight_proxies_started_together_share_one_authorization() {
    let server = ServeProcess::start(&["--dev-auto-approve"], None).await;
    let mcp = server.url("/mcp");
    let home = tempfile::tempdir().unwrap();
    let count = home.path().join("browser-launches");
    let browser = browser(&count);
    let mut proxies: Vec<Proxy> = (0..8)
        .map(|_| Proxy::start(home.path(), &mcp, &browser, &[]))
        .collect();
    let runs = proxies.iter_mut().enumerate().map(|(i, p)| async move {
        p.initialize().await;
        let (echo, _) = p.call(2, "echo", &format!("proxy {i}")).await;
        assert_eq!(text(&echo), format!("proxy {i}"));
    });
    futures_util::future::join_all(runs).await;
    assert_eq!(
        launches(&count),
        1,
        "exactly one authorization for eight proxies with an empty store"
    );
    for p in proxies {
        p.close().await;
    }
}

#[tokio::test]
async fn unknown_flags_are_refused_with_their_name() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-auth"))
        .args(["proxy", "http://127.0.0.1:9/mcp", "--keep-alive"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout, the MCP channel");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--keep-alive"), "{err}");
}

#[tokio::test]
async fn sigterm_ends_the_proxy_cleanly() {
    let server = ServeProcess::start(&["--dev-auto-approve"], None).await;
    let home = tempfile::tempdir().unwrap();
    let count = home.path().join("browser-launches");
    let mut proxy = Proxy::start(home.path(), &server.url("/mcp"), &browser(&count), &[]);
    proxy.initialize().await;
    let pid = proxy.child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), proxy.child.wait())
        .await
        .expect("the proxy exits within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
