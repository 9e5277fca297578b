//! An in-process [`Store`]: for tests, examples and single-process demos. Nothing survives
//! a restart.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::{
    ClientRow, CodeRow, ConsentRow, DeviceAuthRow, DeviceDecision, DevicePoll, NewRefresh,
    PendingAuthRow, REVOKED_FAMILY_RETENTION_SECS, RefreshRow, Rotate, SessionRow, SigningKeyRow,
    Store, StoreError, TakeCode, UpstreamRow, UserRow, check_refresh_successor,
    check_upstream_swap, device_decide_step, device_poll_step,
};

/// `(tenant, id)`: every map is keyed by tenant first, so no lookup can cross tenants.
type Key = (String, String);

fn key(tenant: &str, id: &str) -> Key {
    (tenant.to_owned(), id.to_owned())
}

/// A [`Store`] in memory.
///
/// All tables sit behind one `std::sync::Mutex`: every operation is a few map lookups with
/// no `.await` while the lock is held, so a blocking mutex is cheaper than an async one and
/// cannot be held across a suspension point; one lock for all tables makes the compound
/// operations (rotation, family revocation, client deletion) atomic for free.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    clients: HashMap<Key, ClientRow>,
    users: HashMap<Key, UserRow>,
    codes: HashMap<Key, Code>,
    refresh: HashMap<Key, Refresh>,
    /// `(tenant, family_id)` -> remembered until.
    revoked_families: HashMap<Key, u64>,
    /// `(tenant, jti)` -> expires at.
    revoked_access: HashMap<Key, u64>,
    /// `(tenant, kid)`.
    keys: HashMap<Key, SigningKeyRow>,
    pending: HashMap<Key, PendingAuthRow>,
    /// `(tenant, subject, client_id)`.
    consents: HashMap<(String, String, String), ConsentRow>,
    /// `(tenant, session_hash)`.
    sessions: HashMap<Key, SessionRow>,
    /// `(tenant, account)`.
    upstream: HashMap<Key, UpstreamRow>,
    /// `(tenant, device_code_hash)`.
    devices: HashMap<Key, DeviceAuthRow>,
    /// `(tenant, user_code_hash)` -> device_code_hash.
    user_codes: HashMap<Key, String>,
    /// `(tenant, namespace, key)` -> claimed until.
    claims: HashMap<(String, String, String), u64>,
}

#[derive(Debug)]
struct Code {
    row: CodeRow,
    spent: bool,
}

#[derive(Debug)]
struct Refresh {
    row: RefreshRow,
    rotated_at: Option<u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves at worst one half-applied operation; a
        // test store should keep answering rather than poison every later test.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Tables {
    fn revoke_family(&mut self, tenant: &str, family_id: &str, now: u64) -> usize {
        let before = self.refresh.len();
        self.refresh
            .retain(|(t, _), r| !(t == tenant && r.row.family_id == family_id));
        let until = now.saturating_add(REVOKED_FAMILY_RETENTION_SECS);
        let remembered = self
            .revoked_families
            .entry(key(tenant, family_id))
            .or_insert(until);
        *remembered = (*remembered).max(until);
        before - self.refresh.len()
    }
}

/// Removes the entries `expired` says are, returning how many.
fn sweep_map<K, V>(map: &mut HashMap<K, V>, expired: impl Fn(&V) -> bool) -> usize {
    let before = map.len();
    map.retain(|_, v| !expired(v));
    before - map.len()
}

#[async_trait]
impl Store for MemoryStore {
    async fn put_client(&self, row: &ClientRow) -> Result<(), StoreError> {
        self.lock()
            .clients
            .insert(key(&row.tenant, &row.client_id), row.clone());
        Ok(())
    }

    async fn get_client(
        &self,
        tenant: &str,
        client_id: &str,
        now: u64,
    ) -> Result<Option<ClientRow>, StoreError> {
        Ok(self
            .lock()
            .clients
            .get(&key(tenant, client_id))
            .filter(|c| c.expires_at.is_none_or(|e| now < e))
            .cloned())
    }

