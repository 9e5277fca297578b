//! [`PostgresStore`]: the [`Store`] trait on PostgreSQL, through a pool of connections.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
    TimeoutType,
};
use mcp_auth_server::store::{
    ClientRow, CodeRow, ConsentRow, DeviceAuthRow, DeviceDecision, DevicePoll, DeviceStatus,
    NewRefresh, PendingAuthRow, REVOKED_FAMILY_RETENTION_SECS, RefreshRow, RegistrationKind,
    Rotate, SessionRow, SigningKeyRow, Store, StoreError, TakeCode, UpstreamRow, UserRow,
    check_refresh_successor, check_upstream_swap, device_decide_step, device_poll_step,
    spawn_sweeper, unix_now,
};
use tokio::task::JoinHandle;
use tokio::time::error::Elapsed;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::error::{PgError, backend, corrupt, insert_error};
use crate::migrate::migrate;
use crate::options::{PostgresOptions, driver_config, valid_schema_name};

/// A [`Store`] in a PostgreSQL database. Cloning is cheap and shares the pool.
///
/// Several instances (processes, machines) may share one database and schema: every
/// single-use decision is taken by PostgreSQL under row or advisory locks, never in this
/// process. See the crate docs.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// `host:port`, for error messages (never the password).
    target: String,
    schema: String,
    /// The deadline of each call once it holds a connection.
    timeout: Duration,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("PostgresStore")
            .field("target", &self.inner.target)
            .field("schema", &self.inner.schema)
            .field("pool_size", &status.size)
            .field("pool_max_size", &status.max_size)
            .finish()
    }
}

