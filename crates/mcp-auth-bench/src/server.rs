//! The server under test, in this process: the authorization server with
//! `dev_auto_approve`, plus one JSON-RPC handler mounted twice, at `/mcp` wrapped by the
//! resource server's checks (`ProtectedLayer::protect`) and at `/mcp-unprotected` without
//! them. Wired as `mcp-auth serve` wires it (`crates/mcp-auth-cli/src/serve.rs`), without
//! depending on the CLI crate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mcp_auth_resource::{ResourceConfig, ResourceServer, Verifier};
use mcp_auth_server::ratelimit::RateLimits;
use mcp_auth_server::store::{MemoryStore, Store};
use mcp_auth_server::{AuthorizationServer, ServerConfig};
use mcp_auth_store_sqlite::SqliteStore;
use mcp_auth_types::{Issuer, ResourceUrl};
use serde_json::{Value, json};

use crate::Error;

/// Which [`Store`] backs the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// `SqliteStore::open`: a file in WAL mode, every write flushed to disk before it is
    /// answered (group commit), the durable default of `mcp-auth serve`.
    Sqlite,
    /// `MemoryStore`: nothing persisted; shows what the store costs.
    Memory,
    /// `RedisStore` on `MCP_AUTH_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/15`),
    /// under a fresh key prefix.
    Redis,
    /// `PostgresStore` on `MCP_AUTH_TEST_POSTGRES_URL` (default
    /// `postgres://mcp_auth:mcp_auth@127.0.0.1:5432/mcp_auth_test`), in a fresh schema.
    Postgres,
}

/// A name no earlier run used: the run's key prefix or schema.
fn run_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("bench_{}_{nanos:x}", std::process::id())
}

/// What a networked store's run leaves behind, removed when the run ends: the benchmark
/// writes hundreds of thousands of rows, which would otherwise linger for their TTLs.
pub enum Leftovers {
    /// Keys under this prefix in this Redis database.
    Redis { url: String, prefix: String },
    /// This schema of this PostgreSQL database.
    Postgres { url: String, schema: String },
}

impl Leftovers {
    async fn remove(&self) -> Result<(), Error> {
        match self {
            Leftovers::Redis { url, prefix } => {
                let mut conn = redis::Client::open(url.as_str())?
                    .get_multiplexed_async_connection()
                    .await?;
                let mut cursor: u64 = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{prefix}*"))
                        .arg("COUNT")
                        .arg(5000)
                        .query_async(&mut conn)
                        .await?;
                    if !keys.is_empty() {
                        redis::cmd("UNLINK")
                            .arg(&keys)
                            .query_async::<i64>(&mut conn)
                            .await?;
                    }
                    if next == 0 {
                        return Ok(());
                    }
                    cursor = next;
                }
            }
            Leftovers::Postgres { url, schema } => {
                let (client, connection) =
                    tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                // The name was made by `run_name`: letters, digits and underscores only.
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await?;
                Ok(())
            }
        }
    }
}

/// The store of a networked backend, what to print about it, and what to remove after.
async fn networked(kind: StoreKind) -> Result<(Arc<dyn Store>, String, Leftovers), Error> {
    match kind {
        StoreKind::Redis => {
            let url = std::env::var("MCP_AUTH_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/15".into());
            let prefix = format!("mcp-auth-{}:", run_name());
            let store = mcp_auth_store_redis::RedisStore::connect_with(
                mcp_auth_store_redis::RedisOptions::new(url.clone()).prefix(prefix.clone()),
            )
            .await?;
            let what = format!("redis {url}, key prefix {prefix}");
            Ok((Arc::new(store), what, Leftovers::Redis { url, prefix }))
        }
        StoreKind::Postgres => {
            let url = std::env::var("MCP_AUTH_TEST_POSTGRES_URL").unwrap_or_else(|_| {
                "postgres://mcp_auth:mcp_auth@127.0.0.1:5432/mcp_auth_test".into()
            });
            let schema = run_name();
            let store = mcp_auth_store_postgres::PostgresStore::connect_with(
                mcp_auth_store_postgres::PostgresOptions::new(url.clone()).schema(schema.clone()),
            )
            .await?;
            let what = format!("postgres, schema {schema}");
            Ok((Arc::new(store), what, Leftovers::Postgres { url, schema }))
        }
        StoreKind::Sqlite | StoreKind::Memory => Err("not a networked store".into()),
    }
}

/// The running server. Its runtime lives as long as this value.
pub struct InProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The database file, for `--store sqlite`.
    pub db_path: Option<PathBuf>,
    /// Where a Redis or PostgreSQL store keeps its rows.
    pub networked: Option<String>,
    leftovers: Option<Leftovers>,
    sqlite: Option<SqliteStore>,
    // Dropped in this order: the runtime (and the server and store with it), then the
    // database's directory.
    runtime: tokio::runtime::Runtime,
    _db_dir: Option<tempfile::TempDir>,
}

