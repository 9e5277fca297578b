//! Where the CPU goes inside this process: the server's runtime, SQLite's connection
//! threads and the load generator, told apart by thread name, from `/proc/self/task`
//! (Linux only; elsewhere the columns stay empty).

/// CPU time in clock ticks, by kind of thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTicks {
    /// The server's tokio runtime (`bench-server`) and the rest of the process.
    pub server: u64,
    /// The SQLite writer thread (`mcp-auth-sqlite`), which runs every write and commit (reads
    /// run on the server's threads). Time spent
    /// waiting for `fsync` or for the write lock is off-CPU and does not show.
    pub sqlite: u64,
    /// The load generator's runtime (`bench-load`).
    pub load: u64,
    /// The processes of a networked store on this machine (`redis-server`, `postgres`):
    /// part of what an operation costs the server.
    pub backend: u64,
}

/// `USER_HZ`: fixed at 100 by the Linux ABI on every architecture Rust targets there.
const TICKS_PER_SEC: f64 = 100.0;

impl CpuTicks {
    /// The time used between `earlier` and this snapshot. A thread that ended in between
    /// takes its time with it, so this is a lower bound.
    pub fn since(&self, earlier: &CpuTicks) -> CpuTicks {
        CpuTicks {
            server: self.server.saturating_sub(earlier.server),
            sqlite: self.sqlite.saturating_sub(earlier.sqlite),
            load: self.load.saturating_sub(earlier.load),
            backend: self.backend.saturating_sub(earlier.backend),
        }
    }

    /// `ticks` over `secs` of wall time, as a percentage of one core.
    pub fn percent(ticks: u64, secs: f64) -> f64 {
        ticks as f64 / TICKS_PER_SEC / secs * 100.0
    }

    /// The server's CPU time (its runtime, SQLite's threads or the Redis/PostgreSQL server
    /// processes) per operation, in
    /// microseconds: what an operation costs the server, whatever share of the machine it
    /// got. On a machine shared with other work this moves less than ops/s does.
    pub fn server_micros_per_op(&self, ops: usize) -> Option<f64> {
        (ops > 0).then(|| {
            (self.server + self.sqlite + self.backend) as f64 / TICKS_PER_SEC * 1e6 / ops as f64
        })
    }
}

/// The process's CPU time so far, by kind of thread.
#[cfg(target_os = "linux")]
pub fn snapshot() -> Option<CpuTicks> {
    let mut t = CpuTicks::default();
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(stat) = std::fs::read_to_string(entry.ok()?.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // `tid (comm) state ppid …`: comm may hold spaces and parentheses, so split at the
        // last ')'; utime and stime are fields 14 and 15 of the line, 12 and 13 after it.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        let (Some(user), Some(sys)) = (ticks(11), ticks(12)) else {
            continue;
        };
        let slot = if comm.starts_with("bench-load") {
            &mut t.load
        } else if comm.starts_with("mcp-auth-sqlite") {
            &mut t.sqlite
        } else {
            &mut t.server
        };
        *slot += user + sys;
    }
    t.backend = backend_ticks();
    Some(t)
}

/// CPU time of every `redis-server` and `postgres` process on the machine (those of a
/// networked store; idle ones add next to nothing).
#[cfg(target_os = "linux")]
fn backend_ticks() -> u64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in procs.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        if comm != "redis-server" && comm != "postgres" {
            continue;
        }
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        if let (Some(user), Some(sys)) = (ticks(11), ticks(12)) {
            total += user + sys;
        }
    }
    total
}

#[cfg(not(target_os = "linux"))]
pub fn snapshot() -> Option<CpuTicks> {
    None
}

/// Whether `--pin` can put a runtime on CPU `cpu`: the process may run there.
#[cfg(target_os = "linux")]
pub fn check_pin(cpu: usize) -> Result<(), String> {
    let allowed = rustix::thread::sched_getaffinity(None)
        .map_err(|e| format!("--pin: cannot read this process's CPUs: {e}"))?;
    if cpu >= rustix::thread::CpuSet::MAX_CPU || !allowed.is_set(cpu) {
        return Err(format!(
            "--pin needs CPUs 0 and 1; this process may not run on CPU {cpu}"
        ));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn check_pin(_cpu: usize) -> Result<(), String> {
    Err("--pin is implemented on Linux only".into())
}

/// Keeps the calling thread on CPU `cpu` (checked beforehand by [`check_pin`]). A failure
/// here leaves the thread unpinned and says so: the figures are still measured, less
/// steadily.
#[cfg(target_os = "linux")]
pub fn pin_current_thread(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        eprintln!("mcp-auth-bench: could not pin a thread to CPU {cpu}: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(_cpu: usize) {}
