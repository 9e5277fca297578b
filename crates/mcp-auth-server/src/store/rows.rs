//! The rows a [`Store`](super::Store) keeps.
//!
//! Times are seconds since the Unix epoch. A row whose `expires_at` (or `not_after`) is at or
//! before "now" is expired: every read treats it as missing, and [`Store::sweep`] deletes it.
//!
//! Secrets (client secrets, registration access tokens, authorization codes, refresh tokens,
//! CSRF tokens) are never stored: only their [`hash_secret`](super::hash_secret) digests, so a
//! copy of the database gives nobody a usable credential. `Debug` prints none of those hashes
//! (nor password hashes or private keys), so a row can be logged.
//!
//! [`Store::sweep`]: super::Store::sweep

use std::fmt;

use mcp_auth_types::SecretString;
use serde::{Deserialize, Serialize};

/// Prints `[redacted]` in place of a value that must not reach a log.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `Some([redacted])` or `None`: whether the value exists is useful in a log, the value is not.
fn redact_opt<T>(value: &Option<T>) -> Option<Redacted> {
    value.as_ref().map(|_| Redacted)
}

/// A pending request's `extra` parameters with the keys that hold hashes of secrets (the
/// device code a device verification belongs to) redacted.
fn redact_extra(
    extra: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = extra.clone();
    for k in ["device"] {
        if let Some(v) = out.get_mut(k) {
            *v = serde_json::Value::String("[redacted]".into());
        }
    }
    out
}

/// How a client came to be known to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationKind {
    /// Registered through the RFC 7591 dynamic client registration endpoint.
    Dynamic,
    /// A client ID metadata document: the `client_id` is an HTTPS URL whose document was
    /// fetched and cached (MCP authorization, "Client ID Metadata Documents").
    MetadataDocument,
    /// Configured by the operator.
    Static,
}

impl RegistrationKind {
    /// The stable name used in storage (`dynamic`, `metadata_document`, `static`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dynamic => "dynamic",
            Self::MetadataDocument => "metadata_document",
            Self::Static => "static",
        }
    }

    /// The kind named by [`as_str`](Self::as_str), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "dynamic" => Some(Self::Dynamic),
            "metadata_document" => Some(Self::MetadataDocument),
            "static" => Some(Self::Static),
            _ => None,
        }
    }
}

/// A registered client (RFC 7591 §3.2.1 client information).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRow {
    /// The tenant that owns the client.
    pub tenant: String,
    /// The client identifier (RFC 6749 §2.2); for a metadata document, its URL.
    pub client_id: String,
    /// Hash of the client secret (RFC 6749 §2.3.1); `None` for public clients.
    pub secret_hash: Option<String>,
    /// The client metadata as registered (RFC 7591 §2), unknown fields included.
    pub metadata: serde_json::Value,
    /// How the client was registered.
    pub registration_kind: RegistrationKind,
    /// Hash of the registration access token (RFC 7592 §3), if one was issued.
    pub registration_token_hash: Option<String>,
    /// When the client was registered.
    pub created_at: u64,
    /// When the registration stops being valid (`client_secret_expires_at` of RFC 7591
    /// §3.2.1, or the cache lifetime of a metadata document); `None` = never.
    pub expires_at: Option<u64>,
}

impl fmt::Debug for ClientRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRow")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("secret_hash", &redact_opt(&self.secret_hash))
            .field("metadata", &self.metadata)
            .field("registration_kind", &self.registration_kind)
            .field(
                "registration_token_hash",
                &redact_opt(&self.registration_token_hash),
            )
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A local user account.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRow {
    /// The tenant that owns the account.
    pub tenant: String,
    /// The login name; also the `sub` of the tokens issued for the user.
    pub username: String,
    /// The Argon2id hash of the password, as a PHC string (`$argon2id$v=19$...`).
    pub password_hash: String,
    /// When the account was created.
    pub created_at: u64,
}

