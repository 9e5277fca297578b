//! Credential storage: what a client must remember about each server to get a valid token
//! without asking the user again, and the stores that keep it.
//!
//! Several processes (CLI invocations, proxies, agents) share one store. The rule that keeps
//! a rotated refresh token from being lost or used twice: every read-modify-write of a server's
//! record happens under that server's exclusive lock ([`CredentialStore::lock`]), and the
//! holder re-reads the record after taking the lock, because another process may have just
//! rotated it.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use mcp_auth_types::{AccessToken, AuthMethod, ClientSecret, RefreshToken, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[cfg(feature = "keyring")]
mod auto;
#[cfg(test)]
mod conformance;
mod file;
mod fsutil;
pub mod keyed;
#[cfg(feature = "keyring")]
mod keyring;
mod lockfile;
mod memory;

pub use file::FileStore;
#[cfg(feature = "keyring")]
pub use keyring::{KeyringStore, store_key_from_keyring};
pub use memory::MemoryStore;

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The store key of a server: a hash of its canonical URL, so file names leak nothing and
/// never need escaping.
pub fn server_key(server_url: &str) -> String {
    let h = Sha256::digest(server_url.as_bytes());
    h.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// How the client identity was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// Given by the user (`--client-id`, configuration).
    PreRegistered,
    /// A client ID metadata document URL used as `client_id`.
    MetadataDocument,
    /// RFC 7591 dynamic registration.
    Dynamic,
}

/// A client identity at one authorization server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRecord {
    /// The issuer that issued (or accepted) this identity. Credentials are bound to it and
    /// dropped when the server moves to another authorization server (MCP 2026-07-28).
    pub issuer: String,
    /// `client_id`
    pub client_id: String,
    /// `client_secret`, for confidential clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<ClientSecret>,
    /// `client_secret_expires_at` (0 or absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<u64>,
    /// The token endpoint authentication method in use.
    pub auth_method: AuthMethod,
    /// PEM private key for `private_key_jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_pem: Option<SecretString>,
    /// JWS algorithm for `private_key_jwt` (e.g. `ES256`, `RS256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_alg: Option<String>,
    /// The redirect URI registered (for dynamic registration), so it stays stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// How it was obtained.
    pub registration: Registration,
    /// `registration_access_token` (RFC 7592).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_access_token: Option<SecretString>,
    /// `registration_client_uri` (RFC 7592).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_client_uri: Option<String>,
}

/// Tokens for one server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The access token.
    pub access_token: AccessToken,
    /// `Bearer` or `DPoP`.
    pub token_type: String,
    /// When the access token expires (seconds since the epoch), if the server said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// The refresh token, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<RefreshToken>,
    /// Granted scopes (space-delimited), as the server said or as requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// When these tokens were obtained (seconds since the epoch).
    pub obtained_at: u64,
}

impl TokenRecord {
    /// Whether the access token is still usable `skew` seconds from now. Tokens without
    /// an expiry are assumed valid until the server says otherwise (401).
    ///
    /// The skew is capped at half the token's lifetime, so a server that issues tokens
    /// shorter than the skew does not get a refresh on every call.
    pub fn is_fresh(&self, now: u64, skew: u64) -> bool {
        self.expires_at.is_none_or(|e| {
            let skew = skew.min(e.saturating_sub(self.obtained_at) / 2);
            now + skew < e
        })
    }
}

/// Everything remembered about one MCP server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerRecord {
    /// The MCP server URL as the user gave it (canonical form).
    pub server_url: String,
    /// A short name the user chose (`--name`), unique in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The RFC 8707 `resource` sent (None when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The authorization server's issuer.
    pub issuer: String,
    /// Token endpoint (persisted so a restarted process can refresh without discovery).
    pub token_endpoint: String,
    /// Revocation endpoint (RFC 7009), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// Authorization endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    /// Scopes requested at the last authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_scope: Option<String>,
    /// The client identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientRecord>,
    /// Current tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenRecord>,
    /// The grant that obtained the tokens (`authorization_code`, `client_credentials`), so
    /// an expired client-credentials token is renewed the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The DPoP private key (RFC 9449) the tokens are bound to: base64url PKCS#8, stored
    /// encrypted with the rest of the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<mcp_auth_types::SecretString>,
    /// When the record was last written (seconds since the epoch).
    #[serde(default)]
    pub updated_at: u64,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Filesystem error, with the path.
    #[error("credential store I/O error at {path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The record could not be decrypted: wrong key, or the file was tampered with.
    #[error("credential store entry {0} cannot be decrypted (wrong key or tampered file)")]
    Decrypt(String),
    /// The record decrypted but is not valid JSON for this version.
    #[error("credential store entry {key} is corrupt: {message}")]
    Corrupt {
        /// The server key.
        key: String,
        /// What was wrong (never includes the content).
        message: String,
    },
    /// The OS keyring failed.
    #[error("OS keyring: {0}")]
    Keyring(String),
    /// A database behind the store failed (SQLite, PostgreSQL): what failed, never a
    /// record's content.
    #[error("credential store backend: {0}")]
    Backend(String),
    /// The store's key file has unsafe permissions or cannot be created.
    #[error("store key: {0}")]
    Key(String),
    /// The server key cannot name a record: every store uses it as a file name or keyring
    /// user, so it is limited to [`MAX_KEY_LEN`] ASCII letters, digits, `-` and `_` (what
    /// [`server_key`] produces). The key itself is not repeated in the message.
    #[error(
        "invalid server key ({0} bytes): expected 1 to {max} ASCII letters, digits, '-' or '_'",
        max = MAX_KEY_LEN
    )]
    InvalidKey(usize),
}

/// The longest server key a store accepts.
pub const MAX_KEY_LEN: usize = 128;

/// Checks that `key` is safe as a file name and keyring user: no path separators, no `..`,
/// no leading dot (temporary and internal files start with one), bounded length.
pub(crate) fn validate_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.len()))
    }
}

/// Exclusive hold on one server's record, across threads and processes. Dropping it releases.
pub trait StoreLock: Send {}

/// Where credentials live. Implementations must make `put` atomic (a reader sees the old or
/// the new record, never a torn one, even if the writer is killed) and `lock` exclusive across
/// processes that share the store.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Reads a server's record.
    async fn get(&self, server_key: &str) -> Result<Option<ServerRecord>, StoreError>;
    /// Writes a server's record (atomically).
    async fn put(&self, server_key: &str, record: &ServerRecord) -> Result<(), StoreError>;
    /// Forgets a server.
    async fn delete(&self, server_key: &str) -> Result<(), StoreError>;
    /// All records, for `list` and name lookup.
    async fn list(&self) -> Result<Vec<ServerRecord>, StoreError>;
    /// Takes the server's exclusive lock, waiting for it.
    async fn lock(&self, server_key: &str) -> Result<Box<dyn StoreLock>, StoreError>;
}
