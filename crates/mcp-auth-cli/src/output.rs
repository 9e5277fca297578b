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

/// How `login` shows the device flow's URL and code: on standard error with a QR code of
/// the complete URL, or with `--json` as one line of JSON on standard output (for a program
/// that shows it elsewhere).
pub fn device_prompt(json: bool) -> mcp_auth_client::DevicePrompt {
    mcp_auth_client::DevicePrompt(std::sync::Arc::new(
        move |a: &mcp_auth_client::DeviceAuthorization| {
            if json {
                let line = serde_json::json!({"device_authorization": {
                    "verification_uri": a.verification_uri,
                    "verification_uri_complete": a.verification_uri_complete,
                    "user_code": a.user_code,
                    "expires_in": a.expires_in,
                    "interval": a.interval,
                }});
                println!("{line}");
                return;
            }
            let target = a
                .verification_uri_complete
                .as_deref()
                .unwrap_or(&a.verification_uri);
            eprintln!();
            if let Some(qr) = qr_code(target) {
                eprintln!("{qr}");
            }
            eprintln!("To log in, open on any device:  {}", a.verification_uri);
            eprintln!("and enter the code:             {}", a.user_code);
            if let Some(c) = &a.verification_uri_complete {
                eprintln!("(or scan the code above, or open {c})");
            }
            let now = mcp_auth_client::store::now_secs();
            eprintln!(
                "Waiting for you to approve (the code expires {}) …",
                expiry(Some(now + a.expires_in), now)
            );
        },
    ))
}

/// `text` as a QR code of Unicode half blocks (two rows per line), or `None` when it does
/// not fit one.
fn qr_code(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}
