//! A jwt-bearer grant's assertion comes from any client, and the key set it is checked
//! against from a trusted issuer over the network: neither may panic the verifier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_auth_server::jwt_bearer::{Context, glob_match, unverified_issuer, verify};
use mcp_auth_server::{TrustKind, TrustedIssuer};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The first line is the assertion, the rest a JWKS document (JSON, or junk).
    let (assertion, jwks) = text.split_once('\n').unwrap_or((&text, "{}"));
    let jwks = serde_json::from_str(jwks).unwrap_or(serde_json::Value::Null);
    let _ = unverified_issuer(assertion);
    let mut enterprise =
        TrustedIssuer::new("acme", TrustKind::Enterprise, "https://idp.example.com");
    enterprise.allowed_clients = vec!["client".into()];
    let mut workload = TrustedIssuer::new("k8s", TrustKind::Workload, "https://k8s.example.com");
    workload.allowed_subjects = vec!["system:serviceaccount:*".into()];
    let ctx = Context {
        server_issuer: "https://auth.example.com",
        client_id: "client",
        requested_resource: Some("https://mcp.example.com/mcp"),
        now: 1_700_000_000,
    };
    let _ = verify(assertion, &enterprise, &jwks, &ctx);
    let _ = verify(assertion, &workload, &jwks, &ctx);
    let _ = glob_match(assertion, &text);
});
