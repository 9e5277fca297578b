//! An `id_token` and the JWKS it is checked against come from an upstream identity provider
//! the authorization server talks to: neither may panic the verifier, whatever they hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_auth_upstream::id_token::{Expected, SigningAlgorithm, verify};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The first line is the token, the rest a JWKS document (JSON, or junk).
    let (token, jwks) = text.split_once('\n').unwrap_or((&text, "{}"));
    let jwks = serde_json::from_str(jwks).unwrap_or(serde_json::Value::Null);
    let algs = [SigningAlgorithm::ES256, SigningAlgorithm::RS256, SigningAlgorithm::EdDSA];
    let expected = Expected {
        issuer: "https://login.example.com",
        issuer_aliases: &[],
        client_id: "client",
        nonce: "n-0S6_WzA2Mj",
        now: 1_700_000_000,
        allowed_algs: &algs,
        leeway: 60,
    };
    let _ = verify(token, &jwks, &expected);
});