impl InProcess {
    /// Binds `127.0.0.1:0` and serves on a runtime of `threads` workers named
    /// `bench-server`, apart from the load generator's, pinned to CPU `pin` when given.
    pub fn start(
        store: StoreKind,
        db_parent: &Path,
        threads: usize,
        pin: Option<usize>,
    ) -> Result<Self, Error> {
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        runtime.worker_threads(threads).thread_name("bench-server");
        if let Some(cpu) = pin {
            crate::cpu::check_pin(cpu)?;
            runtime.on_thread_start(move || crate::cpu::pin_current_thread(cpu));
        }
        let runtime = runtime.enable_all().build()?;
        let db_dir = match store {
            StoreKind::Sqlite => Some(
                tempfile::Builder::new()
                    .prefix("mcp-auth-bench-")
                    .tempdir_in(db_parent)?,
            ),
            StoreKind::Memory | StoreKind::Redis | StoreKind::Postgres => None,
        };
        let db_path = db_dir.as_ref().map(|d| d.path().join("server.db"));
        let (addr, sqlite, networked) = runtime.block_on(async {
            let sqlite = match &db_path {
                Some(path) => Some(SqliteStore::open(path).await?),
                None => None,
            };
            let mut networked_store = None;
            let store: Arc<dyn Store> = match (&sqlite, store) {
                (Some(s), _) => Arc::new(s.clone()),
                (None, StoreKind::Redis | StoreKind::Postgres) => {
                    let (st, what, left) = networked(store).await?;
                    networked_store = Some((what, left));
                    st
                }
                (None, _) => Arc::new(MemoryStore::new()),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let app = app(&format!("http://{addr}"), store).await?;
            // With the peer address, as `mcp-auth serve` runs it.
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    eprintln!("mcp-auth-bench: the server stopped: {e}");
                }
            });
            Ok::<_, Error>((addr, sqlite, networked_store))
        })?;
        let (networked, leftovers) = networked.unzip();
        Ok(Self {
            addr,
            db_path,
            networked,
            leftovers,
            sqlite,
            runtime,
            _db_dir: db_dir,
        })
    }

    /// The SQLite store's commit counters, for `--store sqlite`.
    pub fn write_stats(&self) -> Option<mcp_auth_store_sqlite::WriteStats> {
        self.sqlite.as_ref().map(SqliteStore::write_stats)
    }

    /// Stops the server, giving its tasks a moment to end.
    pub fn stop(self) {
        let Self {
            runtime,
            _db_dir,
            leftovers,
            ..
        } = self;
        if let Some(left) = leftovers
            && let Err(e) = runtime.block_on(left.remove())
        {
            eprintln!("mcp-auth-bench: could not remove the run's rows: {e}");
        }
        runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

/// The authorization server, its resource's metadata, `/mcp` protected and
/// `/mcp-unprotected` not.
async fn app(issuer: &str, store: Arc<dyn Store>) -> Result<axum::Router, Error> {
    let mcp_url = format!("{issuer}/mcp");
    let mut config = ServerConfig::new(issuer);
    config.default_audience = Some(mcp_url.clone());
    config.resources = vec![mcp_url.clone()];
    config.dev_auto_approve = true;
    // The default per-address limits (60 registrations a minute) would refuse nearly all of
    // the benchmark's traffic, which comes from one address; with them off the limiter is
    // not mounted at all.
    config.rate_limits = RateLimits::off();
    let server = AuthorizationServer::new(config, store.clone()).await?;
    let verifier = mcp_auth_server::local_verifier::LocalVerifier::new(&server, mcp_url.clone());
    let mut rc = ResourceConfig::new(
        ResourceUrl::parse_exact(&mcp_url)?,
        vec![Issuer::parse(issuer)?],
        Verifier::Custom(Arc::new(verifier)),
    );
    rc.danger_allow_insecure_http = true;
    let rs = ResourceServer::new(rc)?;
    let protected = axum::Router::new().route("/mcp", post(rs.layer().protect(mcp_echo)));
    let unprotected = axum::Router::new().route("/mcp-unprotected", post(mcp_echo));
    Ok(server
        .router()
        .merge(rs.metadata_router())
        .merge(protected)
        .merge(unprotected))
}

/// The MCP-like endpoint, the same function on both routes: a JSON-RPC `tools/call` of
/// `echo` answers its `text` argument as MCP tool content. It reads no claims, so the only
/// difference between the routes is the layer.
async fn mcp_echo(body: Bytes) -> Response {
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"jsonrpc": "2.0", "id": null,
                        "error": {"code": -32700, "message": "parse error"}})),
        )
            .into_response();
    };
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let params = msg.get("params");
    let is_echo = msg.get("method").and_then(Value::as_str) == Some("tools/call")
        && params.and_then(|p| p.get("name")).and_then(Value::as_str) == Some("echo");
    let body = if is_echo {
        let text = params
            .and_then(|p| p.pointer("/arguments/text"))
            .and_then(Value::as_str)
            .unwrap_or("");
        json!({"jsonrpc": "2.0", "id": id, "result": {
            "content": [{"type": "text", "text": text}], "isError": false}})
    } else {
        json!({"jsonrpc": "2.0", "id": id,
               "error": {"code": -32601, "message": "only tools/call of echo is served"}})
    };
    Json(body).into_response()
}
