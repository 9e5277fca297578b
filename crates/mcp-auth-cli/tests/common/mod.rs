//! What the tests that run `mcp-auth serve` as a process share: starting it on a free
//! loopback port, and an HTTP client that never follows redirects.
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Client;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// No redirects followed (they are what the tests look at), no proxy, 30 s timeout.
pub fn http() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A running `mcp-auth serve` with a private home, killed when dropped; what it logged is
/// shown when a test fails.
pub struct ServeProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`: where it listens (the issuer may be another URL).
    pub base: String,
    stderr: Arc<Mutex<String>>,
    home: tempfile::TempDir,
    port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl ServeProcess {
    /// `mcp-auth serve --listen 127.0.0.1:PORT ARGS…`, with `server_toml` as the
    /// configuration file when given; returns once it prints its URLs.
    pub async fn start(args: &[&str], server_toml: Option<&str>) -> Self {
        Self::start_with(args, server_toml, &[], free_port()).await
    }

    /// Like [`Self::start`] on `port`, with `env` added to its environment.
    pub async fn start_with(
        args: &[&str],
        server_toml: Option<&str>,
        env: &[(&str, &str)],
        port: u16,
    ) -> Self {
        let home = tempfile::tempdir().unwrap();
        if let Some(toml) = server_toml {
            std::fs::write(home.path().join("server.toml"), toml).unwrap();
        }
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, stderr) = Self::spawn(home.path(), port, &args, &env).await;
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            stderr,
            home,
            port,
            args,
            env,
        }
    }

    /// The data directory (its `server.db`, keys, configuration).
    pub fn home(&self) -> &std::path::Path {
        self.home.path()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stops the process and starts it again on the same port with the same home (its
    /// store, keys and configuration): what a restart of the server looks like to clients.
    pub async fn restart(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let (child, stderr) = Self::spawn(self.home.path(), self.port, &self.args, &self.env).await;
        self.child = child;
        self.stderr = stderr;
    }

    async fn spawn(
        home: &std::path::Path,
        port: u16,
        args: &[String],
        env: &[(String, String)],
    ) -> (Child, Arc<Mutex<String>>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-auth"))
            .env("MCP_AUTH_HOME", home)
            .env_remove("MCP_AUTH_LOG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("mcp-auth serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("Authorization server:") {
                    return true;
                }
            }
            false
        };
        let up = tokio::time::timeout(Duration::from_secs(30), ready).await == Ok(true);
        assert!(
            up,
            "mcp-auth serve {args:?} did not start; stderr: {}",
            stderr.lock().unwrap()
        );
        // Keep draining stdout so a late line never meets a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, stderr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!(
                "mcp-auth serve at {} stderr:\n{}",
                self.base,
                self.stderr.lock().unwrap_or_else(|e| e.into_inner())
            );
        }
    }
}
