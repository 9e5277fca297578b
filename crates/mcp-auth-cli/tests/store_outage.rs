//! The store goes away under load and comes back: `mcp-auth serve` answers errors (never
//! hangs, never dies) while it is down, recovers without a restart, and loses no grant it
//! had answered for. Each test runs its own private Redis server or PostgreSQL cluster on a
//! free loopback port (the binaries `scripts/services` installs), so stopping it disturbs no
//! other test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{ServeProcess, free_port, http};
use mcp_auth_types::PkceVerifier;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// `mcp-auth serve --dev-auto-approve --store URL`, rate limits off: the load comes from
/// one address, and the per-address limits would answer it 429.
async fn serve(store: &str) -> Serve {
    ServeProcess::start(
        &["--dev-auto-approve", "--store", store],
        Some("[rate_limits]\nregister = false\ntoken = false\nlogin = false\n"),
    )
    .await
}

type Serve = ServeProcess;

/// One complete flow (register, authorize, exchange): the refresh token, or the status of
/// the first step that failed.
async fn flow(s: &Serve) -> Result<(String, String), StatusCode> {
    let c = http();
    let r = c
        .post(s.url("/register"))
        .json(
            &json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
                      "grant_types": ["authorization_code", "refresh_token"]}),
        )
        .send()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    if r.status() != StatusCode::CREATED {
        return Err(r.status());
    }
    let reg: Value = r.json().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
    let id = reg["client_id"].as_str().unwrap_or_default().to_owned();
    let v = PkceVerifier::generate();
    let ch = v.challenge();
    let r = c
        .get(s.url("/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", &id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", ch.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    if r.status() != StatusCode::SEE_OTHER {
        return Err(r.status());
    }
    let loc = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    let code = url::Url::parse(&loc)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or(StatusCode::BAD_GATEWAY)?;
    let r = c
        .post(s.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", &id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", v.secret()),
        ])
        .send()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    if r.status() != StatusCode::OK {
        return Err(r.status());
    }
    let t: Value = r.json().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
    Ok((
        id,
        t["refresh_token"].as_str().unwrap_or_default().to_owned(),
    ))
}

async fn refresh(s: &Serve, id: &str, rt: &str) -> Result<String, StatusCode> {
    let r = http()
        .post(s.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", id),
            ("refresh_token", rt),
        ])
        .send()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    if r.status() != StatusCode::OK {
        return Err(r.status());
    }
    let t: Value = r.json().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
    Ok(t["refresh_token"].as_str().unwrap_or_default().to_owned())
}

/// Runs flows from 8 tasks until stopped; keeps every grant that was answered.
struct Load {
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicUsize>,
    granted: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(s: &Arc<Serve>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicUsize::new(0));
        let granted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (s, stop, errors, granted) =
                (s.clone(), stop.clone(), errors.clone(), granted.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match flow(&s).await {
                        Ok(g) => granted.lock().unwrap().push(g),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        Self {
            stop,
            errors,
            granted,
            tasks,
        }
    }

    async fn finish(mut self) -> (usize, Vec<(String, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        let granted = std::mem::take(&mut *self.granted.lock().unwrap());
        (self.errors.load(Ordering::Relaxed), granted)
    }
}

/// The common script: load, outage, errors while down, recovery, nothing answered lost.
async fn outage_and_recovery(store_url: &str, stop: impl AsyncFnOnce(), start: impl AsyncFnOnce()) {
    let s = Arc::new(serve(store_url).await);
    let before = flow(&s).await.expect("a flow before the outage");
    let load = Load::start(&s);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    stop().await;
    // While the store is down, requests fail with an error, quickly, and the server lives.
    let t = Instant::now();
    let down = flow(&s).await;
    assert!(down.is_err(), "a flow succeeded with the store down");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "a request took {:?} with the store down",
        t.elapsed()
    );
    let status = down.unwrap_err();
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "503 temporarily_unavailable while the store is down"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;

    start().await;
    // Recovers without a restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if flow(&s).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (errors, granted) = load.finish().await;
    assert!(errors > 0, "the load saw the outage");
    assert!(!granted.is_empty(), "the load was granted tokens");
    // No grant that was answered is lost: every refresh token still refreshes.
    let mut all = granted;
    all.push(before);
    for (id, rt) in &all {
        refresh(&s, id, rt).await.unwrap_or_else(|e| {
            panic!("a grant answered before or around the outage was lost: {e}")
        });
    }
    let mut s = Arc::into_inner(s).expect("no other owner");
    assert!(s.alive(), "the server survived the outage");
}

// ---------------------------------------------------------------------------- Redis

struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl Redis {
    fn start() -> Self {
        let mut r = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.spawn();
        r
    }

    /// Append-only file, flushed before each write is acknowledged: what a deployment that
    /// must not lose a grant runs.
    fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/services installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_under_load() {
    let redis = Arc::new(std::sync::Mutex::new(Redis::start()));
    let url = format!("redis://127.0.0.1:{}/0", redis.lock().unwrap().port);
    let (r1, r2) = (redis.clone(), redis.clone());
    outage_and_recovery(
        &url,
        async move || r1.lock().unwrap().kill(),
        async move || r2.lock().unwrap().spawn(),
    )
    .await;
}

// ---------------------------------------------------------------------------- PostgreSQL

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A private PostgreSQL cluster, run as the `postgres` system user (PostgreSQL refuses to
/// run as root).
struct Postgres {
    port: u16,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

fn as_postgres(args: &[&str]) -> std::process::Output {
    let mut c = if is_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]);
        c
    } else {
        std::process::Command::new("env")
    };
    c.args(args).output().expect("runs")
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pg");
        std::fs::create_dir(&dir).unwrap();
        if is_root() {
            for p in [tmp.path(), dir.as_path()] {
                let ok = std::process::Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(p)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "chown postgres {}", p.display());
            }
        }
        let initdb = format!("{PG_BIN}/initdb");
        let d = dir.to_str().unwrap();
        let out = as_postgres(&[
            &initdb,
            "-D",
            d,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Self {
            port: free_port(),
            dir,
            _tmp: tmp,
        };
        pg.up();
        let out = std::process::Command::new(format!("{PG_BIN}/psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-qc", "CREATE DATABASE outage"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }

    fn up(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        let out = as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            self.dir.to_str().unwrap(),
            "-o",
            &opts,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An immediate stop: no clean shutdown, as in a crash.
    fn down(&self) {
        let out = as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            self.dir.to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            self.dir().to_str().unwrap_or_default(),
            "-m",
            "immediate",
            "stop",
        ]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_under_load() {
    let pg = Arc::new(Postgres::start());
    let url = format!("postgres://postgres@127.0.0.1:{}/outage", pg.port);
    let (p1, p2) = (pg.clone(), pg.clone());
    outage_and_recovery(&url, async move || p1.down(), async move || p2.up()).await;
}