impl fmt::Debug for UserRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRow")
            .field("tenant", &self.tenant)
            .field("username", &self.username)
            .field("password_hash", &Redacted)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// An issued authorization code (RFC 6749 §4.1.2), waiting to be redeemed once.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeRow {
    /// The tenant that issued the code.
    pub tenant: String,
    /// Hash of the code.
    pub code_hash: String,
    /// The client the code was issued to (RFC 6749 §4.1.3: checked at redemption).
    pub client_id: String,
    /// The `redirect_uri` of the authorization request (RFC 6749 §4.1.3: must match).
    pub redirect_uri: String,
    /// The PKCE `code_challenge`, method S256 (RFC 7636 §4.2; OAuth 2.1 §4.1.1).
    pub code_challenge: String,
    /// The granted scope, space-separated (RFC 6749 §3.3).
    pub scope: String,
    /// The resource indicator the tokens are for (RFC 8707 §2).
    pub resource: Option<String>,
    /// The authenticated user.
    pub subject: String,
    /// The OpenID Connect `nonce`, echoed in an ID token.
    pub nonce: Option<String>,
    /// When the code expires (RFC 6749 §4.1.2: at most 10 minutes, shorter is better).
    pub expires_at: u64,
    /// The token family the code starts: every refresh token obtained from this code, and
    /// rotated from those, carries it, so a replayed code can revoke them all.
    pub family_id: String,
}

impl fmt::Debug for CodeRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeRow")
            .field("tenant", &self.tenant)
            .field("code_hash", &Redacted)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("code_challenge", &self.code_challenge)
            .field("scope", &self.scope)
            .field("resource", &self.resource)
            .field("subject", &self.subject)
            .field("nonce", &self.nonce)
            .field("expires_at", &self.expires_at)
            .field("family_id", &self.family_id)
            .finish()
    }
}

/// A refresh token (RFC 6749 §1.5), current until it is rotated (OAuth 2.1 §4.3.1).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshRow {
    /// The tenant that issued the token.
    pub tenant: String,
    /// Hash of the token.
    pub token_hash: String,
    /// The family (one per authorization code grant) the token belongs to.
    pub family_id: String,
    /// The client the token was issued to (RFC 6749 §6: bound to it).
    pub client_id: String,
    /// The user the token acts for.
    pub subject: String,
    /// The granted scope, space-separated.
    pub scope: String,
    /// The resource indicator the token is bound to (RFC 8707 §2.2).
    pub resource: Option<String>,
    /// When the token expires.
    pub expires_at: u64,
    /// When the token was issued.
    pub created_at: u64,
}

impl fmt::Debug for RefreshRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshRow")
            .field("tenant", &self.tenant)
            .field("token_hash", &Redacted)
            .field("family_id", &self.family_id)
            .field("client_id", &self.client_id)
            .field("subject", &self.subject)
            .field("scope", &self.scope)
            .field("resource", &self.resource)
            .field("expires_at", &self.expires_at)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A token signing key; its public half is published in the tenant's JWKS (RFC 7517 §5).
///
/// Keys belong to a tenant, like everything else, because each tenant is its own issuer with
/// its own JWKS.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKeyRow {
    /// The tenant whose tokens the key signs.
    pub tenant: String,
    /// The key ID (`kid`, RFC 7515 §4.1.4).
    pub kid: String,
    /// The JWS algorithm (`ES256`, `RS256`, `EdDSA`, ...).
    pub alg: String,
    /// The private key as PEM (PKCS#8), stored as given; it never prints.
    pub private_pem: SecretString,
    /// The public key as a JWK (RFC 7517 §4).
    pub public_jwk: serde_json::Value,
    /// When the key was created. The newest key that is not retired signs.
    pub created_at: u64,
    /// `None` while the key is active. A retired key signs nothing new but stays published
    /// until this time, so tokens it signed still verify; then it disappears.
    pub not_after: Option<u64>,
}