/// Runs `$body`, an expression of type `Result<T, StoreError>` using `$conn: &mut Object`,
/// on a pooled connection, bounded by the store's deadline; see [`PostgresStore::checkin`].
macro_rules! with_conn {
    ($store:expr, |$conn:ident| $body:expr) => {{
        let store: &PostgresStore = $store;
        let mut object = store.checkout().await?;
        let outcome = {
            let $conn: &mut Object = &mut object;
            tokio::time::timeout(store.inner.timeout, async move { $body }).await
        };
        store.checkin(object, outcome)
    }};
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`) with
    /// the default [`PostgresOptions`], and brings its schema up to date.
    ///
    /// Fails with [`StoreError::Backend`] (naming the server, never the password) when the
    /// server cannot be reached, refuses the credentials, or holds a schema newer than this
    /// program.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(PostgresOptions::new(url)).await
    }

    /// Connects as `options` say, creates the schema if one is named, and brings it up to
    /// date. Fails like [`connect`](Self::connect), and on invalid options.
    pub async fn connect_with(options: PostgresOptions) -> Result<Self, StoreError> {
        let schema = match &options.schema {
            Some(name) if valid_schema_name(name) => name.clone(),
            Some(_) => {
                return Err(PgError::msg(
                    "invalid PostgreSQL schema name: use [a-z_][a-z0-9_]*, at most 63 bytes, \
                     not starting with pg_",
                )
                .into());
            }
            None => "public".to_owned(),
        };
        if options.pool_size == 0 {
            return Err(PgError::msg("the PostgreSQL pool size must be at least 1").into());
        }
        let (config, target) = driver_config(&options, &schema)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A closed connection is dropped on checkout; one that hangs is dropped
                // when its call misses the deadline (`checkin`).
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.statement_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.statement_timeout))
            .build()
            .map_err(|e| PgError::msg(format!("cannot build the PostgreSQL pool: {e}")))?;
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                target,
                schema,
                timeout: options.statement_timeout,
            }),
        };
        let mut object = store.checkout().await?;
        // Migrations may wait for another instance's; allow them a few statements' time.
        let deadline = options.statement_timeout.saturating_mul(4);
        let outcome = tokio::time::timeout(
            deadline,
            migrate(
                &mut object,
                &store.inner.schema,
                options.schema.is_some(),
                &store.inner.target,
            ),
        )
        .await;
        store.checkin(object, outcome)?;
        Ok(store)
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Closes the pool: its connections are closed as they come back, and later calls fail.
    pub fn close(&self) {
        self.inner.pool.close();
    }

    /// Deletes expired rows ([`Store::sweep`]) every `interval`, the first time at once, by
    /// the system clock, until the returned task is aborted.
    ///
    /// Every instance sharing a database may run one: sweeps only delete expired rows, so
    /// running them concurrently is harmless.
    pub fn spawn_sweeper(&self, interval: Duration) -> JoinHandle<()> {
        spawn_sweeper(Arc::new(self.clone()), interval, unix_now)
    }

    /// A pooled connection, waiting at most the statement timeout for one to be free and the
    /// connect timeout to open a new one.
    async fn checkout(&self) -> Result<Object, StoreError> {
        let target = &self.inner.target;
        self.inner.pool.get().await.map_err(|e| {
            let e = match e {
                PoolError::Backend(e) => {
                    PgError::with_source(format!("cannot connect to PostgreSQL at {target}"), e)
                }
                PoolError::Timeout(TimeoutType::Create) => PgError::msg(format!(
                    "cannot connect to PostgreSQL at {target}: no answer in time"
                )),
                PoolError::Timeout(TimeoutType::Wait) => PgError::msg(format!(
                    "no free connection to PostgreSQL at {target} in time: all {} are busy",
                    self.inner.pool.status().max_size
                )),
                PoolError::Timeout(TimeoutType::Recycle) => PgError::msg(format!(
                    "PostgreSQL at {target} did not answer a connection check in time"
                )),
                PoolError::Closed => PgError::msg("the PostgreSQL store was closed"),
                other => PgError::msg(format!("PostgreSQL connection pool failed: {other}")),
            };
            StoreError::from(e)
        })
    }

    /// Returns a connection to the pool after a call and passes the call's result on. A call
    /// that missed its deadline leaves its connection mid-statement, or talking to a server
    /// that is gone: that connection is closed rather than reused, and the pool opens a new
    /// one when asked (so it recovers by itself once the server is back).
    fn checkin<T>(
        &self,
        object: Object,
        outcome: Result<Result<T, StoreError>, Elapsed>,
    ) -> Result<T, StoreError> {
        match outcome {
            Ok(result) => {
                if object.is_closed() {
                    drop(Object::take(object));
                }
                result
            }
            Err(_) => {
                drop(Object::take(object));
                Err(PgError::msg(format!(
                    "PostgreSQL at {} did not answer within {:?}",
                    self.inner.target, self.inner.timeout
                ))
                .into())
            }
        }
    }
}

// ---- statements ----

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// At most one row of `sql` (a lookup by primary key).
async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(backend)?;
    c.query_opt(&stmt, params).await.map_err(backend)
}

/// Every row of `sql`.
async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(backend)?;
    c.query(&stmt, params).await.map_err(backend)
}

/// Runs a statement that returns no rows; how many rows it changed.
async fn execute(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(backend)?;
    c.execute(&stmt, params).await.map_err(backend)
}

/// Runs an insert; a primary key violation is [`StoreError::Conflict`] about `what`.
async fn insert(
    c: &impl GenericClient,
    what: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<(), StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(backend)?;
    c.execute(&stmt, params).await.map_err(insert_error(what))?;
    Ok(())
}

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// PostgreSQL integers are signed; times past `i64::MAX` seconds are "never" anyway.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn opt_int(v: Option<u64>) -> Option<i64> {
    v.map(int)
}

fn to_json(value: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(Box::new(e)))
}

// ---- decoding ----

fn get_str(row: &Row, col: &'static str) -> Result<String, StoreError> {
    row.try_get(col).map_err(corrupt(col))
}

fn get_opt_str(row: &Row, col: &'static str) -> Result<Option<String>, StoreError> {
    row.try_get(col).map_err(corrupt(col))
}

fn to_u64(v: i64, col: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|e| StoreError::Corrupt {
        what: col,
        source: Box::new(e),
    })
}

fn get_u64(row: &Row, col: &'static str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(col).map_err(corrupt(col))?;
    to_u64(v, col)
}

fn get_opt_u64(row: &Row, col: &'static str) -> Result<Option<u64>, StoreError> {
    let v: Option<i64> = row.try_get(col).map_err(corrupt(col))?;
    v.map(|v| to_u64(v, col)).transpose()
}

fn get_json(row: &Row, col: &'static str) -> Result<serde_json::Value, StoreError> {
    let text = get_str(row, col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        what: col,
        source: Box::new(e),
    })
}

fn get_json_object(
    row: &Row,
    col: &'static str,
) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    match get_json(row, col)? {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(StoreError::Corrupt {
            what: col,
            source: "not a JSON object".into(),
        }),
    }
}

// Column lists, shared by SELECT and RETURNING so each row is decoded by one function.
macro_rules! client_cols {
    () => {
        "tenant, client_id, secret_hash, metadata, registration_kind, \
         registration_token_hash, created_at, expires_at"
    };
}
macro_rules! code_cols {
    () => {
        "tenant, code_hash, client_id, redirect_uri, code_challenge, scope, resource, subject, \
         nonce, expires_at, family_id"
    };
}
macro_rules! refresh_cols {
    () => {
        "tenant, token_hash, family_id, client_id, subject, scope, resource, expires_at, \
         created_at"
    };
}
macro_rules! key_cols {
    () => {
        "tenant, kid, alg, private_pem, public_jwk, created_at, not_after"
    };
}
macro_rules! pending_cols {
    () => {
        "tenant, id, client_id, redirect_uri, response_type, scope, state, code_challenge, \
         code_challenge_method, resource, nonce, prompt, login_hint, extra, subject, csrf_hash, \
         created_at, expires_at"
    };
}

macro_rules! consent_cols {
    () => {
        "tenant, subject, client_id, scope, granted_at"
    };
}
macro_rules! session_cols {
    () => {
        "tenant, session_hash, subject, provider, created_at, expires_at"
    };
}
macro_rules! upstream_cols {
    () => {
        "tenant, account, provider, sealed, version, created_at, updated_at, expires_at"
    };
}

macro_rules! device_cols {
    () => {
        "tenant, device_code_hash, user_code_hash, client_id, scope, resource, interval_secs, \
         status, subject, granted_scope, last_poll, created_at, expires_at"
    };
}

fn device_row(r: &Row) -> Result<DeviceAuthRow, StoreError> {
    let status = get_str(r, "status")?;
    Ok(DeviceAuthRow {
        tenant: get_str(r, "tenant")?,
        device_code_hash: get_str(r, "device_code_hash")?,
        user_code_hash: get_str(r, "user_code_hash")?,
        client_id: get_str(r, "client_id")?,
        scope: get_str(r, "scope")?,
        resource: get_opt_str(r, "resource")?,
        interval: get_u64(r, "interval_secs")?,
        status: DeviceStatus::from_name(&status).ok_or_else(|| StoreError::Corrupt {
            what: "status",
            source: format!("unknown device authorization status {status:?}").into(),
        })?,
        subject: get_opt_str(r, "subject")?,
        granted_scope: get_opt_str(r, "granted_scope")?,
        last_poll: get_opt_u64(r, "last_poll")?,
        created_at: get_u64(r, "created_at")?,
        expires_at: get_u64(r, "expires_at")?,
    })
}

/// The device authorization under `device_code_hash`, locked (`FOR UPDATE`) until the
/// caller's transaction ends: a concurrent poll or decision waits, then reads what this one
/// wrote.
async fn lock_device(
    c: &impl GenericClient,
    tenant: &str,
    device_code_hash: &str,
) -> Result<Option<DeviceAuthRow>, StoreError> {
    query_opt(
        c,
        concat!(
            "SELECT ",
            device_cols!(),
            " FROM device_authorizations WHERE tenant = $1 AND device_code_hash = $2 \
             FOR UPDATE"
        ),
        &[&tenant, &device_code_hash],
    )
    .await?
    .as_ref()
    .map(device_row)
    .transpose()
}

/// Writes back the changing fields of a device authorization.
async fn update_device(c: &impl GenericClient, row: &DeviceAuthRow) -> Result<(), StoreError> {
    execute(
        c,
        "UPDATE device_authorizations SET interval_secs = $1, status = $2, subject = $3, \
         granted_scope = $4, last_poll = $5 WHERE tenant = $6 AND device_code_hash = $7",
        &[
            &int(row.interval),
            &row.status.as_str(),
            &row.subject,
            &row.granted_scope,
            &opt_int(row.last_poll),
            &row.tenant,
            &row.device_code_hash,
        ],
    )
    .await
    .map(drop)
}

fn client_row(r: &Row) -> Result<ClientRow, StoreError> {
    let kind = get_str(r, "registration_kind")?;
    Ok(ClientRow {
        tenant: get_str(r, "tenant")?,
        client_id: get_str(r, "client_id")?,
        secret_hash: get_opt_str(r, "secret_hash")?,
        metadata: get_json(r, "metadata")?,
        registration_kind: RegistrationKind::from_name(&kind).ok_or_else(|| {
            StoreError::Corrupt {
                what: "registration_kind",
                source: format!("unknown registration kind {kind:?}").into(),
            }
        })?,
        registration_token_hash: get_opt_str(r, "registration_token_hash")?,
        created_at: get_u64(r, "created_at")?,
        expires_at: get_opt_u64(r, "expires_at")?,
    })
}

fn user_row(r: &Row) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        tenant: get_str(r, "tenant")?,
        username: get_str(r, "username")?,
        password_hash: get_str(r, "password_hash")?,
        created_at: get_u64(r, "created_at")?,
    })
}

fn code_row(r: &Row) -> Result<CodeRow, StoreError> {
    Ok(CodeRow {
        tenant: get_str(r, "tenant")?,
        code_hash: get_str(r, "code_hash")?,
        client_id: get_str(r, "client_id")?,
        redirect_uri: get_str(r, "redirect_uri")?,
        code_challenge: get_str(r, "code_challenge")?,
        scope: get_str(r, "scope")?,
        resource: get_opt_str(r, "resource")?,
        subject: get_str(r, "subject")?,
        nonce: get_opt_str(r, "nonce")?,
        expires_at: get_u64(r, "expires_at")?,
        family_id: get_str(r, "family_id")?,
    })
}

fn refresh_row(r: &Row) -> Result<RefreshRow, StoreError> {
    Ok(RefreshRow {
        tenant: get_str(r, "tenant")?,
        token_hash: get_str(r, "token_hash")?,
        family_id: get_str(r, "family_id")?,
        client_id: get_str(r, "client_id")?,
        subject: get_str(r, "subject")?,
        scope: get_str(r, "scope")?,
        resource: get_opt_str(r, "resource")?,
        expires_at: get_u64(r, "expires_at")?,
        created_at: get_u64(r, "created_at")?,
    })
}

fn key_row(r: &Row) -> Result<SigningKeyRow, StoreError> {
    Ok(SigningKeyRow {
        tenant: get_str(r, "tenant")?,
        kid: get_str(r, "kid")?,
        alg: get_str(r, "alg")?,
        // The field's secret-string type deserializes from a plain JSON string.
        private_pem: serde_json::from_value(serde_json::Value::String(get_str(r, "private_pem")?))
            .map_err(|e| StoreError::Corrupt {
                what: "private_pem",
                source: Box::new(e),
            })?,
        public_jwk: get_json(r, "public_jwk")?,
        created_at: get_u64(r, "created_at")?,
        not_after: get_opt_u64(r, "not_after")?,
    })
}

fn pending_row(r: &Row) -> Result<PendingAuthRow, StoreError> {
    Ok(PendingAuthRow {
        id: get_str(r, "id")?,
        tenant: get_str(r, "tenant")?,
        client_id: get_str(r, "client_id")?,
        redirect_uri: get_str(r, "redirect_uri")?,
        response_type: get_str(r, "response_type")?,
        scope: get_opt_str(r, "scope")?,
        state: get_opt_str(r, "state")?,
        code_challenge: get_str(r, "code_challenge")?,
        code_challenge_method: get_str(r, "code_challenge_method")?,
        resource: get_opt_str(r, "resource")?,
        nonce: get_opt_str(r, "nonce")?,
        prompt: get_opt_str(r, "prompt")?,
        login_hint: get_opt_str(r, "login_hint")?,
        extra: get_json_object(r, "extra")?,
        subject: get_opt_str(r, "subject")?,
        csrf_hash: get_str(r, "csrf_hash")?,
        created_at: get_u64(r, "created_at")?,
        expires_at: get_u64(r, "expires_at")?,
    })
}

fn consent_row(r: &Row) -> Result<ConsentRow, StoreError> {
    Ok(ConsentRow {
        tenant: get_str(r, "tenant")?,
        subject: get_str(r, "subject")?,
        client_id: get_str(r, "client_id")?,
        scope: get_str(r, "scope")?,
        granted_at: get_u64(r, "granted_at")?,
    })
}

fn session_row(r: &Row) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        tenant: get_str(r, "tenant")?,
        session_hash: get_str(r, "session_hash")?,
        subject: get_str(r, "subject")?,
        provider: get_str(r, "provider")?,
        created_at: get_u64(r, "created_at")?,
        expires_at: get_u64(r, "expires_at")?,
    })
}

fn upstream_row(r: &Row) -> Result<UpstreamRow, StoreError> {
    Ok(UpstreamRow {
        tenant: get_str(r, "tenant")?,
        account: get_str(r, "account")?,
        provider: get_str(r, "provider")?,
        sealed: get_str(r, "sealed")?,
        version: get_u64(r, "version")?,
        created_at: get_u64(r, "created_at")?,
        updated_at: get_u64(r, "updated_at")?,
        expires_at: get_u64(r, "expires_at")?,
    })
}

// ---- token families ----

/// Takes the family's transaction-level advisory lock. Every change to a family's refresh
/// tokens ([`put_refresh`](Store::put_refresh), [`redeem_code`](Store::redeem_code),
/// [`rotate_refresh`](Store::rotate_refresh), [`revoke_family`](Store::revoke_family)) holds
/// it until commit, so they run one at a time per family across every connection and
/// instance. `redeem_code` takes it while holding the code's row lock; no holder of a family
/// lock ever waits for a code row, so the two cannot deadlock. Row locks alone would not do: in READ
/// COMMITTED a revocation's `DELETE` does not see a token inserted by a transaction that
/// commits while it runs, and that token would outlive the revocation. Distinct families
/// whose keys collide only wait for each other.
async fn lock_family(
    c: &impl GenericClient,
    tenant: &str,
    family_id: &str,
) -> Result<(), StoreError> {
    // The length prefix keeps ("a/b", "c") and ("a", "b/c") apart.
    execute(
        c,
        "SELECT pg_advisory_xact_lock(hashtextextended(\
         length($1)::text || '/' || $1 || '/' || $2, 0))",
        &[&tenant, &family_id],
    )
    .await
    .map(drop)
}

/// Deletes a family's tokens and remembers the revocation, inside the caller's transaction,
/// which holds the family's lock. Returns how many token rows went.
async fn revoke_family_in(
    c: &impl GenericClient,
    tenant: &str,
    family_id: &str,
    now: u64,
) -> Result<usize, StoreError> {
    let deleted = execute(
        c,
        "DELETE FROM refresh_tokens WHERE tenant = $1 AND family_id = $2",
        &[&tenant, &family_id],
    )
    .await?;
    execute(
        c,
        "INSERT INTO revoked_families (tenant, family_id, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant, family_id) DO UPDATE \
         SET expires_at = GREATEST(revoked_families.expires_at, excluded.expires_at)",
        &[
            &tenant,
            &family_id,
            &int(now.saturating_add(REVOKED_FAMILY_RETENTION_SECS)),
        ],
    )
    .await?;
    Ok(count(deleted))
}

/// Spends the code if it is unspent and unexpired, in one `UPDATE … RETURNING`; else tells
/// a replay from a missing code. Run on a plain connection ([`Store::take_code`]) or inside
/// [`Store::redeem_code`]'s transaction, which then keeps the code row locked until commit.
async fn take_code_in(
    c: &impl GenericClient,
    tenant: &str,
    code_hash: &str,
    now: u64,
) -> Result<TakeCode, StoreError> {
    // One statement decides who redeems the code: concurrent updaters of the row queue on
    // its lock, and each re-checks `spent_at IS NULL` on the version the one before
    // committed, so only the first gets the row back.
    let taken = query_opt(
        c,
        concat!(
            "UPDATE codes SET spent_at = $1 \
             WHERE tenant = $2 AND code_hash = $3 AND spent_at IS NULL \
             AND expires_at > $1 RETURNING ",
            code_cols!()
        ),
        &[&int(now), &tenant, &code_hash],
    )
    .await?;
    if let Some(row) = taken {
        return Ok(TakeCode::Taken(code_row(&row)?));
    }
    // Not ours: spent before (spent_at never goes back to NULL), or missing or expired.
    // This statement's snapshot is newer than the commit that spent the code, so it also
    // sees the refresh token [`Store::redeem_code`] stored in that commit.
    let spent = query_opt(
        c,
        "SELECT family_id, client_id FROM codes \
         WHERE tenant = $1 AND code_hash = $2 AND spent_at IS NOT NULL \
         AND expires_at > $3",
        &[&tenant, &code_hash, &int(now)],
    )
    .await?;
    Ok(match spent {
        Some(r) => TakeCode::Replayed {
            family_id: get_str(&r, "family_id")?,
            client_id: get_str(&r, "client_id")?,
        },
        None => TakeCode::Missing,
    })
}

/// Stores a family's refresh token inside the caller's transaction, which then holds the
/// family's lock until it ends. [`StoreError::FamilyRevoked`] if the family's revocation is
/// remembered, [`StoreError::Conflict`] if the hash exists; either way the caller must not
/// commit (dropping the transaction rolls it back).
async fn put_refresh_in(c: &impl GenericClient, row: &RefreshRow) -> Result<(), StoreError> {
    // Under the family lock a revocation is either committed (and seen here) or waits for
    // this insert and then deletes the token.
    lock_family(c, &row.tenant, &row.family_id).await?;
    let revoked = query_opt(
        c,
        "SELECT 1 FROM revoked_families WHERE tenant = $1 AND family_id = $2",
        &[&row.tenant, &row.family_id],
    )
    .await?;
    if revoked.is_some() {
        return Err(StoreError::FamilyRevoked);
    }
    insert_refresh(c, row).await
}

async fn insert_refresh(c: &impl GenericClient, row: &RefreshRow) -> Result<(), StoreError> {
    insert(
        c,
        "refresh token",
        concat!(
            "INSERT INTO refresh_tokens (",
            refresh_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ),
        &[
            &row.tenant,
            &row.token_hash,
            &row.family_id,
            &row.client_id,
            &row.subject,
            &row.scope,
            &row.resource,
            &int(row.expires_at),
            &int(row.created_at),
        ],
    )
    .await
}

#[async_trait]
impl Store for PostgresStore {
    async fn put_client(&self, row: &ClientRow) -> Result<(), StoreError> {
        let metadata = to_json(&row.metadata)?;
        with_conn!(self, |c| {
            execute(
                &*c,
                concat!(
                    "INSERT INTO clients (",
                    client_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (tenant, client_id) DO UPDATE SET \
                     secret_hash = excluded.secret_hash, metadata = excluded.metadata, \
                     registration_kind = excluded.registration_kind, \
                     registration_token_hash = excluded.registration_token_hash, \
                     created_at = excluded.created_at, expires_at = excluded.expires_at"
                ),
                &[
                    &row.tenant,
                    &row.client_id,
                    &row.secret_hash,
                    &metadata,
                    &row.registration_kind.as_str(),
                    &row.registration_token_hash,
                    &int(row.created_at),
                    &opt_int(row.expires_at),
                ],
            )
            .await
            .map(drop)
        })
    }

    async fn get_client(
        &self,
        tenant: &str,
        client_id: &str,
        now: u64,
    ) -> Result<Option<ClientRow>, StoreError> {
        with_conn!(self, |c| {
            query_opt(
                &*c,
                concat!(
                    "SELECT ",
                    client_cols!(),
                    " FROM clients WHERE tenant = $1 AND client_id = $2 \
                     AND (expires_at IS NULL OR expires_at > $3)"
                ),
                &[&tenant, &client_id, &int(now)],
            )
            .await?
            .as_ref()
            .map(client_row)
            .transpose()
        })
    }

    async fn delete_client(&self, tenant: &str, client_id: &str) -> Result<bool, StoreError> {
        with_conn!(self, |c| {
            let tx = c.transaction().await.map_err(backend)?;
            let existed = execute(
                &tx,
                "DELETE FROM clients WHERE tenant = $1 AND client_id = $2",
                &[&tenant, &client_id],
            )
            .await?
                > 0;
            // RFC 7592 §2.3: everything issued to the client goes with it.
            for sql in [
                "DELETE FROM codes WHERE tenant = $1 AND client_id = $2",
                "DELETE FROM refresh_tokens WHERE tenant = $1 AND client_id = $2",
                "DELETE FROM pending_authorizations WHERE tenant = $1 AND client_id = $2",
                "DELETE FROM device_authorizations WHERE tenant = $1 AND client_id = $2",
                "DELETE FROM consents WHERE tenant = $1 AND client_id = $2",
            ] {
                execute(&tx, sql, &[&tenant, &client_id]).await?;
            }
            tx.commit().await.map_err(backend)?;
            Ok(existed)
        })
    }

    async fn put_user(&self, row: &UserRow) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            execute(
                &*c,
                "INSERT INTO users (tenant, username, password_hash, created_at) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant, username) DO UPDATE SET \
                 password_hash = excluded.password_hash, created_at = excluded.created_at",
                &[
                    &row.tenant,
                    &row.username,
                    &row.password_hash,
                    &int(row.created_at),
                ],
            )
            .await
            .map(drop)
        })
    }

    async fn get_user(&self, tenant: &str, username: &str) -> Result<Option<UserRow>, StoreError> {
        with_conn!(self, |c| {
            query_opt(
                &*c,
                "SELECT tenant, username, password_hash, created_at FROM users \
                 WHERE tenant = $1 AND username = $2",
                &[&tenant, &username],
            )
            .await?
            .as_ref()
            .map(user_row)
            .transpose()
        })
    }

    async fn put_code(&self, row: &CodeRow) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            insert(
                &*c,
                "authorization code",
                concat!(
                    "INSERT INTO codes (",
                    code_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ),
                &[
                    &row.tenant,
                    &row.code_hash,
                    &row.client_id,
                    &row.redirect_uri,
                    &row.code_challenge,
                    &row.scope,
                    &row.resource,
                    &row.subject,
                    &row.nonce,
                    &int(row.expires_at),
                    &row.family_id,
                ],
            )
            .await
        })
    }

    async fn take_code(
        &self,
        tenant: &str,
        code_hash: &str,
        now: u64,
    ) -> Result<TakeCode, StoreError> {
        with_conn!(self, |c| take_code_in(&*c, tenant, code_hash, now).await)
    }

    async fn redeem_code(
        &self,
        tenant: &str,
        code_hash: &str,
        refresh: Option<&NewRefresh>,
        now: u64,
    ) -> Result<TakeCode, StoreError> {
        with_conn!(self, |c| {
            // An error return drops the transaction uncommitted: the code stays unspent.
            let tx = c.transaction().await.map_err(backend)?;
            // The code row stays locked until commit, so a concurrent redemption or replay
            // waits here and only sees the code spent together with its token.
            let taken = take_code_in(&tx, tenant, code_hash, now).await?;
            if let (TakeCode::Taken(code), Some(new)) = (&taken, refresh) {
                let row = new.row_for(code);
                // Lock order: the code row, then the family. Nothing holding a family lock
                // waits for a code row (revocations and rotations touch only
                // `refresh_tokens` and `revoked_families`), so this cannot deadlock.
                put_refresh_in(&tx, &row).await?;
            }
            tx.commit().await.map_err(backend)?;
            Ok(taken)
        })
    }

    async fn put_refresh(&self, row: &RefreshRow) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            let tx = c.transaction().await.map_err(backend)?;
            put_refresh_in(&tx, row).await?;
            tx.commit().await.map_err(backend)
        })
    }

    async fn get_refresh(
        &self,
        tenant: &str,
        token_hash: &str,
        now: u64,
    ) -> Result<Option<RefreshRow>, StoreError> {
        with_conn!(self, |c| {
            query_opt(
                &*c,
                concat!(
                    "SELECT ",
                    refresh_cols!(),
                    " FROM refresh_tokens WHERE tenant = $1 AND token_hash = $2 \
                     AND rotated_at IS NULL AND expires_at > $3"
                ),
                &[&tenant, &token_hash, &int(now)],
            )
            .await?
            .as_ref()
            .map(refresh_row)
            .transpose()
        })
    }

    async fn rotate_refresh(
        &self,
        tenant: &str,
        old_hash: &str,
        new_row: &RefreshRow,
        now: u64,
    ) -> Result<Rotate, StoreError> {
        with_conn!(self, |c| {
            // An error return drops the transaction uncommitted: no trace is left.
            let tx = c.transaction().await.map_err(backend)?;
            // A token's family never changes, so it can be read before taking the lock.
            let family = query_opt(
                &tx,
                "SELECT family_id FROM refresh_tokens WHERE tenant = $1 AND token_hash = $2",
                &[&tenant, &old_hash],
            )
            .await?;
            let Some(family) = family else {
                return Ok(Rotate::Invalid);
            };
            let family_id = get_str(&family, "family_id")?;
            lock_family(&tx, tenant, &family_id).await?;
            // Each statement reads what was committed before it started, so everything the
            // previous holders of the lock did is visible from here on.
            let current = query_opt(
                &tx,
                concat!(
                    "UPDATE refresh_tokens SET rotated_at = $1 \
                     WHERE tenant = $2 AND token_hash = $3 AND rotated_at IS NULL \
                     AND expires_at > $1 RETURNING ",
                    refresh_cols!()
                ),
                &[&int(now), &tenant, &old_hash],
            )
            .await?;
            if let Some(old) = current {
                let old = refresh_row(&old)?;
                check_refresh_successor(tenant, &old, new_row)?;
                insert_refresh(&tx, new_row).await?;
                tx.commit().await.map_err(backend)?;
                return Ok(Rotate::Rotated(old));
            }
            let rotated = query_opt(
                &tx,
                "SELECT family_id FROM refresh_tokens \
                 WHERE tenant = $1 AND token_hash = $2 AND rotated_at IS NOT NULL \
                 AND expires_at > $3",
                &[&tenant, &old_hash, &int(now)],
            )
            .await?;
            if rotated.is_none() {
                return Ok(Rotate::Invalid);
            }
            // RFC 9700 §4.14.2: a rotated token came back; revoke the whole family.
            revoke_family_in(&tx, tenant, &family_id, now).await?;
            tx.commit().await.map_err(backend)?;
            Ok(Rotate::Reused { family_id })
        })
    }

    async fn revoke_family(
        &self,
        tenant: &str,
        family_id: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        with_conn!(self, |c| {
            let tx = c.transaction().await.map_err(backend)?;
            lock_family(&tx, tenant, family_id).await?;
            let deleted = revoke_family_in(&tx, tenant, family_id, now).await?;
            tx.commit().await.map_err(backend)?;
            Ok(deleted > 0)
        })
    }

    async fn revoke_access(
        &self,
        tenant: &str,
        jti: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            execute(
                &*c,
                "INSERT INTO revoked_access_tokens (tenant, jti, expires_at) \
                 VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant, jti) DO UPDATE \
                 SET expires_at = GREATEST(revoked_access_tokens.expires_at, excluded.expires_at)",
                &[&tenant, &jti, &int(expires_at)],
            )
            .await
            .map(drop)
        })
    }

    async fn is_access_revoked(&self, tenant: &str, jti: &str) -> Result<bool, StoreError> {
        with_conn!(self, |c| {
            query_opt(
                &*c,
                "SELECT 1 FROM revoked_access_tokens WHERE tenant = $1 AND jti = $2",
                &[&tenant, &jti],
            )
            .await
            .map(|found| found.is_some())
        })
    }

    async fn claim_once(
        &self,
        tenant: &str,
        namespace: &str,
        key: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        // One statement: a concurrent insert of the same key waits for the first one's
        // commit, then sees a live claim and changes nothing.
        with_conn!(self, |c| {
            execute(
                &*c,
                "INSERT INTO claims (tenant, namespace, key_hash, expires_at) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant, namespace, key_hash) DO UPDATE \
                 SET expires_at = excluded.expires_at WHERE claims.expires_at <= $5",
                &[&tenant, &namespace, &key, &int(expires_at), &int(now)],
            )
            .await
            .map(|n| n == 1)
        })
    }

    async fn put_signing_key(&self, row: &SigningKeyRow) -> Result<(), StoreError> {
        let public_jwk = to_json(&row.public_jwk)?;
        with_conn!(self, |c| {
            // A plain insert: instances racing to create the next key learn from the
            // conflict that another one won.
            insert(
                &*c,
                "signing key",
                concat!(
                    "INSERT INTO signing_keys (",
                    key_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ),
                &[
                    &row.tenant,
                    &row.kid,
                    &row.alg,
                    &row.private_pem.secret(),
                    &public_jwk,
                    &int(row.created_at),
                    &opt_int(row.not_after),
                ],
            )
            .await
        })
    }

    async fn list_signing_keys(
        &self,
        tenant: &str,
        now: u64,
    ) -> Result<Vec<SigningKeyRow>, StoreError> {
        with_conn!(self, |c| {
            // `COLLATE "C"`: byte order, as in the other backends, whatever the database's
            // collation.
            query(
                &*c,
                concat!(
                    "SELECT ",
                    key_cols!(),
                    " FROM signing_keys WHERE tenant = $1 \
                     AND (not_after IS NULL OR not_after > $2) \
                     ORDER BY created_at DESC, kid COLLATE \"C\" ASC"
                ),
                &[&tenant, &int(now)],
            )
            .await?
            .iter()
            .map(key_row)
            .collect()
        })
    }

    async fn retire_signing_key(
        &self,
        tenant: &str,
        kid: &str,
        not_after: u64,
    ) -> Result<bool, StoreError> {
        with_conn!(self, |c| {
            execute(
                &*c,
                "UPDATE signing_keys SET not_after = $1 WHERE tenant = $2 AND kid = $3",
                &[&int(not_after), &tenant, &kid],
            )
            .await
            .map(|n| n > 0)
        })
    }

    async fn put_pending(&self, row: &PendingAuthRow) -> Result<(), StoreError> {
        let extra =
            serde_json::to_string(&row.extra).map_err(|e| StoreError::Backend(Box::new(e)))?;
        with_conn!(self, |c| {
            execute(
                &*c,
                concat!(
                    "INSERT INTO pending_authorizations (",
                    pending_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                     $15, $16, $17, $18) \
                     ON CONFLICT (tenant, id) DO UPDATE SET \
                     client_id = excluded.client_id, redirect_uri = excluded.redirect_uri, \
                     response_type = excluded.response_type, scope = excluded.scope, \
                     state = excluded.state, code_challenge = excluded.code_challenge, \
                     code_challenge_method = excluded.code_challenge_method, \
                     resource = excluded.resource, nonce = excluded.nonce, \
                     prompt = excluded.prompt, login_hint = excluded.login_hint, \
                     extra = excluded.extra, subject = excluded.subject, \
                     csrf_hash = excluded.csrf_hash, created_at = excluded.created_at, \
                     expires_at = excluded.expires_at"
                ),
                &[
                    &row.tenant,
                    &row.id,
                    &row.client_id,
                    &row.redirect_uri,
                    &row.response_type,
                    &row.scope,
                    &row.state,
                    &row.code_challenge,
                    &row.code_challenge_method,
                    &row.resource,
                    &row.nonce,
                    &row.prompt,
                    &row.login_hint,
                    &extra,
                    &row.subject,
                    &row.csrf_hash,
                    &int(row.created_at),
                    &int(row.expires_at),
                ],
            )
            .await
            .map(drop)
        })
    }

    async fn get_pending(
        &self,
        tenant: &str,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthRow>, StoreError> {
        with_conn!(self, |c| {
            query_opt(
                &*c,
                concat!(
                    "SELECT ",
                    pending_cols!(),
                    " FROM pending_authorizations WHERE tenant = $1 AND id = $2 \
                     AND expires_at > $3"
                ),
                &[&tenant, &id, &int(now)],
            )
            .await?
            .as_ref()
            .map(pending_row)
            .transpose()
        })
    }

    async fn take_pending(
        &self,
        tenant: &str,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthRow>, StoreError> {
        with_conn!(self, |c| {
            // One DELETE … RETURNING: concurrent deleters queue on the row lock, and only
            // the first finds the row still there.
            let taken = query_opt(
                &*c,
                concat!(
                    "DELETE FROM pending_authorizations WHERE tenant = $1 AND id = $2 \
                     RETURNING ",
                    pending_cols!()
                ),
                &[&tenant, &id],
            )
            .await?
            .as_ref()
            .map(pending_row)
            .transpose()?;
            Ok(taken.filter(|p| now < p.expires_at))
        })
    }

    async fn put_consent(&self, row: &ConsentRow) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            execute(
                &*c,
                "INSERT INTO consents (tenant, subject, client_id, scope, granted_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (tenant, subject, client_id) DO UPDATE SET \
                 scope = excluded.scope, granted_at = excluded.granted_at",
                &[
                    &row.tenant,
                    &row.subject,
                    &row.client_id,
                    &row.scope,
                    &int(row.granted_at),
                ],
            )
            .await
            .map(drop)
        })
    }

    async fn get_consent(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<ConsentRow>, StoreError> {
        with_conn!(self, |c| {
            query_opt(
                &*c,
                concat!(
                    "SELECT ",
                    consent_cols!(),
                    " FROM consents WHERE tenant = $1 AND subject = $2 AND client_id = $3"
                ),
                &[&tenant, &subject, &client_id],
            )
            .await?
            .as_ref()
            .map(consent_row)
            .transpose()
        })
    }

    async fn delete_consent(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<bool, StoreError> {
        with_conn!(self, |c| {
            execute(
                &*c,
                "DELETE FROM consents WHERE tenant = $1 AND subject = $2 AND client_id = $3",
                &[&tenant, &subject, &client_id],
            )
            .await
            .map(|n| n > 0)
        })
    }

    async fn list_consents(
        &self,
        tenant: &str,
        subject: Option<&str>,
    ) -> Result<Vec<ConsentRow>, StoreError> {
        with_conn!(self, |c| {
            // `COLLATE "C"`: byte order, as in the other backends, whatever the database's
            // collation.
            let rows = match subject {
                Some(subject) => {
                    query(
                        &*c,
                        concat!(
                            "SELECT ",
                            consent_cols!(),
                            " FROM consents WHERE tenant = $1 AND subject = $2 \
                             ORDER BY client_id COLLATE \"C\""
                        ),
                        &[&tenant, &subject],
                    )
                    .await?
                }
                None => {
                    query(
                        &*c,
                        concat!(
                            "SELECT ",
                            consent_cols!(),
                            " FROM consents WHERE tenant = $1 \
                             ORDER BY subject COLLATE \"C\", client_id COLLATE \"C\""
                        ),
                        &[&tenant],
                    )
                    .await?
                }
            };
            rows.iter().map(consent_row).collect()
        })
    }

    async fn revoke_client_grants(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        with_conn!(self, |c| {
            let tx = c.transaction().await.map_err(backend)?;
            // Codes not redeemed yet first: deleted, so a later redemption finds none. Their
            // row locks come before any family lock, the order `redeem_code` keeps too; a
            // redemption in progress is waited for, and its code, then spent, stays.
            let mut families = query(
                &tx,
                "DELETE FROM codes WHERE tenant = $1 AND client_id = $2 AND subject = $3 \
                 AND spent_at IS NULL AND expires_at > $4 RETURNING family_id",
                &[&tenant, &client_id, &subject, &int(now)],
            )
            .await?
            .iter()
            .map(|r| get_str(r, "family_id"))
            .collect::<Result<Vec<_>, _>>()?;
            // A token's family never changes, so the families can be read before taking
            // their locks; each is then revoked as `revoke_family` does, under its lock.
            for row in query(
                &tx,
                "SELECT DISTINCT family_id FROM refresh_tokens \
                 WHERE tenant = $1 AND subject = $2 AND client_id = $3",
                &[&tenant, &subject, &client_id],
            )
            .await?
            .iter()
            {
                families.push(get_str(row, "family_id")?);
            }
            // One order for every caller, so two of them cannot wait for each other's locks.
            families.sort();
            families.dedup();
            for family_id in &families {
                lock_family(&tx, tenant, family_id).await?;
                revoke_family_in(&tx, tenant, family_id, now).await?;
            }
            tx.commit().await.map_err(backend)?;
            Ok(families)
        })
    }

    async fn put_session(&self, row: &SessionRow) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            execute(
                &*c,
                concat!(
                    "INSERT INTO sessions (",
                    session_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (tenant, session_hash) DO UPDATE SET \
                     subject = excluded.subject, provider = excluded.provider, \
                     created_at = excluded.created_at, expires_at = excluded.expires_at"
                ),
                &[
                    &row.tenant,
                    &row.session_hash,
                    &row.subject,
                    &row.provider,
                    &int(row.created_at),
                    &int(row.expires_at),
                ],
            )
            .await
            .map(drop)
        })
    }

    async fn get_session(
        &self,
        tenant: &str,
        session_hash: &str,
        now: u64,
    ) -> Result<Option<SessionRow>, StoreError> {
        with_conn!(self, |c| {
            query_opt(
                &*c,
                concat!(
                    "SELECT ",
                    session_cols!(),
                    " FROM sessions WHERE tenant = $1 AND session_hash = $2 \
                     AND expires_at > $3"
                ),
                &[&tenant, &session_hash, &int(now)],
            )
            .await?
            .as_ref()
            .map(session_row)
            .transpose()
        })
    }

    async fn delete_session(&self, tenant: &str, session_hash: &str) -> Result<bool, StoreError> {
        with_conn!(self, |c| {
            execute(
                &*c,
                "DELETE FROM sessions WHERE tenant = $1 AND session_hash = $2",
                &[&tenant, &session_hash],
            )
            .await
            .map(|n| n > 0)
        })
    }

    async fn put_upstream(&self, row: &UpstreamRow) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            execute(
                &*c,
                concat!(
                    "INSERT INTO upstream_tokens (",
                    upstream_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (tenant, account) DO UPDATE SET \
                     provider = excluded.provider, sealed = excluded.sealed, \
                     version = excluded.version, created_at = excluded.created_at, \
                     updated_at = excluded.updated_at, expires_at = excluded.expires_at"
                ),
                &[
                    &row.tenant,
                    &row.account,
                    &row.provider,
                    &row.sealed,
                    &int(row.version),
                    &int(row.created_at),
                    &int(row.updated_at),
                    &int(row.expires_at),
                ],
            )
            .await
            .map(drop)
        })
    }

    async fn get_upstream(
        &self,
        tenant: &str,
        account: &str,
        now: u64,
    ) -> Result<Option<UpstreamRow>, StoreError> {
        with_conn!(self, |c| {
            query_opt(
                &*c,
                concat!(
                    "SELECT ",
                    upstream_cols!(),
                    " FROM upstream_tokens WHERE tenant = $1 AND account = $2 \
                     AND expires_at > $3"
                ),
                &[&tenant, &account, &int(now)],
            )
            .await?
            .as_ref()
            .map(upstream_row)
            .transpose()
        })
    }

    async fn swap_upstream(
        &self,
        row: &UpstreamRow,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        check_upstream_swap(row, expected_version)?;
        with_conn!(self, |c| {
            // One UPDATE compares and replaces: concurrent updaters of the row queue on its
            // lock and each re-checks the version on the row the one before committed, so
            // of swaps from the same version only the first matches.
            execute(
                &*c,
                "UPDATE upstream_tokens SET provider = $1, sealed = $2, version = $3, \
                 created_at = $4, updated_at = $5, expires_at = $6 \
                 WHERE tenant = $7 AND account = $8 AND version = $9",
                &[
                    &row.provider,
                    &row.sealed,
                    &int(row.version),
                    &int(row.created_at),
                    &int(row.updated_at),
                    &int(row.expires_at),
                    &row.tenant,
                    &row.account,
                    &int(expected_version),
                ],
            )
            .await
            .map(|n| n > 0)
        })
    }

    async fn delete_upstream(
        &self,
        tenant: &str,
        account: &str,
    ) -> Result<Option<UpstreamRow>, StoreError> {
        with_conn!(self, |c| {
            query_opt(
                &*c,
                concat!(
                    "DELETE FROM upstream_tokens WHERE tenant = $1 AND account = $2 RETURNING ",
                    upstream_cols!()
                ),
                &[&tenant, &account],
            )
            .await?
            .as_ref()
            .map(upstream_row)
            .transpose()
        })
    }

    async fn put_device(&self, row: &DeviceAuthRow) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            let tx = c.transaction().await.map_err(backend)?;
            // An expired request gives up its user code; an unexpired one keeps it, and the
            // unique index refuses the insert (also against a concurrent put).
            execute(
                &tx,
                "DELETE FROM device_authorizations \
                 WHERE tenant = $1 AND user_code_hash = $2 AND expires_at <= $3",
                &[&row.tenant, &row.user_code_hash, &int(row.created_at)],
            )
            .await?;
            insert(
                &tx,
                "device authorization",
                concat!(
                    "INSERT INTO device_authorizations (",
                    device_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                ),
                &[
                    &row.tenant,
                    &row.device_code_hash,
                    &row.user_code_hash,
                    &row.client_id,
                    &row.scope,
                    &row.resource,
                    &int(row.interval),
                    &row.status.as_str(),
                    &row.subject,
                    &row.granted_scope,
                    &opt_int(row.last_poll),
                    &int(row.created_at),
                    &int(row.expires_at),
                ],
            )
            .await?;
            tx.commit().await.map_err(backend)?;
            Ok(())
        })
    }

    async fn get_device_by_user_code(
        &self,
        tenant: &str,
        user_code_hash: &str,
        now: u64,
    ) -> Result<Option<DeviceAuthRow>, StoreError> {
        with_conn!(self, |c| {
            query_opt(
                &*c,
                concat!(
                    "SELECT ",
                    device_cols!(),
                    " FROM device_authorizations WHERE tenant = $1 AND user_code_hash = $2 \
                     AND expires_at > $3"
                ),
                &[&tenant, &user_code_hash, &int(now)],
            )
            .await?
            .as_ref()
            .map(device_row)
            .transpose()
        })
    }

    async fn decide_device(
        &self,
        tenant: &str,
        device_code_hash: &str,
        decision: &DeviceDecision,
        now: u64,
    ) -> Result<bool, StoreError> {
        with_conn!(self, |c| {
            let tx = c.transaction().await.map_err(backend)?;
            let Some(row) = lock_device(&tx, tenant, device_code_hash).await? else {
                return Ok(false);
            };
            let Some(next) = device_decide_step(&row, decision, now) else {
                return Ok(false);
            };
            update_device(&tx, &next).await?;
            tx.commit().await.map_err(backend)?;
            Ok(true)
        })
    }

    async fn poll_device(
        &self,
        tenant: &str,
        device_code_hash: &str,
        client_id: &str,
        now: u64,
    ) -> Result<DevicePoll, StoreError> {
        with_conn!(self, |c| {
            let tx = c.transaction().await.map_err(backend)?;
            let Some(row) = lock_device(&tx, tenant, device_code_hash).await? else {
                return Ok(DevicePoll::Missing);
            };
            let (answer, next) = device_poll_step(&row, client_id, now);
            if let Some(next) = next {
                update_device(&tx, &next).await?;
                tx.commit().await.map_err(backend)?;
            }
            Ok(answer)
        })
    }

    async fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        with_conn!(self, |c| {
            let tx = c.transaction().await.map_err(backend)?;
            let mut total = 0;
            for sql in [
                "DELETE FROM clients WHERE expires_at IS NOT NULL AND expires_at <= $1",
                "DELETE FROM codes WHERE expires_at <= $1",
                "DELETE FROM refresh_tokens WHERE expires_at <= $1",
                "DELETE FROM revoked_families WHERE expires_at <= $1",
                "DELETE FROM revoked_access_tokens WHERE expires_at <= $1",
                "DELETE FROM signing_keys WHERE not_after IS NOT NULL AND not_after <= $1",
                "DELETE FROM pending_authorizations WHERE expires_at <= $1",
                "DELETE FROM sessions WHERE expires_at <= $1",
                "DELETE FROM upstream_tokens WHERE expires_at <= $1",
                "DELETE FROM device_authorizations WHERE expires_at <= $1",
                "DELETE FROM claims WHERE expires_at <= $1",
            ] {
                total += count(execute(&tx, sql, &[&int(now)]).await?);
            }
            tx.commit().await.map_err(backend)?;
            Ok(total)
        })
    }
}
