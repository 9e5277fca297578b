//! `mcp-auth serve` end to end: the real binary is the authorization server and the
//! protected demo MCP endpoint; our CLI, and clients played by hand with `reqwest`, talk to it
//! over loopback. Every server runs in its own process with its own `MCP_AUTH_HOME`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_auth_client::store::{CredentialStore, FileStore, ServerRecord, server_key};
use mcp_auth_server::{AccessClaims, Keys};
use mcp_auth_store_sqlite::SqliteStore;
use mcp_auth_types::PkceVerifier;
use reqwest::header::{self, HeaderMap};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};

const BROWSER: &str = "curl -sS -L -o /dev/null";
/// The redirect URI of hand-played clients: never contacted, redirects are not followed.
const REDIRECT: &str = "http://127.0.0.1:9/callback";
/// `--dev-auto-approve`'s subject (`ServerConfig::dev_subject`).
const DEV_SUBJECT: &str = "dev:user";
const PASSWORD: &str = "correct horse battery";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-auth")
}

/// The binary with a private home and none of the caller's settings.
fn cmd(home: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env("MCP_AUTH_HOME", home)
        .env_remove("BROWSER")
        .env_remove("MCP_AUTH_LOG")
        .env_remove("MCP_AUTH_CLIENT_SECRET")
        .kill_on_drop(true);
    for var in [
        "OAUTH_AUTH_CODE_TTL",
        "OAUTH_ACCESS_TOKEN_TTL",
        "OAUTH_REFRESH_TOKEN_TTL",
        "OAUTH_CLIENT_REGISTRATION_TTL",
    ] {
        c.env_remove(var);
    }
    c
}

async fn run(home: &Path, args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(60), cmd(home).args(args).output())
        .await
        .expect("mcp-auth did not finish within 60 s")
        .expect("mcp-auth could not be started")
}

async fn run_with_stdin(home: &Path, args: &[&str], input: &str) -> Output {
    let mut child = cmd(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mcp-auth could not be started");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("mcp-auth did not finish within 60 s")
        .unwrap()
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

fn home() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("home");
    (dir, p)
}

/// A running `mcp-auth serve`, killed when dropped.
struct Serve {
    child: Child,
    mcp_url: String,
    issuer: String,
    home: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Serve {
    /// Starts `mcp-auth serve --listen 127.0.0.1:0` and reads the URLs it prints.
    async fn start(home: &Path, dev_auto_approve: bool) -> Self {
        Self::start_on(home, "127.0.0.1:0", dev_auto_approve).await
    }

    async fn start_on(home: &Path, listen: &str, dev_auto_approve: bool) -> Self {
        let mut c = cmd(home);
        c.args(["serve", "--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if dev_auto_approve {
            c.arg("--dev-auto-approve");
        }
        let mut child = c.spawn().expect("mcp-auth serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&text(&buf[..n]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut mcp_url, mut issuer) = (None, None);
        let read = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(u) = line.strip_prefix("MCP server:") {
                    mcp_url = Some(u.trim().to_owned());
                } else if let Some(u) = line.strip_prefix("Authorization server:") {
                    issuer = Some(u.trim().to_owned());
                }
                if mcp_url.is_some() && issuer.is_some() {
                    break;
                }
            }
        };
        let timed_out = tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .is_err();
        let (Some(mcp_url), Some(issuer)) = (mcp_url, issuer) else {
            let _ = child.start_kill();
            panic!(
                "mcp-auth serve printed no URLs (timed out: {timed_out}); stderr: {}",
                stderr.lock().unwrap()
            );
        };
        // Keep draining stdout so a late line never meets a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            mcp_url,
            issuer,
            home: home.to_owned(),
            stderr,
        }
    }

    fn port(&self) -> u16 {
        url::Url::parse(&self.issuer).unwrap().port().unwrap()
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    async fn stop(mut self) {
        self.child.kill().await.expect("mcp-auth serve is killed");
    }

    /// Adds a local account through the CLI (`users add`, password on stdin).
    async fn add_user(&self, name: &str, password: &str) {
        ok(&run_with_stdin(
            &self.home,
            &["users", "add", name],
            &format!("{password}\n"),
        )
        .await);
    }

    /// Signs `claims` with this server's own current key, read from its SQLite store (the
    /// key a real token would carry): forged tokens that differ from real ones only where the
    /// test says.
    async fn sign(&self, claims: &AccessClaims) -> String {
        let store = SqliteStore::open(self.home.join("server.db"))
            .await
            .unwrap();
        let keys = Keys::new(Arc::new(store.clone()), "default");
        keys.ensure(Duration::from_secs(900)).await.unwrap();
        let t = keys.sign(claims).await.unwrap();
        store.close().await;
        t
    }
}

impl Drop for Serve {
    /// A failing test shows what the server logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "mcp-auth serve ({}) stderr:\n{}",
                self.issuer,
                self.stderr.lock().unwrap_or_else(|e| e.into_inner())
            );
        }
    }
}

