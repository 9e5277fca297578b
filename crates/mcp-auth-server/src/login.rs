//! Who the user is: login behind the [`IdentityProvider`] seam. Two kinds of provider sit
//! behind it: local accounts checked by password on the login page ([`LocalAccounts`]), and
//! upstream identity providers the browser is sent to ([`UpstreamIdentity`] over any
//! [`mcp_auth_upstream::Upstream`]: OpenID Connect, GitHub, Google). An account is
//! `provider:subject` (`local:alice`, `github:583231`, `oidc:248289761001`).

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use async_trait::async_trait;
use mcp_auth_upstream::Upstream;

use crate::store::{Store, StoreError, UserRow, unix_now};

/// A way for users to log in. One server offers one or several; with several, the login
/// page lets the user pick.
#[async_trait]
pub trait IdentityProvider: Send + Sync {
    /// The provider's id: the accounts' prefix (`local`, `github`, `google`, `oidc`).
    fn id(&self) -> &str {
        "local"
    }

    /// What the provider-choice page shows ("Username and password", "GitHub").
    fn label(&self) -> &str {
        "Username and password"
    }

    /// Password login: the account (`provider:subject`) for valid credentials, `None`
    /// otherwise. Providers that log in elsewhere keep the default, which accepts nothing.
    async fn authenticate(
        &self,
        tenant: &str,
        username: &str,
        password: &str,
    ) -> Result<Option<String>, StoreError> {
        let _ = (tenant, username, password);
        Ok(None)
    }

    /// Redirect login: the upstream provider the browser is sent to, if this is one.
    fn upstream(&self) -> Option<Arc<dyn Upstream>> {
        None
    }
}

/// An upstream identity provider as a login: the browser goes there, comes back to
/// `{issuer}/oauth/callback`, and the account is `{upstream id}:{upstream subject}`.
#[derive(Debug, Clone)]
pub struct UpstreamIdentity(pub Arc<dyn Upstream>);

#[async_trait]
impl IdentityProvider for UpstreamIdentity {
    fn id(&self) -> &str {
        self.0.id()
    }

    fn label(&self) -> &str {
        self.0.label()
    }

    fn upstream(&self) -> Option<Arc<dyn Upstream>> {
        Some(self.0.clone())
    }
}

/// Local accounts with argon2id password hashes, kept in the store.
#[derive(Clone)]
pub struct LocalAccounts {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for LocalAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalAccounts")
    }
}

/// A hash to verify against when the user does not exist, so a wrong username costs the same
/// time as a wrong password (no account enumeration by timing).
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$R6Kp0xQbLz3hP0yWw5hJ8m0x6l8m8bq8c2r5YVQ4+Zs";

impl LocalAccounts {
    /// Accounts in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Creates or replaces an account (`mcp-auth users add`).
    pub async fn add(&self, tenant: &str, username: &str, password: &str) -> Result<(), String> {
        if username.is_empty() || username.chars().any(|c| c.is_control() || c == ':') {
            return Err("a username must be non-empty, without ':' or control characters".into());
        }
        if password.chars().count() < 8 {
            return Err("the password must have at least 8 characters".into());
        }
        let password = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
            let salt = SaltString::encode_b64(&bytes).map_err(|e| format!("salt: {e}"))?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| format!("hashing failed: {e}"))
        })
        .await
        .map_err(|e| e.to_string())??;
        self.store
            .put_user(&UserRow {
                tenant: tenant.to_owned(),
                username: username.to_owned(),
                password_hash: hash,
                created_at: unix_now(),
            })
            .await
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl IdentityProvider for LocalAccounts {
    async fn authenticate(
        &self,
        tenant: &str,
        username: &str,
        password: &str,
    ) -> Result<Option<String>, StoreError> {
        let user = self.store.get_user(tenant, username).await?;
        let stored = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_owned());
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&stored)
                .map(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        Ok((ok && user.is_some()).then(|| format!("local:{username}")))
    }
}
