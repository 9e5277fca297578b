//! Signing keys and access tokens.
//!
//! Access tokens are JWTs (RFC 9068: `typ: at+jwt`) signed with ES256. Keys live in the store
//! so every instance publishes the same JWKS; a key is rotated after [`KEY_ROTATION`], and a
//! retired key stays published until the last token it signed has expired.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use mcp_auth_types::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::store::{SigningKeyRow, Store, StoreError, unix_now};

/// A key signs new tokens for this long, then a new one takes over.
pub const KEY_ROTATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Key management failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Key generation or parsing failed.
    #[error("signing key: {0}")]
    Crypto(String),
}

/// The claims of our access tokens (RFC 9068 §2.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user (`local:alice`) or, for client credentials, the client.
    pub sub: String,
    /// Audience: the resource the token is for.
    pub aud: String,
    /// Expiry.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Unique id (revocation).
    pub jti: String,
    /// The client.
    pub client_id: String,
    /// Granted scopes, space-delimited.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

struct Current {
    kid: String,
    key: EncodingKey,
    created_at: u64,
}

/// Signs and verifies access tokens with the tenant's keys.
#[derive(Clone)]
pub struct Keys {
    store: Arc<dyn Store>,
    tenant: String,
    current: Arc<RwLock<Option<Current>>>,
    /// kid → decoding key, for local verification.
    public: Arc<RwLock<Vec<(String, DecodingKey)>>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

fn generate(tenant: &str) -> Result<SigningKeyRow, KeyError> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| KeyError::Crypto("cannot generate a P-256 key".into()))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|_| KeyError::Crypto("generated key does not parse".into()))?;
    let point = pair.public_key().as_ref();
    // Uncompressed SEC1 point: 0x04 || X || Y.
    if point.len() != 65 || point[0] != 4 {
        return Err(KeyError::Crypto("unexpected public key encoding".into()));
    }
    let (x, y) = (&point[1..33], &point[33..65]);
    let kid = URL_SAFE_NO_PAD.encode(&sha2_256(point)[..12]);
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(pkcs8.as_ref())
    );
    Ok(SigningKeyRow {
        tenant: tenant.to_owned(),
        kid: kid.clone(),
        alg: "ES256".into(),
        private_pem: SecretString::new(pem),
        public_jwk: json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }),
        created_at: unix_now(),
        not_after: None,
    })
}

fn sha2_256(b: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(b).to_vec()
}

impl Keys {
    /// Keys for `tenant`, kept in `store`.
    pub fn new(store: Arc<dyn Store>, tenant: impl Into<String>) -> Self {
        Self {
            store,
            tenant: tenant.into(),
            current: Arc::new(RwLock::new(None)),
            public: Arc::new(RwLock::new(Vec::new())),
        }
    }

    /// Loads the keys, creating the first one or rotating an old one; retired keys stay
    /// published for `max_token_life` after retirement.
    pub async fn ensure(&self, max_token_life: Duration) -> Result<(), KeyError> {
        let now = unix_now();
        let mut rows = self.store.list_signing_keys(&self.tenant, now).await?;
        let newest = rows
            .iter()
            .filter(|r| r.not_after.is_none() && r.alg == "ES256")
            .max_by_key(|r| r.created_at)
            .cloned();
        let needs_new = newest
            .as_ref()
            .is_none_or(|r| now.saturating_sub(r.created_at) >= KEY_ROTATION.as_secs());
        if needs_new {
            let row = generate(&self.tenant)?;
            self.store.put_signing_key(&row).await?;
            for old in rows.iter().filter(|r| r.not_after.is_none()) {
                self.store
                    .retire_signing_key(&self.tenant, &old.kid, now + max_token_life.as_secs())
                    .await?;
            }
            rows = self.store.list_signing_keys(&self.tenant, now).await?;
        }
        let signing = rows
            .iter()
            .filter(|r| r.not_after.is_none() && r.alg == "ES256")
            .max_by_key(|r| r.created_at)
            .ok_or_else(|| KeyError::Crypto("no current signing key after rotation".into()))?;
        let key = EncodingKey::from_ec_pem(signing.private_pem.secret().as_bytes())
            .map_err(|e| KeyError::Crypto(format!("stored key does not parse ({:?})", e.kind())))?;
        *self.current.write().await = Some(Current {
            kid: signing.kid.clone(),
            key,
            created_at: signing.created_at,
        });
        let mut public = Vec::new();
        for r in &rows {
            if let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(r.public_jwk.clone())
                && let Ok(k) = DecodingKey::from_jwk(&jwk)
            {
                public.push((r.kid.clone(), k));
            }
        }
        *self.public.write().await = public;
        Ok(())
    }

    /// The JWKS document (RFC 7517): every key not yet past its `not_after`.
    pub async fn jwks(&self) -> Result<Value, KeyError> {
        let rows = self
            .store
            .list_signing_keys(&self.tenant, unix_now())
            .await?;
        Ok(json!({"keys": rows.iter().map(|r| r.public_jwk.clone()).collect::<Vec<_>>()}))
    }

    /// Signs an access token.
    pub async fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        let guard = self.current.read().await;
        let cur = guard
            .as_ref()
            .ok_or_else(|| KeyError::Crypto("keys not loaded (call ensure first)".into()))?;
        let _ = cur.created_at;
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(cur.kid.clone());
        jsonwebtoken::encode(&header, claims, &cur.key)
            .map_err(|e| KeyError::Crypto(format!("signing failed ({:?})", e.kind())))
    }

    /// Verifies one of our access tokens: signature by a published key, `typ` `at+jwt`
    /// (RFC 9068 §4), issuer, expiry (30 s leeway), and the audience when `audience` is
    /// given. Returns `None` for anything else.
    pub async fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: Option<&str>,
    ) -> Option<AccessClaims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok || header.alg != Algorithm::ES256 {
            return None;
        }
        let kid = header.kid?;
        let public = self.public.read().await;
        let key = public.iter().find(|(k, _)| *k == kid).map(|(_, k)| k)?;
        let mut v = Validation::new(Algorithm::ES256);
        v.leeway = 30;
        v.validate_nbf = true;
        v.set_issuer(&[issuer]);
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        match audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        jsonwebtoken::decode::<AccessClaims>(token, key, &v)
            .ok()
            .map(|d| d.claims)
    }
}
