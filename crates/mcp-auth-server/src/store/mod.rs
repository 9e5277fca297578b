//! Storage for the authorization server: the [`Store`] trait, its rows, and
//! [`MemoryStore`].
//!
//! # Rules every backend keeps
//! - **Tenants are isolated.** Every call names a tenant, every key includes it, and no call
//!   can read, change or delete another tenant's row.
//! - **Secrets are stored as hashes.** The server hashes every code, token and secret with
//!   [`hash_secret`] before it reaches the store, and looks rows up by that hash.
//! - **Expired rows are missing.** A row is expired once `now >= expires_at`; reads treat it
//!   as absent, whether or not [`Store::sweep`] has deleted it yet.
//! - **Single use is atomic.** [`Store::take_code`], [`Store::rotate_refresh`],
//!   [`Store::take_pending`] and [`Store::claim_once`] each decide "first or not" inside the backend in one step, so
//!   two concurrent requests can never both win, even across processes sharing a database.
//!   So do the device authorization grant's [`Store::decide_device`] and
//!   [`Store::poll_device`] (RFC 8628).
//!
//! # Token families
//! An authorization code starts a *family* ([`CodeRow::family_id`]). Every refresh token
//! issued from the code, and every token rotated from those, carries the family ID, so one
//! call ([`Store::revoke_family`]) revokes all of them when a code is replayed (RFC 6749
//! §4.1.2, §10.5) or a rotated refresh token is reused (RFC 9700 §4.14.2).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

mod memory;
mod rows;
#[cfg(any(test, feature = "store-test-suite"))]
pub mod suite;

pub use memory::MemoryStore;
pub use rows::{
    ClientRow, CodeRow, ConsentRow, DeviceAuthRow, DeviceStatus, PendingAuthRow, RefreshRow,
    RegistrationKind, SessionRow, SigningKeyRow, UpstreamRow, UserRow,
};

/// How long, in seconds, a revoked family stays remembered after [`Store::revoke_family`],
/// so that a refresh token the server is about to store for it (a code exchange racing the
/// replay that revoked the family) is refused with [`StoreError::FamilyRevoked`].
pub const REVOKED_FAMILY_RETENTION_SECS: u64 = 24 * 60 * 60;

/// The storage key for a secret: SHA-256 of its UTF-8 bytes, base64url without padding
/// (43 characters), after the secret's time prefix and its `.` when it has one.
///
/// Codes, refresh tokens, client secrets, registration access tokens and CSRF tokens are
/// high-entropy random strings, so a fast unsalted hash is enough to make a leaked database
/// useless to an attacker, while still allowing lookup by value. Passwords are not: they are
/// hashed with Argon2id into [`UserRow::password_hash`] instead.
///
/// The server's secrets begin with the time they were made ([`time_prefix`]: 12 hex digits
/// of milliseconds and a `.`), and the key keeps that prefix in front of the hash. Keys made
/// together then sort together, so a store's index takes new keys at its end rather than at
/// random places: a B-tree writes a few pages per batch of inserts instead of one page per
/// insert. The prefix says only when a secret was made; the hash still covers the whole
/// secret, prefix included, so a changed prefix is a different secret. Anything without
/// such a prefix (a client's `jti`, a secret from an older release) hashes as before.
pub fn hash_secret(secret: &str) -> String {
    let digest = URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()));
    match secret.get(..TIME_PREFIX_LEN) {
        Some(prefix) if is_time_prefix(prefix) => format!("{prefix}{digest}"),
        _ => digest,
    }
}

/// Length of [`time_prefix`]: 12 hex digits and a `.`.
pub const TIME_PREFIX_LEN: usize = 13;

/// `{milliseconds since the Unix epoch, 12 lowercase hex digits}.`: what the server's random
/// secrets begin with, so that their storage keys ([`hash_secret`]) sort by creation time.
pub fn time_prefix() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    // 12 hex digits last until the year 10889; wrap rather than grow past them.
    format!("{:012x}.", ms & 0xffff_ffff_ffff)
}

