//! A URL without a password takes it from `PGPASSWORD`. Its own test binary: it sets an
//! environment variable, which must not race with other tests reading the environment.

mod common;

use common::{DropSchema, random_schema};
use mcp_auth_store_postgres::{PostgresOptions, PostgresStore};

#[tokio::test]
async fn password_from_pgpassword() {
    let url = common::url();
    let (credentials, rest) = url.split_once('@').unwrap();
    let (scheme_user, password) = credentials.rsplit_once(':').unwrap();
    let without_password = format!("{scheme_user}@{rest}");
    let schema = random_schema();
    let _guard = DropSchema(schema.clone());

    // SAFETY: the only test of this binary, set before any other thread reads the
    // environment.
    unsafe { std::env::set_var("PGPASSWORD", "wrong-password") };
    let refused =
        PostgresStore::connect_with(PostgresOptions::new(without_password.clone()).schema(&schema))
            .await;
    assert!(refused.is_err());

    // SAFETY: as above.
    unsafe { std::env::set_var("PGPASSWORD", password) };
    PostgresStore::connect_with(PostgresOptions::new(without_password).schema(&schema))
        .await
        .unwrap();
}
