//! [`RedisStore`]: the [`Store`] methods as Redis commands and scripts.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mcp_auth_server::store::{
    ClientRow, CodeRow, ConsentRow, DeviceAuthRow, DeviceDecision, DevicePoll, DeviceStatus,
    NewRefresh, PendingAuthRow, REVOKED_FAMILY_RETENTION_SECS, RefreshRow, Rotate,
    SLOW_DOWN_STEP_SECS, SessionRow, SigningKeyRow, Store, StoreError, TakeCode, UpstreamRow,
    UserRow, check_refresh_successor, check_upstream_swap, spawn_sweeper, unix_now,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, IntoConnectionInfo, RedisError, ScriptInvocation};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use crate::keys::{Keys, TenantKeys};
use crate::options::{Clock, RedisOptions};
use crate::scripts;

/// The longest key TTL the store sets, in seconds (about 34,000 years): far beyond any
/// row's life, and far below what `EXPIRE` accepts.
const MAX_TTL: u64 = 1 << 40;

/// How many expired rows one sweep script deletes before letting other commands run.
const SWEEP_BATCH: usize = 500;

/// How many times [`Store::redeem_code`] reads the code again when its row changed between
/// the read and the script (only if the code was deleted and one with the same hash put).
const REDEEM_ATTEMPTS: usize = 3;

/// A [`Store`] in Redis. Cheap to clone: clones share one multiplexed connection.
///
/// See the [crate docs](crate) for the key layout, atomicity and expiry.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    /// `host:port/db`, for errors and `Debug`; never the password.
    addr: String,
    /// The longest one call may take: a connection attempt plus an answer.
    deadline: Duration,
    ttl_margin: u64,
    clock: Clock,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("addr", &self.addr)
            .field("keys", &self.keys)
            .field("deadline", &self.deadline)
            .field("ttl_margin", &self.ttl_margin)
            .finish_non_exhaustive()
    }
}

/// What went wrong talking to Redis. The address, never the password.
#[derive(Debug, thiserror::Error)]
enum RedisStoreError {
    #[error("invalid Redis URL {url} (expected redis://[USER:PASSWORD@]HOST:PORT/DB)")]
    Url { url: String },
    #[error("cannot connect to Redis at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: RedisError,
    },
    #[error("cannot connect to Redis at {addr}: no answer within {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("Redis at {addr} failed during {op}")]
    Command {
        addr: String,
        op: &'static str,
        #[source]
        source: RedisError,
    },
    #[error("Redis at {addr} did not answer {op} within {timeout:?}")]
    Timeout {
        addr: String,
        op: &'static str,
        timeout: Duration,
    },
    #[error("Redis at {addr} gave an unexpected answer to {op}: {answer}")]
    Unexpected {
        addr: String,
        op: &'static str,
        answer: String,
    },
}

