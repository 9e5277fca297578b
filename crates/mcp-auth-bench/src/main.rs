//! `mcp-auth-bench`: a load generator for the authorization server. A benchmark, not a
//! test: it prints ops/s and p50/p99 latency per scenario, and fails only when a request
//! fails.
//!
//! By default it starts the server in this process, on its own runtime, on
//! `127.0.0.1:0`: the authorization server with `dev_auto_approve` over the durable SQLite
//! store (`--store memory` for none), and one JSON-RPC echo handler at `/mcp` behind the
//! resource server's checks and at `/mcp-unprotected` without them. `--url` drives an external
//! `mcp-auth serve --dev-auto-approve` instead (registration, flows and refresh only).
//!
//! `scripts/bench-server` builds it in release mode and runs every scenario.

mod client;
mod cpu;
mod load;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::client::Target;
use crate::cpu::CpuTicks;
use crate::load::{Outcome, Scenario, Shape};
use crate::server::{InProcess, StoreKind};

type Error = Box<dyn std::error::Error + Send + Sync>;

const ALL: [Scenario; 5] = [
    Scenario::Register,
    Scenario::Flow,
    Scenario::Refresh,
    Scenario::McpUnprotected,
    Scenario::McpProtected,
];

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load generator for the mcp-auth authorization server."
)]
struct Args {
    /// Drive an external server at this issuer URL (`mcp-auth serve --dev-auto-approve`,
    /// plain http) instead of one in this process.
    #[arg(long)]
    url: Option<String>,
    /// The in-process server's store.
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreKind,
    /// Where the SQLite database's temporary directory is made (default: the system's
    /// temporary directory). Put it on the disk a deployment would use: on tmpfs fsync
    /// costs nothing and the figures say nothing about durability.
    #[arg(long)]
    db_dir: Option<PathBuf>,
    /// Scenarios to run, in order (comma-separated). Default: all of them; with `--url`,
    /// register, flow and refresh.
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Concurrent workers, each with its own kept-alive connection.
    #[arg(long, short = 'c', default_value_t = 64)]
    concurrency: usize,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Unmeasured seconds before each measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Run the scenario list this many times, interleaved; the summary takes each
    /// scenario's median round (by ops/s).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Worker threads of the in-process server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    load_threads: usize,
    /// Pin the in-process server's runtime threads to the first CPU and the load
    /// generator's to the second (Linux). Each side then keeps its core and its caches:
    /// steadier per-call figures for comparing two builds, at some cost in throughput
    /// (`--server-threads 1 --load-threads 1` suits it).
    #[arg(long)]
    pin: bool,
}

/// mimalloc rather than the system allocator: the server allocates on every request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("mcp-auth-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// `Ok(false)`: measured, but some requests failed.
fn run(mut args: Args) -> Result<bool, Error> {
    if args.scenarios.is_empty() {
        args.scenarios = ALL
            .into_iter()
            .filter(|s| args.url.is_none() || !s.is_mcp())
            .collect();
    }
    if [
        args.concurrency,
        args.rounds,
        args.server_threads,
        args.load_threads,
    ]
    .contains(&0)
    {
        return Err(
            "--concurrency, --rounds, --server-threads and --load-threads must be at least 1"
                .into(),
        );
    }
    let (warmup, measure) = (
        secs(args.warmup, "--warmup")?,
        secs(args.seconds, "--seconds")?,
    );
    if measure.is_zero() {
        return Err("--seconds must be more than 0".into());
    }
    if args.pin && args.url.is_some() {
        return Err("--pin pins the in-process server; drop --url".into());
    }
    if args.url.is_some()
        && let Some(s) = args.scenarios.iter().find(|s| s.is_mcp())
    {
        return Err(format!(
            "{} needs the in-process server (its /mcp-unprotected twin); drop --url",
            s.name()
        )
        .into());
    }
    let server = match &args.url {
        Some(_) => None,
        None => {
            let parent = args.db_dir.clone().unwrap_or_else(std::env::temp_dir);
            let pin = args.pin.then_some(0);
            Some(InProcess::start(
                args.store,
                &parent,
                args.server_threads,
                pin,
            )?)
        }
    };
    let issuer = match (&args.url, &server) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(s)) => format!("http://{}", s.addr),
        (None, None) => unreachable!("a server was started"),
    };
    let target = Target::from_issuer(&issuer)?;
    print_setup(&args, &issuer, server.as_ref());

    let mut load_rt = tokio::runtime::Builder::new_multi_thread();
    load_rt
        .worker_threads(args.load_threads)
        .thread_name("bench-load");
    if args.pin {
        cpu::check_pin(1)?;
        load_rt.on_thread_start(|| cpu::pin_current_thread(1));
    }
    let load_rt = load_rt.enable_all().build()?;
    let shape = Shape {
        concurrency: args.concurrency,
        warmup,
        measure,
    };
    let in_process = server.is_some();
    let results = load_rt.block_on(async {
        let mut results: Vec<(Scenario, Outcome)> = Vec::new();
        println!();
        print_header(args.rounds > 1);
        for round in 1..=args.rounds {
            for &scenario in &args.scenarios {
                let before = server.as_ref().and_then(InProcess::write_stats);
                let mut outcome = load::run(scenario, &target, shape).await?;
                let after = server.as_ref().and_then(InProcess::write_stats);
                if let (Some(b), Some(a)) = (before, after) {
                    let commits = a.commits.saturating_sub(b.commits);
                    let writes = a.writes.saturating_sub(b.writes);
                    outcome.writes_per_commit =
                        (commits > 0).then(|| writes as f64 / commits as f64);
                }
                print_row(
                    scenario,
                    &outcome,
                    in_process,
                    (args.rounds > 1).then_some(round),
                );
                results.push((scenario, outcome));
            }
        }
        Ok::<_, Error>(results)
    });
    drop(load_rt);
    if let Some(s) = server {
        s.stop();
    }
    let results = results?;

    let mut summary: Vec<(Scenario, &Outcome)> = Vec::new();
    for &scenario in &args.scenarios {
        if summary.iter().any(|(s, _)| *s == scenario) {
            continue;
        }
        let mut rounds: Vec<&Outcome> = results
            .iter()
            .filter(|(s, _)| *s == scenario)
            .map(|(_, o)| o)
            .collect();
        rounds.sort_by(|a, b| a.ops_per_sec().total_cmp(&b.ops_per_sec()));
        summary.push((scenario, rounds[(rounds.len() - 1) / 2]));
    }
    if args.rounds > 1 {
        println!("\nmedian round of {} per scenario:\n", args.rounds);
        print_header(false);
        for (s, o) in &summary {
            print_row(*s, o, in_process, None);
        }
    }
    print_targets(&summary);
    print_paired(&results);

    let errors: u64 = results.iter().map(|(_, o)| o.errors).sum();
    for (s, o) in results.iter().filter(|(_, o)| o.errors > 0) {
        eprintln!("\n{}: {} failed requests; the first:", s.name(), o.errors);
        for e in &o.error_samples {
            eprintln!("  {e}");
        }
    }
    Ok(errors == 0)
}

