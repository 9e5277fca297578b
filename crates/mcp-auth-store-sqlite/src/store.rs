//! [`SqliteStore`]: the [`Store`] trait on SQLite, through the [`Engine`]'s group-committing
//! writer thread and reader connections.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mcp_auth_server::store::{
    ClientRow, CodeRow, ConsentRow, DeviceAuthRow, DeviceDecision, DevicePoll, DeviceStatus,
    NewRefresh, PendingAuthRow, REVOKED_FAMILY_RETENTION_SECS, RefreshRow, RegistrationKind,
    Rotate, SessionRow, SigningKeyRow, Store, StoreError, TakeCode, UpstreamRow, UserRow,
    check_refresh_successor, check_upstream_swap, device_decide_step, device_poll_step,
    spawn_sweeper, unix_now,
};
use mcp_auth_types::SecretString;
use rusqlite::{Connection, ErrorCode, Params, Row, params};
use tokio::task::JoinHandle;

use crate::engine::{Engine, Steps, WriteStats, backend};

/// A [`Store`] in a SQLite database. Cloning is cheap and shares the connections.
///
/// Writes are committed in groups by one writer thread (see the crate docs): a write is
/// answered once it is durable, and concurrent writes share one `fsync`.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    engine: Arc<Engine>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to
    /// date.
    ///
    /// A new file is created readable by its owner only (on Unix), since it holds signing
    /// keys; SQLite gives the `-wal` and `-shm` files the same permissions.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let engine = tokio::task::spawn_blocking(move || Engine::open_file(&path))
            .await
            .map_err(backend)??;
        Ok(Self {
            engine: Arc::new(engine),
        })
    }

    /// A private database in memory, gone when the store (and every clone) is dropped.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let engine = tokio::task::spawn_blocking(Engine::open_memory)
            .await
            .map_err(backend)??;
        Ok(Self {
            engine: Arc::new(engine),
        })
    }

    /// Finishes the writes already queued, then closes the database. Later calls on this
    /// store or its clones fail.
    pub async fn close(&self) {
        self.engine.close().await;
    }

    /// How many transactions the writer thread committed and how many writes they carried,
    /// since the store was opened: `writes / commits` is the average group size.
    pub fn write_stats(&self) -> WriteStats {
        self.engine.stats()
    }

    /// Deletes expired rows ([`Store::sweep`]) every `interval`, the first time at once, by
    /// the system clock, until the returned task is aborted.
    pub fn spawn_sweeper(&self, interval: Duration) -> JoinHandle<()> {
        spawn_sweeper(Arc::new(self.clone()), interval, unix_now)
    }
}

// ---- conversions ----

/// Maps a failed insert: a primary key violation means the row exists.
fn insert_error(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::Conflict(what),
        _ => backend(e),
    }
}

fn corrupt(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        source: Box::new(e),
    }
}

/// SQLite integers are signed; times past `i64::MAX` seconds are "never" anyway.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn get_str(row: &Row<'_>, col: &'static str) -> Result<String, StoreError> {
    row.get(col).map_err(corrupt(col))
}

fn get_opt_str(row: &Row<'_>, col: &'static str) -> Result<Option<String>, StoreError> {
    row.get(col).map_err(corrupt(col))
}

fn get_u64(row: &Row<'_>, col: &'static str) -> Result<u64, StoreError> {
    let v: i64 = row.get(col).map_err(corrupt(col))?;
    u64::try_from(v).map_err(|e| StoreError::Corrupt {
        what: col,
        source: Box::new(e),
    })
}

fn get_opt_u64(row: &Row<'_>, col: &'static str) -> Result<Option<u64>, StoreError> {
    let v: Option<i64> = row.get(col).map_err(corrupt(col))?;
    v.map(|v| {
        u64::try_from(v).map_err(|e| StoreError::Corrupt {
            what: col,
            source: Box::new(e),
        })
    })
    .transpose()
}

fn get_json<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    col: &'static str,
) -> Result<T, StoreError> {
    let text = get_str(row, col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        what: col,
        source: Box::new(e),
    })
}

fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(backend)
}

/// The first row `sql` yields, decoded.
fn query_opt<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let mut rows = stmt.query(params).map_err(backend)?;
    match rows.next().map_err(backend)? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

/// Runs a statement that returns no rows; how many rows it changed.
fn execute(conn: &Connection, sql: &str, params: impl Params) -> Result<usize, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute(params))
        .map_err(backend)
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

fn device_row(r: &Row<'_>) -> Result<DeviceAuthRow, StoreError> {
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

/// The device authorization under `device_code_hash`, expired or not, inside the caller's
/// transaction.
fn device_in(
    c: &Connection,
    tenant: &str,
    device_code_hash: &str,
) -> Result<Option<DeviceAuthRow>, StoreError> {
    query_opt(
        c,
        concat!(
            "SELECT ",
            device_cols!(),
            " FROM device_authorizations WHERE tenant = ? AND device_code_hash = ?"
        ),
        params![tenant, device_code_hash],
        device_row,
    )
}

/// Writes back the changing fields of a device authorization, inside the caller's
/// transaction.
fn update_device_in(c: &Connection, row: &DeviceAuthRow) -> Result<(), StoreError> {
    execute(
        c,
        "UPDATE device_authorizations SET interval_secs = ?, status = ?, subject = ?, \
         granted_scope = ?, last_poll = ? WHERE tenant = ? AND device_code_hash = ?",
        params![
            int(row.interval),
            row.status.as_str(),
            row.subject,
            row.granted_scope,
            row.last_poll.map(int),
            row.tenant,
            row.device_code_hash,
        ],
    )
    .map(drop)
}

fn client_row(r: &Row<'_>) -> Result<ClientRow, StoreError> {
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

fn user_row(r: &Row<'_>) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        tenant: get_str(r, "tenant")?,
        username: get_str(r, "username")?,
        password_hash: get_str(r, "password_hash")?,
        created_at: get_u64(r, "created_at")?,
    })
}