/// An authorization request (RFC 6749 §4.1.1) waiting for the user to log in and consent.
///
/// It is taken ([`Store::take_pending`](super::Store::take_pending)) exactly once, when the
/// user's answer arrives, so the same login form cannot be submitted twice.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingAuthRow {
    /// A random, unguessable handle for the request, carried by the login/consent form.
    pub id: String,
    /// The tenant the request was made to.
    pub tenant: String,
    /// `client_id`.
    pub client_id: String,
    /// `redirect_uri`, already checked against the client's registration.
    pub redirect_uri: String,
    /// `response_type` (`code`).
    pub response_type: String,
    /// `scope`, as requested.
    pub scope: Option<String>,
    /// `state`, echoed back to the client (RFC 6749 §4.1.2).
    pub state: Option<String>,
    /// `code_challenge` (RFC 7636 §4.3).
    pub code_challenge: String,
    /// `code_challenge_method` (`S256`).
    pub code_challenge_method: String,
    /// `resource` (RFC 8707 §2.1).
    pub resource: Option<String>,
    /// `nonce` (OpenID Connect).
    pub nonce: Option<String>,
    /// `prompt` (OpenID Connect: `login`, `consent`, `none`).
    pub prompt: Option<String>,
    /// `login_hint` (OpenID Connect).
    pub login_hint: Option<String>,
    /// Any other request parameter, kept so a new one never needs a schema change.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The user, once authenticated (between the login and the consent step).
    pub subject: Option<String>,
    /// Hash of the CSRF token embedded in the form.
    pub csrf_hash: String,
    /// When the request was received.
    pub created_at: u64,
    /// When the request expires (the user took too long).
    pub expires_at: u64,
}

impl fmt::Debug for PendingAuthRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthRow")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("response_type", &self.response_type)
            .field("scope", &self.scope)
            .field("state", &redact_opt(&self.state))
            .field("code_challenge", &self.code_challenge)
            .field("code_challenge_method", &self.code_challenge_method)
            .field("resource", &self.resource)
            .field("nonce", &self.nonce)
            .field("prompt", &self.prompt)
            .field("login_hint", &self.login_hint)
            .field("extra", &redact_extra(&self.extra))
            .field("subject", &self.subject)
            .field("csrf_hash", &Redacted)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A user's standing consent for a client: the answer to RFC 6749 §4.1 step (B), kept so
/// the user is not asked again. RFC 6749 §10.2: reuse it without asking only when the client
/// is authenticated or otherwise known to be the original one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentRow {
    /// The tenant.
    pub tenant: String,
    /// The user who consented.
    pub subject: String,
    /// The client consented to.
    pub client_id: String,
    /// The scope consented to, space-separated.
    pub scope: String,
    /// When consent was given.
    pub granted_at: u64,
}

/// A browser's login session at the authorization server: set as a cookie after a
/// successful login (local or upstream), so that a user who already approved a client is not
/// asked again. The cookie holds a random value; the store keeps only its hash.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    /// The tenant.
    pub tenant: String,
    /// [`hash_secret`](crate::store::hash_secret) of the cookie's value.
    pub session_hash: String,
    /// The account (`provider:subject`).
    pub subject: String,
    /// The identity provider the user logged in with (`local`, `github`, `oidc`, ...).
    pub provider: String,
    /// When the user logged in.
    pub created_at: u64,
    /// When the session ends.
    pub expires_at: u64,
}

impl std::fmt::Debug for SessionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRow")
            .field("tenant", &self.tenant)
            .field("session_hash", &Redacted)
            .field("subject", &self.subject)
            .field("provider", &self.provider)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A user's tokens at an upstream identity provider (proxy-provider mode), sealed by the
/// server with an AEAD key the store never sees: the store keeps an opaque string.
///
/// `version` makes refreshes single-flight across instances: a refresher reads the row,
/// refreshes upstream, and writes the new tokens with [`Store::swap_upstream`] only if the
/// version is still the one it read; the loser re-reads the winner's tokens.
///
/// [`Store::swap_upstream`]: crate::store::Store::swap_upstream
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamRow {
    /// The tenant.
    pub tenant: String,
    /// The account (`provider:subject`) the tokens belong to.
    pub account: String,
    /// The upstream provider's id (`github`, `google`, `oidc`, ...).
    pub provider: String,
    /// The sealed tokens (the server's own format: key id, nonce, ciphertext).
    pub sealed: String,
    /// Incremented by every write; compared by [`Store::swap_upstream`](crate::store::Store::swap_upstream).
    pub version: u64,
    /// When the user logged in upstream (the row was first written).
    pub created_at: u64,
    /// When the row was last written.
    pub updated_at: u64,
    /// When the row is dropped whatever the tokens say (`OAUTH_EXTERNAL_TOKEN_TTL` after
    /// the login).
    pub expires_at: u64,
}

