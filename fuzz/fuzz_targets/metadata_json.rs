//! Discovery, registration and token endpoint bodies, as a hostile server would send them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_auth_types::{
    AuthorizationServerMetadata, ClientInformation, ErrorResponse, ProtectedResourceMetadata,
    TokenResponse,
};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<AuthorizationServerMetadata>(data);
    let _ = serde_json::from_slice::<ProtectedResourceMetadata>(data);
    let _ = serde_json::from_slice::<ClientInformation>(data);
    let _ = serde_json::from_slice::<TokenResponse>(data);
    let _ = serde_json::from_slice::<ErrorResponse>(data);
});
