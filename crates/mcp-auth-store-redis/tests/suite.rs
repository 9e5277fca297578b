//! The shared `Store` conformance suite against a real Redis (`MCP_AUTH_TEST_REDIS_URL`,
//! by default `redis://127.0.0.1:6379/15`): each check on its own random key prefix, with
//! the suite's clock as the TTL clock, its keys deleted afterwards.

mod common;

use mcp_auth_server::store::suite::Fixture;

async fn fresh() -> Fixture {
    let (store, cleanup) = common::fresh_store().await;
    Fixture::with_guard(store, cleanup)
}

mod redis {
    mcp_auth_server::store_suite!(async || super::fresh().await);
}