fn http() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn now() -> u64 {
    mcp_auth_client::store::now_secs()
}

/// The query parameters of a redirect's `Location`, which must go to [`REDIRECT`].
#[track_caller]
fn redirect_params(r: &Response) -> HashMap<String, String> {
    let loc = r
        .headers()
        .get(header::LOCATION)
        .unwrap_or_else(|| panic!("no Location on a {} response", r.status()))
        .to_str()
        .unwrap();
    let u = url::Url::parse(loc).unwrap();
    let mut base = u.clone();
    base.set_query(None);
    assert_eq!(
        base.as_str(),
        REDIRECT,
        "to the client's redirect URI: {loc}"
    );
    u.query_pairs().into_owned().collect()
}

#[track_caller]
fn assert_no_store(h: &HeaderMap) {
    assert_eq!(
        h.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "Cache-Control: no-store"
    );
}

/// RFC 7591 registration; 201 with the stored metadata and the credentials.
async fn register(s: &Serve, auth_method: &str) -> Value {
    let r = http()
        .post(s.endpoint("/register"))
        .json(&json!({
            "client_name": "serve.rs test client",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": auth_method,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_no_store(r.headers());
    r.json().await.unwrap()
}

/// A `client_secret_basic` client: `(client_id, client_secret)`.
async fn confidential_client(s: &Serve) -> (String, String) {
    let c = register(s, "client_secret_basic").await;
    (
        c["client_id"].as_str().unwrap().to_owned(),
        c["client_secret"]
            .as_str()
            .expect("a client secret")
            .to_owned(),
    )
}

/// RFC 7662 introspection by a confidential client; 200 and `no-store` expected.
async fn introspect(s: &Serve, token: &str, id: &str, secret: &str) -> Value {
    let r = http()
        .post(s.endpoint("/introspect"))
        .basic_auth(id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_no_store(r.headers());
    r.json().await.unwrap()
}

async fn public_client(s: &Serve) -> String {
    let c = register(s, "none").await;
    assert!(c.get("client_secret").is_none(), "a public client: {c}");
    c["client_id"].as_str().unwrap().to_owned()
}

/// `GET /authorize` with `params`.
async fn authorize(s: &Serve, params: &[(&str, &str)]) -> Response {
    http()
        .get(s.endpoint("/authorize"))
        .query(params)
        .send()
        .await
        .unwrap()
}

/// The parameters of a well-formed request for our MCP endpoint.
fn auth_params<'a>(
    s: &'a Serve,
    client_id: &'a str,
    challenge: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", "st-1"),
        ("resource", &s.mcp_url),
    ]
}

/// A code from a `--dev-auto-approve` server, with its `state` and `iss` checked.
async fn code(s: &Serve, client_id: &str, verifier: &PkceVerifier) -> String {
    let ch = verifier.challenge();
    let r = authorize(s, &auth_params(s, client_id, ch.as_str())).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_no_store(r.headers());
    let p = redirect_params(&r);
    assert_eq!(p.get("state").map(String::as_str), Some("st-1"));
    assert_eq!(p.get("iss"), Some(&s.issuer), "RFC 9207 iss");
    p.get("code").cloned().expect("a code")
}

/// `POST /token`; every answer, success or error, must be `no-store`.
async fn token(s: &Serve, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = http()
        .post(s.endpoint("/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_no_store(r.headers());
    (status, r.json().await.unwrap())
}

async fn exchange(s: &Serve, client_id: &str, code: &str, verifier: &str) -> (StatusCode, Value) {
    token(
        s,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn refresh(s: &Serve, client_id: &str, rt: &str) -> (StatusCode, Value) {
    token(
        s,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", rt),
        ],
    )
    .await
}

/// Register, authorize, exchange: `(client_id, token response)`.
async fn tokens_by_hand(s: &Serve) -> (String, Value) {
    let client_id = public_client(s).await;
    let v = PkceVerifier::generate();
    let c = code(s, &client_id, &v).await;
    let (status, t) = exchange(s, &client_id, &c, v.secret()).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["refresh_token"].is_string(), "{t}");
    (client_id, t)
}

#[track_caller]
fn assert_oauth_error(got: (StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"], code, "{}", got.1);
}

/// `tools/call whoami` on the MCP endpoint, with `token` as bearer when given.
async fn whoami(s: &Serve, token: Option<&str>) -> Response {
    let mut rq = http()
        .post(&s.mcp_url)
        .header(header::ACCEPT, "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "whoami", "arguments": {}}}));
    if let Some(t) = token {
        rq = rq.bearer_auth(t);
    }
    rq.send().await.unwrap()
}

/// The identity `whoami` reports for a token the MCP endpoint accepts.
async fn whoami_ok(s: &Serve, token: &str) -> Value {
    let r = whoami(s, Some(token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let text = body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("a text result: {body}"));
    serde_json::from_str(text).unwrap()
}

/// The MCP endpoint refuses `token` with 401 `invalid_token` and a challenge naming its
/// metadata.
#[track_caller]
fn assert_invalid_token(s: &Serve, r: &Response, what: &str) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
    let ch = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(ch.starts_with("Bearer "), "{what}: {ch}");
    assert!(ch.contains(r#"error="invalid_token""#), "{what}: {ch}");
    assert!(ch.contains(&prm_param(s)), "{what}: {ch}");
}

fn prm_param(s: &Serve) -> String {
    format!(
        r#"resource_metadata="{}/.well-known/oauth-protected-resource/mcp""#,
        s.issuer
    )
}

fn claims(s: &Serve) -> AccessClaims {
    let now = now();
    AccessClaims {
        iss: s.issuer.clone(),
        sub: "forged:user".into(),
        aud: s.mcp_url.clone(),
        exp: now + 600,
        iat: now,
        jti: format!("jti-{}", PkceVerifier::generate().secret()),
        client_id: "forged-client".into(),
        scope: String::new(),
        sid: None,
        cnf: None,
    }
}

async fn login(home: &Path, url: &str, name: &str) {
    ok(&run(
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
    .await);
}

/// `mcp-auth test URL --call whoami`, which must not need a login (a browser that fails and
/// a short deadline make an unexpected login fail fast).
async fn cli_whoami(home: &Path, url: &str) -> Value {
    let out = ok(&run(
        home,
        &[
            "test",
            url,
            "--call",
            "whoami",
            "--browser",
            "false",
            "--auth-timeout",
            "10",
        ],
    )
    .await);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("whoami JSON ({e}): {out}"))
}

async fn cli_record(home: &Path, url: &str) -> ServerRecord {
    FileStore::open(home.join("store"))
        .expect("the CLI's store opens")
        .get(&server_key(url))
        .await
        .unwrap()
        .expect("a record for the server")
}

// ---------------------------------------------------------------- 1. CLI against serve

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_logs_in_to_serve_and_calls_whoami() {
    let (_d, home) = home();
    let s = Serve::start(&home, true).await;
    login(&home, &s.mcp_url, "demo").await;
    let me = cli_whoami(&home, &s.mcp_url).await;
    let rec = cli_record(&home, &s.mcp_url).await;
    assert_eq!(me["subject"], DEV_SUBJECT, "{me}");
    assert_eq!(
        me["client_id"],
        rec.client.expect("a registered client").client_id.as_str(),
        "{me}"
    );
    assert_eq!(me["issuer"], s.issuer.as_str(), "{me}");
    assert_eq!(rec.issuer, s.issuer);
}

// ---------------------------------------------------------------- 2. login page

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_page_logs_in_a_local_account() {
    let (_d, home) = home();
    let s = Serve::start(&home, false).await;
    // Added while the server runs: both processes share the SQLite file.
    s.add_user("alice", PASSWORD).await;
    let short = run_with_stdin(&home, &["users", "add", "carol"], "short\n").await;
    assert!(!short.status.success(), "a short password is refused");
    assert!(
        text(&short.stderr).contains("at least 8"),
        "{}",
        text(&short.stderr)
    );
    let client_id = public_client(&s).await;
    let v = PkceVerifier::generate();
    let ch = v.challenge();
    let params = auth_params(&s, &client_id, ch.as_str());

    let page = authorize(&s, &params).await;
    assert_eq!(page.status(), StatusCode::OK);
    let h = page.headers().clone();
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    assert!(
        h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_no_store(&h);
    let set_cookie = h[header::SET_COOKIE].to_str().unwrap().to_owned();
    let csrf_name = mcp_auth_server::flow::cookie_name(&s.issuer, "mcp_auth_csrf");
    let csrf = set_cookie
        .strip_prefix(&format!("{csrf_name}="))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("an mcp_auth_csrf cookie: {set_cookie}"))
        .to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    let html = page.text().await.unwrap();
    let hidden = |name: &str| {
        let marker = format!("name={name} value=\"");
        let start = html
            .find(&marker)
            .unwrap_or_else(|| panic!("hidden field {name} in {html}"))
            + marker.len();
        html[start..start + html[start..].find('"').unwrap()].to_owned()
    };
    let pending = hidden("pending");
    assert_eq!(
        hidden("csrf"),
        csrf,
        "the form and the cookie carry one token"
    );

    let post = |form: Vec<(&'static str, String)>, cookie: Option<String>| {
        let mut rq = http().post(s.endpoint("/authorize")).form(&form);
        if let Some(c) = cookie {
            rq = rq.header(header::COOKIE, c);
        }
        rq.send()
    };
    let form = |pending: &str, csrf: &str, password: &str, decision: &str| {
        vec![
            ("pending", pending.to_owned()),
            ("csrf", csrf.to_owned()),
            ("username", "alice".to_owned()),
            ("password", password.to_owned()),
            ("decision", decision.to_owned()),
        ]
    };
    let cookie = |c: &str| Some(format!("other=1; {csrf_name}={c}"));

    // Wrong password, or no such user: the page again, with the same error, no redirect.
    let mut unknown_user = form(&pending, &csrf, PASSWORD, "approve");
    unknown_user[2].1 = "bob".into();
    for f in [
        form(&pending, &csrf, "not the password", "approve"),
        unknown_user,
    ] {
        let r = post(f, cookie(&csrf)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get(header::LOCATION).is_none());
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("Wrong username or password")
        );
    }

    // Right password: to the client with code, state and iss. RFC 9700 §4.12: 303, so the
    // browser does not re-post the password to the client.
    let r = post(form(&pending, &csrf, PASSWORD, "approve"), cookie(&csrf))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_no_store(r.headers());
    let p = redirect_params(&r);
    assert_eq!(p.get("state").map(String::as_str), Some("st-1"));
    assert_eq!(p.get("iss"), Some(&s.issuer));
    let code = p.get("code").expect("a code").clone();

    // The same form again: the pending request is spent.
    let r = post(form(&pending, &csrf, PASSWORD, "approve"), cookie(&csrf))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get(header::LOCATION).is_none());

    // The code belongs to alice.
    let (status, t) = exchange(&s, &client_id, &code, v.secret()).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let me = whoami_ok(&s, t["access_token"].as_str().unwrap()).await;
    assert_eq!(me["subject"], "local:alice");
    assert_eq!(me["client_id"], client_id.as_str());

    // A new request: without the cookie, or with another one, the form is refused.
    let page = authorize(&s, &params).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csrf2 = page.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .strip_prefix(&format!("{csrf_name}="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let marker = "name=pending value=\"";
    let start = html.find(marker).unwrap() + marker.len();
    let pending2 = html[start..start + html[start..].find('"').unwrap()].to_owned();
    assert_ne!(pending2, pending);
    let r = post(form(&pending2, &csrf2, PASSWORD, "approve"), None)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(header::LOCATION).is_none());
    let r = post(form(&pending2, &csrf2, PASSWORD, "approve"), cookie(&csrf))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "another request's cookie"
    );
    // The first request's form token does not fit this request.
    let r = post(form(&pending2, &csrf, PASSWORD, "approve"), cookie(&csrf))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "another request's token");

    // Deny: access_denied back to the client, with state and iss.
    let r = post(form(&pending2, &csrf2, "", "deny"), cookie(&csrf2))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let p = redirect_params(&r);
    assert_eq!(p.get("error").map(String::as_str), Some("access_denied"));
    assert_eq!(p.get("state").map(String::as_str), Some("st-1"));
    assert_eq!(p.get("iss"), Some(&s.issuer));
    assert!(!p.contains_key("code"));
}

// ---------------------------------------------------------------- 3. token endpoint

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_replay_is_refused_and_revokes_what_the_code_issued() {
    let (_d, home) = home();
    let s = Serve::start(&home, true).await;
    let client_id = public_client(&s).await;
    let v = PkceVerifier::generate();
    let c = code(&s, &client_id, &v).await;
    let (status, first) = exchange(&s, &client_id, &c, v.secret()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let rt = first["refresh_token"].as_str().expect("a refresh token");
    let at = first["access_token"].as_str().expect("an access token");
    let (id, secret) = confidential_client(&s).await;
    assert_eq!(introspect(&s, at, &id, &secret).await["active"], true);

    assert_oauth_error(
        exchange(&s, &client_id, &c, v.secret()).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
    // RFC 6749 §4.1.2: what the code issued is revoked, the access token included.
    assert_oauth_error(
        refresh(&s, &client_id, rt).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
    assert_eq!(introspect(&s, at, &id, &secret).await["active"], false);
    // Never used at /mcp before, so no verified-token cache can still hold it.
    assert_invalid_token(
        &s,
        &whoami(&s, Some(at)).await,
        "access token of a replayed code",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let (_d, home) = home();
    let s = Serve::start(&home, true).await;
    let (client_id, t) = tokens_by_hand(&s).await;
    let rt1 = t["refresh_token"].as_str().unwrap().to_owned();

    // Another client cannot use it, nor rotate it away from its owner.
    let thief = public_client(&s).await;
    assert_oauth_error(
        refresh(&s, &thief, &rt1).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );

    let (status, t2) = refresh(&s, &client_id, &rt1).await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    let rt2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt2, rt1, "rotated");
    whoami_ok(&s, t2["access_token"].as_str().unwrap()).await;

    let (status, t3) = refresh(&s, &client_id, &rt2).await;
    assert_eq!(status, StatusCode::OK, "the new refresh token works: {t3}");
    let rt3 = t3["refresh_token"].as_str().unwrap().to_owned();
    let at3 = t3["access_token"].as_str().unwrap().to_owned();
    assert_oauth_error(
        refresh(&s, &client_id, &rt2).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
    // RFC 9700 §4.14.2: the reuse revoked the family, the newest token included, and the
    // access tokens issued in it.
    assert_oauth_error(
        refresh(&s, &client_id, &rt3).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
    assert_invalid_token(
        &s,
        &whoami(&s, Some(&at3)).await,
        "access token of a reused family",
    );
    let (id, secret) = confidential_client(&s).await;
    let at1 = t["access_token"].as_str().unwrap();
    assert_eq!(introspect(&s, at1, &id, &secret).await["active"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_uri_mismatch_is_an_error_page_then_invalid_grant() {
    let (_d, home) = home();
    let s = Serve::start(&home, true).await;
    let client_id = public_client(&s).await;
    let v = PkceVerifier::generate();
    let ch = v.challenge();

    // At /authorize the redirect URI is not trusted: an error page, never a redirect
    // (RFC 6749 §4.1.2.1).
    for bad in [
        "http://127.0.0.1:9/other",
        "https://attacker.example.com/callback",
    ] {
        let mut p = auth_params(&s, &client_id, ch.as_str());
        p[2] = ("redirect_uri", bad);
        let r = authorize(&s, &p).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.headers().get(header::LOCATION).is_none(), "{bad}");
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }

    // At /token it must be the one of the authorization request.
    let c = code(&s, &client_id, &v).await;
    assert_oauth_error(
        token(
            &s,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &client_id),
                ("code", &c),
                ("redirect_uri", "http://127.0.0.1:9/other"),
                ("code_verifier", v.secret()),
            ],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
}

/// RFC 6749 §4.1.3 and OAuth 2.1 §4.1.3: `redirect_uri` is required at the token endpoint
/// only if the authorization request included it. A client with one registered redirect
/// URI may omit it from both requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_uri_may_be_omitted_at_token_when_omitted_at_authorize() {
    let (_d, home) = home();
    let s = Serve::start(&home, true).await;
    let client_id = public_client(&s).await;
    let v = PkceVerifier::generate();
    let ch = v.challenge();
    let mut p = auth_params(&s, &client_id, ch.as_str());
    p.remove(2);
    let r = authorize(&s, &p).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let c = redirect_params(&r).get("code").cloned().expect("a code");
    let (status, t) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &c),
            ("code_verifier", v.secret()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_is_required_s256_only_and_checked() {
    let (_d, home) = home();
    let s = Serve::start(&home, true).await;
    let client_id = public_client(&s).await;
    let v = PkceVerifier::generate();
    let ch = v.challenge();

    let invalid_request = |r: &Response, what: &str| {
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{what}");
        assert_no_store(r.headers());
        let p = redirect_params(r);
        assert_eq!(
            p.get("error").map(String::as_str),
            Some("invalid_request"),
            "{what}"
        );
        assert_eq!(p.get("state").map(String::as_str), Some("st-1"), "{what}");
        assert_eq!(p.get("iss"), Some(&s.issuer), "{what}");
        assert!(!p.contains_key("code"), "{what}");
    };
    let mut p = auth_params(&s, &client_id, ch.as_str());
    p.retain(|(k, _)| !k.starts_with("code_challenge"));
    invalid_request(&authorize(&s, &p).await, "no PKCE");

    // plain: the challenge is the verifier itself.
    let mut p = auth_params(&s, &client_id, v.secret());
    p[4] = ("code_challenge_method", "plain");
    invalid_request(&authorize(&s, &p).await, "plain");

    let mut p = auth_params(&s, &client_id, ch.as_str());
    p.retain(|(k, _)| *k != "code_challenge_method");
    invalid_request(&authorize(&s, &p).await, "no method (defaults to plain)");

    let c = code(&s, &client_id, &v).await;
    let other = PkceVerifier::generate();
    assert_oauth_error(
        exchange(&s, &client_id, &c, other.secret()).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
    let c = code(&s, &client_id, &v).await;
    assert_oauth_error(
        token(
            &s,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &client_id),
                ("code", &c),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_client_gets_an_error_page_and_invalid_client() {
    let (_d, home) = home();
    let s = Serve::start(&home, true).await;
    let v = PkceVerifier::generate();
    let ch = v.challenge();
    let r = authorize(&s, &auth_params(&s, "no-such-client", ch.as_str())).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get(header::LOCATION).is_none());
    assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
    assert_no_store(r.headers());

    assert_oauth_error(
        exchange(&s, "no-such-client", "some-code", v.secret()).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    );
}

// ---------------------------------------------------------------- 4. resource server

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_for_another_resource_are_refused() {
    let (_d, home) = home();
    let s = Serve::start(&home, true).await;
    let client_id = public_client(&s).await;
    let v = PkceVerifier::generate();
    let ch = v.challenge();
    let mut p = auth_params(&s, &client_id, ch.as_str());
    p[6] = ("resource", "http://127.0.0.1:1/other");
    let r = authorize(&s, &p).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = redirect_params(&r);
    assert_eq!(q.get("error").map(String::as_str), Some("invalid_target"));
    assert_eq!(q.get("iss"), Some(&s.issuer));
    assert!(!q.contains_key("code"));

    // Nor at the token endpoint, for a code issued without a resource.
    let mut p = auth_params(&s, &client_id, ch.as_str());
    p.remove(6);
    let r = authorize(&s, &p).await;
    let c = redirect_params(&r).get("code").cloned().expect("a code");
    assert_oauth_error(
        token(
            &s,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &client_id),
                ("code", &c),
                ("redirect_uri", REDIRECT),
                ("code_verifier", v.secret()),
                ("resource", "http://127.0.0.1:1/other"),
            ],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_target",
    );

    // A token signed with the server's own key for another audience is refused by /mcp;
    // the same token for our audience is accepted (so only `aud` made the difference).
    let good = s.sign(&claims(&s)).await;
    assert_eq!(whoami_ok(&s, &good).await["subject"], "forged:user");
    let other = s
        .sign(&AccessClaims {
            aud: "http://127.0.0.1:1/other".into(),
            ..claims(&s)
        })
        .await;
    assert_invalid_token(&s, &whoami(&s, Some(&other)).await, "wrong aud");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_refuses_missing_tampered_expired_and_foreign_tokens() {
    let (_d, home) = home();
    let s = Serve::start(&home, true).await;

    // No token: 401, a challenge naming the metadata and no error code (RFC 6750 §3.1).
    let r = whoami(&s, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let ch = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(ch.starts_with("Bearer "), "{ch}");
    assert!(ch.contains(&prm_param(&s)), "{ch}");
    assert!(!ch.contains("error="), "{ch}");

    let (_, t) = tokens_by_hand(&s).await;
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(whoami_ok(&s, at).await["subject"], DEV_SUBJECT);

    // One character of the signature changed.
    let sig = at.rfind('.').unwrap() + 1;
    let mut bytes = at.as_bytes().to_vec();
    bytes[sig + 5] = if bytes[sig + 5] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    assert_invalid_token(&s, &whoami(&s, Some(&tampered)).await, "tampered");

    // Expired beyond any leeway, signed with the real key.
    let expired = s
        .sign(&AccessClaims {
            exp: now() - 300,
            iat: now() - 1200,
            ..claims(&s)
        })
        .await;
    assert_invalid_token(&s, &whoami(&s, Some(&expired)).await, "expired");

    // The real key, another issuer.
    let foreign_iss = s
        .sign(&AccessClaims {
            iss: "http://127.0.0.1:1".into(),
            ..claims(&s)
        })
        .await;
    assert_invalid_token(&s, &whoami(&s, Some(&foreign_iss)).await, "foreign iss");

    assert_invalid_token(&s, &whoami(&s, Some("not-a-jwt")).await, "garbage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_of_another_server_is_refused() {
    let (_d1, home1) = home();
    let (_d2, home2) = home();
    let (s1, s2) = tokio::join!(Serve::start(&home1, true), Serve::start(&home2, true));
    let (_, t) = tokens_by_hand(&s2).await;
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(whoami_ok(&s2, at).await["issuer"], s2.issuer.as_str());
    assert_invalid_token(&s1, &whoami(&s1, Some(at)).await, "another server's token");
}

// ---------------------------------------------------------------- 5. metadata

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_jwks_and_protected_resource_metadata() {
    let (_d, home) = home();
    let s = Serve::start(&home, true).await;
    let get = |url: String| async move {
        let r = http().get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        r.json::<Value>().await.unwrap()
    };
    let origin = s.issuer.clone();

    let jwks = get(s.endpoint("/jwks")).await;
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(!keys.is_empty(), "{jwks}");
    for k in keys {
        assert_eq!(k["kty"], "EC", "{k}");
        assert_eq!(k["crv"], "P-256", "{k}");
        assert_eq!(k["alg"], "ES256", "{k}");
        assert!(k["kid"].is_string() && k["x"].is_string() && k["y"].is_string());
        assert!(k.get("d").is_none(), "no private part: {k}");
    }

    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let m = get(format!("{origin}{path}")).await;
        assert_eq!(m["issuer"], s.issuer.as_str(), "{path}");
        assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(m["authorization_response_iss_parameter_supported"], true);
        assert_eq!(m["authorization_endpoint"], s.endpoint("/authorize"));
        assert_eq!(m["token_endpoint"], s.endpoint("/token"));
        assert_eq!(m["jwks_uri"], s.endpoint("/jwks"));
        assert_eq!(m["registration_endpoint"], s.endpoint("/register"));
        assert_eq!(m["response_types_supported"], json!(["code"]));
    }

    let prm = get(format!("{origin}/.well-known/oauth-protected-resource/mcp")).await;
    assert_eq!(prm["resource"], s.mcp_url.as_str());
    assert_eq!(prm["authorization_servers"], json!([s.issuer]));
}

// ---------------------------------------------------------------- 6. persistence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_signing_key_tokens_and_refresh() {
    let (_d, home) = home();
    let s = Serve::start(&home, true).await;
    login(&home, &s.mcp_url, "p").await;
    let before = cli_record(&home, &s.mcp_url).await;
    let jwks_before: Value = http()
        .get(s.endpoint("/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listen = format!("127.0.0.1:{}", s.port());
    let mcp_url = s.mcp_url.clone();
    s.stop().await;

    let s = Serve::start_on(&home, &listen, true).await;
    assert_eq!(s.mcp_url, mcp_url);
    let jwks_after: Value = http()
        .get(s.endpoint("/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks_after, jwks_before, "the same signing key");
    // The stored access token, by hand: no refresh can hide a lost key here.
    let at = before.tokens.as_ref().unwrap().access_token.secret();
    assert_eq!(whoami_ok(&s, at).await["subject"], DEV_SUBJECT);
    assert_eq!(cli_whoami(&home, &s.mcp_url).await["subject"], DEV_SUBJECT);
    let after = cli_record(&home, &s.mcp_url).await;
    assert_eq!(
        after.tokens.as_ref().unwrap().access_token.secret(),
        at,
        "no new login or refresh was needed"
    );

    ok(&run(&home, &["refresh", "p"]).await);
    let refreshed = cli_record(&home, &s.mcp_url).await;
    assert_ne!(refreshed.tokens.as_ref().unwrap().access_token.secret(), at);
    assert_eq!(cli_whoami(&home, &s.mcp_url).await["subject"], DEV_SUBJECT);
}

// ---------------------------------------------------------------- 7. revocation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_refresh_and_access_tokens() {
    let (_d, home) = home();
    let s = Serve::start(&home, true).await;
    login(&home, &s.mcp_url, "r").await;
    let rec = cli_record(&home, &s.mcp_url).await;
    let client_id = rec.client.as_ref().unwrap().client_id.clone();
    let tokens = rec.tokens.as_ref().unwrap();
    let rt = tokens.refresh_token.as_ref().expect("a refresh token");
    let at = tokens.access_token.secret();

    // Introspection sees the refresh token live without rotating it away from the CLI.
    let (id, secret) = confidential_client(&s).await;
    assert_eq!(
        introspect(&s, rt.secret(), &id, &secret).await["active"],
        true
    );

    let o = run(&home, &["logout", "r"]).await;
    ok(&o);
    assert!(!text(&o.stderr).contains("warning"), "{}", text(&o.stderr));

    assert_eq!(
        introspect(&s, rt.secret(), &id, &secret).await["active"],
        false
    );
    assert_oauth_error(
        refresh(&s, &client_id, rt.secret()).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
    // Never used at /mcp before, so no verified-token cache can still hold it.
    assert_invalid_token(&s, &whoami(&s, Some(at)).await, "revoked access token");
}

// ---------------------------------------------------------------- 8. introspection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_for_confidential_clients() {
    let (_d, home) = home();
    let s = Serve::start(&home, true).await;
    let (public_id, t) = tokens_by_hand(&s).await;
    let at = t["access_token"].as_str().unwrap();
    let (id, secret) = confidential_client(&s).await;

    let v = introspect(&s, at, &id, &secret).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["sub"], DEV_SUBJECT);
    assert_eq!(v["client_id"], public_id.as_str());
    assert_eq!(v["aud"], s.mcp_url.as_str());
    assert_eq!(v["iss"], s.issuer.as_str());
    assert_eq!(v["token_type"], "Bearer");

    assert_eq!(
        introspect(&s, "garbage", &id, &secret).await,
        json!({"active": false})
    );

    let refused = |rq: reqwest::RequestBuilder| async move {
        let r = rq.send().await.unwrap();
        let status = r.status();
        assert_no_store(r.headers());
        (status, r.json::<Value>().await.unwrap())
    };
    let endpoint = s.endpoint("/introspect");
    assert_oauth_error(
        refused(
            http()
                .post(&endpoint)
                .form(&[("token", at), ("client_id", &public_id)]),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    );
    assert_oauth_error(
        refused(
            http()
                .post(&endpoint)
                .basic_auth(&id, Some("wrong-secret"))
                .form(&[("token", at)]),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    );

    // Revoked by its client: inactive.
    let r = http()
        .post(s.endpoint("/revoke"))
        .form(&[("token", at), ("client_id", &public_id)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        introspect(&s, at, &id, &secret).await,
        json!({"active": false})
    );
}
