//! The web connector (`mcp-auth-connect`) against `mcp-auth serve` on loopback: a small app
//! mounts the connector's routes, users sign in to it by a header, and a browser (an HTTP
//! client keeping cookies) connects their accounts on the protected MCP server.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::request::Parts;
use common::{ServeProcess, free_port, http};
use mcp_auth_client::store::{CredentialStore as _, server_key};
use mcp_auth_client::{HttpOptions, ResourceMode};
use mcp_auth_connect::vault::{MemoryVault, Vault, VaultBackend};
use mcp_auth_connect::{ConnectError, Connector, ConnectorConfig, CurrentUser, McpServer};
use mcp_auth_types::ResourceUrl;
use mcp_auth_types::seal::SealKeys;
use serde_json::{Value, json};

/// The app's sign-in, for the tests: the `x-user` header.
struct HeaderUser;

#[async_trait]
impl CurrentUser for HeaderUser {
    async fn current_user(&self, parts: &Parts) -> Option<String> {
        parts
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

struct App {
    base: String,
    connector: Connector,
    _task: tokio::task::JoinHandle<()>,
}

async fn app(serve: &ServeProcess, backend: Arc<dyn VaultBackend>) -> App {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = McpServer::new("demo", "Demo MCP", serve.url("/mcp"));
    server.resource = ResourceMode::Auto;
    let connector = Connector::new(
        ConnectorConfig {
            base_url: base.clone(),
            servers: vec![server],
            cookie_keys: SealKeys::new("c1", [11u8; 32]).unwrap(),
            return_to: "/".into(),
            http: HttpOptions::default(),
        },
        Vault::new(backend, SealKeys::new("v1", [12u8; 32]).unwrap()),
        Arc::new(HeaderUser),
    )
    .unwrap();
    let router: axum::Router = connector
        .router()
        .route("/", axum::routing::get(|| async { "home" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    App {
        base,
        connector,
        _task: task,
    }
}

/// A browser of one app user: cookies per host, redirects followed by hand.
struct Browser {
    user: String,
    cookies: HashMap<String, HashMap<String, String>>,
}

struct Hop {
    url: url::Url,
    status: reqwest::StatusCode,
    body: String,
}

impl Browser {
    fn new(user: &str) -> Self {
        Self {
            user: user.into(),
            cookies: HashMap::new(),
        }
    }

    /// Follows redirects from `url`; returns every hop.
    async fn go(&mut self, url: &str) -> Vec<Hop> {
        let mut url = url::Url::parse(url).unwrap();
        let mut hops = Vec::new();
        for _ in 0..10 {
            let host = url.host_str().unwrap().to_owned();
            let mut req = http().get(url.clone()).header("x-user", &self.user);
            if let Some(jar) = self.cookies.get(&host) {
                let c: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
                req = req.header("cookie", c.join("; "));
            }
            let resp = req.send().await.unwrap();
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
            let next = resp
                .headers()
                .get("location")
                .map(|l| url.join(l.to_str().unwrap()).unwrap());
            let body = resp.text().await.unwrap_or_default();
            hops.push(Hop {
                url: url.clone(),
                status,
                body,
            });
            match next {
                Some(n) if status.is_redirection() => url = n,
                _ => return hops,
            }
        }
        panic!("too many redirects");
    }

    /// Connects the user's account: login → authorization server (auto-approve) → callback
    /// → back to the app.
    async fn connect(&mut self, app: &App) -> Vec<Hop> {
        let hops = self.go(&format!("{}/connect/demo/login", app.base)).await;
        let last = hops.last().unwrap();
        assert_eq!(
            last.url.path(),
            "/",
            "ended at {} ({}): {}",
            last.url,
            last.status,
            last.body
        );
        assert!(last.url.query().unwrap_or("").contains("connected=demo"));
        hops
    }
}

async fn status(app: &App, user: &str) -> Value {
    http()
        .get(format!("{}/connect/demo/status", app.base))
        .header("x-user", user)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn whoami(app: &App, user: &str) -> Result<Value, ConnectError> {
    let c = app.connector.client_for(user, "demo").await?;
    let r = c.mcp.call_tool("whoami", json!({})).await?;
    Ok(serde_json::from_str(r["content"][0]["text"].as_str().unwrap()).unwrap())
}

/// The user's stored record (tokens included), read through the vault.
async fn record(
    app: &App,
    serve: &ServeProcess,
    user: &str,
) -> Option<mcp_auth_client::store::ServerRecord> {
    let canonical = ResourceUrl::canonicalize(&serve.url("/mcp")).unwrap();
    // The same store the connector uses.
    let store = app_store(app, user);
    store.get(&server_key(canonical.as_str())).await.unwrap()
}

fn app_store(app: &App, user: &str) -> mcp_auth_connect::vault::UserStore {
    app.connector.vault().for_user(user)
}

/// A confidential client of `serve`, to introspect with.
async fn introspector(serve: &ServeProcess) -> (String, String) {
    let r: Value = http()
        .post(serve.url("/register"))
        .json(&json!({"redirect_uris": ["https://rs.example/cb"], "token_endpoint_auth_method": "client_secret_basic",
                      "grant_types": ["client_credentials"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        r["client_id"].as_str().unwrap().into(),
        r["client_secret"].as_str().unwrap().into(),
    )
}

async fn active(serve: &ServeProcess, who: &(String, String), token: &str) -> bool {
    let r: Value = http()
        .post(serve.url("/introspect"))
        .basic_auth(&who.0, Some(&who.1))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["active"] == true
}

async fn serve() -> ServeProcess {
    // Access tokens live 10 s: the client refreshes within half a token's lifetime of its
    // expiry, so they are due 5 s after they were issued.
    ServeProcess::start_with(
        &["--dev-auto-approve"],
        None,
        &[("OAUTH_ACCESS_TOKEN_TTL", "10")],
        free_port(),
    )
    .await
}

#[tokio::test]
async fn two_users_connect_separately_and_disconnect_revokes_at_the_server() {
    let serve = serve().await;
    let app = app(&serve, Arc::new(MemoryVault::new())).await;
    assert_eq!(status(&app, "alice").await["connected"], false);
    let mut alice = Browser::new("alice");
    let mut bob = Browser::new("bob");
    alice.connect(&app).await;
    bob.connect(&app).await;
    let (a, b) = (status(&app, "alice").await, status(&app, "bob").await);
    assert_eq!(a["connected"], true, "{a}");
    assert_eq!(b["connected"], true, "{b}");
    assert!(a["expires_in"].as_u64().unwrap() > 0);
    assert_eq!(a["account"], "dev:user");
    let ra = record(&app, &serve, "alice").await.unwrap();
    let rb = record(&app, &serve, "bob").await.unwrap();
    let (ta, tb) = (ra.tokens.unwrap(), rb.tokens.unwrap());
    assert_ne!(ta.access_token.secret(), tb.access_token.secret());
    assert_ne!(
        ra.client.unwrap().client_id,
        rb.client.unwrap().client_id,
        "each user has their own grant"
    );
    assert_eq!(whoami(&app, "alice").await.unwrap()["sub"], "dev:user");
    // No state or code in any URL the app rendered itself; the state cookie is gone.
    assert!(
        alice
            .cookies
            .values()
            .all(|jar| jar.keys().all(|k| !k.starts_with("mcp_connect_")))
    );

    // Disconnect alice: revoked at the server (introspection says inactive), bob unaffected.
    let who = introspector(&serve).await;
    let rt = ta.refresh_token.clone().unwrap();
    assert!(active(&serve, &who, rt.secret()).await);
    let r = http()
        .post(format!("{}/connect/demo/logout", app.base))
        .header("x-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let st: Value = r.json().await.unwrap();
    assert_eq!(st["connected"], false);
    assert!(
        !active(&serve, &who, rt.secret()).await,
        "refresh token still active"
    );
    assert!(!active(&serve, &who, ta.access_token.secret()).await);
    assert!(matches!(
        whoami(&app, "alice").await,
        Err(ConnectError::NeedsReconnect { .. })
    ));
    assert_eq!(whoami(&app, "bob").await.unwrap()["sub"], "dev:user");
    // A cross-site form post is refused.
    let r = http()
        .post(format!("{}/connect/demo/logout", app.base))
        .header("x-user", "bob")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(status(&app, "bob").await["connected"], true);
}

#[tokio::test]
async fn replayed_and_cross_user_callbacks_are_refused() {
    let serve = serve().await;
    let app = app(&serve, Arc::new(MemoryVault::new())).await;
    // Alice starts; her browser holds the sealed state cookie; the AS sends it back.
    let login = http()
        .get(format!("{}/connect/demo/login", app.base))
        .header("x-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let set = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let as_url = login.headers()["location"].to_str().unwrap().to_owned();
    assert!(!as_url.contains(&cookie[cookie.find('=').unwrap() + 1..]));
    let at_as = http().get(&as_url).send().await.unwrap();
    let cb = at_as.headers()["location"].to_str().unwrap().to_owned();
    let get_cb = |user: &'static str, cookie: Option<String>| {
        let mut r = http().get(&cb).header("x-user", user);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    // Without the browser's cookie: refused.
    assert_eq!(get_cb("alice", None).await.unwrap().status(), 400);
    // Bob signed in, with alice's cookie: refused, nothing stored for either.
    let r = get_cb("bob", Some(cookie.clone())).await.unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    assert_eq!(status(&app, "bob").await["connected"], false);
    // Alice finishes.
    let r = get_cb("alice", Some(cookie.clone())).await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(status(&app, "alice").await["connected"], true);
    // The same callback again, with a copy of the cookie: refused.
    let r = get_cb("alice", Some(cookie.clone())).await.unwrap();
    assert_eq!(r.status(), 400, "a replayed callback was accepted");
    assert!(r.text().await.unwrap().contains("already used"));
}

#[tokio::test]
async fn concurrent_requests_at_expiry_refresh_once() {
    let serve = serve().await;
    let app = app(&serve, Arc::new(MemoryVault::new())).await;
    Browser::new("alice").connect(&app).await;
    let before = record(&app, &serve, "alice").await.unwrap().tokens.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let c = app.connector.clone();
        tasks.push(tokio::spawn(async move {
            let conn = c.client_for("alice", "demo").await?;
            conn.mcp.call_tool("whoami", json!({})).await?;
            Ok::<_, ConnectError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let after = record(&app, &serve, "alice").await.unwrap().tokens.unwrap();
    assert_ne!(before.access_token.secret(), after.access_token.secret());
    // Exactly one refresh: the refresh token rotated once (a second refresh would have
    // presented the rotated token, revoking the grant and failing the requests).
    let who = introspector(&serve).await;
    assert!(active(&serve, &who, after.refresh_token.as_ref().unwrap().secret()).await);
    assert!(
        !active(
            &serve,
            &who,
            before.refresh_token.as_ref().unwrap().secret()
        )
        .await
    );
    assert!(whoami(&app, "alice").await.is_ok());
}

fn postgres_url() -> String {
    std::env::var("MCP_AUTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://mcp_auth:mcp_auth@127.0.0.1:5432/mcp_auth_test".into())
}

#[tokio::test]
async fn two_app_instances_sharing_the_postgres_vault_refresh_once() {
    use mcp_auth_connect::postgres::{PostgresVault, PostgresVaultOptions};
    let serve = serve().await;
    let schema = format!("connect_app_{}", std::process::id());
    let open = || async {
        PostgresVault::connect_with(
            PostgresVaultOptions::new(postgres_url()).schema(schema.clone()),
        )
        .await
        .expect("the PostgreSQL test server (scripts/services)")
    };
    let (pg1, pg2) = (open().await, open().await);
    let one = app(&serve, Arc::new(pg1.clone())).await;
    let two = app(&serve, Arc::new(pg2.clone())).await;
    // Connected through instance one, seen by instance two.
    Browser::new("alice").connect(&one).await;
    assert_eq!(status(&two, "alice").await["connected"], true);
    let before = record(&two, &serve, "alice").await.unwrap().tokens.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let c = if i % 2 == 0 {
            one.connector.clone()
        } else {
            two.connector.clone()
        };
        tasks.push(tokio::spawn(async move {
            let conn = c.client_for("alice", "demo").await?;
            conn.mcp.call_tool("whoami", json!({})).await?;
            Ok::<_, ConnectError>(())
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failures.push(e.to_string());
        }
    }
    let after = record(&one, &serve, "alice").await.unwrap().tokens.unwrap();
    let who = introspector(&serve).await;
    let rotated_once = active(&serve, &who, after.refresh_token.as_ref().unwrap().secret()).await
        && !active(
            &serve,
            &who,
            before.refresh_token.as_ref().unwrap().secret(),
        )
        .await;
    // Clean up the schema before asserting.
    pg1.close();
    pg2.close();
    if let Ok((client, conn)) =
        tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls).await
    {
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
    }
    assert!(failures.is_empty(), "{failures:?}");
    assert_ne!(before.access_token.secret(), after.access_token.secret());
    assert!(
        rotated_once,
        "the refresh token was not rotated exactly once"
    );
}

#[tokio::test]
async fn the_sqlite_vault_holds_no_plaintext_token() {
    use mcp_auth_connect::sqlite::SqliteVault;
    let serve = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let app = app(&serve, Arc::new(SqliteVault::open(&path).await.unwrap())).await;
    Browser::new("alice").connect(&app).await;
    assert_eq!(whoami(&app, "alice").await.unwrap()["sub"], "dev:user");
    let t = record(&app, &serve, "alice").await.unwrap().tokens.unwrap();
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if entry.path().is_file() {
            bytes.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(!bytes.is_empty());
    assert!(
        !text.contains(t.access_token.secret()),
        "access token in plaintext"
    );
    assert!(
        !text.contains(t.refresh_token.as_ref().unwrap().secret()),
        "refresh token in plaintext"
    );
}

#[tokio::test]
async fn a_refused_refresh_marks_the_connection_as_needing_reconnection() {
    let serve = serve().await;
    let app = app(&serve, Arc::new(MemoryVault::new())).await;
    Browser::new("alice").connect(&app).await;
    let rec = record(&app, &serve, "alice").await.unwrap();
    let tokens = rec.tokens.clone().unwrap();
    // The grant is revoked at the server behind the app's back (an admin, the user
    // elsewhere): the stored refresh token is now refused with invalid_grant.
    let r = http()
        .post(serve.url("/revoke"))
        .form(&[
            ("token", tokens.refresh_token.as_ref().unwrap().secret()),
            ("client_id", rec.client.as_ref().unwrap().client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Once the access token is due, the refresh is refused: not a silent failure, but a
    // connection that says it must be made again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    match whoami(&app, "alice").await {
        Err(ConnectError::NeedsReconnect { reason, .. }) => {
            assert!(reason.contains("refused"), "{reason}")
        }
        other => panic!("expected NeedsReconnect, got {other:?}"),
    }
    let st = status(&app, "alice").await;
    assert_eq!(st["connected"], false, "{st}");
    assert_eq!(st["needs_reconnect"], true, "{st}");
    // Connecting again repairs it.
    Browser::new("alice").connect(&app).await;
    assert_eq!(whoami(&app, "alice").await.unwrap()["sub"], "dev:user");
    assert_eq!(status(&app, "alice").await["needs_reconnect"], false);
}