fn secs(v: f64, flag: &str) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("{flag} {v}: not a duration").into())
}

fn print_setup(args: &Args, issuer: &str, server: Option<&InProcess>) {
    let store = match (server, args.store) {
        (None, _) => "external".to_owned(),
        (Some(s), StoreKind::Sqlite) => format!(
            "sqlite {} (WAL, group commit, every write flushed before it is answered)",
            s.db_path
                .as_deref()
                .unwrap_or(std::path::Path::new("?"))
                .display()
        ),
        (Some(_), StoreKind::Memory) => "memory (nothing persisted)".to_owned(),
        (Some(s), StoreKind::Redis | StoreKind::Postgres) => {
            s.networked.clone().unwrap_or_default()
        }
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "mcp-auth-bench: server {issuer} ({}), store {store}",
        if server.is_some() {
            // Threads the server starts (SQLite's) inherit the pin.
            let pinned = if args.pin { ", pinned to CPU 0" } else { "" };
            format!(
                "in process, {} runtime threads{pinned}",
                args.server_threads
            )
        } else {
            "external".into()
        }
    );
    println!(
        "load: {} workers, one HTTP/1.1 keep-alive connection each, {} runtime threads{}; \
         {}s warmup + {}s measured per scenario; {cpus} CPUs",
        args.concurrency,
        args.load_threads,
        if args.pin { ", pinned to CPU 1" } else { "" },
        args.warmup,
        args.seconds
    );
    // Other work on the machine shows here: the figures are only as quiet as the machine.
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        let l: Vec<&str> = l.split_whitespace().take(3).collect();
        println!("load average before the run: {}", l.join(" "));
    }
}

