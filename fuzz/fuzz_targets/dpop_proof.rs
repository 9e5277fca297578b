//! A DPoP proof (RFC 9449) arrives in a header of any request to the token endpoint or a
//! protected resource: checking it must never panic, whatever its header, `jwk` or claims
//! hold, and a server nonce the client sends back must never panic the nonce check either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_auth_types::dpop::{ProofCheck, jwk_thumbprint, unverified_nonce, verify_proof};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The first line is the proof, the second the access token it should be for.
    let (proof, token) = text.split_once('\n').unwrap_or((&text, "token"));
    let check = ProofCheck {
        method: "POST",
        url: "https://mcp.example.com/mcp",
        now: 1_700_000_000,
        access_token: Some(token),
        nonce: Some("n-1"),
        ..ProofCheck::default()
    };
    let _ = verify_proof(proof, &check);
    let _ = unverified_nonce(proof);
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(token) {
        let _ = jwk_thumbprint(&v);
    }
});
