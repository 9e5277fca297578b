//! [`SqliteStore`]: the [`Store`] trait on SQLite through sqlx.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mcp_auth_server::store::{
    ClientRow, CodeRow, ConsentRow, PendingAuthRow, REVOKED_FAMILY_RETENTION_SECS, RefreshRow,
    RegistrationKind, Rotate, SigningKeyRow, Store, StoreError, TakeCode, UserRow,
    check_refresh_successor, spawn_sweeper, unix_now,
};
use mcp_auth_types::SecretString;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr, Sqlite, Transaction};
use tokio::task::JoinHandle;

/// The schema, version by version. A released migration is never edited: add a new one.
/// (The list is written out rather than read by `sqlx::migrate!`, which would need sqlx's
/// `macros` feature and its proc-macro build only for this.)
const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "initial", include_str!("../migrations/0001_initial.sql"))];

/// How long a writer waits for another one before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections of a file-backed pool: WAL lets readers run beside the one writer.
const MAX_CONNECTIONS: u32 = 4;

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// A [`Store`] in a SQLite database. Cloning is cheap and shares the connection pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to
    /// date.
    ///
    /// A new file is created readable by its owner only (on Unix), since it holds signing
    /// keys; SQLite gives the `-wal` and `-shm` files the same permissions.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        create_private_file(path).await?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL rather than WAL's usual NORMAL: with NORMAL a power loss may undo the last
            // commits, and an undone family revocation would bring revoked tokens back.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(backend)?;
        Self::from_pool(pool).await
    }

    /// A private database in memory, gone when the store (and every clone) is dropped.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(backend)?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // An in-memory database lives as long as a connection to it: keep exactly one, for
        // ever. One connection also serialises every operation.
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(backend)?;
        Self::from_pool(pool).await
    }

    /// Uses a pool the caller configured, bringing its schema up to date. The pool must have
    /// a busy timeout, or concurrent writers fail instead of waiting.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        migrator().run(&pool).await.map_err(backend)?;
        Ok(Self { pool })
    }

    /// Closes every connection, waiting for running queries to finish. Later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Deletes expired rows ([`Store::sweep`]) every `interval`, the first time at once, by
    /// the system clock, until the returned task is aborted.
    pub fn spawn_sweeper(&self, interval: Duration) -> JoinHandle<()> {
        spawn_sweeper(Arc::new(self.clone()), interval, unix_now)
    }

    async fn begin_immediate(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        // IMMEDIATE takes the write lock at BEGIN: a deferred transaction that reads first
        // and writes later can fail with SQLITE_BUSY on the upgrade, which the busy timeout
        // does not cover.
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)
    }
}

#[cfg(unix)]
async fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    match options.open(path).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(backend(e)),
    }
}

#[cfg(not(unix))]
async fn create_private_file(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

// ---- conversions ----

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Maps a failed insert: a primary key violation means the row exists.
fn insert_error(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => backend(e),
    }
}

fn corrupt(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        source: Box::new(e),
    }
}

/// SQLite integers are signed; times past `i64::MAX` seconds are "never" anyway.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn get_str(row: &SqliteRow, col: &'static str) -> Result<String, StoreError> {
    row.try_get(col).map_err(corrupt(col))
}

fn get_opt_str(row: &SqliteRow, col: &'static str) -> Result<Option<String>, StoreError> {
    row.try_get(col).map_err(corrupt(col))
}

fn get_u64(row: &SqliteRow, col: &'static str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(col).map_err(corrupt(col))?;
    u64::try_from(v).map_err(|e| StoreError::Corrupt {
        what: col,
        source: Box::new(e),
    })
}

fn get_opt_u64(row: &SqliteRow, col: &'static str) -> Result<Option<u64>, StoreError> {
    let v: Option<i64> = row.try_get(col).map_err(corrupt(col))?;
    v.map(|v| {
        u64::try_from(v).map_err(|e| StoreError::Corrupt {
            what: col,
            source: Box::new(e),
        })
    })
    .transpose()
}

fn get_json<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
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

fn client_row(r: &SqliteRow) -> Result<ClientRow, StoreError> {
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

fn user_row(r: &SqliteRow) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        tenant: get_str(r, "tenant")?,
        username: get_str(r, "username")?,
        password_hash: get_str(r, "password_hash")?,
        created_at: get_u64(r, "created_at")?,
    })
}

