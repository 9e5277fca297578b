//! The load generator: N workers, each on its own connection, run one scenario for a
//! warmup and then a measured window; latencies of the window's successful operations are
//! kept whole and sorted for the percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::client::{self, Conn, OpError, Target};
use crate::cpu::{self, CpuTicks};

/// What is measured; one operation each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `POST /register` of a public client.
    Register,
    /// `GET /authorize` with PKCE, then `POST /token` with the code: one complete flow.
    Flow,
    /// `POST /token` with `grant_type=refresh_token`, each with the token rotated by the
    /// previous one (every worker keeps its own chain).
    Refresh,
    /// `tools/call` on `/mcp-unprotected`: the handler alone.
    McpUnprotected,
    /// The same `tools/call` on `/mcp`, behind the resource server's checks.
    McpProtected,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Flow => "flow",
            Self::Refresh => "refresh",
            Self::McpUnprotected => "mcp-unprotected",
            Self::McpProtected => "mcp-protected",
        }
    }

    pub fn is_mcp(self) -> bool {
        matches!(self, Self::McpUnprotected | Self::McpProtected)
    }
}

/// How long and how wide.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub concurrency: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// One scenario's results.
#[derive(Debug)]
pub struct Outcome {
    /// Successful operations started in the measured window, sorted.
    pub latencies: Vec<Duration>,
    pub window: Duration,
    /// Failed operations, warmup included.
    pub errors: u64,
    /// The first few failures, for the report.
    pub error_samples: Vec<String>,
    /// CPU used in the window by each kind of thread of this process.
    pub cpu: Option<CpuTicks>,
    /// Writes per SQLite commit over the scenario, warmup included (group commit's batch
    /// size); set by the caller for the in-process SQLite store.
    pub writes_per_commit: Option<f64>,
}

impl Outcome {
    pub fn ops_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }

    /// Server CPU per successful operation, in microseconds.
    pub fn server_micros_per_op(&self) -> Option<f64> {
        self.cpu?.server_micros_per_op(self.latencies.len())
    }

    /// Nearest-rank percentile.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.latencies.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        Some(self.latencies[rank.clamp(1, n) - 1])
    }
}

/// What a worker holds between operations.
enum Held {
    Nothing,
    Client(String),
    Chain { client_id: String, refresh: String },
    Bearer(String),
}

/// Everything a scenario needs before its first timed operation: a registered client, a
/// refresh token, an access token.
async fn prepare(scenario: Scenario, conn: &mut Conn) -> Result<Held, OpError> {
    Ok(match scenario {
        Scenario::Register => Held::Nothing,
        Scenario::Flow => Held::Client(client::register(conn).await?),
        Scenario::Refresh => {
            let client_id = client::register(conn).await?;
            new_chain(conn, client_id).await?
        }
        Scenario::McpUnprotected | Scenario::McpProtected => {
            let client_id = client::register(conn).await?;
            Held::Bearer(client::code_flow(conn, &client_id).await?.access_token)
        }
    })
}

async fn new_chain(conn: &mut Conn, client_id: String) -> Result<Held, OpError> {
    let refresh = client::code_flow(conn, &client_id)
        .await?
        .refresh_token
        .ok_or_else(|| OpError::Protocol("the code flow returned no refresh token".into()))?;
    Ok(Held::Chain { client_id, refresh })
}

async fn operate(scenario: Scenario, conn: &mut Conn, held: &mut Held) -> Result<(), OpError> {
    match (scenario, held) {
        (Scenario::Register, _) => client::register(conn).await.map(drop),
        (Scenario::Flow, Held::Client(id)) => client::code_flow(conn, id).await.map(drop),
        (Scenario::Refresh, Held::Chain { client_id, refresh }) => {
            let tokens = client::refresh(conn, client_id, refresh).await?;
            if let Some(rotated) = tokens.refresh_token {
                *refresh = rotated;
            }
            Ok(())
        }
        (Scenario::McpUnprotected, Held::Bearer(t)) => {
            client::mcp_call(conn, "/mcp-unprotected", t).await
        }
        (Scenario::McpProtected, Held::Bearer(t)) => client::mcp_call(conn, "/mcp", t).await,
        _ => unreachable!("prepare() holds what operate() needs"),
    }
}

struct Shared {
    barrier: Barrier,
    start: OnceLock<Instant>,
    errors: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Shared {
    fn failed(&self, e: &OpError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() < 5 {
            s.push(e.to_string());
        }
    }
}

/// Runs `scenario` against `target` with `shape`. `Err` when the workers could not even
/// prepare (no client, no token): nothing was measured.
pub async fn run(scenario: Scenario, target: &Target, shape: Shape) -> Result<Outcome, String> {
    let shared = Arc::new(Shared {
        barrier: Barrier::new(shape.concurrency + 1),
        start: OnceLock::new(),
        errors: AtomicU64::new(0),
        samples: Mutex::new(Vec::new()),
    });
    let workers: Vec<_> = (0..shape.concurrency)
        .map(|_| tokio::spawn(worker(scenario, target.clone(), shape, shared.clone())))
        .collect();
    shared.barrier.wait().await;
    let start = *shared.start.get_or_init(Instant::now);
    tokio::time::sleep_until((start + shape.warmup).into()).await;
    let before = cpu::snapshot();
    tokio::time::sleep_until((start + shape.warmup + shape.measure).into()).await;
    let after = cpu::snapshot();
    let mut latencies = Vec::new();
    let mut setup_failures = Vec::new();
    for w in workers {
        match w.await {
            Ok(Ok(mut l)) => latencies.append(&mut l),
            Ok(Err(e)) => setup_failures.push(e),
            Err(e) => setup_failures.push(format!("worker panicked: {e}")),
        }
    }
    if let Some(first) = setup_failures.first() {
        return Err(format!(
            "{}: {} of {} workers could not prepare; the first: {first}",
            scenario.name(),
            setup_failures.len(),
            shape.concurrency
        ));
    }
    latencies.sort_unstable();
    let samples = std::mem::take(&mut *shared.samples.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Outcome {
        writes_per_commit: None,
        latencies,
        window: shape.measure,
        errors: shared.errors.load(Ordering::Relaxed),
        error_samples: samples,
        cpu: before.zip(after).map(|(b, a)| a.since(&b)),
    })
}

async fn worker(
    scenario: Scenario,
    target: Target,
    shape: Shape,
    shared: Arc<Shared>,
) -> Result<Vec<Duration>, String> {
    let mut conn = Conn::new(target);
    let prepared = prepare(scenario, &mut conn).await;
    // Everyone reaches the barrier, prepared or not, or the others would wait for ever.
    shared.barrier.wait().await;
    let mut held = prepared.map_err(|e| e.to_string())?;
    let start = *shared.start.get_or_init(Instant::now);
    let (from, until) = (start + shape.warmup, start + shape.warmup + shape.measure);
    let mut latencies = Vec::with_capacity(4096);
    loop {
        let t0 = Instant::now();
        if t0 >= until {
            break;
        }
        match operate(scenario, &mut conn, &mut held).await {
            Ok(()) if t0 >= from => latencies.push(t0.elapsed()),
            Ok(()) => {}
            Err(e) => {
                shared.failed(&e);
                // A broken refresh chain cannot go on: start a new one (not timed).
                if let Held::Chain { client_id, .. } = &held {
                    let id = client_id.clone();
                    match new_chain(&mut conn, id).await {
                        Ok(h) => held = h,
                        Err(e) => shared.failed(&e),
                    }
                }
            }
        }
    }
    Ok(latencies)
}