fn backend(e: RedisStoreError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

impl RedisStore {
    /// Connects to `url` (`redis://[USER:PASSWORD@]HOST:PORT/DB`) with the default
    /// [`RedisOptions`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(RedisOptions::new(url)).await
    }

    /// Connects as `options` say, and checks the server answers (`PING`), so a server
    /// configured with an unreachable Redis refuses to start. The error names the address,
    /// never the password.
    ///
    /// The connection is multiplexed and reconnects by itself: after an outage, calls fail
    /// with [`StoreError::Backend`] within the timeouts, and succeed again once Redis is
    /// back, with the same store.
    pub async fn connect_with(options: RedisOptions) -> Result<Self, StoreError> {
        let redacted = crate::options::redact_url(&options.url);
        let info = options
            .url
            .as_str()
            .into_connection_info()
            .map_err(|_| backend(RedisStoreError::Url { url: redacted }))?;
        let addr = format!("{}/{}", info.addr(), info.redis_settings().db());
        let client = redis::Client::open(info).map_err(|source| {
            backend(RedisStoreError::Connect {
                addr: addr.clone(),
                source,
            })
        })?;
        // Few, short retries: a call waiting for a reconnection must still end within
        // its deadline, and the next call starts a new attempt anyway.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|source| {
            backend(RedisStoreError::Connect {
                addr: addr.clone(),
                source,
            })
        })?;
        let store = Self {
            conn,
            keys: Keys::new(&options.prefix),
            addr,
            deadline: options.connect_timeout + options.response_timeout,
            ttl_margin: options.ttl_margin,
            clock: options.clock,
        };
        let mut conn = store.conn.clone();
        let ping_cmd = redis::cmd("PING");
        let ping = ping_cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(store.deadline, ping).await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(source)) => Err(backend(RedisStoreError::Connect {
                addr: store.addr.clone(),
                source,
            })),
            Err(_) => Err(backend(RedisStoreError::ConnectTimeout {
                addr: store.addr.clone(),
                timeout: store.deadline,
            })),
        }
    }

    /// Deletes expired rows ([`Store::sweep`]) every `interval`, the first time at once,
    /// with the time from the system clock, until the task is aborted.
    pub fn spawn_sweeper(&self, interval: Duration) -> JoinHandle<()> {
        spawn_sweeper(Arc::new(self.clone()), interval, unix_now)
    }

    /// The key TTL, in seconds, of a row expiring at `expires_at`: the time left by the
    /// TTL clock plus the margin, at least 1 s (a row already expired by that clock is
    /// kept for the margin, then Redis drops it; reads compare with their `now`).
    fn ttl(&self, expires_at: u64) -> u64 {
        expires_at
            .saturating_sub((self.clock)())
            .saturating_add(self.ttl_margin)
            .clamp(1, MAX_TTL)
    }

    /// Runs one Redis call within the deadline.
    async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.deadline, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(backend(RedisStoreError::Command {
                addr: self.addr.clone(),
                op,
                source,
            })),
            Err(_) => Err(backend(RedisStoreError::Timeout {
                addr: self.addr.clone(),
                op,
                timeout: self.deadline,
            })),
        }
    }

    async fn script<T: FromRedisValue>(
        &self,
        op: &'static str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.call(op, invocation.invoke_async(&mut conn)).await
    }

    async fn cmd<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.call(op, cmd.query_async(&mut conn)).await
    }

    /// The `row` field of a hash.
    async fn get_row<T: DeserializeOwned>(
        &self,
        op: &'static str,
        what: &'static str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let json: Option<String> = self.cmd(op, redis::cmd("HGET").arg(key).arg("row")).await?;
        json.map(|j| decode(what, &j)).transpose()
    }

    fn unexpected(&self, op: &'static str, answer: impl fmt::Debug) -> StoreError {
        // A script and this code disagree: a bug, or another version of the store sharing
        // the prefix.
        tracing::warn!(addr = %self.addr, op, "unexpected answer from a Redis script");
        backend(RedisStoreError::Unexpected {
            addr: self.addr.clone(),
            op,
            answer: format!("{answer:?}"),
        })
    }

    /// Writes a row with the `PUT` script: `nx` refuses an existing key (returns false).
    async fn put(
        &self,
        op: &'static str,
        nx: bool,
        key: &str,
        expires_at: Option<u64>,
        indexes: &[(&str, &str)],
        fields: &[(&str, &str)],
    ) -> Result<bool, StoreError> {
        let mut inv = scripts::PUT.prepare_invoke();
        inv.key(key).key(self.keys.expiry());
        for (_, set) in indexes {
            inv.key(*set);
        }
        inv.arg(if nx { "nx" } else { "replace" });
        push_expiry(&mut inv, expires_at.map(|e| (e, self.ttl(e))));
        for (name, value) in fields.iter().chain(indexes) {
            inv.arg(*name).arg(*value);
        }
        let written: i64 = self.script(op, &inv).await?;
        Ok(written == 1)
    }

    /// One `REDEEM_CODE` script: takes the code under `code_key` if its row is still
    /// `code_json`, storing `token` with it. Returns the script's answer.
    async fn redeem_step(
        &self,
        code_key: &str,
        code_json: &str,
        token: &RefreshRow,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let t = self.keys.tenant(&token.tenant);
        let f = RefreshFields::new(&t, token)?;
        let mut inv = scripts::REDEEM_CODE.prepare_invoke();
        inv.key(code_key)
            .key(&f.key)
            .key(self.keys.expiry())
            .key(t.revoked(&token.family_id))
            .key(&f.family_set)
            .key(&f.by_client)
            .arg(now.to_string())
            .arg(code_json);
        push_expiry(
            &mut inv,
            Some((token.expires_at, self.ttl(token.expires_at))),
        );
        f.push(&mut inv, token);
        self.script("redeem_code", &inv).await
    }

    fn revocation_until(&self, now: u64) -> (u64, u64) {
        let till = now.saturating_add(REVOKED_FAMILY_RETENTION_SECS);
        (till, self.ttl(till))
    }
}

/// Pushes `exp, ttl` (both empty for "never") onto a script's arguments.
fn push_expiry(inv: &mut ScriptInvocation<'_>, expiry: Option<(u64, u64)>) {
    match expiry {
        Some((exp, ttl)) => inv.arg(exp.to_string()).arg(ttl.to_string()),
        None => inv.arg("").arg(""),
    };
}

fn encode(what: &'static str, row: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(row).map_err(|e| StoreError::Corrupt {
        what,
        source: Box::new(e),
    })
}

fn decode<T: DeserializeOwned>(what: &'static str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        what,
        source: Box::new(e),
    })
}

