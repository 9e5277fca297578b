//! The redirect URI's query is written by whoever can make the browser load a URL.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mcp_auth_types::AuthorizationResponse::from_query(&String::from_utf8_lossy(data));
});