fn code_row(r: &SqliteRow) -> Result<CodeRow, StoreError> {
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

fn refresh_row(r: &SqliteRow) -> Result<RefreshRow, StoreError> {
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

fn key_row(r: &SqliteRow) -> Result<SigningKeyRow, StoreError> {
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

fn pending_row(r: &SqliteRow) -> Result<PendingAuthRow, StoreError> {
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

fn consent_row(r: &SqliteRow) -> Result<ConsentRow, StoreError> {
    Ok(ConsentRow {
        tenant: get_str(r, "tenant")?,
        subject: get_str(r, "subject")?,
        client_id: get_str(r, "client_id")?,
        scope: get_str(r, "scope")?,
        granted_at: get_u64(r, "granted_at")?,
    })
}

/// Deletes a family's tokens and remembers the revocation, inside the caller's
/// transaction. Returns how many token rows went.
async fn revoke_family_in(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &str,
    family_id: &str,
    now: u64,
) -> Result<usize, StoreError> {
    let deleted = sqlx::query("DELETE FROM refresh_tokens WHERE tenant = ? AND family_id = ?")
        .bind(tenant)
        .bind(family_id)
        .execute(&mut **tx)
        .await
        .map_err(backend)?
        .rows_affected();
    sqlx::query(
        "INSERT INTO revoked_families (tenant, family_id, expires_at) VALUES (?, ?, ?) \
         ON CONFLICT (tenant, family_id) DO UPDATE \
         SET expires_at = max(expires_at, excluded.expires_at)",
    )
    .bind(tenant)
    .bind(family_id)
    .bind(int(now.saturating_add(REVOKED_FAMILY_RETENTION_SECS)))
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(deleted as usize)
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_client(&self, row: &ClientRow) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT OR REPLACE INTO clients (",
            client_cols!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&row.tenant)
        .bind(&row.client_id)
        .bind(&row.secret_hash)
        .bind(to_json(&row.metadata)?)
        .bind(row.registration_kind.as_str())
        .bind(&row.registration_token_hash)
        .bind(int(row.created_at))
        .bind(row.expires_at.map(int))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn get_client(
        &self,
        tenant: &str,
        client_id: &str,
        now: u64,
    ) -> Result<Option<ClientRow>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            client_cols!(),
            " FROM clients WHERE tenant = ? AND client_id = ? \
             AND (expires_at IS NULL OR expires_at > ?)"
        ))
        .bind(tenant)
        .bind(client_id)
        .bind(int(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(client_row)
        .transpose()
    }

    async fn delete_client(&self, tenant: &str, client_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_immediate().await?;
        let existed = sqlx::query("DELETE FROM clients WHERE tenant = ? AND client_id = ?")
            .bind(tenant)
            .bind(client_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected()
            > 0;
        // RFC 7592 §2.3: everything issued to the client goes with it.
        for sql in [
            "DELETE FROM codes WHERE tenant = ? AND client_id = ?",
            "DELETE FROM refresh_tokens WHERE tenant = ? AND client_id = ?",
            "DELETE FROM pending_authorizations WHERE tenant = ? AND client_id = ?",
            "DELETE FROM consents WHERE tenant = ? AND client_id = ?",
        ] {
            sqlx::query(sql)
                .bind(tenant)
                .bind(client_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(existed)
    }

    async fn put_user(&self, row: &UserRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO users (tenant, username, password_hash, created_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(&row.tenant)
        .bind(&row.username)
        .bind(&row.password_hash)
        .bind(int(row.created_at))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn get_user(&self, tenant: &str, username: &str) -> Result<Option<UserRow>, StoreError> {
        sqlx::query(
            "SELECT tenant, username, password_hash, created_at FROM users \
             WHERE tenant = ? AND username = ?",
        )
        .bind(tenant)
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(user_row)
        .transpose()
    }

    async fn put_code(&self, row: &CodeRow) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO codes (",
            code_cols!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&row.tenant)
        .bind(&row.code_hash)
        .bind(&row.client_id)
        .bind(&row.redirect_uri)
        .bind(&row.code_challenge)
        .bind(&row.scope)
        .bind(&row.resource)
        .bind(&row.subject)
        .bind(&row.nonce)
        .bind(int(row.expires_at))
        .bind(&row.family_id)
        .execute(&self.pool)
        .await
        .map_err(insert_error("authorization code"))?;
        Ok(())
    }

    async fn take_code(
        &self,
        tenant: &str,
        code_hash: &str,
        now: u64,
    ) -> Result<TakeCode, StoreError> {
        // One statement decides who redeems the code: SQLite runs it under the write lock,
        // and only the caller that finds `spent_at IS NULL` gets the row back.
        let taken = sqlx::query(concat!(
            "UPDATE codes SET spent_at = ? \
             WHERE tenant = ? AND code_hash = ? AND spent_at IS NULL AND expires_at > ? \
             RETURNING ",
            code_cols!()
        ))
        .bind(int(now))
        .bind(tenant)
        .bind(code_hash)
        .bind(int(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        if let Some(row) = taken {
            return Ok(TakeCode::Taken(code_row(&row)?));
        }
        // Not ours: spent before (spent_at never goes back to NULL, so this read cannot
        // contradict the update), or missing or expired.
        let spent = sqlx::query(
            "SELECT family_id, client_id FROM codes \
             WHERE tenant = ? AND code_hash = ? AND spent_at IS NOT NULL AND expires_at > ?",
        )
        .bind(tenant)
        .bind(code_hash)
        .bind(int(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        match spent {
            Some(row) => Ok(TakeCode::Replayed {
                family_id: get_str(&row, "family_id")?,
                client_id: get_str(&row, "client_id")?,
            }),
            None => Ok(TakeCode::Missing),
        }
    }

    async fn put_refresh(&self, row: &RefreshRow) -> Result<(), StoreError> {
        // The revoked-family check and the insert are one statement, so a revocation cannot
        // slip in between them.
        let inserted = sqlx::query(concat!(
            "INSERT INTO refresh_tokens (",
            refresh_cols!(),
            ") SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS \
             (SELECT 1 FROM revoked_families WHERE tenant = ? AND family_id = ?)"
        ))
        .bind(&row.tenant)
        .bind(&row.token_hash)
        .bind(&row.family_id)
        .bind(&row.client_id)
        .bind(&row.subject)
        .bind(&row.scope)
        .bind(&row.resource)
        .bind(int(row.expires_at))
        .bind(int(row.created_at))
        .bind(&row.tenant)
        .bind(&row.family_id)
        .execute(&self.pool)
        .await
        .map_err(insert_error("refresh token"))?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::FamilyRevoked);
        }
        Ok(())
    }

    async fn get_refresh(
        &self,
        tenant: &str,
        token_hash: &str,
        now: u64,
    ) -> Result<Option<RefreshRow>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            refresh_cols!(),
            " FROM refresh_tokens WHERE tenant = ? AND token_hash = ? \
             AND rotated_at IS NULL AND expires_at > ?"
        ))
        .bind(tenant)
        .bind(token_hash)
        .bind(int(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(refresh_row)
        .transpose()
    }

    async fn rotate_refresh(
        &self,
        tenant: &str,
        old_hash: &str,
        new_row: &RefreshRow,
        now: u64,
    ) -> Result<Rotate, StoreError> {
        // Dropping `tx` without commit rolls back, so every early return leaves no trace.
        let mut tx = self.begin_immediate().await?;
        let current = sqlx::query(concat!(
            "UPDATE refresh_tokens SET rotated_at = ? \
             WHERE tenant = ? AND token_hash = ? AND rotated_at IS NULL AND expires_at > ? \
             RETURNING ",
            refresh_cols!()
        ))
        .bind(int(now))
        .bind(tenant)
        .bind(old_hash)
        .bind(int(now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;

        if let Some(old) = current {
            let old = refresh_row(&old)?;
            check_refresh_successor(tenant, &old, new_row)?;
            sqlx::query(concat!(
                "INSERT INTO refresh_tokens (",
                refresh_cols!(),
                ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .bind(&new_row.tenant)
            .bind(&new_row.token_hash)
            .bind(&new_row.family_id)
            .bind(&new_row.client_id)
            .bind(&new_row.subject)
            .bind(&new_row.scope)
            .bind(&new_row.resource)
            .bind(int(new_row.expires_at))
            .bind(int(new_row.created_at))
            .execute(&mut *tx)
            .await
            .map_err(insert_error("refresh token"))?;
            tx.commit().await.map_err(backend)?;
            return Ok(Rotate::Rotated(old));
        }

        let rotated = sqlx::query(
            "SELECT family_id FROM refresh_tokens \
             WHERE tenant = ? AND token_hash = ? AND rotated_at IS NOT NULL AND expires_at > ?",
        )
        .bind(tenant)
        .bind(old_hash)
        .bind(int(now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(rotated) = rotated else {
            return Ok(Rotate::Invalid);
        };
        // RFC 9700 §4.14.2: a rotated token came back; revoke the whole family.
        let family_id = get_str(&rotated, "family_id")?;
        revoke_family_in(&mut tx, tenant, &family_id, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Rotate::Reused { family_id })
    }

    async fn revoke_family(
        &self,
        tenant: &str,
        family_id: &str,
        now: u64,
    ) -> Result<usize, StoreError> {
        let mut tx = self.begin_immediate().await?;
        let n = revoke_family_in(&mut tx, tenant, family_id, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(n)
    }

    async fn revoke_access(
        &self,
        tenant: &str,
        jti: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revoked_access_tokens (tenant, jti, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (tenant, jti) DO UPDATE \
             SET expires_at = max(expires_at, excluded.expires_at)",
        )
        .bind(tenant)
        .bind(jti)
        .bind(int(expires_at))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn is_access_revoked(&self, tenant: &str, jti: &str) -> Result<bool, StoreError> {
        let found = sqlx::query("SELECT 1 FROM revoked_access_tokens WHERE tenant = ? AND jti = ?")
            .bind(tenant)
            .bind(jti)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(found.is_some())
    }

    async fn put_signing_key(&self, row: &SigningKeyRow) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO signing_keys (",
            key_cols!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&row.tenant)
        .bind(&row.kid)
        .bind(&row.alg)
        .bind(row.private_pem.secret())
        .bind(to_json(&row.public_jwk)?)
        .bind(int(row.created_at))
        .bind(row.not_after.map(int))
        .execute(&self.pool)
        .await
        .map_err(insert_error("signing key"))?;
        Ok(())
    }

    async fn list_signing_keys(
        &self,
        tenant: &str,
        now: u64,
    ) -> Result<Vec<SigningKeyRow>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            key_cols!(),
            " FROM signing_keys WHERE tenant = ? AND (not_after IS NULL OR not_after > ?) \
             ORDER BY created_at DESC, kid ASC"
        ))
        .bind(tenant)
        .bind(int(now))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(key_row)
        .collect()
    }

    async fn retire_signing_key(
        &self,
        tenant: &str,
        kid: &str,
        not_after: u64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE signing_keys SET not_after = ? WHERE tenant = ? AND kid = ?")
            .bind(int(not_after))
            .bind(tenant)
            .bind(kid)
            .execute(&self.pool)
            .await
            .map_err(backend)?
            .rows_affected();
        Ok(n > 0)
    }

    async fn put_pending(&self, row: &PendingAuthRow) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT OR REPLACE INTO pending_authorizations (",
            pending_cols!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&row.tenant)
        .bind(&row.id)
        .bind(&row.client_id)
        .bind(&row.redirect_uri)
        .bind(&row.response_type)
        .bind(&row.scope)
        .bind(&row.state)
        .bind(&row.code_challenge)
        .bind(&row.code_challenge_method)
        .bind(&row.resource)
        .bind(&row.nonce)
        .bind(&row.prompt)
        .bind(&row.login_hint)
        .bind(to_json(&row.extra)?)
        .bind(&row.subject)
        .bind(&row.csrf_hash)
        .bind(int(row.created_at))
        .bind(int(row.expires_at))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn get_pending(
        &self,
        tenant: &str,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthRow>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            pending_cols!(),
            " FROM pending_authorizations WHERE tenant = ? AND id = ? AND expires_at > ?"
        ))
        .bind(tenant)
        .bind(id)
        .bind(int(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(pending_row)
        .transpose()
    }

    async fn take_pending(
        &self,
        tenant: &str,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthRow>, StoreError> {
        // One DELETE … RETURNING: only one caller can delete the row.
        let taken = sqlx::query(concat!(
            "DELETE FROM pending_authorizations WHERE tenant = ? AND id = ? RETURNING ",
            pending_cols!()
        ))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        match taken {
            Some(row) => Ok(Some(pending_row(&row)?).filter(|p| now < p.expires_at)),
            None => Ok(None),
        }
    }

    async fn put_consent(&self, row: &ConsentRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO consents (tenant, subject, client_id, scope, granted_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&row.tenant)
        .bind(&row.subject)
        .bind(&row.client_id)
        .bind(&row.scope)
        .bind(int(row.granted_at))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn get_consent(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<ConsentRow>, StoreError> {
        sqlx::query(
            "SELECT tenant, subject, client_id, scope, granted_at FROM consents \
             WHERE tenant = ? AND subject = ? AND client_id = ?",
        )
        .bind(tenant)
        .bind(subject)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(consent_row)
        .transpose()
    }

    async fn delete_consent(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<bool, StoreError> {
        let n =
            sqlx::query("DELETE FROM consents WHERE tenant = ? AND subject = ? AND client_id = ?")
                .bind(tenant)
                .bind(subject)
                .bind(client_id)
                .execute(&self.pool)
                .await
                .map_err(backend)?
                .rows_affected();
        Ok(n > 0)
    }

    async fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        let mut tx = self.begin_immediate().await?;
        let mut total = 0;
        for sql in [
            "DELETE FROM clients WHERE expires_at IS NOT NULL AND expires_at <= ?",
            "DELETE FROM codes WHERE expires_at <= ?",
            "DELETE FROM refresh_tokens WHERE expires_at <= ?",
            "DELETE FROM revoked_families WHERE expires_at <= ?",
            "DELETE FROM revoked_access_tokens WHERE expires_at <= ?",
            "DELETE FROM signing_keys WHERE not_after IS NOT NULL AND not_after <= ?",
            "DELETE FROM pending_authorizations WHERE expires_at <= ?",
        ] {
            total += sqlx::query(sql)
                .bind(int(now))
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
        }
        tx.commit().await.map_err(backend)?;
        Ok(total as usize)
    }
}