fn parse_u64(what: &'static str, s: &str) -> Result<u64, StoreError> {
    s.parse().map_err(|e| StoreError::Corrupt {
        what,
        source: Box::new(e),
    })
}

/// A device authorization from a script's answer: the row JSON as first stored, with the
/// fields that change since (`[json, status, subject, granted, interval, last]`).
fn device_from(fields: &[Option<String>]) -> Result<DeviceAuthRow, StoreError> {
    let corrupt = |m: &str| StoreError::Corrupt {
        what: "device authorization",
        source: m.to_owned().into(),
    };
    let [json, status, subject, granted, interval, last] = fields else {
        return Err(corrupt("wrong number of fields"));
    };
    let json = json.as_deref().ok_or_else(|| corrupt("no row"))?;
    let mut row: DeviceAuthRow = decode("device authorization", json)?;
    let status = status.as_deref().unwrap_or("");
    row.status = DeviceStatus::from_name(status).ok_or_else(|| corrupt("unknown status"))?;
    row.subject = subject.clone();
    row.granted_scope = granted.clone();
    row.interval = parse_u64("interval", interval.as_deref().unwrap_or(""))?;
    row.last_poll = last
        .as_deref()
        .map(|l| parse_u64("last poll", l))
        .transpose()?;
    Ok(row)
}

/// The fields of a refresh token row.
struct RefreshFields {
    key: String,
    json: String,
    family_set: String,
    by_client: String,
}

impl RefreshFields {
    fn new(t: &TenantKeys, row: &RefreshRow) -> Result<Self, StoreError> {
        Ok(Self {
            key: t.refresh(&row.token_hash),
            json: encode("refresh token", row)?,
            family_set: t.family(&row.family_id),
            by_client: t.by_client(&row.client_id),
        })
    }

