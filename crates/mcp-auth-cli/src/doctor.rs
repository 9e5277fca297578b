//! `mcp-auth doctor <url> [--login]`: the glue between the command line and
//! `mcp-auth-doctor`. The checks, the report and its rendering live in that crate.

use std::sync::Arc;

use anyhow::Result;
use mcp_auth_client::store::CredentialStore;
use mcp_auth_doctor::{Options, ToolCall, diagnose, login_and_call};

use crate::cli::{AuthArgs, Cli, build_client, parse_headers};
use crate::exit;

/// Runs the checks (and with `login` a real login and tool call), prints the report, and
/// returns [`exit::UNSAFE_SERVER`] when a MUST of the specs is violated.
pub async fn run(
    cli: &Cli,
    store: Arc<dyn CredentialStore>,
    url: &str,
    login: bool,
    call: Option<&str>,
    args: &str,
    auth: &AuthArgs,
) -> Result<u8> {
    let arguments = crate::cli::tool_arguments(args)?;
    let client = build_client(cli, store, auth)?;
    let headers = parse_headers(auth)?;
    let mut opts = Options::new(client.http().clone());
    opts.server_headers = headers.clone();
    opts.allow_http = auth.allow_http;
    opts.pre_registered = auth.client_id.is_some();
    let mut report = diagnose(url, &opts).await?;
    if login {
        let call = ToolCall {
            name: call.map(str::to_owned),
            arguments,
        };
        report.extend(login_and_call(&client, url, &call, headers).await);
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.verdict.ok {
        exit::OK
    } else {
        exit::UNSAFE_SERVER
    })
}
