//! Proxy-provider mode: the users' tokens at their upstream identity provider, kept by the
//! server, sealed at rest, refreshed by the server, and revoked upstream with ours.
//!
//! The MCP client never sees an upstream token and the server never sends the MCP client's
//! token upstream (MCP authorization specification, "Token Passthrough"): the client holds
//! this server's tokens, and a tool handler that must act upstream asks the [`UpstreamVault`]
//! for the current user's upstream access token through the [`UpstreamAccess`] extractor
//! (cargo feature `resource`).
//!
//! **Sealing.** Rows hold `v1.<key id>.<base64url(nonce ‖ ciphertext)>`: XChaCha20-Poly1305
//! with a random 192-bit nonce, the associated data binding the ciphertext to its tenant and
//! account (a row copied to another account does not open). [`SealKeys`] holds the current
//! key and older ones, which stay readable, so keys can be rotated: rows sealed with an old
//! key are re-sealed with the current one at their next write.
//!
//! **Refresh, single-flight across instances.** A row's version is even when at rest; a
//! refresher claims the row by swapping it to the next (odd) version ([`Store::swap_upstream`]
//! is a compare-and-swap), refreshes upstream, and writes the new tokens as the next even
//! version. Other tasks and instances that see an odd version wait for it to turn even and
//! use the tokens written; a claim older than [`REFRESH_LEASE`] is taken over (the refresher
//! died). So each refresh token is presented upstream once, and a rotated one is never lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mcp_auth_types::SecretString;
pub use mcp_auth_types::seal::{SealError, SealKeys};
use mcp_auth_upstream::{Upstream, UpstreamError, UpstreamTokens};

use crate::store::{Store, StoreError, UpstreamRow, unix_now};

/// How long a refresher's claim on a row holds before another may take over.
pub const REFRESH_LEASE: Duration = Duration::from_secs(30);

/// A token is refreshed this long before it expires.
const EXPIRY_MARGIN_SECS: u64 = 30;

/// What can go wrong with upstream tokens.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The user has no upstream tokens here (never logged in upstream, logged out, revoked,
    /// or past `OAUTH_EXTERNAL_TOKEN_TTL`): they must log in again.
    #[error("no upstream tokens for this account; log in again")]
    NotConnected,
    /// The upstream access token expired and cannot be refreshed (no refresh token, or the
    /// provider refused it): the user must log in again.
    #[error("the upstream grant expired or was revoked; log in again")]
    Expired,
    /// The row names a provider this server no longer has.
    #[error("the upstream provider {0:?} is not configured")]
    UnknownProvider(String),
    /// The sealed row does not open (wrong or missing key, or tampering).
    #[error("upstream tokens cannot be decrypted: {0}")]
    Seal(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The provider failed.
    #[error("upstream provider: {0}")]
    Upstream(#[from] UpstreamError),
    /// Another refresher held the row too long.
    #[error("the upstream tokens are being refreshed elsewhere; try again")]
    Busy,
}

impl From<SealError> for VaultError {
    fn from(e: SealError) -> Self {
        Self::Seal(e.to_string())
    }
}

/// The users' upstream tokens: sealed in the store, refreshed single-flight, revoked
/// upstream. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamVault {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    tenant: String,
    keys: SealKeys,
    providers: HashMap<String, Arc<dyn Upstream>>,
    ttl: Duration,
    /// One refresher per account in this process.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for UpstreamVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.inner.providers.keys().collect();
        ids.sort();
        f.debug_struct("UpstreamVault")
            .field("tenant", &self.inner.tenant)
            .field("providers", &ids)
            .field("keys", &self.inner.keys)
            .field("ttl", &self.inner.ttl)
            .finish()
    }
}

fn aad(tenant: &str, account: &str) -> Vec<u8> {
    format!("mcp-auth upstream v1\0{tenant}\0{account}").into_bytes()
}