    /// The field/value pairs of the hash.
    fn push(&self, inv: &mut ScriptInvocation<'_>, row: &RefreshRow) {
        inv.arg("row")
            .arg(&self.json)
            .arg("exp")
            .arg(row.expires_at.to_string())
            .arg("family")
            .arg(&row.family_id)
            .arg("client")
            .arg(&row.client_id)
            .arg("fidx")
            .arg(&self.family_set)
            .arg("cidx")
            .arg(&self.by_client);
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn put_client(&self, row: &ClientRow) -> Result<(), StoreError> {
        let t = self.keys.tenant(&row.tenant);
        let json = encode("client", row)?;
        let key = t.client(&row.client_id);
        self.put(
            "put_client",
            false,
            &key,
            row.expires_at,
            &[],
            &[("row", &json)],
        )
        .await
        .map(drop)
    }

    async fn get_client(
        &self,
        tenant: &str,
        client_id: &str,
        now: u64,
    ) -> Result<Option<ClientRow>, StoreError> {
        let key = self.keys.tenant(tenant).client(client_id);
        let row: Option<ClientRow> = self.get_row("get_client", "client", &key).await?;
        Ok(row.filter(|c| c.expires_at.is_none_or(|e| now < e)))
    }

    async fn delete_client(&self, tenant: &str, client_id: &str) -> Result<bool, StoreError> {
        let t = self.keys.tenant(tenant);
        let mut inv = scripts::DELETE_CLIENT.prepare_invoke();
        inv.key(t.client(client_id))
            .key(t.by_client(client_id))
            .key(self.keys.expiry())
            .arg(client_id);
        let existed: i64 = self.script("delete_client", &inv).await?;
        Ok(existed == 1)
    }

    async fn put_user(&self, row: &UserRow) -> Result<(), StoreError> {
        let key = self.keys.tenant(&row.tenant).user(&row.username);
        let json = encode("user", row)?;
        self.put("put_user", false, &key, None, &[], &[("row", &json)])
            .await
            .map(drop)
    }

    async fn get_user(&self, tenant: &str, username: &str) -> Result<Option<UserRow>, StoreError> {
        let key = self.keys.tenant(tenant).user(username);
        self.get_row("get_user", "user", &key).await
    }

    async fn put_code(&self, row: &CodeRow) -> Result<(), StoreError> {
        let t = self.keys.tenant(&row.tenant);
        let key = t.code(&row.code_hash);
        let json = encode("authorization code", row)?;
        let exp = row.expires_at.to_string();
        let by_client = t.by_client(&row.client_id);
        let fields = [
            ("row", json.as_str()),
            ("exp", &exp),
            ("family", &row.family_id),
            ("client", &row.client_id),
        ];
        let indexes = [("cidx", by_client.as_str())];
        let written = self
            .put(
                "put_code",
                true,
                &key,
                Some(row.expires_at),
                &indexes,
                &fields,
            )
            .await?;
        if written {
            Ok(())
        } else {
            Err(StoreError::Conflict("authorization code"))
        }
    }

    async fn take_code(
        &self,
        tenant: &str,
        code_hash: &str,
        now: u64,
    ) -> Result<TakeCode, StoreError> {
        let mut inv = scripts::TAKE_CODE.prepare_invoke();
        inv.key(self.keys.tenant(tenant).code(code_hash))
            .arg(now.to_string());
        let answer: Vec<String> = self.script("take_code", &inv).await?;
        match answer.as_slice() {
            [s] if s == "missing" => Ok(TakeCode::Missing),
            [s, row] if s == "taken" => Ok(TakeCode::Taken(decode("authorization code", row)?)),
            [s, family_id, client_id] if s == "replayed" => Ok(TakeCode::Replayed {
                family_id: family_id.clone(),
                client_id: client_id.clone(),
            }),
            _ => Err(self.unexpected("take_code", answer)),
        }
    }

    async fn redeem_code(
        &self,
        tenant: &str,
        code_hash: &str,
        refresh: Option<&NewRefresh>,
        now: u64,
    ) -> Result<TakeCode, StoreError> {
        let Some(new) = refresh else {
            return self.take_code(tenant, code_hash, now).await;
        };
        let code_key = self.keys.tenant(tenant).code(code_hash);
        for _ in 0..REDEEM_ATTEMPTS {
            // The token row is made from the code row: read the code, build the token
            // (`NewRefresh::row_for`), and let one script take the code and store the token,
            // provided the code row is still the one read. The decision is the script's.
            let mut read = redis::cmd("HGET");
            read.arg(&code_key).arg("row");
            let json: Option<String> = self.cmd("redeem_code", &read).await?;
            let Some(json) = json else {
                return Ok(TakeCode::Missing);
            };
            let code: CodeRow = decode("authorization code", &json)?;
            let answer = self
                .redeem_step(&code_key, &json, &new.row_for(&code), now)
                .await?;
            match answer.as_slice() {
                [s] if s == "taken" => return Ok(TakeCode::Taken(code)),
                [s] if s == "missing" => return Ok(TakeCode::Missing),
                [s, family_id, client_id] if s == "replayed" => {
                    return Ok(TakeCode::Replayed {
                        family_id: family_id.clone(),
                        client_id: client_id.clone(),
                    });
                }
                [s] if s == "revoked" => return Err(StoreError::FamilyRevoked),
                [s] if s == "conflict" => return Err(StoreError::Conflict("refresh token")),
                [s] if s == "changed" => continue,
                _ => return Err(self.unexpected("redeem_code", answer)),
            }
        }
        Err(self.unexpected("redeem_code", "the code row changed on every attempt"))
    }

    async fn put_refresh(&self, row: &RefreshRow) -> Result<(), StoreError> {
        let t = self.keys.tenant(&row.tenant);
        let f = RefreshFields::new(&t, row)?;
        let mut inv = scripts::PUT_REFRESH.prepare_invoke();
        inv.key(&f.key)
            .key(self.keys.expiry())
            .key(t.revoked(&row.family_id))
            .key(&f.family_set)
            .key(&f.by_client);
        push_expiry(&mut inv, Some((row.expires_at, self.ttl(row.expires_at))));
        f.push(&mut inv, row);
        let answer: String = self.script("put_refresh", &inv).await?;
        match answer.as_str() {
            "ok" => Ok(()),
            "revoked" => Err(StoreError::FamilyRevoked),
            "conflict" => Err(StoreError::Conflict("refresh token")),
            _ => Err(self.unexpected("put_refresh", answer)),
        }
    }

    async fn get_refresh(
        &self,
        tenant: &str,
        token_hash: &str,
        now: u64,
    ) -> Result<Option<RefreshRow>, StoreError> {
        let key = self.keys.tenant(tenant).refresh(token_hash);
        let (json, rotated): (Option<String>, Option<String>) = self
            .cmd(
                "get_refresh",
                redis::cmd("HMGET").arg(&key).arg("row").arg("rotated"),
            )
            .await?;
        if rotated.is_some() {
            return Ok(None);
        }
        let row: Option<RefreshRow> = json.map(|j| decode("refresh token", &j)).transpose()?;
        Ok(row.filter(|r| now < r.expires_at))
    }

    async fn rotate_refresh(
        &self,
        tenant: &str,
        old_hash: &str,
        new_row: &RefreshRow,
        now: u64,
    ) -> Result<Rotate, StoreError> {
        let t = self.keys.tenant(tenant);
        let f = RefreshFields::new(&t, new_row)?;
        let (till, till_ttl) = self.revocation_until(now);
        let mut inv = scripts::ROTATE.prepare_invoke();
        inv.key(t.refresh(old_hash))
            .key(&f.key)
            .key(self.keys.expiry())
            .key(&f.family_set)
            .key(&f.by_client)
            .arg(now.to_string())
            .arg(t.base())
            .arg(if new_row.tenant == tenant { "1" } else { "0" })
            .arg(&new_row.family_id)
            .arg(&new_row.client_id)
            .arg(till.to_string())
            .arg(till_ttl.to_string());
        push_expiry(
            &mut inv,
            Some((new_row.expires_at, self.ttl(new_row.expires_at))),
        );
        f.push(&mut inv, new_row);
        let answer: Vec<String> = self.script("rotate_refresh", &inv).await?;
        match answer.as_slice() {
            [s, old] if s == "rotated" => Ok(Rotate::Rotated(decode("refresh token", old)?)),
            [s, family_id] if s == "reused" => Ok(Rotate::Reused {
                family_id: family_id.clone(),
            }),
            [s] if s == "invalid" => Ok(Rotate::Invalid),
            [s] if s == "conflict" => Err(StoreError::Conflict("refresh token")),
            [s, old] if s == "bad" => {
                let old: RefreshRow = decode("refresh token", old)?;
                check_refresh_successor(tenant, &old, new_row)?;
                // The script and `check_refresh_successor` disagree: refuse anyway.
                Err(StoreError::InvalidRow("new refresh token does not fit"))
            }
            _ => Err(self.unexpected("rotate_refresh", answer)),
        }
    }

    async fn revoke_family(
        &self,
        tenant: &str,
        family_id: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let t = self.keys.tenant(tenant);
        let (till, till_ttl) = self.revocation_until(now);
        let mut inv = scripts::REVOKE_FAMILY.prepare_invoke();
        inv.key(t.family(family_id))
            .key(t.revoked(family_id))
            .key(self.keys.expiry())
            .arg(family_id)
            .arg(till.to_string())
            .arg(till_ttl.to_string());
        let deleted: usize = self.script("revoke_family", &inv).await?;
        Ok(deleted > 0)
    }

    async fn revoke_access(
        &self,
        tenant: &str,
        jti: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let mut inv = scripts::REVOKE_ACCESS.prepare_invoke();
        inv.key(self.keys.tenant(tenant).access(jti))
            .key(self.keys.expiry());
        push_expiry(&mut inv, Some((expires_at, self.ttl(expires_at))));
        self.script::<i64>("revoke_access", &inv).await.map(drop)
    }

    async fn is_access_revoked(&self, tenant: &str, jti: &str) -> Result<bool, StoreError> {
        let key = self.keys.tenant(tenant).access(jti);
        self.cmd("is_access_revoked", redis::cmd("EXISTS").arg(key))
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
        let mut inv = scripts::CLAIM_ONCE.prepare_invoke();
        inv.key(self.keys.tenant(tenant).claim(namespace, key))
            .key(self.keys.expiry())
            .arg(now.to_string());
        push_expiry(&mut inv, Some((expires_at, self.ttl(expires_at))));
        let claimed: i64 = self.script("claim_once", &inv).await?;
        Ok(claimed == 1)
    }

    async fn put_signing_key(&self, row: &SigningKeyRow) -> Result<(), StoreError> {
        let t = self.keys.tenant(&row.tenant);
        let key = t.signing_key(&row.kid);
        let set = t.signing_keys();
        let json = encode("signing key", row)?;
        let exp = row.not_after.map(|n| n.to_string());
        let mut fields = vec![("row", json.as_str())];
        if let Some(exp) = &exp {
            fields.push(("exp", exp));
        }
        let indexes = [("kidx", set.as_str())];
        // The existence check and the write are one script: of instances racing to add a
        // key, exactly one succeeds; the others see `Conflict` and load the winner's key.
        let written = self
            .put(
                "put_signing_key",
                true,
                &key,
                row.not_after,
                &indexes,
                &fields,
            )
            .await?;
        if written {
            Ok(())
        } else {
            Err(StoreError::Conflict("signing key"))
        }
    }

    async fn list_signing_keys(
        &self,
        tenant: &str,
        now: u64,
    ) -> Result<Vec<SigningKeyRow>, StoreError> {
        let mut inv = scripts::LIST_KEYS.prepare_invoke();
        inv.key(self.keys.tenant(tenant).signing_keys());
        let flat: Vec<String> = self.script("list_signing_keys", &inv).await?;
        let mut keys = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks_exact(2) {
            let mut key: SigningKeyRow = decode("signing key", &pair[0])?;
            // `exp` is authoritative: retiring a key sets it without rewriting the JSON.
            key.not_after = match pair[1].as_str() {
                "" => None,
                n => Some(parse_u64("signing key not_after", n)?),
            };
            if key.not_after.is_none_or(|n| now < n) {
                keys.push(key);
            }
        }
        keys.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.kid.cmp(&b.kid)));
        Ok(keys)
    }

    async fn retire_signing_key(
        &self,
        tenant: &str,
        kid: &str,
        not_after: u64,
    ) -> Result<bool, StoreError> {
        let t = self.keys.tenant(tenant);
        let mut inv = scripts::RETIRE_KEY.prepare_invoke();
        inv.key(t.signing_key(kid))
            .key(self.keys.expiry())
            .key(t.signing_keys());
        push_expiry(&mut inv, Some((not_after, self.ttl(not_after))));
        let found: i64 = self.script("retire_signing_key", &inv).await?;
        Ok(found == 1)
    }

    async fn put_pending(&self, row: &PendingAuthRow) -> Result<(), StoreError> {
        let t = self.keys.tenant(&row.tenant);
        let key = t.pending(&row.id);
        let json = encode("pending request", row)?;
        let exp = row.expires_at.to_string();
        let by_client = t.by_client(&row.client_id);
        let fields = [
            ("row", json.as_str()),
            ("exp", &exp),
            ("client", &row.client_id),
        ];
        let indexes = [("cidx", by_client.as_str())];
        self.put(
            "put_pending",
            false,
            &key,
            Some(row.expires_at),
            &indexes,
            &fields,
        )
        .await
        .map(drop)
    }

    async fn get_pending(
        &self,
        tenant: &str,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthRow>, StoreError> {
        let key = self.keys.tenant(tenant).pending(id);
        let row: Option<PendingAuthRow> =
            self.get_row("get_pending", "pending request", &key).await?;
        Ok(row.filter(|p| now < p.expires_at))
    }

    async fn take_pending(
        &self,
        tenant: &str,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthRow>, StoreError> {
        let mut inv = scripts::TAKE_PENDING.prepare_invoke();
        inv.key(self.keys.tenant(tenant).pending(id))
            .key(self.keys.expiry())
            .arg(now.to_string());
        let json: Option<String> = self.script("take_pending", &inv).await?;
        json.map(|j| decode("pending request", &j)).transpose()
    }

    async fn put_consent(&self, row: &ConsentRow) -> Result<(), StoreError> {
        let t = self.keys.tenant(&row.tenant);
        let key = t.consent(&row.subject, &row.client_id);
        let json = encode("consent", row)?;
        let by_client = t.by_client(&row.client_id);
        let all = t.consents();
        let by_subject = t.by_subject(&row.subject);
        let fields = [("row", json.as_str()), ("client", &row.client_id)];
        let indexes = [
            ("cidx", by_client.as_str()),
            ("tidx", all.as_str()),
            ("sidx", by_subject.as_str()),
        ];
        self.put("put_consent", false, &key, None, &indexes, &fields)
            .await
            .map(drop)
    }

    async fn get_consent(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<ConsentRow>, StoreError> {
        let key = self.keys.tenant(tenant).consent(subject, client_id);
        self.get_row("get_consent", "consent", &key).await
    }

    async fn delete_consent(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<bool, StoreError> {
        let mut inv = scripts::DROP.prepare_invoke();
        inv.key(self.keys.tenant(tenant).consent(subject, client_id))
            .key(self.keys.expiry());
        let existed: i64 = self.script("delete_consent", &inv).await?;
        Ok(existed == 1)
    }

    async fn list_consents(
        &self,
        tenant: &str,
        subject: Option<&str>,
    ) -> Result<Vec<ConsentRow>, StoreError> {
        let t = self.keys.tenant(tenant);
        let set = match subject {
            Some(subject) => t.by_subject(subject),
            None => t.consents(),
        };
        let mut inv = scripts::LIST_ROWS.prepare_invoke();
        inv.key(set);
        let rows: Vec<String> = self.script("list_consents", &inv).await?;
        let mut consents = rows
            .iter()
            .map(|json| decode::<ConsentRow>("consent", json))
            .collect::<Result<Vec<_>, _>>()?;
        // Sets have no order: sort as the other backends do (byte order).
        consents.sort_by(|a, b| (&a.subject, &a.client_id).cmp(&(&b.subject, &b.client_id)));
        Ok(consents)
    }

    async fn revoke_client_grants(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let t = self.keys.tenant(tenant);
        let (till, till_ttl) = self.revocation_until(now);
        let mut inv = scripts::REVOKE_CLIENT_GRANTS.prepare_invoke();
        inv.key(t.by_client(client_id))
            .key(self.keys.expiry())
            .arg(t.base())
            .arg(client_id)
            .arg(subject)
            .arg(till.to_string())
            .arg(till_ttl.to_string())
            .arg(now.to_string());
        let mut families: Vec<String> = self.script("revoke_client_grants", &inv).await?;
        families.sort();
        families.dedup();
        Ok(families)
    }

    async fn put_session(&self, row: &SessionRow) -> Result<(), StoreError> {
        let key = self.keys.tenant(&row.tenant).session(&row.session_hash);
        let json = encode("session", row)?;
        let exp = row.expires_at.to_string();
        let fields = [("row", json.as_str()), ("exp", &exp)];
        self.put(
            "put_session",
            false,
            &key,
            Some(row.expires_at),
            &[],
            &fields,
        )
        .await
        .map(drop)
    }

    async fn get_session(
        &self,
        tenant: &str,
        session_hash: &str,
        now: u64,
    ) -> Result<Option<SessionRow>, StoreError> {
        let key = self.keys.tenant(tenant).session(session_hash);
        let row: Option<SessionRow> = self.get_row("get_session", "session", &key).await?;
        Ok(row.filter(|x| now < x.expires_at))
    }

    async fn delete_session(&self, tenant: &str, session_hash: &str) -> Result<bool, StoreError> {
        let mut inv = scripts::DROP.prepare_invoke();
        inv.key(self.keys.tenant(tenant).session(session_hash))
            .key(self.keys.expiry());
        let existed: i64 = self.script("delete_session", &inv).await?;
        Ok(existed == 1)
    }

    async fn put_upstream(&self, row: &UpstreamRow) -> Result<(), StoreError> {
        let key = self.keys.tenant(&row.tenant).upstream(&row.account);
        let json = encode("upstream tokens", row)?;
        let (exp, ver) = (row.expires_at.to_string(), row.version.to_string());
        let fields = [("row", json.as_str()), ("exp", &exp), ("ver", &ver)];
        self.put(
            "put_upstream",
            false,
            &key,
            Some(row.expires_at),
            &[],
            &fields,
        )
        .await
        .map(drop)
    }

    async fn get_upstream(
        &self,
        tenant: &str,
        account: &str,
        now: u64,
    ) -> Result<Option<UpstreamRow>, StoreError> {
        let key = self.keys.tenant(tenant).upstream(account);
        let row: Option<UpstreamRow> = self
            .get_row("get_upstream", "upstream tokens", &key)
            .await?;
        Ok(row.filter(|u| now < u.expires_at))
    }

    async fn swap_upstream(
        &self,
        row: &UpstreamRow,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        check_upstream_swap(row, expected_version)?;
        let json = encode("upstream tokens", row)?;
        let mut inv = scripts::SWAP_UPSTREAM.prepare_invoke();
        inv.key(self.keys.tenant(&row.tenant).upstream(&row.account))
            .key(self.keys.expiry())
            .arg(expected_version.to_string());
        push_expiry(&mut inv, Some((row.expires_at, self.ttl(row.expires_at))));
        inv.arg("row")
            .arg(json)
            .arg("exp")
            .arg(row.expires_at.to_string())
            .arg("ver")
            .arg(row.version.to_string());
        let swapped: i64 = self.script("swap_upstream", &inv).await?;
        Ok(swapped == 1)
    }

    async fn delete_upstream(
        &self,
        tenant: &str,
        account: &str,
    ) -> Result<Option<UpstreamRow>, StoreError> {
        let mut inv = scripts::TAKE_ROW.prepare_invoke();
        inv.key(self.keys.tenant(tenant).upstream(account))
            .key(self.keys.expiry());
        let json: Option<String> = self.script("delete_upstream", &inv).await?;
        json.map(|j| decode("upstream tokens", &j)).transpose()
    }

    async fn put_device(&self, row: &DeviceAuthRow) -> Result<(), StoreError> {
        let t = self.keys.tenant(&row.tenant);
        let json = encode("device authorization", row)?;
        let mut inv = scripts::PUT_DEVICE.prepare_invoke();
        inv.key(t.device(&row.device_code_hash))
            .key(t.device_user(&row.user_code_hash))
            .key(self.keys.expiry())
            .key(t.by_client(&row.client_id))
            .arg(row.created_at.to_string())
            .arg(row.expires_at.to_string())
            .arg(self.ttl(row.expires_at).to_string())
            .arg(json)
            .arg(&row.client_id)
            .arg(row.status.as_str())
            .arg(row.interval.to_string());
        let answer: String = self.script("put_device", &inv).await?;
        match answer.as_str() {
            "ok" => Ok(()),
            "conflict" => Err(StoreError::Conflict("device authorization")),
            _ => Err(self.unexpected("put_device", answer)),
        }
    }

    async fn get_device_by_user_code(
        &self,
        tenant: &str,
        user_code_hash: &str,
        now: u64,
    ) -> Result<Option<DeviceAuthRow>, StoreError> {
        let mut inv = scripts::DEVICE_BY_USER.prepare_invoke();
        inv.key(self.keys.tenant(tenant).device_user(user_code_hash))
            .arg(now.to_string());
        let fields: Option<Vec<Option<String>>> =
            self.script("get_device_by_user_code", &inv).await?;
        fields.map(|f| device_from(&f)).transpose()
    }

    async fn decide_device(
        &self,
        tenant: &str,
        device_code_hash: &str,
        decision: &DeviceDecision,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut inv = scripts::DECIDE_DEVICE.prepare_invoke();
        inv.key(self.keys.tenant(tenant).device(device_code_hash))
            .arg(now.to_string());
        match decision {
            DeviceDecision::Approve { subject, scope } => {
                inv.arg("approved").arg(subject).arg(scope);
            }
            DeviceDecision::Deny => {
                inv.arg("denied").arg("").arg("");
            }
        }
        let decided: i64 = self.script("decide_device", &inv).await?;
        Ok(decided == 1)
    }

    async fn poll_device(
        &self,
        tenant: &str,
        device_code_hash: &str,
        client_id: &str,
        now: u64,
    ) -> Result<DevicePoll, StoreError> {
        let mut inv = scripts::POLL_DEVICE.prepare_invoke();
        inv.key(self.keys.tenant(tenant).device(device_code_hash))
            .arg(now.to_string())
            .arg(client_id)
            .arg(SLOW_DOWN_STEP_SECS.to_string());
        let answer: Vec<Option<String>> = self.script("poll_device", &inv).await?;
        let interval = |v: Option<&Option<String>>| {
            parse_u64("interval", v.and_then(Option::as_deref).unwrap_or(""))
        };
        let kind = answer.first().and_then(Option::as_deref).unwrap_or("");
        Ok(match kind {
            "missing" => DevicePoll::Missing,
            "wrong_client" => DevicePoll::WrongClient,
            "expired" => DevicePoll::Expired,
            "denied" => DevicePoll::Denied,
            "consumed" => DevicePoll::Consumed,
            "pending" => DevicePoll::Pending {
                interval: interval(answer.get(1))?,
            },
            "slow_down" => DevicePoll::SlowDown {
                interval: interval(answer.get(1))?,
            },
            "approved" => {
                let row = device_from(answer.get(1..).unwrap_or_default())?;
                DevicePoll::Approved(Box::new(row))
            }
            _ => return Err(self.unexpected("poll_device", answer)),
        })
    }

    async fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        // In batches, each one script: a large backlog does not block Redis for long.
        let mut total = 0;
        loop {
            let mut inv = scripts::SWEEP.prepare_invoke();
            inv.key(self.keys.expiry())
                .arg(now.to_string())
                .arg(SWEEP_BATCH);
            let (deleted, handled): (usize, usize) = self.script("sweep", &inv).await?;
            total += deleted;
            if handled < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use mcp_auth_server::store::suite::{self, NOW};
    use mcp_auth_server::store::{Store, TakeCode, hash_secret};

    use super::*;

    /// `REDEEM_CODE` takes the code only if its row is the one the token was built from:
    /// a stale row (the code deleted and one with the same hash put meanwhile) changes
    /// nothing. Needs the test Redis (`MCP_AUTH_TEST_REDIS_URL`, by default DB 15 of the
    /// local Redis).
    #[tokio::test]
    async fn redeem_step_refuses_a_code_row_that_changed() {
        let url = std::env::var("MCP_AUTH_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/15".to_owned());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let prefix = format!("mcp-auth-test:unit-{}-{nanos}:", std::process::id());
        let store =
            RedisStore::connect_with(RedisOptions::new(url).prefix(&prefix).ttl_clock(|| NOW))
                .await
                .unwrap();
        let code = suite::code("t1", "code-1", "fam-1");
        store.put_code(&code).await.unwrap();
        let mut stale = code.clone();
        stale.subject = "mallory".into();
        let token = suite::new_refresh("rt-1").row_for(&stale);
        let code_key = store.keys.tenant("t1").code(&code.code_hash);
        let stale_json = encode("authorization code", &stale).unwrap();
        let answer = store
            .redeem_step(&code_key, &stale_json, &token, NOW)
            .await
            .unwrap();
        assert_eq!(answer, ["changed"]);
        let stored = store
            .get_refresh("t1", &hash_secret("rt-1"), NOW)
            .await
            .unwrap();
        assert_eq!(stored, None);
        // The code is unspent, and `redeem_code` (reading the row afresh) takes it.
        let new = suite::new_refresh("rt-2");
        let got = store
            .redeem_code("t1", &code.code_hash, Some(&new), NOW)
            .await
            .unwrap();
        assert_eq!(got, TakeCode::Taken(code.clone()));
        let stored = store.get_refresh("t1", &new.token_hash, NOW).await.unwrap();
        assert_eq!(stored, Some(new.row_for(&code)));

        let keys: Vec<String> = store
            .cmd("test", redis::cmd("KEYS").arg(format!("{prefix}*")))
            .await
            .unwrap();
        let _: i64 = store
            .cmd("test", redis::cmd("DEL").arg(&keys))
            .await
            .unwrap();
    }
}