    async fn delete_client(&self, tenant: &str, client_id: &str) -> Result<bool, StoreError> {
        let mut t = self.lock();
        let t = &mut *t;
        let existed = t.clients.remove(&key(tenant, client_id)).is_some();
        let ours = |t: &str, c: &str| t == tenant && c == client_id;
        t.codes.retain(|(t, _), c| !ours(t, &c.row.client_id));
        t.refresh.retain(|(t, _), r| !ours(t, &r.row.client_id));
        t.pending.retain(|(t, _), p| !ours(t, &p.client_id));
        t.consents.retain(|(t, _, c), _| !ours(t, c));
        t.devices.retain(|(t, _), d| !ours(t, &d.client_id));
        let devices = &t.devices;
        t.user_codes
            .retain(|(t, _), dev| devices.contains_key(&key(t, dev)));
        Ok(existed)
    }

    async fn put_user(&self, row: &UserRow) -> Result<(), StoreError> {
        self.lock()
            .users
            .insert(key(&row.tenant, &row.username), row.clone());
        Ok(())
    }

    async fn get_user(&self, tenant: &str, username: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(self.lock().users.get(&key(tenant, username)).cloned())
    }

    async fn put_code(&self, row: &CodeRow) -> Result<(), StoreError> {
        let mut t = self.lock();
        let k = key(&row.tenant, &row.code_hash);
        if t.codes.contains_key(&k) {
            return Err(StoreError::Conflict("authorization code"));
        }
        t.codes.insert(
            k,
            Code {
                row: row.clone(),
                spent: false,
            },
        );
        Ok(())
    }

    async fn take_code(
        &self,
        tenant: &str,
        code_hash: &str,
        now: u64,
    ) -> Result<TakeCode, StoreError> {
        self.redeem_code(tenant, code_hash, None, now).await
    }

    async fn redeem_code(
        &self,
        tenant: &str,
        code_hash: &str,
        refresh: Option<&NewRefresh>,
        now: u64,
    ) -> Result<TakeCode, StoreError> {
        let mut t = self.lock();
        let Some(code) = t.codes.get(&key(tenant, code_hash)) else {
            return Ok(TakeCode::Missing);
        };
        if now >= code.row.expires_at {
            return Ok(TakeCode::Missing);
        }
        if code.spent {
            return Ok(TakeCode::Replayed {
                family_id: code.row.family_id.clone(),
                client_id: code.row.client_id.clone(),
            });
        }
        let row = code.row.clone();
        // Check that the token can go in before spending the code: all or nothing.
        let token = refresh.map(|n| n.row_for(&row));
        if let Some(tok) = &token {
            if t.revoked_families
                .contains_key(&key(&tok.tenant, &tok.family_id))
            {
                return Err(StoreError::FamilyRevoked);
            }
            if t.refresh.contains_key(&key(&tok.tenant, &tok.token_hash)) {
                return Err(StoreError::Conflict("refresh token"));
            }
        }
        if let Some(code) = t.codes.get_mut(&key(tenant, code_hash)) {
            code.spent = true;
        }
        if let Some(tok) = token {
            t.refresh.insert(
                key(&tok.tenant, &tok.token_hash),
                Refresh {
                    row: tok,
                    rotated_at: None,
                },
            );
        }
        Ok(TakeCode::Taken(row))
    }

    async fn put_refresh(&self, row: &RefreshRow) -> Result<(), StoreError> {
        let mut t = self.lock();
        if t.revoked_families
            .contains_key(&key(&row.tenant, &row.family_id))
        {
            return Err(StoreError::FamilyRevoked);
        }
        let k = key(&row.tenant, &row.token_hash);
        if t.refresh.contains_key(&k) {
            return Err(StoreError::Conflict("refresh token"));
        }
        t.refresh.insert(
            k,
            Refresh {
                row: row.clone(),
                rotated_at: None,
            },
        );
        Ok(())
    }

