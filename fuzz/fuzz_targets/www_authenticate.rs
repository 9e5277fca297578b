//! `WWW-Authenticate` values come from any server a client talks to.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mcp_auth_types::parse_www_authenticate(&String::from_utf8_lossy(data));
});
