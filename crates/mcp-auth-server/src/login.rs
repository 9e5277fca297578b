//! Who the user is: login behind a trait, so upstream identity providers can plug in later.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use async_trait::async_trait;

use crate::store::{Store, StoreError, UserRow, unix_now};

/// Checks credentials typed into the login page.
#[async_trait]
pub trait IdentityProvider: Send + Sync {
    /// The subject (`provider:subject`) for valid credentials, `None` otherwise.
    async fn authenticate(
        &self,
        tenant: &str,
        username: &str,
        password: &str,
    ) -> Result<Option<String>, StoreError>;
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
