//! The SQLite store alone under concurrent load, without HTTP: what the store can carry.
//!
//! ```sh
//! cargo run --release -p mcp-auth-store-sqlite --example store_load -- [CONCURRENCY] [SECONDS] [DIR]
//! ```
//!
//! Three workloads, each for SECONDS (default 3) with CONCURRENCY tasks (default 256) on a
//! 2-thread runtime, on a fresh database in DIR (default: the system's temporary directory):
//! `register` = one `put_client`; `flow` = `put_code`, `take_code`, `put_refresh` (the
//! writes of one authorization code flow); `refresh` = one `rotate_refresh` down a chain per
//! task. It prints operations per second, writes per commit, flushes per second and the
//! process's CPU time per operation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mcp_auth_server::store::suite::{self, NOW};
use mcp_auth_server::store::{Rotate, Store, TakeCode};
use mcp_auth_store_sqlite::SqliteStore;

fn cpu_seconds() -> f64 {
    // utime + stime of the whole process, from /proc/self/stat (Linux), in clock ticks.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

#[derive(Clone, Copy, Debug)]
enum Workload {
    Register,
    Flow,
    Refresh,
}

async fn worker(store: SqliteStore, w: Workload, id: usize, stop: Arc<AtomicBool>) -> u64 {
    let mut n = 0u64;
    let mut chain = suite::refresh("t1", &format!("rt-{id}-0"), &format!("fam-{id}"));
    if matches!(w, Workload::Refresh) {
        store.put_refresh(&chain).await.expect("seed refresh token");
    }
    while !stop.load(Ordering::Relaxed) {
        let tag = format!("{id}-{n}");
        match w {
            Workload::Register => {
                store
                    .put_client(&suite::client("t1", &format!("client-{tag}")))
                    .await
                    .expect("put_client");
            }
            Workload::Flow => {
                let code = suite::code("t1", &format!("code-{tag}"), &format!("fam-{tag}"));
                store.put_code(&code).await.expect("put_code");
                let taken = store
                    .take_code("t1", &code.code_hash, NOW)
                    .await
                    .expect("take_code");
                assert!(matches!(taken, TakeCode::Taken(_)));
                store
                    .put_refresh(&suite::refresh(
                        "t1",
                        &format!("rt-{tag}"),
                        &format!("fam-{tag}"),
                    ))
                    .await
                    .expect("put_refresh");
            }
            Workload::Refresh => {
                let next = suite::refresh("t1", &format!("rt-{tag}-next"), &format!("fam-{id}"));
                let got = store
                    .rotate_refresh("t1", &chain.token_hash, &next, NOW)
                    .await
                    .expect("rotate_refresh");
                assert!(matches!(got, Rotate::Rotated(_)));
                chain = next;
            }
        }
        n += 1;
    }
    n
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let concurrency: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(256);
    let seconds: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(3);
    let parent = args
        .get(3)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("concurrency {concurrency}, {seconds} s per workload, database under {parent:?}");
    println!("| workload | ops/s | writes/s | writes/commit | flushes/s | CPU/op |");
    println!("|---|---:|---:|---:|---:|---:|");
    for w in [Workload::Register, Workload::Flow, Workload::Refresh] {
        let dir = tempfile::tempdir_in(&parent).expect("temp dir");
        rt.block_on(async {
            let store = SqliteStore::open(dir.path().join("load.db"))
                .await
                .expect("open");
            let stop = Arc::new(AtomicBool::new(false));
            let total = Arc::new(AtomicU64::new(0));
            let before = store.write_stats();
            let cpu0 = cpu_seconds();
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for id in 0..concurrency {
                let (store, stop, total) = (store.clone(), stop.clone(), total.clone());
                tasks.push(tokio::spawn(async move {
                    let n = worker(store, w, id, stop).await;
                    total.fetch_add(n, Ordering::Relaxed);
                }));
            }
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                t.await.expect("worker");
            }
            let elapsed = t0.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu0;
            let after = store.write_stats();
            let ops = total.load(Ordering::Relaxed) as f64;
            let writes = (after.writes - before.writes) as f64;
            let commits = (after.commits - before.commits).max(1) as f64;
            println!(
                "| {w:?} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} µs |",
                ops / elapsed,
                writes / elapsed,
                writes / commits,
                (after.syncs - before.syncs) as f64 / elapsed,
                cpu / ops.max(1.0) * 1e6,
            );
            store.close().await;
        });
    }
}