fn is_time_prefix(p: &str) -> bool {
    let b = p.as_bytes();
    b.len() == TIME_PREFIX_LEN
        && b[TIME_PREFIX_LEN - 1] == b'.'
        && b[..TIME_PREFIX_LEN - 1]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Seconds since the Unix epoch, from the system clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What redeeming an authorization code found.
#[derive(Debug, Clone, PartialEq)]
pub enum TakeCode {
    /// First redemption: the code is now spent, here is what it was issued for.
    Taken(CodeRow),
    /// The code was already redeemed. RFC 6749 §4.1.2: the server must deny the request and
    /// should revoke every token issued from the code: call [`Store::revoke_family`] with
    /// `family_id`.
    Replayed {
        /// The family the code started.
        family_id: String,
        /// The client the code was issued to.
        client_id: String,
    },
    /// No such code for the tenant, or it expired.
    Missing,
}

/// The refresh token to store with a redeemed code ([`Store::redeem_code`]): the rest of
/// its row (tenant, family, client, subject, scope) comes from the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefresh {
    /// Hash of the new refresh token ([`hash_secret`]).
    pub token_hash: String,
    /// The resource the grant is for when the code names none (a `resource` sent only at
    /// the token endpoint, RFC 8707 §2.2); ignored when the code names one.
    pub resource: Option<String>,
    /// When it expires.
    pub expires_at: u64,
    /// When it is issued.
    pub created_at: u64,
}

impl NewRefresh {
    /// The refresh token row this makes for `code`: the first of the code's family.
    pub fn row_for(&self, code: &CodeRow) -> RefreshRow {
        RefreshRow {
            tenant: code.tenant.clone(),
            token_hash: self.token_hash.clone(),
            family_id: code.family_id.clone(),
            client_id: code.client_id.clone(),
            subject: code.subject.clone(),
            scope: code.scope.clone(),
            resource: code.resource.clone().or_else(|| self.resource.clone()),
            expires_at: self.expires_at,
            created_at: self.created_at,
        }
    }
}

/// What rotating a refresh token found.
#[derive(Debug, Clone, PartialEq)]
pub enum Rotate {
    /// The old token was current: it is now rotated (unusable) and the new one is stored.
    /// Carries the old row.
    Rotated(RefreshRow),
    /// The old token had already been rotated: someone is replaying it. RFC 9700 §4.14.2 /
    /// OAuth 2.1 §4.3.1: the whole family, including the newest token, is now revoked.
    Reused {
        /// The revoked family.
        family_id: String,
    },
    /// No such token for the tenant, or it expired, or its family was revoked.
    Invalid,
}

/// How much RFC 8628 §3.5 raises a device's polling interval on every `slow_down`: "the
/// interval MUST be increased by 5 seconds for this and all subsequent requests".
pub const SLOW_DOWN_STEP_SECS: u64 = 5;

/// The user's answer on the device verification page ([`Store::decide_device`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceDecision {
    /// The user approved: tokens go to `subject`, for `scope`.
    Approve {
        /// The user.
        subject: String,
        /// The scope granted, space-separated.
        scope: String,
    },
    /// The user denied.
    Deny,
}

/// What one poll of the token endpoint with a device code found ([`Store::poll_device`]),
/// mapped to RFC 8628 §3.5 errors by the server.
#[derive(Debug, Clone, PartialEq)]
pub enum DevicePoll {
    /// Not decided yet (`authorization_pending`); the poll was recorded. Carries the
    /// current interval.
    Pending {
        /// Seconds the device must wait between polls.
        interval: u64,
    },
    /// Polled sooner than `interval` after the last poll (`slow_down`): the interval is now
    /// [`SLOW_DOWN_STEP_SECS`] longer, and the poll was recorded.
    SlowDown {
        /// The new interval.
        interval: u64,
    },
    /// The user denied (`access_denied`).
    Denied,
    /// The request expired but is still stored (`expired_token`); once swept it is
    /// [`DevicePoll::Missing`].
    Expired,
    /// The user approved and this poll consumed the grant: of concurrent polls exactly one
    /// gets it. Carries the row (subject and granted scope set).
    Approved(Box<DeviceAuthRow>),
    /// The grant was already handed out to an earlier poll.
    Consumed,
    /// The device code belongs to another client; nothing was changed.
    WrongClient,
    /// No such device code for the tenant.
    Missing,
}

