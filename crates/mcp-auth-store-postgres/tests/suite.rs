//! The shared `Store` conformance suite against PostgreSQL: each check in a new schema of
//! the test database, dropped afterwards.

mod common;

use mcp_auth_server::store::suite::Fixture;

async fn fresh_fixture() -> Fixture {
    let (store, guard) = common::fresh_store().await;
    Fixture::with_guard(store, guard)
}

mod postgres {
    mcp_auth_server::store_suite!(async || super::fresh_fixture().await);
}
