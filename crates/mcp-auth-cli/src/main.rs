//! `mcp-auth`: log in to OAuth-protected MCP servers and hand their tokens to scripts.

mod cli;
mod demo_mcp;
mod doctor;
mod exit;
#[cfg(feature = "keyring")]
mod keyring;
mod output;
mod proxy;
mod serve;
mod server_config;
mod upstream_config;

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc rather than the system allocator: the server allocates on every request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if matches!(args.command, cli::Command::Demo { .. }) && args.verbose == 0 {
        output::init_demo_logging();
    } else if let cli::Command::Proxy(p) = &args.command {
        // stdout is the MCP channel: logs go to stderr or a file only.
        let file = args.log_file.clone().or_else(|| {
            if !p.debug {
                return None;
            }
            let home = cli::home(&args).ok()?;
            let path = proxy::debug_log_path(&home, &p.url);
            std::fs::create_dir_all(path.parent()?).ok()?;
            Some(path)
        });
        let level = if p.debug { 2 } else { args.verbose };
        if p.silent && !p.debug && args.log_file.is_none() {
            output::init_silent_logging();
        } else {
            output::init_logging(level, file.as_deref());
        }
    } else {
        output::init_logging(args.verbose, args.log_file.as_deref());
    }
    // One thread is plenty for a CLI, and a current-thread runtime starts faster: `token`
    // is called from shell prompts.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-auth: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let outcome = rt.block_on(cli::run(args));
    // Do not wait for blocking threads: one may sit in a read of stdin (`proxy`) that
    // never returns while the client keeps the pipe open.
    rt.shutdown_background();
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit::code_for(&e);
            eprintln!("mcp-auth: {}", exit::describe(&e));
            ExitCode::from(code)
        }
    }
}