/// One poll of the device code `row` by `client_id` at `now`, as every backend decides it
/// (inside its own atomic step): what to answer, and the row to write back, if it changes.
///
/// The interval is enforced only while the request is pending (RFC 8628 §3.5); an
/// approved request is handed out at once, once.
pub fn device_poll_step(
    row: &DeviceAuthRow,
    client_id: &str,
    now: u64,
) -> (DevicePoll, Option<DeviceAuthRow>) {
    if row.client_id != client_id {
        return (DevicePoll::WrongClient, None);
    }
    if now >= row.expires_at {
        return (DevicePoll::Expired, None);
    }
    match row.status {
        DeviceStatus::Pending => {
            let mut next = row.clone();
            next.last_poll = Some(now);
            let too_soon = row
                .last_poll
                .is_some_and(|last| now < last.saturating_add(row.interval));
            if too_soon {
                next.interval = row.interval.saturating_add(SLOW_DOWN_STEP_SECS);
                (
                    DevicePoll::SlowDown {
                        interval: next.interval,
                    },
                    Some(next),
                )
            } else {
                (
                    DevicePoll::Pending {
                        interval: row.interval,
                    },
                    Some(next),
                )
            }
        }
        DeviceStatus::Approved => {
            let mut next = row.clone();
            next.status = DeviceStatus::Consumed;
            next.last_poll = Some(now);
            (DevicePoll::Approved(Box::new(row.clone())), Some(next))
        }
        DeviceStatus::Denied => (DevicePoll::Denied, None),
        DeviceStatus::Consumed => (DevicePoll::Consumed, None),
    }
}