fn code_row(r: &Row<'_>) -> Result<CodeRow, StoreError> {
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

fn refresh_row(r: &Row<'_>) -> Result<RefreshRow, StoreError> {
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

fn key_row(r: &Row<'_>) -> Result<SigningKeyRow, StoreError> {
    Ok(SigningKeyRow {
        tenant: get_str(r, "tenant")?,
        kid: get_str(r, "kid")?,
        alg: get_str(r, "alg")?,
        private_pem: SecretString::new(get_str(r, "private_pem")?),
        public_jwk: get_json(r, "public_jwk")?,
        created_at: get_u64(r, "created_at")?,
        not_after: get_opt_u64(r, "not_after")?,
    })
}

fn pending_row(r: &Row<'_>) -> Result<PendingAuthRow, StoreError> {
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
        extra: get_json(r, "extra")?,
        subject: get_opt_str(r, "subject")?,
        csrf_hash: get_str(r, "csrf_hash")?,
        created_at: get_u64(r, "created_at")?,
        expires_at: get_u64(r, "expires_at")?,
    })
}

fn consent_row(r: &Row<'_>) -> Result<ConsentRow, StoreError> {
    Ok(ConsentRow {
        tenant: get_str(r, "tenant")?,
        subject: get_str(r, "subject")?,
        client_id: get_str(r, "client_id")?,
        scope: get_str(r, "scope")?,
        granted_at: get_u64(r, "granted_at")?,
    })
}

fn session_row(r: &Row<'_>) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        tenant: get_str(r, "tenant")?,
        session_hash: get_str(r, "session_hash")?,
        subject: get_str(r, "subject")?,
        provider: get_str(r, "provider")?,
        created_at: get_u64(r, "created_at")?,
        expires_at: get_u64(r, "expires_at")?,
    })
}