impl std::fmt::Debug for UpstreamRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamRow")
            .field("tenant", &self.tenant)
            .field("account", &self.account)
            .field("provider", &self.provider)
            .field("sealed", &Redacted)
            .field("version", &self.version)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where a device authorization (RFC 8628) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Waiting for the user to enter the code and decide (RFC 8628 §3.5
    /// `authorization_pending`).
    Pending,
    /// The user approved; the next poll gets the tokens, once.
    Approved,
    /// The user denied (RFC 8628 §3.5 `access_denied`).
    Denied,
    /// Approved and the tokens handed out: every later poll is refused.
    Consumed,
}

impl DeviceStatus {
    /// The stable name used in storage (`pending`, `approved`, `denied`, `consumed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Consumed => "consumed",
        }
    }

    /// The status named by [`as_str`](Self::as_str), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(Self::Pending),
            "approved" => Some(Self::Approved),
            "denied" => Some(Self::Denied),
            "consumed" => Some(Self::Consumed),
            _ => None,
        }
    }
}

/// A device authorization request (RFC 8628 §3.1-3.2): a device (a CLI, a TV) polls the
/// token endpoint with its `device_code` while the user enters the `user_code` in a browser.
///
/// Both codes are stored only as [`hash_secret`](crate::store::hash_secret) digests: the row
/// is keyed by the device code's, and found by the (normalized) user code's for the
/// verification page.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceAuthRow {
    /// The tenant the request was made to.
    pub tenant: String,
    /// Hash of the `device_code`; the row's key.
    pub device_code_hash: String,
    /// Hash of the normalized `user_code` (unique among the tenant's unexpired rows).
    pub user_code_hash: String,
    /// The client that asked (RFC 8628 §3.4: only it may redeem the device code).
    pub client_id: String,
    /// The requested scope, space-separated (already checked).
    pub scope: String,
    /// The resource indicator the tokens are for (RFC 8707 §2).
    pub resource: Option<String>,
    /// The minimum seconds between polls (RFC 8628 §3.2 `interval`); raised by 5 on every
    /// `slow_down` (§3.5).
    pub interval: u64,
    /// Where the request stands.
    pub status: DeviceStatus,
    /// The user who approved, once approved.
    pub subject: Option<String>,
    /// The scope granted, once approved.
    pub granted_scope: Option<String>,
    /// When the device last polled.
    pub last_poll: Option<u64>,
    /// When the request was made.
    pub created_at: u64,
    /// When the codes expire (RFC 8628 §3.2 `expires_in`).
    pub expires_at: u64,
}

impl fmt::Debug for DeviceAuthRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAuthRow")
            .field("tenant", &self.tenant)
            .field("device_code_hash", &Redacted)
            .field("user_code_hash", &Redacted)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field("resource", &self.resource)
            .field("interval", &self.interval)
            .field("status", &self.status)
            .field("subject", &self.subject)
            .field("granted_scope", &self.granted_scope)
            .field("last_poll", &self.last_poll)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::hash_secret;

    #[test]
    fn debug_prints_no_secret_or_hash() {
        let hash = hash_secret("s3cret");
        let client = ClientRow {
            tenant: "t".into(),
            client_id: "c".into(),
            secret_hash: Some(hash.clone()),
            metadata: serde_json::json!({}),
            registration_kind: RegistrationKind::Dynamic,
            registration_token_hash: Some(hash.clone()),
            created_at: 0,
            expires_at: None,
        };
        let user = UserRow {
            tenant: "t".into(),
            username: "u".into(),
            password_hash: "$argon2id$v=19$PHC".into(),
            created_at: 0,
        };
        let key = SigningKeyRow {
            tenant: "t".into(),
            kid: "k".into(),
            alg: "ES256".into(),
            private_pem: SecretString::new("-----BEGIN PRIVATE KEY-----"),
            public_jwk: serde_json::json!({}),
            created_at: 0,
            not_after: None,
        };
        let printed = format!("{client:?} {user:?} {key:?}");
        assert!(!printed.contains(&hash), "{printed}");
        assert!(!printed.contains("argon2id"), "{printed}");
        assert!(!printed.contains("BEGIN"), "{printed}");
        assert!(
            printed.contains("secret_hash: Some([redacted])"),
            "{printed}"
        );
    }

    #[test]
    fn registration_kind_names_roundtrip() {
        for kind in [
            RegistrationKind::Dynamic,
            RegistrationKind::MetadataDocument,
            RegistrationKind::Static,
        ] {
            assert_eq!(RegistrationKind::from_name(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(RegistrationKind::from_name("other"), None);
    }
}