/// The row [`Store::decide_device`] writes for `decision` on `row`, or `None` if the row
/// is not pending or has expired (a decision is taken once, only from pending).
pub fn device_decide_step(
    row: &DeviceAuthRow,
    decision: &DeviceDecision,
    now: u64,
) -> Option<DeviceAuthRow> {
    if row.status != DeviceStatus::Pending || now >= row.expires_at {
        return None;
    }
    let mut next = row.clone();
    match decision {
        DeviceDecision::Approve { subject, scope } => {
            next.status = DeviceStatus::Approved;
            next.subject = Some(subject.clone());
            next.granted_scope = Some(scope.clone());
        }
        DeviceDecision::Deny => next.status = DeviceStatus::Denied,
    }
    Some(next)
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A row with the same key already exists (a hash collision means a caller reused a
    /// secret, which is a bug).
    #[error("a {0} with the same key already exists")]
    Conflict(&'static str),
    /// The refresh token's family was revoked; the token was not stored.
    #[error("the token family was revoked")]
    FamilyRevoked,
    /// A row given to the store contradicts the call (wrong tenant, wrong family, ...).
    #[error("invalid row: {0}")]
    InvalidRow(&'static str),
    /// A stored value could not be decoded.
    #[error("stored {what} is corrupt")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Why it did not decode.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend failed (I/O, connection, database error). The message names the cause
    /// (never a secret: the store only ever sees hashes of secrets).
    #[error("storage backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Everything the authorization server keeps, per tenant.
///
/// Every method that reads takes `now` (seconds since the Unix epoch) rather than reading a
/// clock, so expiry is tested without sleeping. See the [module docs](self) for the rules
/// every implementation keeps; the `suite` module (cargo feature `store-test-suite`) checks
/// them.
#[async_trait]
pub trait Store: Send + Sync {
    // ---- clients ----

    /// Stores a client, replacing any client with the same ID in the tenant (registration
    /// update, RFC 7592 §2.2).
    async fn put_client(&self, row: &ClientRow) -> Result<(), StoreError>;

    /// The client, unless missing or expired.
    async fn get_client(
        &self,
        tenant: &str,
        client_id: &str,
        now: u64,
    ) -> Result<Option<ClientRow>, StoreError>;

    /// Deletes a client and, as RFC 7592 §2.3 asks, everything issued to it: its codes,
    /// refresh tokens, pending requests, device authorizations and consents. Returns
    /// whether the client existed.
    async fn delete_client(&self, tenant: &str, client_id: &str) -> Result<bool, StoreError>;

    // ---- users ----

    /// Stores a user, replacing any user with the same name in the tenant.
    async fn put_user(&self, row: &UserRow) -> Result<(), StoreError>;

    /// The user, if any.
    async fn get_user(&self, tenant: &str, username: &str) -> Result<Option<UserRow>, StoreError>;

    // ---- authorization codes ----

    /// Stores a new authorization code. [`StoreError::Conflict`] if its hash exists.
    async fn put_code(&self, row: &CodeRow) -> Result<(), StoreError>;

    /// Redeems a code, atomically. RFC 6749 §4.1.2: "The client MUST NOT use the
    /// authorization code more than once. If an authorization code is used more than once,
    /// the authorization server MUST deny the request and SHOULD revoke (when possible) all
    /// tokens previously issued based on that authorization code."
    ///
    /// The first call returns [`TakeCode::Taken`]; the code is then kept as a spent
    /// tombstone until it expires, so every later call returns [`TakeCode::Replayed`] with
    /// the family to revoke. Of any number of concurrent callers exactly one gets `Taken`.
    /// Unknown or expired codes are [`TakeCode::Missing`].
    async fn take_code(
        &self,
        tenant: &str,
        code_hash: &str,
        now: u64,
    ) -> Result<TakeCode, StoreError>;

    /// Redeems a code and stores the first refresh token of its family, as one atomic step:
    /// [`take_code`](Self::take_code)'s semantics, and on [`TakeCode::Taken`] the row
    /// [`NewRefresh::row_for`] makes from the code is stored too (when `refresh` is given).
    ///
    /// Done in one step, no replay of the code can come between the redemption and the
    /// token: the replay then finds the token and revokes it with the family (RFC 6749
    /// §4.1.2), so of concurrent redemptions exactly one is answered with tokens, and a
    /// crash never leaves a spent code without its grant. Nothing changes if the token
    /// cannot be stored ([`StoreError::Conflict`], [`StoreError::FamilyRevoked`]).
    ///
    /// The provided implementation calls `take_code` then `put_refresh`, which is not
    /// atomic; every backend of this workspace overrides it.
    async fn redeem_code(
        &self,
        tenant: &str,
        code_hash: &str,
        refresh: Option<&NewRefresh>,
        now: u64,
    ) -> Result<TakeCode, StoreError> {
        let taken = self.take_code(tenant, code_hash, now).await?;
        if let (TakeCode::Taken(code), Some(new)) = (&taken, refresh) {
            self.put_refresh(&new.row_for(code)).await?;
        }
        Ok(taken)
    }

    // ---- refresh tokens ----

    /// Stores a new refresh token (the first of a family, from a code exchange).
    /// [`StoreError::FamilyRevoked`] if its family was revoked (the code was replayed
    /// meanwhile) and that is still remembered: for at least
    /// [`REVOKED_FAMILY_RETENTION_SECS`], until a sweep forgets it;
    /// [`StoreError::Conflict`] if its hash exists.
    async fn put_refresh(&self, row: &RefreshRow) -> Result<(), StoreError>;

    /// The refresh token if it is current: not rotated, revoked or expired.
    async fn get_refresh(
        &self,
        tenant: &str,
        token_hash: &str,
        now: u64,
    ) -> Result<Option<RefreshRow>, StoreError>;

    /// Rotates a refresh token, atomically (OAuth 2.1 §4.3.1; RFC 9700 §4.14.2: "the
    /// authorization server ... issues a new refresh token with every access token refresh
    /// response ... If a refresh token is compromised and subsequently used by both the
    /// attacker and the legitimate client, one of them will present an invalidated refresh
    /// token, which will inform the authorization server of the breach").
    ///
    /// - `old_hash` current: it is marked rotated (kept as a tombstone until its own expiry,
    ///   to recognise reuse), `new_row` is stored, and [`Rotate::Rotated`] carries the old
    ///   row. `new_row` must name the same tenant, family and client as the old row, else
    ///   [`StoreError::InvalidRow`] and nothing changes.
    /// - `old_hash` already rotated: its whole family is revoked (every token in it, the
    ///   newest included) and [`Rotate::Reused`] is returned.
    /// - unknown, expired or revoked: [`Rotate::Invalid`].
    ///
    /// Of concurrent rotations of one token exactly one is `Rotated`; since the others
    /// present a rotated token, they revoke the family (RFC 9700 gives no grace period).
    async fn rotate_refresh(
        &self,
        tenant: &str,
        old_hash: &str,
        new_row: &RefreshRow,
        now: u64,
    ) -> Result<Rotate, StoreError>;

    /// Revokes every refresh token of a family (current and rotated), and remembers the
    /// revocation for [`REVOKED_FAMILY_RETENTION_SECS`] after `now` so a racing
    /// [`put_refresh`](Self::put_refresh) into the family fails. Used on code replay
    /// (RFC 6749 §4.1.2), refresh token reuse (RFC 9700 §4.14.2) and token revocation
    /// (RFC 7009 §2.1). Idempotent: returns whether this call revoked anything, `false` when
    /// the family has no refresh token or was revoked already. (A backend may keep the
    /// revoked tokens' rows, unusable, until they expire: see [`Store::sweep`].)
    async fn revoke_family(
        &self,
        tenant: &str,
        family_id: &str,
        now: u64,
    ) -> Result<bool, StoreError>;

    // ---- access tokens ----

    /// Records that the access token `jti` (RFC 7519 §4.1.7) is revoked (RFC 7009 §2.1).
    /// Keep the record until `expires_at`: the token's `exp` plus any clock-skew leeway the
    /// validators allow, after which the token is dead anyway.
    async fn revoke_access(
        &self,
        tenant: &str,
        jti: &str,
        expires_at: u64,
    ) -> Result<(), StoreError>;

    /// Whether the access token `jti` was revoked.
    async fn is_access_revoked(&self, tenant: &str, jti: &str) -> Result<bool, StoreError>;

    // ---- single-use claims ----

    /// Claims `key` in `namespace` until `expires_at`, atomically. Returns `true` when
    /// nobody holds the key (never claimed, or the earlier claim has expired:
    /// `now >= expires_at` of that claim), and the key is then held until `expires_at`;
    /// returns `false`, changing nothing, while an unexpired claim exists. Of any number of
    /// concurrent callers exactly one gets `true`.
    ///
    /// The server keeps single-use assertions with it: RFC 7523 §3 lets an authorization
    /// server refuse a JWT whose `jti` it has seen before, and the jwt-bearer grant does
    /// (`namespace` names the issuer, `key` is a [`hash_secret`] of the `jti`).
    async fn claim_once(
        &self,
        tenant: &str,
        namespace: &str,
        key: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError>;

    // ---- signing keys ----

    /// Stores a new signing key. [`StoreError::Conflict`] if the tenant has that `kid`.
    async fn put_signing_key(&self, row: &SigningKeyRow) -> Result<(), StoreError>;

    /// The tenant's keys to publish: active ones and retired ones whose `not_after` is still
    /// ahead, newest first.
    async fn list_signing_keys(
        &self,
        tenant: &str,
        now: u64,
    ) -> Result<Vec<SigningKeyRow>, StoreError>;

    /// Retires a key: it stays published until `not_after`. Returns whether the key exists.
    async fn retire_signing_key(
        &self,
        tenant: &str,
        kid: &str,
        not_after: u64,
    ) -> Result<bool, StoreError>;

    // ---- pending authorization requests ----

    /// Stores a pending authorization request, replacing one with the same ID (for example
    /// to record the subject after login, before consent).
    async fn put_pending(&self, row: &PendingAuthRow) -> Result<(), StoreError>;

    /// The pending request without consuming it (to render a form), unless expired.
    async fn get_pending(
        &self,
        tenant: &str,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthRow>, StoreError>;

    /// Removes and returns the pending request, atomically: of concurrent callers exactly one
    /// gets it, so one login or consent form is answered once. `None` if unknown or expired.
    async fn take_pending(
        &self,
        tenant: &str,
        id: &str,
        now: u64,
    ) -> Result<Option<PendingAuthRow>, StoreError>;

    // ---- consent ----

    /// Stores a user's consent for a client, replacing the previous one.
    async fn put_consent(&self, row: &ConsentRow) -> Result<(), StoreError>;

    /// The user's consent for the client, if any.
    async fn get_consent(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<ConsentRow>, StoreError>;

    /// Withdraws a user's consent for a client. Returns whether there was one.
    async fn delete_consent(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<bool, StoreError>;

    /// The tenant's consents, of one user when `subject` is given, ordered by subject then
    /// client id (`mcp-auth consents list`).
    async fn list_consents(
        &self,
        tenant: &str,
        subject: Option<&str>,
    ) -> Result<Vec<ConsentRow>, StoreError>;

    /// Revokes every refresh token family the user holds for the client, as
    /// [`revoke_family`](Self::revoke_family) does for each (withdrawn consent), and deletes
    /// the user's authorization codes for the client that are not redeemed yet, revoking
    /// their families too: a code issued before the withdrawal cannot be redeemed after it.
    /// Spent codes stay, for replay detection. All in one atomic step: a redemption or a
    /// rotation either comes before it (and its family is revoked) or finds nothing. Returns
    /// the family ids, sorted and without repeats, so the server can also refuse their
    /// access tokens.
    async fn revoke_client_grants(
        &self,
        tenant: &str,
        subject: &str,
        client_id: &str,
        now: u64,
    ) -> Result<Vec<String>, StoreError>;

    // ---- browser login sessions ----

    /// Stores a login session, replacing one with the same hash.
    async fn put_session(&self, row: &SessionRow) -> Result<(), StoreError>;

    /// The session, unless unknown or expired.
    async fn get_session(
        &self,
        tenant: &str,
        session_hash: &str,
        now: u64,
    ) -> Result<Option<SessionRow>, StoreError>;

    /// Ends a session (logout). Returns whether it existed.
    async fn delete_session(&self, tenant: &str, session_hash: &str) -> Result<bool, StoreError>;

    // ---- upstream tokens (proxy-provider mode) ----

    /// Stores a user's upstream tokens after a login, replacing any row of the account
    /// whatever its version.
    async fn put_upstream(&self, row: &UpstreamRow) -> Result<(), StoreError>;

    /// The account's upstream tokens, unless missing or expired.
    async fn get_upstream(
        &self,
        tenant: &str,
        account: &str,
        now: u64,
    ) -> Result<Option<UpstreamRow>, StoreError>;

    /// Compare-and-swap: replaces the account's row with `row` only if a row exists whose
    /// `version` is `expected_version`, atomically (across processes sharing the store).
    /// Returns whether it did. `row.version` must be greater than `expected_version`, else
    /// [`StoreError::InvalidRow`].
    async fn swap_upstream(
        &self,
        row: &UpstreamRow,
        expected_version: u64,
    ) -> Result<bool, StoreError>;

    /// Removes and returns the account's upstream tokens (logout, revocation), expired or
    /// not, so the caller can revoke them upstream.
    async fn delete_upstream(
        &self,
        tenant: &str,
        account: &str,
    ) -> Result<Option<UpstreamRow>, StoreError>;

    // ---- device authorization (RFC 8628) ----

    /// Stores a new device authorization request. [`StoreError::Conflict`] if its device
    /// code hash exists, or if a request of the tenant that is unexpired at the new row's
    /// `created_at` has the same user code hash (the server then draws another user code);
    /// an expired one with that user code is replaced.
    async fn put_device(&self, row: &DeviceAuthRow) -> Result<(), StoreError>;

    /// The request whose normalized user code hashes to `user_code_hash`, whatever its
    /// status, unless expired (the verification page).
    async fn get_device_by_user_code(
        &self,
        tenant: &str,
        user_code_hash: &str,
        now: u64,
    ) -> Result<Option<DeviceAuthRow>, StoreError>;

    /// Records the user's decision, atomically and only on a pending, unexpired request
    /// (the row [`device_decide_step`] makes). Returns whether it did: of concurrent
    /// decisions exactly one wins.
    async fn decide_device(
        &self,
        tenant: &str,
        device_code_hash: &str,
        decision: &DeviceDecision,
        now: u64,
    ) -> Result<bool, StoreError>;

    /// One poll of the token endpoint by `client_id` (RFC 8628 §3.4-3.5), decided and
    /// recorded atomically as [`device_poll_step`] says: pending (poll time recorded),
    /// slow down (interval raised), denied, expired (while still stored), approved and
    /// consumed (of concurrent polls exactly one gets [`DevicePoll::Approved`], the others
    /// [`DevicePoll::Consumed`]), wrong client (nothing changes) or missing.
    async fn poll_device(
        &self,
        tenant: &str,
        device_code_hash: &str,
        client_id: &str,
        now: u64,
    ) -> Result<DevicePoll, StoreError>;

    // ---- maintenance ----

    /// Deletes every expired row of every tenant: clients, codes (spent or not), refresh
    /// tokens (current or rotated), revoked-family records, access token revocations,
    /// signing keys past `not_after`, pending requests, device authorizations, login
    /// sessions, upstream tokens and single-use claims ([`Store::claim_once`]). Returns how
    /// many rows went. A backend may leave the codes and refresh tokens of a revoked family or
    /// a deleted client in place, unusable, until they expire: they are counted when this
    /// removes them.
    async fn sweep(&self, now: u64) -> Result<usize, StoreError>;
}

/// The check [`Store::swap_upstream`] makes on its row before anything else.
pub fn check_upstream_swap(row: &UpstreamRow, expected_version: u64) -> Result<(), StoreError> {
    if row.version <= expected_version {
        return Err(StoreError::InvalidRow(
            "an upstream row's new version must be greater than the expected one",
        ));
    }
    Ok(())
}

/// The checks [`Store::rotate_refresh`] makes on the successor of the current token `old`
/// before storing it: same tenant, same family, same client (RFC 6749 §6: a refresh token
/// is bound to its client), a different hash. Backends call it so they all refuse the same
/// rows.
pub fn check_refresh_successor(
    tenant: &str,
    old: &RefreshRow,
    new: &RefreshRow,
) -> Result<(), StoreError> {
    if new.tenant != tenant {
        return Err(StoreError::InvalidRow(
            "new refresh token is for another tenant",
        ));
    }
    if new.family_id != old.family_id {
        return Err(StoreError::InvalidRow(
            "new refresh token is in another family",
        ));
    }
    if new.client_id != old.client_id {
        return Err(StoreError::InvalidRow(
            "new refresh token is for another client",
        ));
    }
    if new.token_hash == old.token_hash {
        return Err(StoreError::Conflict("refresh token"));
    }
    Ok(())
}

/// Runs [`Store::sweep`] every `interval` (the first time at once) until the task is
/// aborted, reading the time from `clock` (for example [`unix_now`]). A failed sweep is
/// logged and retried at the next tick.
pub fn spawn_sweeper<S, C>(store: Arc<S>, interval: Duration, clock: C) -> JoinHandle<()>
where
    S: Store + ?Sized + 'static,
    C: Fn() -> u64 + Send + 'static,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match store.sweep(clock()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "swept expired rows"),
                Err(e) => tracing::warn!(error = %e, "sweeping expired rows failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_secret_is_sha256_base64url() {
        // SHA-256("abc") from FIPS 180-2 appendix B.1, base64url without padding.
        assert_eq!(
            hash_secret("abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        assert_eq!(hash_secret("").len(), 43);
        // A time-prefixed secret keeps its prefix in front of the hash of the whole secret.
        let t = format!("{}abc", time_prefix());
        let key = hash_secret(&t);
        assert_eq!(key.len(), TIME_PREFIX_LEN + 43);
        assert_eq!(&key[..TIME_PREFIX_LEN], &t[..TIME_PREFIX_LEN]);
        assert_eq!(
            &key[TIME_PREFIX_LEN..],
            URL_SAFE_NO_PAD.encode(Sha256::digest(t.as_bytes()))
        );
        // Upper-case hex, a missing dot or a short prefix: hashed whole, as before.
        for plain in [
            "0190ABCDEF12.x",
            "0190abcdef12x",
            "0190abcdef.x",
            "zz90abcdef12.x",
        ] {
            assert_eq!(hash_secret(plain).len(), 43, "{plain}");
        }
        // Later prefixes sort later.
        assert!(format!("{:012x}.", 1u64 << 40) > format!("{:012x}.", (1u64 << 40) - 1));
    }
}