fn upstream_row(r: &Row<'_>) -> Result<UpstreamRow, StoreError> {
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

/// Every row `sql` yields, decoded.
fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let mut rows = stmt.query(params).map_err(backend)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Revokes a grant (its refresh tokens become unusable; their rows stay until their expiry
/// sweep) and remembers the revocation, inside the caller's transaction, so that a refresh
/// token stored for the family later is refused (a code redeemed after its replay revoked
/// the family). Returns whether the grant was live.
fn revoke_family_in(
    conn: &Connection,
    tenant: &str,
    family_id: &str,
    now: u64,
) -> Result<bool, StoreError> {
    let revoked = execute(
        conn,
        "UPDATE grants SET revoked_at = ? \
         WHERE tenant = ? AND family_id = ? AND revoked_at IS NULL",
        params![int(now), tenant, family_id],
    )? > 0;
    execute(
        conn,
        "INSERT INTO revoked_families (tenant, family_id, expires_at) VALUES (?, ?, ?) \
         ON CONFLICT (tenant, family_id) DO UPDATE \
         SET expires_at = max(expires_at, excluded.expires_at)",
        params![
            tenant,
            family_id,
            int(now.saturating_add(REVOKED_FAMILY_RETENTION_SECS))
        ],
    )?;
    Ok(revoked)
}

/// Records the grant (token family) of a refresh token being stored, inside the caller's
/// transaction: a new row for the first token of a family; for a later one, the grant's
/// expiry moved forward if the token would outlive it.
///
/// [`StoreError::FamilyRevoked`] if the grant was revoked; [`StoreError::InvalidRow`] if it
/// belongs to another client.
fn record_grant_in(c: &Connection, row: &RefreshRow) -> Result<(), StoreError> {
    let keep_until = grant_keep_until(row.expires_at, row.created_at);
    // A new family (every redeemed code starts one) is one insert.
    let inserted = execute(
        c,
        "INSERT INTO grants (tenant, family_id, client_id, subject, expires_at) \
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, family_id) DO NOTHING",
        params![
            row.tenant,
            row.family_id,
            row.client_id,
            row.subject,
            int(keep_until)
        ],
    )?;
    if inserted > 0 {
        return Ok(());
    }
    let existing = query_opt(
        c,
        "SELECT client_id, revoked_at FROM grants WHERE tenant = ? AND family_id = ?",
        params![row.tenant, row.family_id],
        |r| Ok((get_str(r, "client_id")?, get_opt_u64(r, "revoked_at")?)),
    )?;
    match existing {
        // Gone between the two statements: cannot happen under the write lock.
        None => Err(StoreError::Backend(
            "the token family's grant vanished".into(),
        )),
        Some((client_id, _)) if client_id != row.client_id => Err(StoreError::InvalidRow(
            "the token family is another client's",
        )),
        Some((_, Some(_))) => Err(StoreError::FamilyRevoked),
        Some((_, None)) => {
            extend_grant_in(c, &row.tenant, &row.family_id, row.expires_at, keep_until)
        }
    }
}

/// Moves a grant's expiry to `keep_until` if it would end before `expires_at` (a token of
/// the family that lives that long). Usually it would not (see [`grant_keep_until`]): then
/// the grant is only read.
fn extend_grant_in(
    c: &Connection,
    tenant: &str,
    family_id: &str,
    expires_at: u64,
    keep_until: u64,
) -> Result<(), StoreError> {
    execute(
        c,
        "UPDATE grants SET expires_at = ? \
         WHERE tenant = ? AND family_id = ? AND expires_at < ?",
        params![
            int(keep_until.max(expires_at)),
            tenant,
            family_id,
            int(expires_at)
        ],
    )
    .map(drop)
}

/// How long to keep a grant row for a token that lives from `now` to `expires_at`: twice
/// its remaining life, so that a chain of rotations moves the grant's expiry forward once
/// per token lifetime rather than at every rotation.
fn grant_keep_until(expires_at: u64, now: u64) -> u64 {
    expires_at.saturating_add(expires_at.saturating_sub(now))
}

/// The condition, on a row of `refresh_tokens`, that its grant is live. A scalar subquery
/// rather than `EXISTS`: SQLite turns an `EXISTS` in a `SELECT` into a join planned around
/// the bound values, and then prepares the statement again at every execution (the whole
/// schema parsed each time).
macro_rules! grant_live {
    () => {
        " AND (SELECT g.revoked_at IS NULL FROM grants g \
         WHERE g.tenant = refresh_tokens.tenant AND g.family_id = refresh_tokens.family_id)"
    };
}

/// The condition, on a row of `codes`, that its client was not deleted since the code was
/// issued (see `delete_client`).
macro_rules! code_client_kept {
    () => {
        " AND (SELECT 1 FROM deleted_clients d \
         WHERE d.tenant = codes.tenant AND d.client_id = codes.client_id) IS NULL"
    };
}

/// A current refresh token by its hash (tenant, hash, now).
const GET_REFRESH: &str = concat!(
    "SELECT ",
    refresh_cols!(),
    " FROM refresh_tokens WHERE tenant = ? AND token_hash = ? \
     AND rotated_at IS NULL AND expires_at > ?",
    grant_live!()
);

/// Redeems a code inside the caller's transaction: one statement decides who redeems it,
/// under the write lock; only the caller that finds `spent_at IS NULL` gets the row back.
fn take_code_in(
    c: &Connection,
    tenant: &str,
    code_hash: &str,
    now: u64,
) -> Result<TakeCode, StoreError> {
    let taken = query_opt(
        c,
        concat!(
            "UPDATE codes SET spent_at = ? \
             WHERE tenant = ? AND code_hash = ? AND spent_at IS NULL \
             AND expires_at > ?",
            code_client_kept!(),
            " RETURNING ",
            code_cols!()
        ),
        params![int(now), tenant, code_hash, int(now)],
        code_row,
    )?;
    if let Some(row) = taken {
        return Ok(TakeCode::Taken(row));
    }
    // Not ours: spent before (spent_at never goes back to NULL), or missing, expired, or
    // its client was deleted.
    let spent = query_opt(
        c,
        concat!(
            "SELECT family_id, client_id FROM codes \
             WHERE tenant = ? AND code_hash = ? AND spent_at IS NOT NULL \
             AND expires_at > ?",
            code_client_kept!()
        ),
        params![tenant, code_hash, int(now)],
        |r| Ok((get_str(r, "family_id")?, get_str(r, "client_id")?)),
    )?;
    Ok(match spent {
        Some((family_id, client_id)) => TakeCode::Replayed {
            family_id,
            client_id,
        },
        None => TakeCode::Missing,
    })
}

/// Stores a family's refresh token inside the caller's transaction, unless the family was
/// revoked. The writer runs one job at a time inside its transaction, and other processes'
/// writers are locked out: nothing can revoke the family between this check and the insert.
fn put_refresh_in(c: &Connection, row: &RefreshRow) -> Result<(), StoreError> {
    let revoked = query_opt(
        c,
        "SELECT 1 FROM revoked_families WHERE tenant = ? AND family_id = ?",
        params![row.tenant, row.family_id],
        |_| Ok(()),
    )?;
    if revoked.is_some() {
        return Err(StoreError::FamilyRevoked);
    }
    record_grant_in(c, row)?;
    insert_refresh(c, row)
}

fn insert_refresh(conn: &Connection, row: &RefreshRow) -> Result<(), StoreError> {
    conn.prepare_cached(concat!(
        "INSERT INTO refresh_tokens (",
        refresh_cols!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .and_then(|mut stmt| {
        stmt.execute(params![
            row.tenant,
            row.token_hash,
            row.family_id,
            row.client_id,
            row.subject,
            row.scope,
            row.resource,
            int(row.expires_at),
            int(row.created_at),
        ])
    })
    .map_err(insert_error("refresh token"))?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_client(&self, row: &ClientRow) -> Result<(), StoreError> {
        let metadata = to_json(&row.metadata)?;
        let row = row.clone();
        self.engine
            .write(Steps::One, move |c| {
                execute(
                    c,
                    concat!(
                        "INSERT OR REPLACE INTO clients (",
                        client_cols!(),
                        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    ),
                    params![
                        row.tenant,
                        row.client_id,
                        row.secret_hash,
                        metadata,
                        row.registration_kind.as_str(),
                        row.registration_token_hash,
                        int(row.created_at),
                        row.expires_at.map(int),
                    ],
                )?;
                // The client exists (again): a record of an earlier deletion of this id no
                // longer applies. (Registered ids are random; an id that comes back is a
                // metadata document URL, the same client.)
                execute(
                    c,
                    "DELETE FROM deleted_clients WHERE tenant = ? AND client_id = ?",
                    params![row.tenant, row.client_id],
                )
                .map(drop)
            })
            .await
    }

    async fn get_client(
        &self,
        tenant: &str,
        client_id: &str,
        now: u64,
    ) -> Result<Option<ClientRow>, StoreError> {
        let (tenant, client_id) = (tenant.to_owned(), client_id.to_owned());
        self.engine
            .read(move |c| {
                query_opt(
                    c,
                    concat!(
                        "SELECT ",
                        client_cols!(),
                        " FROM clients WHERE tenant = ? AND client_id = ? \
                         AND (expires_at IS NULL OR expires_at > ?)"
                    ),
                    params![tenant, client_id, int(now)],
                    client_row,
                )
            })
            .await
    }

    async fn delete_client(&self, tenant: &str, client_id: &str) -> Result<bool, StoreError> {
        let (tenant, client_id) = (tenant.to_owned(), client_id.to_owned());
        self.engine
            .write(Steps::Many, move |c| {
                let existed = execute(
                    c,
                    "DELETE FROM clients WHERE tenant = ? AND client_id = ?",
                    params![tenant, client_id],
                )? > 0;
                // RFC 7592 §2.3: everything issued to the client goes with it. Its refresh
                // tokens go with their grants, and its codes are refused from now on (a
                // record of the deletion that outlives every code stored so far): unusable at
                // once, their rows are swept when they expire.
                execute(
                    c,
                    "INSERT INTO deleted_clients (tenant, client_id, expires_at) \
                     VALUES (?, ?, max(?, coalesce((SELECT max(expires_at) FROM codes), 0))) \
                     ON CONFLICT (tenant, client_id) DO UPDATE \
                     SET expires_at = max(expires_at, excluded.expires_at)",
                    params![tenant, client_id, int(unix_now())],
                )?;
                for sql in [
                    "DELETE FROM grants INDEXED BY grants_client WHERE tenant = ? AND client_id = ?",
                    "DELETE FROM pending_authorizations WHERE tenant = ? AND client_id = ?",
                    "DELETE FROM device_authorizations WHERE tenant = ? AND client_id = ?",
                    "DELETE FROM consents WHERE tenant = ? AND client_id = ?",
                ] {
                    execute(c, sql, params![tenant, client_id])?;
                }
                Ok(existed)
            })
            .await
    }

    async fn put_user(&self, row: &UserRow) -> Result<(), StoreError> {
        let row = row.clone();
        self.engine
            .write(Steps::One, move |c| {
                execute(
                    c,
                    "INSERT OR REPLACE INTO users (tenant, username, password_hash, created_at) \
                     VALUES (?, ?, ?, ?)",
                    params![
                        row.tenant,
                        row.username,
                        row.password_hash,
                        int(row.created_at)
                    ],
                )
                .map(drop)
            })
            .await
    }

    async fn get_user(&self, tenant: &str, username: &str) -> Result<Option<UserRow>, StoreError> {
        let (tenant, username) = (tenant.to_owned(), username.to_owned());
        self.engine
            .read(move |c| {
                query_opt(
                    c,
                    "SELECT tenant, username, password_hash, created_at FROM users \
                     WHERE tenant = ? AND username = ?",
                    params![tenant, username],
                    user_row,
                )
            })
            .await
    }

    async fn put_code(&self, row: &CodeRow) -> Result<(), StoreError> {
        let row = row.clone();
        self.engine
            .write(Steps::One, move |c| {
                c.prepare_cached(concat!(
                    "INSERT INTO codes (",
                    code_cols!(),
                    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ))
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        row.tenant,
                        row.code_hash,
                        row.client_id,
                        row.redirect_uri,
                        row.code_challenge,
                        row.scope,
                        row.resource,
                        row.subject,
                        row.nonce,
                        int(row.expires_at),
                        row.family_id,
                    ])
                })
                .map_err(insert_error("authorization code"))?;
                Ok(())
            })
            .await
    }

    async fn take_code(
        &self,
        tenant: &str,
        code_hash: &str,
        now: u64,
    ) -> Result<TakeCode, StoreError> {
        let (tenant, code_hash) = (tenant.to_owned(), code_hash.to_owned());
        self.engine
            .write(Steps::One, move |c| {
                take_code_in(c, &tenant, &code_hash, now)
            })
            .await
    }

    async fn redeem_code(
        &self,
        tenant: &str,
        code_hash: &str,
        refresh: Option<&NewRefresh>,
        now: u64,
    ) -> Result<TakeCode, StoreError> {
        let Some(new) = refresh.cloned() else {
            return self.take_code(tenant, code_hash, now).await;
        };
        let (tenant, code_hash) = (tenant.to_owned(), code_hash.to_owned());
        // One job of the writer: the redemption and the token commit together, and a failed
        // insert undoes the redemption (the job's savepoint).
        self.engine
            .write(Steps::Many, move |c| {
                let taken = take_code_in(c, &tenant, &code_hash, now)?;
                if let TakeCode::Taken(code) = &taken {
                    put_refresh_in(c, &new.row_for(code))?;
                }
                Ok(taken)
            })
            .await
    }

    async fn put_refresh(&self, row: &RefreshRow) -> Result<(), StoreError> {
        let row = row.clone();
        self.engine
            .write(Steps::One, move |c| put_refresh_in(c, &row))
            .await
    }

    async fn get_refresh(
        &self,
        tenant: &str,
        token_hash: &str,
        now: u64,
    ) -> Result<Option<RefreshRow>, StoreError> {
        let (tenant, token_hash) = (tenant.to_owned(), token_hash.to_owned());
        self.engine
            .read(move |c| {
                query_opt(
                    c,
                    GET_REFRESH,
                    params![tenant, token_hash, int(now)],
                    refresh_row,
                )
            })
            .await
    }

    async fn rotate_refresh(
        &self,
        tenant: &str,
        old_hash: &str,
        new_row: &RefreshRow,
        now: u64,
    ) -> Result<Rotate, StoreError> {
        let (tenant, old_hash, new_row) = (tenant.to_owned(), old_hash.to_owned(), new_row.clone());
        self.engine
            .write(Steps::Many, move |c| {
                // An error return rolls this job back to its savepoint: no trace is left.
                let current = query_opt(
                    c,
                    concat!(
                        "UPDATE refresh_tokens SET rotated_at = ? \
                         WHERE tenant = ? AND token_hash = ? AND rotated_at IS NULL \
                         AND expires_at > ?",
                        grant_live!(),
                        " RETURNING ",
                        refresh_cols!()
                    ),
                    params![int(now), tenant, old_hash, int(now)],
                    refresh_row,
                )?;
                if let Some(old) = current {
                    check_refresh_successor(&tenant, &old, &new_row)?;
                    insert_refresh(c, &new_row)?;
                    // The grant row must outlive the new token.
                    extend_grant_in(
                        c,
                        &tenant,
                        &new_row.family_id,
                        new_row.expires_at,
                        grant_keep_until(new_row.expires_at, now),
                    )?;
                    return Ok(Rotate::Rotated(old));
                }
                let rotated = query_opt(
                    c,
                    concat!(
                        "SELECT family_id FROM refresh_tokens \
                         WHERE tenant = ? AND token_hash = ? AND rotated_at IS NOT NULL \
                         AND expires_at > ?",
                        grant_live!()
                    ),
                    params![tenant, old_hash, int(now)],
                    |r| get_str(r, "family_id"),
                )?;
                let Some(family_id) = rotated else {
                    return Ok(Rotate::Invalid);
                };
                // RFC 9700 §4.14.2: a rotated token came back; revoke the whole family.
                revoke_family_in(c, &tenant, &family_id, now)?;
                Ok(Rotate::Reused { family_id })
            })
            .await
    }

    async fn revoke_family(
        &self,
        tenant: &str,
        family_id: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (tenant, family_id) = (tenant.to_owned(), family_id.to_owned());
        self.engine
            .write(Steps::Many, move |c| {
                revoke_family_in(c, &tenant, &family_id, now)
            })
            .await
    }

    async fn revoke_access(
        &self,
        tenant: &str,
        jti: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let (tenant, jti) = (tenant.to_owned(), jti.to_owned());
        self.engine
            .write(Steps::One, move |c| {
                execute(
                    c,
                    "INSERT INTO revoked_access_tokens (tenant, jti, expires_at) VALUES (?, ?, ?) \
                     ON CONFLICT (tenant, jti) DO UPDATE \
                     SET expires_at = max(expires_at, excluded.expires_at)",
                    params![tenant, jti, int(expires_at)],
                )
                .map(drop)
            })
            .await
    }

    async fn is_access_revoked(&self, tenant: &str, jti: &str) -> Result<bool, StoreError> {
        let (tenant, jti) = (tenant.to_owned(), jti.to_owned());
        self.engine
            .read(move |c| {
                query_opt(
                    c,
                    "SELECT 1 FROM revoked_access_tokens WHERE tenant = ? AND jti = ?",
                    params![tenant, jti],
                    |_| Ok(()),
                )
                .map(|found| found.is_some())
            })
            .await
    }

    async fn claim_once(
        &self,
        tenant: &str,
        namespace: &str,
        key: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (tenant, namespace, key) = (tenant.to_owned(), namespace.to_owned(), key.to_owned());
        self.engine
            .write(Steps::One, move |c| {
                // One statement: a new key is inserted, an expired claim taken over, a live
                // one left alone (0 rows changed).
                execute(
                    c,
                    "INSERT INTO claims (tenant, namespace, key_hash, expires_at) \
                     VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (tenant, namespace, key_hash) DO UPDATE \
                     SET expires_at = excluded.expires_at WHERE claims.expires_at <= ?5",
                    params![tenant, namespace, key, int(expires_at), int(now)],
                )
                .map(|n| n == 1)
            })
            .await
    }

    async fn put_signing_key(&self, row: &SigningKeyRow) -> Result<(), StoreError> {
        let public_jwk = to_json(&row.public_jwk)?;
        let row = row.clone();
        self.engine
            .write(Steps::One, move |c| {
                c.prepare_cached(concat!(
                    "INSERT INTO signing_keys (",
                    key_cols!(),
                    ") VALUES (?, ?, ?, ?, ?, ?, ?)"
                ))
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        row.tenant,
                        row.kid,
                        row.alg,
                        row.private_pem.secret(),
                        public_jwk,
                        int(row.created_at),
                        row.not_after.map(int),
                    ])
                })
                .map_err(insert_error("signing key"))?;
                Ok(())
            })
            .await
    }

    async fn list_signing_keys(
        &self,
        tenant: &str,
        now: u64,
    ) -> Result<Vec<SigningKeyRow>, StoreError> {
        let tenant = tenant.to_owned();
        self.engine
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(concat!(
                        "SELECT ",
                        key_cols!(),
                        " FROM signing_keys WHERE tenant = ? \
                         AND (not_after IS NULL OR not_after > ?) \
                         ORDER BY created_at DESC, kid ASC"
                    ))
                    .map_err(backend)?;
                let mut rows = stmt.query(params![tenant, int(now)]).map_err(backend)?;
                let mut keys = Vec::new();
                while let Some(row) = rows.next().map_err(backend)? {
                    keys.push(key_row(row)?);
                }
                Ok(keys)
            })
            .await
    }

    async fn retire_signing_key(
        &self,
        tenant: &str,
        kid: &str,
        not_after: u64,
    ) -> Result<bool, StoreError> {
        let (tenant, kid) = (tenant.to_owned(), kid.to_owned());
        self.engine
            .write(Steps::One, move |c| {
                execute(
                    c,
                    "UPDATE signing_keys SET not_after = ? WHERE tenant = ? AND kid = ?",
                    params![int(not_after), tenant, kid],
                )
                .map(|n| n > 0)
            })
            .await
    }

    async fn put_pending(&self, row: &PendingAuthRow) -> Result<(), StoreError> {
        let extra = to_json(&row.extra)?;
        let row = row.clone();
        self.engine
            .write(Steps::One, move |c| {
                execute(
                    c,
                    concat!(
                        "INSERT OR REPLACE INTO pending_authorizations (",
                        pending_cols!(),
                        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    ),
                    params![
                        row.tenant,
                        row.id,
                        row.client_id,
                        row.redirect_uri,
                        row.response_type,
                        row.scope,
                        row.state,
                        row.code_challenge,
                        row.code_challenge_method,
                        row.resource,
                        row.nonce,
                        row.prompt,
                        row.login_hint,
                        extra,
                        row.subject,
                        row.csrf_hash,
                        int(row.created_at),
                        int(row.expires_at),
                    ],
                )
                .map(drop)
            })
            .await
    }

    async fn get_pending(
        &self,
        tenant: &str,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthRow>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.engine
            .read(move |c| {
                query_opt(
                    c,
                    concat!(
                        "SELECT ",
                        pending_cols!(),
                        " FROM pending_authorizations WHERE tenant = ? AND id = ? \
                         AND expires_at > ?"
                    ),
                    params![tenant, id, int(now)],
                    pending_row,
                )
            })
            .await
    }

    async fn take_pending(
        &self,
        tenant: &str,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthRow>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.engine
            .write(Steps::One, move |c| {
                // One DELETE … RETURNING: only one caller can delete the row.
                let taken = query_opt(
                    c,
                    concat!(
                        "DELETE FROM pending_authorizations WHERE tenant = ? AND id = ? \
                         RETURNING ",
                        pending_cols!()
                    ),
                    params![tenant, id],
                    pending_row,
                )?;
                Ok(taken.filter(|p| now < p.expires_at))
            })
            .await
    }

    async fn put_consent(&self, row: &ConsentRow) -> Result<(), StoreError> {
        let row = row.clone();
        self.engine
            .write(Steps::One, move |c| {
                execute(
                    c,
                    "INSERT OR REPLACE INTO consents (tenant, subject, client_id, scope, \
                     granted_at) VALUES (?, ?, ?, ?, ?)",
                    params![
                        row.tenant,
                        row.subject,
                        row.client_id,
                        row.scope,
                        int(row.granted_at)
                    ],
                )
                .map(drop)
            })
            .await
    }

    async fn get_consent(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<ConsentRow>, StoreError> {
        let (tenant, subject, client_id) =
            (tenant.to_owned(), subject.to_owned(), client_id.to_owned());
        self.engine
            .read(move |c| {
                query_opt(
                    c,
                    concat!(
                        "SELECT ",
                        consent_cols!(),
                        " FROM consents WHERE tenant = ? AND subject = ? AND client_id = ?"
                    ),
                    params![tenant, subject, client_id],
                    consent_row,
                )
            })
            .await
    }

    async fn delete_consent(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<bool, StoreError> {
        let (tenant, subject, client_id) =
            (tenant.to_owned(), subject.to_owned(), client_id.to_owned());
        self.engine
            .write(Steps::One, move |c| {
                execute(
                    c,
                    "DELETE FROM consents WHERE tenant = ? AND subject = ? AND client_id = ?",
                    params![tenant, subject, client_id],
                )
                .map(|n| n > 0)
            })
            .await
    }

    async fn list_consents(
        &self,
        tenant: &str,
        subject: Option<&str>,
    ) -> Result<Vec<ConsentRow>, StoreError> {
        let (tenant, subject) = (tenant.to_owned(), subject.map(str::to_owned));
        // The primary key's order, which is byte order (SQLite's BINARY collation), as in
        // the other backends.
        self.engine
            .read(move |c| match subject {
                Some(subject) => query_all(
                    c,
                    concat!(
                        "SELECT ",
                        consent_cols!(),
                        " FROM consents WHERE tenant = ? AND subject = ? \
                         ORDER BY subject, client_id"
                    ),
                    params![tenant, subject],
                    consent_row,
                ),
                None => query_all(
                    c,
                    concat!(
                        "SELECT ",
                        consent_cols!(),
                        " FROM consents WHERE tenant = ? ORDER BY subject, client_id"
                    ),
                    params![tenant],
                    consent_row,
                ),
            })
            .await
    }

    async fn revoke_client_grants(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let (tenant, subject, client_id) =
            (tenant.to_owned(), subject.to_owned(), client_id.to_owned());
        // One job: the families are found and revoked under the write lock, so no token of
        // theirs can be added or rotated in between.
        self.engine
            .write(Steps::Many, move |c| {
                // Codes not redeemed yet: deleted, so a later redemption finds none. Codes
                // have no client index (migration 0006): this reads the tenant's live
                // codes, few next to the grants, in a rare administrative step.
                let mut families = query_all(
                    c,
                    "DELETE FROM codes WHERE tenant = ? AND client_id = ? AND subject = ? \
                     AND spent_at IS NULL AND expires_at > ? RETURNING family_id",
                    params![tenant, client_id, subject, int(now)],
                    |r| get_str(r, "family_id"),
                )?;
                // Without statistics SQLite's planner would rather walk the tenant's grants in
                // key order than sort a few rows: name the index.
                families.extend(query_all(
                    c,
                    "SELECT family_id FROM grants INDEXED BY grants_client \
                     WHERE tenant = ? AND client_id = ? AND subject = ? AND revoked_at IS NULL",
                    params![tenant, client_id, subject],
                    |r| get_str(r, "family_id"),
                )?);
                families.sort_unstable();
                families.dedup();
                for family_id in &families {
                    revoke_family_in(c, &tenant, family_id, now)?;
                }
                Ok(families)
            })
            .await
    }

    async fn put_session(&self, row: &SessionRow) -> Result<(), StoreError> {
        let row = row.clone();
        self.engine
            .write(Steps::One, move |c| {
                execute(
                    c,
                    concat!(
                        "INSERT OR REPLACE INTO sessions (",
                        session_cols!(),
                        ") VALUES (?, ?, ?, ?, ?, ?)"
                    ),
                    params![
                        row.tenant,
                        row.session_hash,
                        row.subject,
                        row.provider,
                        int(row.created_at),
                        int(row.expires_at),
                    ],
                )
                .map(drop)
            })
            .await
    }

    async fn get_session(
        &self,
        tenant: &str,
        session_hash: &str,
        now: u64,
    ) -> Result<Option<SessionRow>, StoreError> {
        let (tenant, session_hash) = (tenant.to_owned(), session_hash.to_owned());
        self.engine
            .read(move |c| {
                query_opt(
                    c,
                    concat!(
                        "SELECT ",
                        session_cols!(),
                        " FROM sessions WHERE tenant = ? AND session_hash = ? \
                         AND expires_at > ?"
                    ),
                    params![tenant, session_hash, int(now)],
                    session_row,
                )
            })
            .await
    }

    async fn delete_session(&self, tenant: &str, session_hash: &str) -> Result<bool, StoreError> {
        let (tenant, session_hash) = (tenant.to_owned(), session_hash.to_owned());
        self.engine
            .write(Steps::One, move |c| {
                execute(
                    c,
                    "DELETE FROM sessions WHERE tenant = ? AND session_hash = ?",
                    params![tenant, session_hash],
                )
                .map(|n| n > 0)
            })
            .await
    }

    async fn put_upstream(&self, row: &UpstreamRow) -> Result<(), StoreError> {
        let row = row.clone();
        self.engine
            .write(Steps::One, move |c| {
                execute(
                    c,
                    concat!(
                        "INSERT OR REPLACE INTO upstream_tokens (",
                        upstream_cols!(),
                        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    ),
                    params![
                        row.tenant,
                        row.account,
                        row.provider,
                        row.sealed,
                        int(row.version),
                        int(row.created_at),
                        int(row.updated_at),
                        int(row.expires_at),
                    ],
                )
                .map(drop)
            })
            .await
    }

    async fn get_upstream(
        &self,
        tenant: &str,
        account: &str,
        now: u64,
    ) -> Result<Option<UpstreamRow>, StoreError> {
        let (tenant, account) = (tenant.to_owned(), account.to_owned());
        self.engine
            .read(move |c| {
                query_opt(
                    c,
                    concat!(
                        "SELECT ",
                        upstream_cols!(),
                        " FROM upstream_tokens WHERE tenant = ? AND account = ? \
                         AND expires_at > ?"
                    ),
                    params![tenant, account, int(now)],
                    upstream_row,
                )
            })
            .await
    }

    async fn swap_upstream(
        &self,
        row: &UpstreamRow,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        check_upstream_swap(row, expected_version)?;
        let row = row.clone();
        // One UPDATE under the write lock compares and replaces: of concurrent swaps from
        // the same version, in this process or another, only the first finds it.
        self.engine
            .write(Steps::One, move |c| {
                execute(
                    c,
                    "UPDATE upstream_tokens SET provider = ?, sealed = ?, version = ?, \
                     created_at = ?, updated_at = ?, expires_at = ? \
                     WHERE tenant = ? AND account = ? AND version = ?",
                    params![
                        row.provider,
                        row.sealed,
                        int(row.version),
                        int(row.created_at),
                        int(row.updated_at),
                        int(row.expires_at),
                        row.tenant,
                        row.account,
                        int(expected_version),
                    ],
                )
                .map(|n| n > 0)
            })
            .await
    }

    async fn delete_upstream(
        &self,
        tenant: &str,
        account: &str,
    ) -> Result<Option<UpstreamRow>, StoreError> {
        let (tenant, account) = (tenant.to_owned(), account.to_owned());
        self.engine
            .write(Steps::One, move |c| {
                query_opt(
                    c,
                    concat!(
                        "DELETE FROM upstream_tokens WHERE tenant = ? AND account = ? \
                         RETURNING ",
                        upstream_cols!()
                    ),
                    params![tenant, account],
                    upstream_row,
                )
            })
            .await
    }

    async fn put_device(&self, row: &DeviceAuthRow) -> Result<(), StoreError> {
        let row = row.clone();
        self.engine
            .write(Steps::Many, move |c| {
                // An expired request gives up its user code (the unique index would refuse
                // the new row otherwise); an unexpired one keeps it, and the insert fails.
                execute(
                    c,
                    "DELETE FROM device_authorizations \
                     WHERE tenant = ? AND user_code_hash = ? AND expires_at <= ?",
                    params![row.tenant, row.user_code_hash, int(row.created_at)],
                )?;
                c.prepare_cached(concat!(
                    "INSERT INTO device_authorizations (",
                    device_cols!(),
                    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ))
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        row.tenant,
                        row.device_code_hash,
                        row.user_code_hash,
                        row.client_id,
                        row.scope,
                        row.resource,
                        int(row.interval),
                        row.status.as_str(),
                        row.subject,
                        row.granted_scope,
                        row.last_poll.map(int),
                        int(row.created_at),
                        int(row.expires_at),
                    ])
                })
                .map_err(insert_error("device authorization"))?;
                Ok(())
            })
            .await
    }

    async fn get_device_by_user_code(
        &self,
        tenant: &str,
        user_code_hash: &str,
        now: u64,
    ) -> Result<Option<DeviceAuthRow>, StoreError> {
        let (tenant, user_code_hash) = (tenant.to_owned(), user_code_hash.to_owned());
        self.engine
            .read(move |c| {
                query_opt(
                    c,
                    concat!(
                        "SELECT ",
                        device_cols!(),
                        " FROM device_authorizations WHERE tenant = ? AND user_code_hash = ? \
                         AND expires_at > ?"
                    ),
                    params![tenant, user_code_hash, int(now)],
                    device_row,
                )
            })
            .await
    }

    async fn decide_device(
        &self,
        tenant: &str,
        device_code_hash: &str,
        decision: &DeviceDecision,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (tenant, hash, decision) = (
            tenant.to_owned(),
            device_code_hash.to_owned(),
            decision.clone(),
        );
        // Read, decide and write in one job of the writer, under the write lock: no other
        // decision or poll, in this process or another, comes between.
        self.engine
            .write(Steps::Many, move |c| {
                let Some(row) = device_in(c, &tenant, &hash)? else {
                    return Ok(false);
                };
                match device_decide_step(&row, &decision, now) {
                    Some(next) => update_device_in(c, &next).map(|()| true),
                    None => Ok(false),
                }
            })
            .await
    }

    async fn poll_device(
        &self,
        tenant: &str,
        device_code_hash: &str,
        client_id: &str,
        now: u64,
    ) -> Result<DevicePoll, StoreError> {
        let (tenant, hash, client_id) = (
            tenant.to_owned(),
            device_code_hash.to_owned(),
            client_id.to_owned(),
        );
        self.engine
            .write(Steps::Many, move |c| {
                let Some(row) = device_in(c, &tenant, &hash)? else {
                    return Ok(DevicePoll::Missing);
                };
                let (answer, next) = device_poll_step(&row, &client_id, now);
                if let Some(next) = next {
                    update_device_in(c, &next)?;
                }
                Ok(answer)
            })
            .await
    }

    async fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        self.engine
            .write(Steps::Many, move |c| {
                let mut total = 0;
                for sql in [
                    "DELETE FROM clients WHERE expires_at IS NOT NULL AND expires_at <= ?",
                    "DELETE FROM codes WHERE expires_at <= ?",
                    "DELETE FROM refresh_tokens WHERE expires_at <= ?",
                    "DELETE FROM revoked_families WHERE expires_at <= ?",
                    "DELETE FROM revoked_access_tokens WHERE expires_at <= ?",
                    "DELETE FROM signing_keys WHERE not_after IS NOT NULL AND not_after <= ?",
                    "DELETE FROM pending_authorizations WHERE expires_at <= ?",
                    "DELETE FROM sessions WHERE expires_at <= ?",
                    "DELETE FROM upstream_tokens WHERE expires_at <= ?",
                    "DELETE FROM device_authorizations WHERE expires_at <= ?",
                    "DELETE FROM claims WHERE expires_at <= ?",
                ] {
                    total += execute(c, sql, params![int(now)])?;
                }
                // A grant outlives its tokens, a client's deletion record its codes. These
                // rows are bookkeeping, not rows the caller stored: not counted.
                for sql in [
                    "DELETE FROM grants WHERE expires_at <= ?",
                    "DELETE FROM deleted_clients WHERE expires_at <= ?",
                ] {
                    execute(c, sql, params![int(now)])?;
                }
                Ok(total)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_auth_server::store::suite;

    /// The lookup every refresh makes on a reader connection is prepared once and reused:
    /// SQLite prepares some statements again at each execution when their plan depends on
    /// the bound values (an `EXISTS` subquery did), which parses the whole schema each time.
    #[tokio::test]
    async fn the_refresh_lookup_is_not_prepared_again_at_each_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let conn = Connection::open(&path).unwrap();
        let mut current = suite::refresh("t1", "rt-0", "fam-1");
        store.put_refresh(&current).await.unwrap();
        for i in 1..=5u64 {
            let now = suite::NOW + i;
            let args = params![current.tenant, current.token_hash, int(now)];
            let found = query_opt(&conn, GET_REFRESH, args, refresh_row).unwrap();
            assert_eq!(found.as_ref(), Some(&current));
            // `query_opt` left the statement in the connection's cache.
            let stmt = conn.prepare_cached(GET_REFRESH).unwrap();
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
            drop(stmt);
            let mut next = suite::refresh("t1", &format!("rt-{i}"), "fam-1");
            next.created_at = now;
            let rotated = store
                .rotate_refresh("t1", &current.token_hash, &next, now)
                .await
                .unwrap();
            assert!(matches!(rotated, Rotate::Rotated(_)));
            current = next;
        }
        store.close().await;
    }
}
