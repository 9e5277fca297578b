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
    /// The grant the token was issued under: the family of refresh tokens its authorization
    /// code started (none for client credentials). Revoking the grant — a replayed code
    /// (RFC 6749 §4.1.2), a reused refresh token (RFC 9700 §4.14.2), the revocation of a
    /// refresh token (RFC 7009 §2.1) — revokes the access tokens that carry it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// The key that signs new tokens, parsed once: `jsonwebtoken::encode` would parse and check
/// the PKCS#8 key again for every signature (an EC point multiplication, more than the
/// signature itself), which was ~8.5% of a whole authorization flow's CPU.
struct Current {
    /// The JWS header's base64url encoding (RFC 7515 §7.1), the same for every token.
    encoded_header: String,
    pair: EcdsaKeyPair,
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
        // jsonwebtoken's PEM reader, so stored keys are accepted exactly as before.
        let key = EncodingKey::from_ec_pem(signing.private_pem.secret().as_bytes())
            .map_err(|e| KeyError::Crypto(format!("stored key does not parse ({:?})", e.kind())))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.as_bytes())
            .map_err(|_| KeyError::Crypto("stored key is not a valid P-256 key".into()))?;
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(signing.kid.clone());
        let header = serde_json::to_vec(&header)
            .map_err(|e| KeyError::Crypto(format!("cannot encode the JWS header ({e})")))?;
        *self.current.write().await = Some(Current {
            encoded_header: URL_SAFE_NO_PAD.encode(header),
            pair,
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

    /// Signs an access token: a JWS compact serialization (RFC 7515 §7.1) with header
    /// `{"typ":"at+jwt","alg":"ES256","kid":…}` and an ES256 signature, the fixed-size
    /// `R || S` of RFC 7518 §3.4 — what `jsonwebtoken::encode` produces, byte for byte up to
    /// the signature (ECDSA signatures are randomized).
    pub async fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        let claims = serde_json::to_vec(claims)
            .map_err(|e| KeyError::Crypto(format!("cannot encode the claims ({e})")))?;
        let guard = self.current.read().await;
        let cur = guard
            .as_ref()
            .ok_or_else(|| KeyError::Crypto("keys not loaded (call ensure first)".into()))?;
        // 86 characters: the base64url of the 64-byte signature.
        let mut jwt = String::with_capacity(
            cur.encoded_header.len() + 1 + claims.len().div_ceil(3) * 4 + 1 + 86,
        );
        jwt.push_str(&cur.encoded_header);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut jwt);
        let signature = cur
            .pair
            .sign(&SystemRandom::new(), jwt.as_bytes())
            .map_err(|_| KeyError::Crypto("signing failed".into()))?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jwt);
        Ok(jwt)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const ISSUER: &str = "https://as.example";
    const AUDIENCE: &str = "https://mcp.example/mcp";

    fn claims() -> AccessClaims {
        let now = unix_now();
        AccessClaims {
            iss: ISSUER.into(),
            sub: "local:alice".into(),
            aud: AUDIENCE.into(),
            exp: now + 300,
            iat: now,
            jti: "jti-1".into(),
            client_id: "client-1".into(),
            scope: "mcp:read mcp:write".into(),
            sid: None,
        }
    }

    async fn keys() -> Keys {
        let keys = Keys::new(Arc::new(MemoryStore::new()), "default");
        keys.ensure(Duration::from_secs(3600)).await.unwrap();
        keys
    }

    /// A token signed with the parsed key pair verifies with jsonwebtoken against the
    /// published JWK, like any other verifier would check it (RFC 9068 §4).
    #[tokio::test]
    async fn signed_token_verifies_with_jsonwebtoken_and_the_published_jwk() {
        let keys = keys().await;
        let token = keys.sign(&claims()).await.unwrap();

        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let jwks = keys.jwks().await.unwrap();
        let published = &jwks["keys"][0];
        assert_eq!(header.kid.as_deref(), published["kid"].as_str());

        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(published.clone()).unwrap();
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        let decoded = jsonwebtoken::decode::<AccessClaims>(&token, &key, &v).unwrap();
        assert_eq!(decoded.claims.sub, "local:alice");
        assert_eq!(decoded.claims.scope, "mcp:read mcp:write");

        // And with our own verifier.
        let mine = keys.verify(&token, ISSUER, Some(AUDIENCE)).await.unwrap();
        assert_eq!(mine.jti, "jti-1");
    }

    /// Same bytes as `jsonwebtoken::encode` with the same header, claims and key, except the
    /// (randomized) signature, which is the 64-byte fixed-size form.
    #[tokio::test]
    async fn token_matches_jsonwebtoken_encode_up_to_the_signature() {
        let store = Arc::new(MemoryStore::new());
        let keys = Keys::new(store.clone(), "default");
        keys.ensure(Duration::from_secs(3600)).await.unwrap();
        let row = store
            .list_signing_keys("default", unix_now())
            .await
            .unwrap()
            .remove(0);
        let claims = claims();
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(row.kid.clone());
        let key = EncodingKey::from_ec_pem(row.private_pem.secret().as_bytes()).unwrap();
        let theirs = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let ours = keys.sign(&claims).await.unwrap();

        let (their_message, _) = theirs.rsplit_once('.').unwrap();
        let (our_message, signature) = ours.rsplit_once('.').unwrap();
        assert_eq!(our_message, their_message);
        assert_eq!(URL_SAFE_NO_PAD.decode(signature).unwrap().len(), 64);
        assert_eq!(ours.len(), theirs.len());
    }

    #[tokio::test]
    async fn tampered_token_is_refused() {
        let keys = keys().await;
        let token = keys.sign(&claims()).await.unwrap();
        let (message, signature) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
        sig[10] ^= 1;
        let forged = format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig));
        assert!(keys.verify(&forged, ISSUER, Some(AUDIENCE)).await.is_none());
        assert!(
            keys.verify(&token, ISSUER, Some("https://other.example"))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn signing_before_ensure_is_an_error() {
        let keys = Keys::new(Arc::new(MemoryStore::new()), "default");
        assert!(matches!(
            keys.sign(&claims()).await,
            Err(KeyError::Crypto(_))
        ));
    }
}
