//! Versioned schema migrations, compiled into the crate and applied on connect.
//!
//! The applied versions are rows of `mcp_auth_schema_migrations` in the store's schema. The
//! whole check-and-apply runs in one transaction that first takes a transaction-level
//! advisory lock keyed by the schema name, so instances starting together against one
//! database apply each migration once: the others wait, then find it applied. DDL is
//! transactional in PostgreSQL, so a failed migration leaves nothing behind.

use mcp_auth_server::store::StoreError;
use tokio_postgres::Client;

use crate::error::PgError;

/// One step of the schema.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in order; the last one's version is the schema this build expects.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "sessions and upstream tokens",
        sql: include_str!("../migrations/0002_sessions_upstream.sql"),
    },
    Migration {
        version: 3,
        name: "device authorizations",
        sql: include_str!("../migrations/0003_device.sql"),
    },
    Migration {
        version: 4,
        name: "single-use claims",
        sql: include_str!("../migrations/0004_claims.sql"),
    },
];

/// The first key of the advisory lock serializing migrations ("mcpa"); the second is a hash
/// of the schema name. Two-key advisory locks do not collide with one-key ones, which this
/// crate uses per token family.
const MIGRATION_LOCK_CLASS: i32 = 0x6d63_7061;

/// The schema version this build brings databases to.
pub(crate) fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings `schema` up to date, creating it first when `create_schema`. `schema` is a
/// validated identifier (see `valid_schema_name`), safe to splice into SQL.
pub(crate) async fn migrate(
    client: &mut Client,
    schema: &str,
    create_schema: bool,
    target: &str,
) -> Result<(), StoreError> {
    let failed = |step: &str, e| {
        StoreError::from(PgError::with_source(
            format!("migrating the PostgreSQL schema {schema} at {target} failed ({step})"),
            e,
        ))
    };
    let tx = client.transaction().await.map_err(|e| failed("begin", e))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&MIGRATION_LOCK_CLASS, &schema],
    )
    .await
    .map_err(|e| failed("lock", e))?;
    // Under the lock: concurrent `CREATE … IF NOT EXISTS` can otherwise fail on the catalog's
    // unique index.
    if create_schema {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .map_err(|e| failed("create schema", e))?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.mcp_auth_schema_migrations (\
             version    INTEGER PRIMARY KEY, \
             name       TEXT    NOT NULL, \
             applied_at BIGINT  NOT NULL)"
    ))
    .await
    .map_err(|e| failed("create the migrations table", e))?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.mcp_auth_schema_migrations"),
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| failed("read the schema version", e))?;
    let latest = latest_version();
    if current > latest {
        return Err(PgError::msg(format!(
            "the PostgreSQL schema {schema} at {target} is at version {current}, newer than \
             this program supports ({latest}); run a newer mcp-auth"
        ))
        .into());
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(migration.sql)
            .await
            .map_err(|e| failed(migration.name, e))?;
        tx.execute(
            &format!(
                "INSERT INTO {schema}.mcp_auth_schema_migrations (version, name, applied_at) \
                 VALUES ($1, $2, extract(epoch FROM now())::bigint)"
            ),
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(|e| failed(migration.name, e))?;
        tracing::info!(
            schema,
            version = migration.version,
            name = migration.name,
            "applied PostgreSQL migration"
        );
    }
    tx.commit().await.map_err(|e| failed("commit", e))?;
    Ok(())
}