    async fn get_refresh(
        &self,
        tenant: &str,
        token_hash: &str,
        now: u64,
    ) -> Result<Option<RefreshRow>, StoreError> {
        Ok(self
            .lock()
            .refresh
            .get(&key(tenant, token_hash))
            .filter(|r| r.rotated_at.is_none() && now < r.row.expires_at)
            .map(|r| r.row.clone()))
    }

    async fn rotate_refresh(
        &self,
        tenant: &str,
        old_hash: &str,
        new_row: &RefreshRow,
        now: u64,
    ) -> Result<Rotate, StoreError> {
        let mut t = self.lock();
        let old_key = key(tenant, old_hash);
        let Some(old) = t.refresh.get(&old_key) else {
            return Ok(Rotate::Invalid);
        };
        if now >= old.row.expires_at {
            return Ok(Rotate::Invalid);
        }
        if old.rotated_at.is_some() {
            let family_id = old.row.family_id.clone();
            t.revoke_family(tenant, &family_id, now);
            return Ok(Rotate::Reused { family_id });
        }
        check_refresh_successor(tenant, &old.row, new_row)?;
        let new_key = key(tenant, &new_row.token_hash);
        if t.refresh.contains_key(&new_key) {
            return Err(StoreError::Conflict("refresh token"));
        }
        let Some(old) = t.refresh.get_mut(&old_key) else {
            return Ok(Rotate::Invalid);
        };
        old.rotated_at = Some(now);
        let old_row = old.row.clone();
        t.refresh.insert(
            new_key,
            Refresh {
                row: new_row.clone(),
                rotated_at: None,
            },
        );
        Ok(Rotate::Rotated(old_row))
    }

