//! Sealed values come back from browsers (the connector's state cookie) and from databases:
//! opening arbitrary text must fail cleanly, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_auth_types::seal::SealKeys;

fuzz_target!(|data: &[u8]| {
    let Ok(keys) = SealKeys::new("k1", [7u8; 32]) else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let _ = keys.open(b"context", &text);
    let _ = SealKeys::parse(&text);
});