impl UpstreamVault {
    /// A vault over `store` for `tenant`, sealing with `keys`, for the `providers`; rows live
    /// `ttl` after the login (`OAUTH_EXTERNAL_TOKEN_TTL`).
    pub fn new(
        store: Arc<dyn Store>,
        tenant: impl Into<String>,
        keys: SealKeys,
        providers: impl IntoIterator<Item = Arc<dyn Upstream>>,
        ttl: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                tenant: tenant.into(),
                keys,
                providers: providers
                    .into_iter()
                    .map(|p| (p.id().to_owned(), p))
                    .collect(),
                ttl,
                locks: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The provider with this id.
    pub fn provider(&self, id: &str) -> Option<&Arc<dyn Upstream>> {
        self.inner.providers.get(id)
    }

    /// The provider an account (`provider:subject`) belongs to, if it is an upstream one.
    pub fn provider_of(&self, account: &str) -> Option<&Arc<dyn Upstream>> {
        account
            .split_once(':')
            .and_then(|(p, _)| self.inner.providers.get(p))
    }

    fn seal(&self, account: &str, tokens: &UpstreamTokens) -> Result<String, VaultError> {
        let json = zeroize::Zeroizing::new(
            serde_json::to_vec(tokens).map_err(|e| VaultError::Seal(e.to_string()))?,
        );
        Ok(self
            .inner
            .keys
            .seal(&aad(&self.inner.tenant, account), &json)?)
    }

    fn open(&self, row: &UpstreamRow) -> Result<UpstreamTokens, VaultError> {
        let plain = zeroize::Zeroizing::new(
            self.inner
                .keys
                .open(&aad(&self.inner.tenant, &row.account), &row.sealed)?,
        );
        serde_json::from_slice(&plain).map_err(|_| VaultError::Seal("not a token record".into()))
    }

    /// Seals a short-lived value (the upstream PKCE verifier of a login in progress), bound
    /// to `context` (the login's `state`).
    pub fn seal_value(&self, context: &str, value: &str) -> Result<String, VaultError> {
        Ok(self.inner.keys.seal(
            format!("mcp-auth value v1\0{context}").as_bytes(),
            value.as_bytes(),
        )?)
    }

    /// Opens what [`Self::seal_value`] sealed with the same `context`.
    pub fn open_value(&self, context: &str, sealed: &str) -> Result<String, VaultError> {
        let plain = self
            .inner
            .keys
            .open(format!("mcp-auth value v1\0{context}").as_bytes(), sealed)?;
        String::from_utf8(plain).map_err(|_| VaultError::Seal("not text".into()))
    }

    /// Stores the tokens of a fresh upstream login, replacing what the account had (whose
    /// grant is then revoked upstream, best effort, unless it is the same grant).
    pub async fn save(
        &self,
        account: &str,
        provider: &str,
        tokens: &UpstreamTokens,
    ) -> Result<(), VaultError> {
        let now = unix_now();
        let previous = self
            .inner
            .store
            .get_upstream(&self.inner.tenant, account, now)
            .await?;
        let version = previous.as_ref().map_or(0, |p| (p.version | 1) + 1);
        let row = UpstreamRow {
            tenant: self.inner.tenant.clone(),
            account: account.to_owned(),
            provider: provider.to_owned(),
            sealed: self.seal(account, tokens)?,
            version,
            created_at: now,
            updated_at: now,
            expires_at: now + self.inner.ttl.as_secs(),
        };
        self.inner.store.put_upstream(&row).await?;
        if let Some(prev) = previous
            && let Ok(old) = self.open(&prev)
            && !same_grant(&old, tokens)
            && let Some(p) = self.provider(&prev.provider)
            && let Err(e) = p.revoke(&old).await
        {
            tracing::warn!(provider = %prev.provider, error = %e, "revoking the replaced upstream grant failed");
        }
        Ok(())
    }

    /// Whether the account has upstream tokens here (current or refreshable).
    pub async fn is_connected(&self, account: &str) -> Result<bool, VaultError> {
        Ok(self
            .inner
            .store
            .get_upstream(&self.inner.tenant, account, unix_now())
            .await?
            .is_some())
    }

    /// The account's current tokens, without refreshing (diagnostics and tests).
    pub async fn tokens(&self, account: &str) -> Result<Option<UpstreamTokens>, VaultError> {
        match self
            .inner
            .store
            .get_upstream(&self.inner.tenant, account, unix_now())
            .await?
        {
            Some(row) => self.open(&row).map(Some),
            None => Ok(None),
        }
    }

    fn lock_for(&self, account: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(account.to_owned()).or_default().clone()
    }

    /// The account's upstream access token, refreshed first when it expires within 30 s.
    pub async fn access_token(&self, account: &str) -> Result<SecretString, VaultError> {
        let store = &self.inner.store;
        let tenant = &self.inner.tenant;
        let fresh = |t: &UpstreamTokens, now: u64| {
            t.expires_at.is_none_or(|e| e > now + EXPIRY_MARGIN_SECS)
        };
        // Fast path: a current token, no lock.
        let row = store
            .get_upstream(tenant, account, unix_now())
            .await?
            .ok_or(VaultError::NotConnected)?;
        if row.version % 2 == 0 {
            let t = self.open(&row)?;
            if fresh(&t, unix_now()) {
                return Ok(t.access_token);
            }
        }
        let lock = self.lock_for(account);
        let _held = lock.lock().await;
        let deadline = tokio::time::Instant::now() + REFRESH_LEASE + Duration::from_secs(5);
        loop {
            let now = unix_now();
            let row = store
                .get_upstream(tenant, account, now)
                .await?
                .ok_or(VaultError::NotConnected)?;
            if row.version % 2 == 1 {
                // Another instance is refreshing: wait for its result, or take over a claim
                // that outlived its lease.
                if now < row.updated_at + REFRESH_LEASE.as_secs() {
                    if tokio::time::Instant::now() > deadline {
                        return Err(VaultError::Busy);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            } else {
                let t = self.open(&row)?;
                if fresh(&t, now) {
                    return Ok(t.access_token);
                }
            }
            let tokens = self.open(&row)?;
            let Some(refresh_token) = tokens.refresh_token.clone() else {
                return Err(VaultError::Expired);
            };
            if tokens.refresh_token_expires_at.is_some_and(|e| e <= now) {
                return Err(VaultError::Expired);
            }
            let provider = self
                .provider(&row.provider)
                .ok_or_else(|| VaultError::UnknownProvider(row.provider.clone()))?
                .clone();
            // Claim: the next odd version, stamped now.
            let claim_version = if row.version % 2 == 0 {
                row.version + 1
            } else {
                row.version + 2
            };
            let claim = UpstreamRow {
                version: claim_version,
                updated_at: now,
                ..row.clone()
            };
            if !store.swap_upstream(&claim, row.version).await? {
                continue;
            }
            match provider.refresh(refresh_token.secret()).await {
                Ok(mut new) => {
                    if new.refresh_token.is_none() {
                        new.refresh_token = Some(refresh_token);
                    }
                    let done = UpstreamRow {
                        sealed: self.seal(account, &new)?,
                        version: claim_version + 1,
                        updated_at: unix_now(),
                        ..row.clone()
                    };
                    if store.swap_upstream(&done, claim_version).await? {
                        tracing::debug!(provider = %row.provider, "upstream access token refreshed");
                        return Ok(new.access_token);
                    }
                    // Our claim was taken over (we outlived the lease); the other refresher
                    // holds the newer tokens.
                    continue;
                }
                Err(e) if e.is_invalid_grant() => {
                    tracing::info!(provider = %row.provider, "upstream refresh token refused; the user must log in again");
                    let _ = store.delete_upstream(tenant, account).await;
                    return Err(VaultError::Expired);
                }
                Err(e) => {
                    // Release the claim unchanged, so the next caller can try again.
                    let back = UpstreamRow {
                        version: claim_version + 1,
                        updated_at: unix_now(),
                        ..row.clone()
                    };
                    let _ = store.swap_upstream(&back, claim_version).await;
                    return Err(e.into());
                }
            }
        }
    }

    /// Fetches the account's profile upstream with its (refreshed) access token: data
    /// fetched on the user's behalf, as an MCP tool would.
    pub async fn profile(&self, account: &str) -> Result<serde_json::Value, VaultError> {
        let provider = self
            .provider_of(account)
            .ok_or_else(|| VaultError::UnknownProvider(account.to_owned()))?
            .clone();
        let token = self.access_token(account).await?;
        Ok(provider.profile(token.secret()).await?)
    }

    /// Forgets the account's upstream tokens and revokes them upstream where the provider
    /// supports it. Returns whether there were any.
    pub async fn revoke(&self, account: &str) -> Result<bool, VaultError> {
        let Some(row) = self
            .inner
            .store
            .delete_upstream(&self.inner.tenant, account)
            .await?
        else {
            return Ok(false);
        };
        let tokens = self.open(&row)?;
        if let Some(p) = self.provider(&row.provider) {
            match p.revoke(&tokens).await {
                Ok(true) => tracing::info!(provider = %row.provider, "upstream grant revoked"),
                Ok(false) => {
                    tracing::info!(provider = %row.provider, "the provider has no revocation; upstream tokens forgotten")
                }
                Err(e) => {
                    tracing::warn!(provider = %row.provider, error = %e, "revoking the upstream grant failed; tokens forgotten")
                }
            }
        }
        Ok(true)
    }

    /// Whether the rows sealed with an older key should be re-sealed (they are at their next
    /// write anyway).
    pub fn is_sealed_with_current_key(&self, row: &UpstreamRow) -> bool {
        self.inner.keys.is_current(&row.sealed)
    }
}

/// Whether two token sets are the same grant (the same refresh token, or the same access
/// token when there is no refresh token).
fn same_grant(a: &UpstreamTokens, b: &UpstreamTokens) -> bool {
    match (&a.refresh_token, &b.refresh_token) {
        (Some(x), Some(y)) => x.ct_eq(y),
        _ => a.access_token.ct_eq(&b.access_token),
    }
}

#[cfg(feature = "resource")]
pub use extractor::UpstreamAccess;

#[cfg(feature = "resource")]
mod extractor {
    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum::http::StatusCode;
    use axum::http::request::Parts;
    use axum::response::{IntoResponse, Response};
    use mcp_auth_resource::Authenticated;
    use mcp_auth_types::SecretString;

    use super::{UpstreamVault, VaultError};

    /// In a tool handler behind the resource layer: the current user's access to their
    /// upstream account. Needs the [`UpstreamVault`] in the request's extensions (add
    /// `axum::Extension(vault)` to the router).
    ///
    /// ```no_run
    /// use mcp_auth_server::upstream::UpstreamAccess;
    ///
    /// async fn tool(upstream: UpstreamAccess) -> String {
    ///     match upstream.profile().await {
    ///         Ok(profile) => profile.to_string(),
    ///         Err(e) => format!("upstream unavailable: {e}"),
    ///     }
    /// }
    /// ```
    #[derive(Debug, Clone)]
    pub struct UpstreamAccess {
        vault: UpstreamVault,
        account: String,
    }

    impl UpstreamAccess {
        /// The account (`provider:subject`).
        pub fn account(&self) -> &str {
            &self.account
        }

        /// The upstream access token, refreshed when needed. Use it only for requests to
        /// the upstream provider; never return it to the MCP client.
        pub async fn token(&self) -> Result<SecretString, VaultError> {
            self.vault.access_token(&self.account).await
        }

        /// The user's upstream profile, fetched with their token.
        pub async fn profile(&self) -> Result<serde_json::Value, VaultError> {
            self.vault.profile(&self.account).await
        }
    }

    /// As `Option<UpstreamAccess>`: `None` when the route has no vault or the user is not an
    /// upstream account (a local account, or a client acting for itself).
    impl<S: Send + Sync> OptionalFromRequestParts<S> for UpstreamAccess {
        type Rejection = Response;

        async fn from_request_parts(
            parts: &mut Parts,
            state: &S,
        ) -> Result<Option<Self>, Response> {
            let auth = <Authenticated as FromRequestParts<S>>::from_request_parts(parts, state)
                .await
                .map_err(IntoResponse::into_response)?;
            let Some(vault) = parts.extensions.get::<UpstreamVault>().cloned() else {
                return Ok(None);
            };
            if vault.provider_of(&auth.subject).is_none() {
                return Ok(None);
            }
            Ok(Some(Self {
                vault,
                account: auth.subject.to_string(),
            }))
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for UpstreamAccess {
        type Rejection = Response;

        async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
            let auth = <Authenticated as FromRequestParts<S>>::from_request_parts(parts, state)
                .await
                .map_err(IntoResponse::into_response)?;
            let Some(vault) = parts.extensions.get::<UpstreamVault>().cloned() else {
                tracing::error!(
                    "UpstreamAccess used on a route without the UpstreamVault extension"
                );
                return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
            };
            Ok(Self {
                vault,
                account: auth.subject.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_are_bound_to_their_context() {
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        let v = UpstreamVault::new(
            store,
            "t",
            SealKeys::new("k1", [5u8; 32]).unwrap(),
            [],
            Duration::from_secs(60),
        );
        let sealed = v.seal_value("state-1", "verifier").unwrap();
        assert!(!sealed.contains("verifier"));
        assert_eq!(v.open_value("state-1", &sealed).unwrap(), "verifier");
        assert!(v.open_value("state-2", &sealed).is_err());
    }

    /// `OAUTH_EXTERNAL_TOKEN_TTL`: after it the row is gone, refreshable or not, and the user
    /// must log in upstream again.
    #[tokio::test]
    async fn upstream_tokens_last_the_external_token_ttl() {
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        let v = UpstreamVault::new(
            store.clone(),
            "t",
            SealKeys::new("k1", [5u8; 32]).unwrap(),
            [],
            Duration::from_secs(1),
        );
        let tokens = UpstreamTokens {
            access_token: SecretString::new("UP-AT"),
            token_type: "Bearer".into(),
            refresh_token: Some(SecretString::new("UP-RT")),
            expires_at: None,
            refresh_token_expires_at: None,
            scope: None,
        };
        v.save("p:alice", "p", &tokens).await.unwrap();
        assert_eq!(v.access_token("p:alice").await.unwrap().secret(), "UP-AT");
        let row = store
            .get_upstream("t", "p:alice", unix_now())
            .await
            .unwrap()
            .unwrap();
        assert!(!row.sealed.contains("UP-"), "sealed at rest");
        assert_eq!(row.expires_at, row.created_at + 1);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(matches!(
            v.access_token("p:alice").await,
            Err(VaultError::NotConnected)
        ));
    }
}
