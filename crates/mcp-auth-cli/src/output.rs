//! Logging and human output.

use std::io::IsTerminal as _;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

/// Logs go to stderr (or a file), never stdout: stdout carries tokens and results. The level
/// comes from `-v` (info, debug, trace) or `MCP_AUTH_LOG` (an EnvFilter directive).
pub fn init_logging(verbose: u8, file: Option<&std::path::Path>) {
    let default = match verbose {
        0 => "warn",
        1 => "info,mcp_auth_client=info",
        2 => "debug",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_env("MCP_AUTH_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(verbose >= 2);
    let file = file.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    match file {
        Some(f) => {
            let _ = builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .try_init();
        }
        None => {
            let _ = builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .try_init();
        }
    }
}

/// `proxy --silent`: nothing is logged.
pub fn init_silent_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("off"))
        .with_writer(std::io::sink)
        .try_init();
}

/// For `demo`: the client library's steps (info level), one line each on stdout, without
/// timestamps. Nothing secret is logged at any level.
pub fn init_demo_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn,mcp_auth_client=info"))
        .with_target(false)
        .with_level(false)
        .without_time()
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .try_init();
}

/// A spinner on stderr while waiting for the browser; silent when stderr is not a terminal.
pub fn spinner(message: &str) -> indicatif::ProgressBar {
    let pb = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_message(message.to_owned());
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// "in 59m", "expired 3m ago", "no expiry".
pub fn expiry(expires_at: Option<u64>, now: u64) -> String {
    match expires_at {
        None => "no expiry".into(),
        Some(t) if t > now => format!("in {}", human(t - now)),
        Some(t) => format!("expired {} ago", human(now - t)),
    }
}

fn human(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d", s / 86400),
    }
}