fn print_header(with_round: bool) {
    let round = if with_round { " round |" } else { "" };
    let rule = if with_round { "---|" } else { "" };
    println!(
        "|{round} scenario | ops/s | p50 | p99 | errors | CPU server | CPU store | CPU load | server CPU/op | writes/commit |"
    );
    println!("|{rule}---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
}

fn print_row(s: Scenario, o: &Outcome, in_process: bool, round: Option<usize>) {
    let ms = |p: f64| {
        o.percentile(p)
            .map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
    };
    let window = o.window.as_secs_f64();
    let pct = |t: u64| format!("{:.0}%", CpuTicks::percent(t, window));
    let (srv, sql, ld) = match o.cpu {
        Some(c) if in_process => (pct(c.server), pct(c.sqlite + c.backend), pct(c.load)),
        Some(c) => ("-".into(), "-".into(), pct(c.load)),
        None => ("-".into(), "-".into(), "-".into()),
    };
    let per_op = match o.server_micros_per_op() {
        Some(us) if in_process => format!("{us:.1} µs"),
        _ => "-".into(),
    };
    let group = o
        .writes_per_commit
        .map_or("-".into(), |w| format!("{w:.1}"));
    let round = round.map_or(String::new(), |r| format!(" {r} |"));
    println!(
        "|{round} {} | {:.0} | {} | {} | {} | {srv} | {sql} | {ld} | {per_op} | {group} |",
        s.name(),
        o.ops_per_sec(),
        ms(50.0),
        ms(99.0),
        o.errors,
    );
}

/// The targets, with the durable SQLite store.
fn print_targets(summary: &[(Scenario, &Outcome)]) {
    let get = |s: Scenario| summary.iter().find(|(x, _)| *x == s).map(|(_, o)| *o);
    let mut lines = Vec::new();
    for (s, target) in [
        (Scenario::Register, 20_000.0),
        (Scenario::Flow, 8_000.0),
        (Scenario::Refresh, 10_000.0),
    ] {
        if let Some(o) = get(s) {
            let got = o.ops_per_sec();
            lines.push(format!(
                "{:<16} {got:>9.0}/s   target >= {target:.0}/s   {}",
                s.name(),
                if got >= target { "met" } else { "NOT met" }
            ));
        }
    }
    if let (Some(u), Some(p)) = (get(Scenario::McpUnprotected), get(Scenario::McpProtected)) {
        // Cost per call at saturation is the inverse of throughput.
        let cost = (u.ops_per_sec() / p.ops_per_sec() - 1.0) * 100.0;
        let p50 = match (u.percentile(50.0), p.percentile(50.0)) {
            (Some(a), Some(b)) => {
                format!("{:+.1}%", (b.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0)
            }
            _ => "-".into(),
        };
        let cpu = match (u.server_micros_per_op(), p.server_micros_per_op()) {
            (Some(a), Some(b)) => format!(", server CPU per call {:+.1}%", (b / a - 1.0) * 100.0),
            _ => String::new(),
        };
        lines.push(format!(
            "{:<16} {cost:>+8.1}%    target <= +5% per call   {}   (p50 latency {p50}{cpu})",
            "protected call",
            if cost <= 5.0 { "met" } else { "NOT met" }
        ));
    }
    if !lines.is_empty() {
        println!();
        for l in lines {
            println!("{l}");
        }
    }
}

/// How much more `b` costs than `a`, in percent; `None` when either is not a finite,
/// positive cost (a round with no successful call).
fn percent_more(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0).then(|| (b / a - 1.0) * 100.0)
}

/// The median (the mean of the middle two for an even count), least and greatest.
fn median_range(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (n > 0).then(|| ((v[(n - 1) / 2] + v[n / 2]) / 2.0, v[0], v[n - 1]))
}

/// With several rounds of both MCP scenarios, the protected call's cost round by round: each
/// round's protected run against the unprotected run just before it (seconds apart, so a
/// machine that slows down or speeds up over the run moves both), then the median and the
/// spread of those pairs. Printed beside the summary's ratio of the two median rounds, which
/// can pair rounds from different minutes.
fn print_paired(results: &[(Scenario, Outcome)]) {
    let runs = |s: Scenario| -> Vec<&Outcome> {
        results
            .iter()
            .filter(|(x, _)| *x == s)
            .map(|(_, o)| o)
            .collect()
    };
    let (u, p) = (runs(Scenario::McpUnprotected), runs(Scenario::McpProtected));
    if u.len() < 2 || u.len() != p.len() {
        return;
    }
    let cost: Vec<f64> = u
        .iter()
        .zip(&p)
        .filter_map(|(u, p)| percent_more(1.0 / u.ops_per_sec(), 1.0 / p.ops_per_sec()))
        .collect();
    let cpu: Vec<f64> = u
        .iter()
        .zip(&p)
        .filter_map(|(u, p)| percent_more(u.server_micros_per_op()?, p.server_micros_per_op()?))
        .collect();
    if let Some((m, lo, hi)) = median_range(cost) {
        let cpu = median_range(cpu).map_or(String::new(), |(m, lo, hi)| {
            format!(", server CPU per call {m:+.1}% ({lo:+.1}% to {hi:+.1}%)")
        });
        println!(
            "{:<16} {m:>+8.1}%    median of {} interleaved pairs ({lo:+.1}% to {hi:+.1}%){cpu}",
            "  paired",
            u.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_range_of_odd_even_and_empty_lists() {
        assert_eq!(median_range(vec![5.0, -1.0, 3.0]), Some((3.0, -1.0, 5.0)));
        assert_eq!(
            median_range(vec![4.0, 1.0, 2.0, 9.0]),
            Some((3.0, 1.0, 9.0))
        );
        assert_eq!(median_range(vec![]), None);
    }

    #[test]
    fn percent_more_compares_costs_and_skips_empty_rounds() {
        // 100,000 calls/s unprotected, 95,000 protected: each call costs 5.26% more.
        let more = percent_more(1.0 / 100_000.0, 1.0 / 95_000.0).unwrap();
        assert!((more - 5.263).abs() < 0.001, "{more}");
        assert_eq!(percent_more(14.0, 14.0), Some(0.0));
        assert_eq!(percent_more(1.0 / 100_000.0, 1.0 / 0.0), None);
        assert_eq!(percent_more(0.0, 1.0), None);
    }
}
