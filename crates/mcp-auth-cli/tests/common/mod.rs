//! What the tests that run `mcp-auth serve` as a process share: starting it on a free
//! loopback port, and an HTTP client that never follows redirects.
#![allow(dead_code)]

use std::collections::HashMap;
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

/// A person at a browser: cookies per host (not per port, as browsers keep them), redirects
/// followed by hand, forms submitted.
#[derive(Default)]
pub struct Person {
    pub cookies: HashMap<String, HashMap<String, String>>,
    /// Every page and redirect seen, for the leak checks.
    pub seen: String,
}

pub struct Page {
    pub url: url::Url,
    pub status: reqwest::StatusCode,
    pub body: String,
}

impl Page {
    pub fn field(&self, name: &str) -> String {
        let marker = format!("name={name} value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} at {}: {}", self.url, self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].replace("&amp;", "&")
    }

    pub fn form_action(&self) -> String {
        let start = self.body.find("action=\"").unwrap() + 8;
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].replace("&amp;", "&")
    }
}

impl Person {
    pub async fn request(
        &mut self,
        method: reqwest::Method,
        url: &str,
        form: Option<Vec<(String, String)>>,
    ) -> Page {
        let client = http();
        let mut url = url::Url::parse(url).unwrap();
        let mut method = method;
        let mut form = form;
        for _ in 0..20 {
            let host = url.host_str().unwrap().to_owned();
            let mut req = client.request(method.clone(), url.clone());
            if let Some(jar) = self.cookies.get(&host) {
                let c: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if !c.is_empty() {
                    req = req.header("cookie", c.join("; "));
                }
            }
            if let Some(f) = &form {
                req = req.form(f);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => panic!("{method} {url}: {e}"),
            };
            let status = resp.status();
            for v in resp.headers().get_all("set-cookie") {
                let v = v.to_str().unwrap();
                let (kv, attrs) = v.split_once(';').unwrap_or((v, ""));
                let (k, val) = kv.split_once('=').unwrap();
                let jar = self.cookies.entry(host.clone()).or_default();
                if attrs.contains("Max-Age=0") {
                    jar.remove(k);
                } else {
                    jar.insert(k.to_owned(), val.to_owned());
                }
            }
            if status.is_redirection() {
                let loc = resp.headers()["location"].to_str().unwrap().to_owned();
                self.seen.push_str(&loc);
                self.seen.push('\n');
                url = url.join(&loc).unwrap();
                method = reqwest::Method::GET;
                form = None;
                continue;
            }
            let body = resp.text().await.unwrap_or_default();
            self.seen.push_str(&body);
            self.seen.push('\n');
            return Page { url, status, body };
        }
        panic!("too many redirects");
    }

    pub async fn open(&mut self, url: &str) -> Page {
        self.request(reqwest::Method::GET, url, None).await
    }

    /// Submits the page's form with `extra` fields and the button `button=value`.
    pub async fn submit(&mut self, page: &Page, fields: &[(&str, &str)]) -> Page {
        let action = page.url.join(&page.form_action()).unwrap();
        let mut form: Vec<(String, String)> = Vec::new();
        for hidden in ["pending", "csrf"] {
            if page.body.contains(&format!("name={hidden} value=")) {
                form.push((hidden.into(), page.field(hidden)));
            }
        }
        for (k, v) in fields {
            form.push((k.to_string(), v.to_string()));
        }
        self.request(reqwest::Method::POST, action.as_str(), Some(form))
            .await
    }
}
