//! Upstream identity providers end to end, every server a real `mcp-auth serve` process on
//! loopback and our CLI as the MCP client:
//! - the OpenID Connect path, with a second `mcp-auth serve` as the upstream provider
//!   (`--upstream-oidc`), in proxy-provider mode: the tool that fetches data upstream with
//!   the user's upstream token, its refresh by the server after it expires, revocation
//!   reaching upstream, and no upstream token in any answer to the client or in the logs;
//! - the GitHub path against a local fake that answers as GitHub does.
//!
//! The person at the browser is played by an HTTP client that keeps cookies per host (as
//! browsers do, whatever the port) and submits the pages' forms.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Form, Path as AxPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use common::{Person, ServeProcess, free_port, http};
use mcp_auth_server::store::Store as _;
use mcp_auth_server::{SealKeys, UpstreamVault};
use serde_json::{Value, json};
use tokio::process::Command;

fn cmd(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcp-auth"));
    c.env("MCP_AUTH_HOME", home)
        .env_remove("BROWSER")
        .env_remove("MCP_AUTH_LOG")
        .kill_on_drop(true);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

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

/// A browser command that writes the URL it is given to `dir/url`.
fn browser_script(dir: &Path) -> PathBuf {
    let script = dir.join("browser.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s' \"$1\" > {}/url.tmp && mv {0}/url.tmp {0}/url\n",
            dir.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    script
}

async fn wait_for_url(dir: &Path) -> String {
    let path = dir.join("url");
    for _ in 0..300 {
        if let Ok(u) = std::fs::read_to_string(&path) {
            let _ = std::fs::remove_file(&path);
            return u;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the CLI never opened a browser");
}

/// Registers a confidential client at `upstream` whose redirect URI is `callback`.
async fn register_at(upstream: &ServeProcess, callback: &str) -> (String, String) {
    let r: Value = http()
        .post(upstream.url("/register"))
        .json(&json!({
            "redirect_uris": [callback], "client_name": "downstream mcp-auth",
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["authorization_code", "refresh_token"],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        r["client_id"].as_str().unwrap().to_owned(),
        r["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// The downstream server's vault, opened beside it on the same SQLite file and key file.
async fn vault_of(
    s: &ServeProcess,
    provider: Arc<dyn mcp_auth_upstream::Upstream>,
) -> UpstreamVault {
    let store = mcp_auth_store_sqlite::SqliteStore::open(s.home().join("server.db"))
        .await
        .unwrap();
    let keys =
        SealKeys::parse(&std::fs::read_to_string(s.home().join("upstream-token.keys")).unwrap())
            .unwrap();
    UpstreamVault::new(
        Arc::new(store),
        "default",
        keys,
        [provider],
        Duration::from_secs(86400),
    )
}

/// `mcp-auth test URL --call TOOL --json` in `home` (already logged in).
async fn call(home: &Path, url: &str, tool: &str) -> Value {
    let out = cmd(home)
        .args([
            "test",
            url,
            "--call",
            tool,
            "--json",
            "--browser",
            "false",
            "--auth-timeout",
            "10",
        ])
        .output()
        .await
        .unwrap();
    let out = ok(&out);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{tool} JSON ({e}): {out}"))
}

fn tool_text(v: &Value) -> String {
    v["result"]["content"][0]["text"]
        .as_str()
        .or_else(|| v["content"][0]["text"].as_str())
        .unwrap_or_else(|| panic!("no tool text in {v}"))
        .to_owned()
}

#[tokio::test]
async fn oidc_upstream_proxy_mode_end_to_end() {
    // The upstream: another mcp-auth serve, auto-approving as dev:user, with access tokens
    // that expire after 31 s (the downstream refreshes within 30 s of expiry).
    let upstream = ServeProcess::start_with(
        &["--dev-auto-approve"],
        None,
        &[("OAUTH_ACCESS_TOKEN_TTL", "31")],
        free_port(),
    )
    .await;
    let port = free_port();
    let downstream_issuer = format!("http://127.0.0.1:{port}");
    let (client_id, secret) =
        register_at(&upstream, &format!("{downstream_issuer}/oauth/callback")).await;
    let downstream = ServeProcess::start_with(
        &["--upstream-oidc", &upstream.base],
        None,
        &[
            ("MCP_AUTH_UPSTREAM_CLIENT_ID", &client_id),
            ("MCP_AUTH_UPSTREAM_CLIENT_SECRET", &secret),
            ("MCP_AUTH_LOG", "debug"),
        ],
        port,
    )
    .await;
    let mcp = downstream.url("/mcp");

    // Our CLI logs in; the person approves the consent page; the upstream approves by itself.
    let home = tempfile::tempdir().unwrap();
    let script = browser_script(home.path());
    let login = cmd(home.path())
        .args(["login", &mcp, "--name", "down", "--browser"])
        .arg(&script)
        .args(["--json"])
        .output();
    let person = async {
        let url = wait_for_url(home.path()).await;
        let mut p = Person::default();
        let consent = p.open(&url).await;
        assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
        // One provider: no choice page; the consent page says who asks and where it goes.
        assert!(
            consent.body.contains("Allow and continue with"),
            "{}",
            consent.body
        );
        assert!(consent.body.contains("registered itself dynamically"));
        let done = p.submit(&consent, &[("decision", "approve")]).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        p
    };
    let (out, person) = tokio::join!(login, person);
    ok(&out.unwrap());

    // whoami: the account is oidc:<upstream subject>.
    let me: Value =
        serde_json::from_str(&tool_text(&call(home.path(), &mcp, "whoami").await)).unwrap();
    assert_eq!(me["sub"], "oidc:dev:user", "{me}");

    // The tool that acts upstream with the user's upstream token.
    let oidc = mcp_auth_upstream::OidcProvider::new(
        {
            let mut c = mcp_auth_upstream::OidcConfig::new(
                upstream.base.clone(),
                client_id.clone(),
                Some(mcp_auth_types::SecretString::new(secret.clone())),
            );
            c.allow_http = true;
            c
        },
        reqwest::Client::new(),
    )
    .unwrap();
    let vault = vault_of(&downstream, Arc::new(oidc)).await;
    let first = vault
        .tokens("oidc:dev:user")
        .await
        .unwrap()
        .expect("upstream tokens kept");
    let profile = tool_text(&call(home.path(), &mcp, "upstream_profile").await);
    let profile: Value = serde_json::from_str(&profile).unwrap();
    assert_eq!(profile["sub"], "dev:user", "{profile}");

    // After the upstream access token is due, the server refreshes it (rotation kept).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let profile = tool_text(&call(home.path(), &mcp, "upstream_profile").await);
    assert!(profile.contains("dev:user"), "{profile}");
    let second = vault.tokens("oidc:dev:user").await.unwrap().unwrap();
    assert_ne!(
        first.access_token.secret(),
        second.access_token.secret(),
        "not refreshed"
    );
    assert_ne!(
        first.refresh_token.as_ref().unwrap().secret(),
        second.refresh_token.as_ref().unwrap().secret(),
        "the upstream refresh token was not rotated"
    );

    // No upstream token in what the client saw, stored or printed, or in the server's logs.
    let ours = ok(&cmd(home.path())
        .args(["token", "down"])
        .output()
        .await
        .unwrap());
    let mut everything = format!("{}\n{ours}\n{}", person.seen, downstream.stderr());
    for entry in walk(home.path()) {
        everything.push_str(&String::from_utf8_lossy(
            &std::fs::read(entry).unwrap_or_default(),
        ));
    }
    for t in [&first, &second] {
        for secret in [Some(&t.access_token), t.refresh_token.as_ref()]
            .into_iter()
            .flatten()
        {
            assert!(
                !everything.contains(secret.secret()),
                "an upstream token leaked to the client or the logs"
            );
        }
    }

    // Logging out at our server revokes the upstream grant: upstream introspection says
    // the refresh token is inactive.
    let rt = second.refresh_token.clone().unwrap();
    let introspect = || async {
        http()
            .post(upstream.url("/introspect"))
            .basic_auth(&client_id, Some(&secret))
            .form(&[("token", rt.secret())])
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(introspect().await["active"], true);
    ok(&cmd(home.path())
        .args(["logout", "down"])
        .output()
        .await
        .unwrap());
    assert_eq!(introspect().await["active"], false);
    assert!(vault.tokens("oidc:dev:user").await.unwrap().is_none());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------- a fake GitHub

#[derive(Clone, Default)]
struct FakeGithub {
    /// Answer the token endpoint with JSON only when asked (`Accept: application/json`),
    /// else form-encoded, as GitHub does.
    codes: Arc<std::sync::Mutex<HashMap<String, String>>>,
    revoked: Arc<AtomicUsize>,
}

async fn gh_authorize(
    State(g): State<FakeGithub>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // An already-authorized OAuth app: GitHub redirects straight back.
    assert_eq!(
        q.get("client_id").map(String::as_str),
        Some("Iv1.fakeclient")
    );
    assert!(q.contains_key("code_challenge"));
    let code = format!("gh-code-{}", g.codes.lock().unwrap().len());
    g.codes
        .lock()
        .unwrap()
        .insert(code.clone(), q["code_challenge"].clone());
    let mut to = url::Url::parse(&q["redirect_uri"]).unwrap();
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"]);
    Redirect::to(to.as_str()).into_response()
}

async fn gh_token(
    State(g): State<FakeGithub>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    use base64::Engine as _;
    use sha2::Digest as _;
    let json_wanted = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("json"));
    let challenge = g
        .codes
        .lock()
        .unwrap()
        .remove(f.get("code").map(String::as_str).unwrap_or(""));
    let verified = challenge.is_some_and(|c| {
        let v = f.get("code_verifier").cloned().unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(v.as_bytes()))
            == c
    }) && f.get("client_secret").map(String::as_str) == Some("gh-secret");
    // GitHub answers errors with 200 and an `error` field.
    let body: Vec<(&str, &str)> = if verified {
        vec![
            ("access_token", "gho_16C7e42F292c6912E7710c838347Ae178B4a"),
            ("scope", "read:user"),
            ("token_type", "bearer"),
        ]
    } else {
        vec![
            ("error", "bad_verification_code"),
            (
                "error_description",
                "The code passed is incorrect or expired.",
            ),
        ]
    };
    if json_wanted {
        let m: serde_json::Map<String, Value> = body
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        axum::Json(Value::Object(m)).into_response()
    } else {
        (
            [(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
            serde_urlencoded::to_string(&body).unwrap(),
        )
            .into_response()
    }
}

async fn gh_user(headers: HeaderMap) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !auth.ends_with("gho_16C7e42F292c6912E7710c838347Ae178B4a") {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}))).into_response();
    }
    axum::Json(json!({
        "login": "octocat", "id": 583231, "node_id": "MDQ6VXNlcjU4MzIzMQ==",
        "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4", "gravatar_id": "",
        "url": "https://api.github.com/users/octocat", "html_url": "https://github.com/octocat",
        "type": "User", "site_admin": false, "name": "The Octocat", "company": "@github",
        "blog": "https://github.blog", "location": "San Francisco", "email": null,
        "hireable": null, "bio": null, "twitter_username": null, "public_repos": 8,
        "public_gists": 8, "followers": 9999, "following": 9,
        "created_at": "2011-01-25T18:44:36Z", "updated_at": "2024-01-22T12:00:00Z"
    }))
    .into_response()
}

async fn gh_revoke(State(g): State<FakeGithub>, AxPath(client): AxPath<String>) -> StatusCode {
    assert_eq!(client, "Iv1.fakeclient");
    g.revoked.fetch_add(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

#[tokio::test]
async fn github_upstream_against_a_fake_github() {
    let fake = FakeGithub::default();
    let app = axum::Router::new()
        .route("/login/oauth/authorize", axum::routing::get(gh_authorize))
        .route("/login/oauth/access_token", axum::routing::post(gh_token))
        .route("/api/v3/user", axum::routing::get(gh_user))
        .route(
            "/api/v3/applications/{client}/grant",
            axum::routing::delete(gh_revoke),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gh = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let toml = format!(
        r#"
[[upstream]]
kind = "github"
client_id = "Iv1.fakeclient"
client_secret_env = "GH_SECRET"
web_base = "{gh}"
api_base = "{gh}/api/v3"
allow_http = true
"#
    );
    let downstream =
        ServeProcess::start_with(&[], Some(&toml), &[("GH_SECRET", "gh-secret")], free_port())
            .await;
    let mcp = downstream.url("/mcp");
    let home = tempfile::tempdir().unwrap();
    let script = browser_script(home.path());
    let login = cmd(home.path())
        .args(["login", &mcp, "--name", "gh", "--browser"])
        .arg(&script)
        .output();
    let person = async {
        let url = wait_for_url(home.path()).await;
        let mut p = Person::default();
        let consent = p.open(&url).await;
        assert!(
            consent.body.contains("Allow and continue with GitHub"),
            "{}",
            consent.body
        );
        let done = p.submit(&consent, &[("decision", "approve")]).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    };
    let (out, ()) = tokio::join!(login, person);
    ok(&out.unwrap());
    let me: Value =
        serde_json::from_str(&tool_text(&call(home.path(), &mcp, "whoami").await)).unwrap();
    assert_eq!(me["sub"], "github:583231", "{me}");
    let profile: Value = serde_json::from_str(&tool_text(
        &call(home.path(), &mcp, "upstream_profile").await,
    ))
    .unwrap();
    assert_eq!(profile["login"], "octocat", "{profile}");
    assert!(
        !downstream
            .stderr()
            .contains("gho_16C7e42F292c6912E7710c838347Ae178B4a")
    );
    // Logging out revokes the grant at GitHub.
    ok(&cmd(home.path())
        .args(["logout", "gh"])
        .output()
        .await
        .unwrap());
    assert_eq!(fake.revoked.load(Ordering::SeqCst), 1);
    // The consent is listed, and can be withdrawn.
    let store_arg = format!("sqlite:{}", downstream.home().join("server.db").display());
    let list = ok(&cmd(home.path())
        .args(["consents", "list", "--store", &store_arg, "--json"])
        .output()
        .await
        .unwrap());
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["user"], "github:583231", "{list}");
    let client = list[0]["client_id"].as_str().unwrap().to_owned();
    ok(&cmd(home.path())
        .args([
            "consents",
            "revoke",
            "github:583231",
            &client,
            "--store",
            &store_arg,
        ])
        .output()
        .await
        .unwrap());
    let store = mcp_auth_store_sqlite::SqliteStore::open(downstream.home().join("server.db"))
        .await
        .unwrap();
    assert!(
        store
            .list_consents("default", None)
            .await
            .unwrap()
            .is_empty()
    );
}