    async fn revoke_family(
        &self,
        tenant: &str,
        family_id: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.lock().revoke_family(tenant, family_id, now) > 0)
    }

    async fn revoke_access(
        &self,
        tenant: &str,
        jti: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let mut t = self.lock();
        let e = t
            .revoked_access
            .entry(key(tenant, jti))
            .or_insert(expires_at);
        *e = (*e).max(expires_at);
        Ok(())
    }

    async fn is_access_revoked(&self, tenant: &str, jti: &str) -> Result<bool, StoreError> {
        Ok(self.lock().revoked_access.contains_key(&key(tenant, jti)))
    }

    async fn claim_once(
        &self,
        tenant: &str,
        namespace: &str,
        key: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut t = self.lock();
        let slot = t
            .claims
            .entry((tenant.to_owned(), namespace.to_owned(), key.to_owned()))
            .or_insert(0);
        if now < *slot {
            return Ok(false);
        }
        *slot = expires_at;
        Ok(true)
    }

    async fn put_signing_key(&self, row: &SigningKeyRow) -> Result<(), StoreError> {
        let mut t = self.lock();
        let k = key(&row.tenant, &row.kid);
        if t.keys.contains_key(&k) {
            return Err(StoreError::Conflict("signing key"));
        }
        t.keys.insert(k, row.clone());
        Ok(())
    }

    async fn list_signing_keys(
        &self,
        tenant: &str,
        now: u64,
    ) -> Result<Vec<SigningKeyRow>, StoreError> {
        let t = self.lock();
        let mut keys: Vec<SigningKeyRow> = t
            .keys
            .iter()
            .filter(|((t, _), k)| t == tenant && k.not_after.is_none_or(|n| now < n))
            .map(|(_, k)| k.clone())
            .collect();
        keys.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.kid.cmp(&b.kid)));
        Ok(keys)
    }

    async fn retire_signing_key(
        &self,
        tenant: &str,
        kid: &str,
        not_after: u64,
    ) -> Result<bool, StoreError> {
        match self.lock().keys.get_mut(&key(tenant, kid)) {
            Some(k) => {
                k.not_after = Some(not_after);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn put_pending(&self, row: &PendingAuthRow) -> Result<(), StoreError> {
        self.lock()
            .pending
            .insert(key(&row.tenant, &row.id), row.clone());
        Ok(())
    }

    async fn get_pending(
        &self,
        tenant: &str,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthRow>, StoreError> {
        Ok(self
            .lock()
            .pending
            .get(&key(tenant, id))
            .filter(|p| now < p.expires_at)
            .cloned())
    }

    async fn take_pending(
        &self,
        tenant: &str,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthRow>, StoreError> {
        Ok(self
            .lock()
            .pending
            .remove(&key(tenant, id))
            .filter(|p| now < p.expires_at))
    }

    async fn put_consent(&self, row: &ConsentRow) -> Result<(), StoreError> {
        self.lock().consents.insert(
            (
                row.tenant.clone(),
                row.subject.clone(),
                row.client_id.clone(),
            ),
            row.clone(),
        );
        Ok(())
    }

    async fn get_consent(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<ConsentRow>, StoreError> {
        let k = (tenant.to_owned(), subject.to_owned(), client_id.to_owned());
        Ok(self.lock().consents.get(&k).cloned())
    }

    async fn delete_consent(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<bool, StoreError> {
        let k = (tenant.to_owned(), subject.to_owned(), client_id.to_owned());
        Ok(self.lock().consents.remove(&k).is_some())
    }

    async fn list_consents(
        &self,
        tenant: &str,
        subject: Option<&str>,
    ) -> Result<Vec<ConsentRow>, StoreError> {
        let mut rows: Vec<ConsentRow> = self
            .lock()
            .consents
            .iter()
            .filter(|((t, s, _), _)| t == tenant && subject.is_none_or(|x| x == s))
            .map(|(_, r)| r.clone())
            .collect();
        rows.sort_by(|a, b| (&a.subject, &a.client_id).cmp(&(&b.subject, &b.client_id)));
        Ok(rows)
    }

    async fn revoke_client_grants(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut t = self.lock();
        // Codes not redeemed yet go first: a later redemption finds none.
        let pending: Vec<(Key, String)> = t
            .codes
            .iter()
            .filter(|((tn, _), c)| {
                tn == tenant
                    && !c.spent
                    && now < c.row.expires_at
                    && c.row.subject == subject
                    && c.row.client_id == client_id
            })
            .map(|(k, c)| (k.clone(), c.row.family_id.clone()))
            .collect();
        let mut families = Vec::new();
        for (k, family) in pending {
            t.codes.remove(&k);
            families.push(family);
        }
        families.extend(
            t.refresh
                .iter()
                .filter(|((tn, _), r)| {
                    tn == tenant && r.row.subject == subject && r.row.client_id == client_id
                })
                .map(|(_, r)| r.row.family_id.clone()),
        );
        families.sort();
        families.dedup();
        for f in &families {
            t.revoke_family(tenant, f, now);
        }
        Ok(families)
    }

    async fn put_session(&self, row: &SessionRow) -> Result<(), StoreError> {
        self.lock()
            .sessions
            .insert(key(&row.tenant, &row.session_hash), row.clone());
        Ok(())
    }

    async fn get_session(
        &self,
        tenant: &str,
        session_hash: &str,
        now: u64,
    ) -> Result<Option<SessionRow>, StoreError> {
        Ok(self
            .lock()
            .sessions
            .get(&key(tenant, session_hash))
            .filter(|s| now < s.expires_at)
            .cloned())
    }

    async fn delete_session(&self, tenant: &str, session_hash: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .sessions
            .remove(&key(tenant, session_hash))
            .is_some())
    }

    async fn put_upstream(&self, row: &UpstreamRow) -> Result<(), StoreError> {
        self.lock()
            .upstream
            .insert(key(&row.tenant, &row.account), row.clone());
        Ok(())
    }

    async fn get_upstream(
        &self,
        tenant: &str,
        account: &str,
        now: u64,
    ) -> Result<Option<UpstreamRow>, StoreError> {
        Ok(self
            .lock()
            .upstream
            .get(&key(tenant, account))
            .filter(|u| now < u.expires_at)
            .cloned())
    }

    async fn swap_upstream(
        &self,
        row: &UpstreamRow,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        check_upstream_swap(row, expected_version)?;
        let mut t = self.lock();
        match t.upstream.get_mut(&key(&row.tenant, &row.account)) {
            Some(cur) if cur.version == expected_version => {
                *cur = row.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete_upstream(
        &self,
        tenant: &str,
        account: &str,
    ) -> Result<Option<UpstreamRow>, StoreError> {
        Ok(self.lock().upstream.remove(&key(tenant, account)))
    }

    async fn put_device(&self, row: &DeviceAuthRow) -> Result<(), StoreError> {
        let mut t = self.lock();
        let dev_key = key(&row.tenant, &row.device_code_hash);
        let user_key = key(&row.tenant, &row.user_code_hash);
        if t.devices.contains_key(&dev_key) {
            return Err(StoreError::Conflict("device code"));
        }
        // An unexpired request holds its user code; an expired one gives it up.
        let holder = t
            .user_codes
            .get(&user_key)
            .and_then(|dev| t.devices.get(&key(&row.tenant, dev)));
        if let Some(other) = holder {
            if row.created_at < other.expires_at {
                return Err(StoreError::Conflict("user code"));
            }
            let old = key(&row.tenant, &other.device_code_hash);
            t.devices.remove(&old);
        }
        t.user_codes.insert(user_key, row.device_code_hash.clone());
        t.devices.insert(dev_key, row.clone());
        Ok(())
    }

    async fn get_device_by_user_code(
        &self,
        tenant: &str,
        user_code_hash: &str,
        now: u64,
    ) -> Result<Option<DeviceAuthRow>, StoreError> {
        let t = self.lock();
        Ok(t.user_codes
            .get(&key(tenant, user_code_hash))
            .and_then(|dev| t.devices.get(&key(tenant, dev)))
            .filter(|d| now < d.expires_at)
            .cloned())
    }

    async fn decide_device(
        &self,
        tenant: &str,
        device_code_hash: &str,
        decision: &DeviceDecision,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut t = self.lock();
        let Some(row) = t.devices.get_mut(&key(tenant, device_code_hash)) else {
            return Ok(false);
        };
        match device_decide_step(row, decision, now) {
            Some(next) => {
                *row = next;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn poll_device(
        &self,
        tenant: &str,
        device_code_hash: &str,
        client_id: &str,
        now: u64,
    ) -> Result<DevicePoll, StoreError> {
        let mut t = self.lock();
        let Some(row) = t.devices.get_mut(&key(tenant, device_code_hash)) else {
            return Ok(DevicePoll::Missing);
        };
        let (answer, next) = device_poll_step(row, client_id, now);
        if let Some(next) = next {
            *row = next;
        }
        Ok(answer)
    }

    async fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        let mut t = self.lock();
        let t = &mut *t;
        let devices = sweep_map(&mut t.devices, |d| now >= d.expires_at);
        let live = &t.devices;
        t.user_codes
            .retain(|(tn, _), dev| live.contains_key(&key(tn, dev)));
        Ok(devices
            + sweep_map(&mut t.clients, |c| c.expires_at.is_some_and(|e| now >= e))
            + sweep_map(&mut t.codes, |c| now >= c.row.expires_at)
            + sweep_map(&mut t.refresh, |r| now >= r.row.expires_at)
            + sweep_map(&mut t.revoked_families, |until| now >= *until)
            + sweep_map(&mut t.revoked_access, |e| now >= *e)
            + sweep_map(&mut t.keys, |k| k.not_after.is_some_and(|n| now >= n))
            + sweep_map(&mut t.pending, |p| now >= p.expires_at)
            + sweep_map(&mut t.sessions, |x| now >= x.expires_at)
            + sweep_map(&mut t.upstream, |u| now >= u.expires_at)
            + sweep_map(&mut t.claims, |until| now >= *until))
    }
}

#[cfg(test)]
mod tests {
    crate::store_suite!(async || crate::store::MemoryStore::new());
}
