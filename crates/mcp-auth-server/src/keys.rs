//! Signing keys and access tokens.
//!
//! Access tokens are JWTs (RFC 9068: `typ: at+jwt`) signed with ES256. Keys live in the store
//! so every instance publishes the same JWKS; a key is rotated after [`KEY_ROTATION`], and a
//! retired key stays published until the last token it signed has expired.
//!
//! # Several instances over one store
//! Time is cut into rotation periods of [`KEY_ROTATION`], and the key of a period has a
//! `kid` named after it. When a period begins, every instance may try to create its key, but
//! the store takes one row per `kid` ([`Store::put_signing_key`] refuses a second with
//! [`StoreError::Conflict`]): one instance wins, the others load the winner's key, and all
//! of them sign with the same key. Each instance reloads the keys every
//! [`KEY_RELOAD`] ([`Keys::spawn_reloader`]), and at once (at most every
//! [`UNKNOWN_KID_RELOAD`]) when asked to verify a token whose `kid` it does not know.

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

/// How often [`Keys::spawn_reloader`] reloads the keys from the store (rotation by another
/// instance, or a new rotation period).
pub const KEY_RELOAD: Duration = Duration::from_secs(60);

/// The least time between two reloads caused by tokens with an unknown `kid`, so that
/// forged `kid`s cannot make every request read the store.
pub const UNKNOWN_KID_RELOAD: Duration = Duration::from_secs(1);

/// The `kid` of the key of the rotation period holding `now`: every instance computes the
/// same one, so only one of them can store it.
fn period_kid(now: u64) -> String {
    format!("es256-p{}", now / KEY_ROTATION.as_secs())
}

/// Key management failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Key generation or parsing failed.
    #[error("signing key: {0}")]
    Crypto(String),
    /// The server was put together wrongly (for example upstream logins without an
    /// upstream token vault).
    #[error("configuration: {0}")]
    Config(String),
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
    /// The confirmation of a DPoP-bound token (RFC 9449 §6.1): the thumbprint of the key
    /// every request must prove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// `cnf` (RFC 7800) with the DPoP key thumbprint (RFC 9449 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The RFC 7638 SHA-256 thumbprint of the client's DPoP public key.
    pub jkt: String,
}

/// The claims of an OpenID Connect ID token (OIDC Core §2), issued with the access token
/// when the client asked for the `openid` scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the account (`local:alice`, `github:583231`).
    pub sub: String,
    /// Audience: the client.
    pub aud: String,
    /// Expiry.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// The `nonce` of the authorization request, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Authorized party: the client.
    pub azp: String,
    /// OIDC Core §3.1.3.6: the left half of the SHA-256 of the access token, base64url.
    pub at_hash: String,
}

/// The key that signs new tokens, parsed once: `jsonwebtoken::encode` would parse and check
/// the PKCS#8 key again for every signature (an EC point multiplication, more than the
/// signature itself), which was ~8.5% of a whole authorization flow's CPU.
struct Current {
    /// The JWS header's base64url encoding (RFC 7515 §7.1), the same for every token.
    encoded_header: String,
    /// The same for OpenID Connect ID tokens (`typ: JWT`).
    encoded_id_header: String,
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
    /// When a token with an unknown `kid` last made us reload.
    last_unknown_reload: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// How long retired keys stay published (set by [`Keys::ensure`]).
    max_token_life: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

fn generate(tenant: &str, kid: String, now: u64) -> Result<SigningKeyRow, KeyError> {
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
        created_at: now,
        not_after: None,
    })
}

/// The key that signs: the newest active ES256 key (ties broken by `kid`, so that every
/// instance picks the same one).
fn newest_active(rows: &[SigningKeyRow]) -> Option<&SigningKeyRow> {
    rows.iter()
        .filter(|r| r.not_after.is_none() && r.alg == "ES256")
        .max_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)))
}

fn decoding_keys(rows: &[SigningKeyRow]) -> Vec<(String, DecodingKey)> {
    rows.iter()
        .filter_map(|r| {
            let jwk =
                serde_json::from_value::<jsonwebtoken::jwk::Jwk>(r.public_jwk.clone()).ok()?;
            Some((r.kid.clone(), DecodingKey::from_jwk(&jwk).ok()?))
        })
        .collect()
}

impl Keys {
    /// Keys for `tenant`, kept in `store`.
    pub fn new(store: Arc<dyn Store>, tenant: impl Into<String>) -> Self {
        Self {
            store,
            tenant: tenant.into(),
            current: Arc::new(RwLock::new(None)),
            public: Arc::new(RwLock::new(Vec::new())),
            last_unknown_reload: Arc::new(std::sync::Mutex::new(None)),
            max_token_life: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Loads the keys, creating the first one or rotating an old one; retired keys stay
    /// published for `max_token_life` after retirement. Safe to call from several instances
    /// over one store at once (see the [module docs](self)); call it again to pick up keys
    /// another instance made.
    pub async fn ensure(&self, max_token_life: Duration) -> Result<(), KeyError> {
        self.max_token_life.store(
            max_token_life.as_secs(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let now = unix_now();
        let mut rows = self.store.list_signing_keys(&self.tenant, now).await?;
        let newest = newest_active(&rows).cloned();
        let period = now / KEY_ROTATION.as_secs();
        let needs_new = newest.is_none_or(|r| r.created_at / KEY_ROTATION.as_secs() < period);
        if needs_new {
            let kid = period_kid(now);
            match self
                .store
                .put_signing_key(&generate(&self.tenant, kid.clone(), now)?)
                .await
            {
                // Another instance made this period's key first: use theirs.
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
            for old in rows
                .iter()
                .filter(|r| r.not_after.is_none() && r.kid != kid)
            {
                self.store
                    .retire_signing_key(&self.tenant, &old.kid, now + max_token_life.as_secs())
                    .await?;
            }
            rows = self.store.list_signing_keys(&self.tenant, now).await?;
        }
        let signing = newest_active(&rows)
            .ok_or_else(|| KeyError::Crypto("no current signing key after rotation".into()))?;
        // jsonwebtoken's PEM reader, so stored keys are accepted exactly as before.
        let key = EncodingKey::from_ec_pem(signing.private_pem.secret().as_bytes())
            .map_err(|e| KeyError::Crypto(format!("stored key does not parse ({:?})", e.kind())))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.as_bytes())
            .map_err(|_| KeyError::Crypto("stored key is not a valid P-256 key".into()))?;
        let encode_header = |typ: &str| {
            let mut header = Header::new(Algorithm::ES256);
            header.typ = Some(typ.into());
            header.kid = Some(signing.kid.clone());
            serde_json::to_vec(&header)
                .map(|h| URL_SAFE_NO_PAD.encode(h))
                .map_err(|e| KeyError::Crypto(format!("cannot encode the JWS header ({e})")))
        };
        *self.current.write().await = Some(Current {
            encoded_header: encode_header("at+jwt")?,
            encoded_id_header: encode_header("JWT")?,
            pair,
        });
        *self.public.write().await = decoding_keys(&rows);
        Ok(())
    }

    /// Calls [`Self::ensure`] every [`KEY_RELOAD`] until the task is aborted, so that this
    /// instance signs with the key the others sign with after a rotation. A failure (the
    /// store is down) is logged, and the keys in memory stay in use.
    pub fn spawn_reloader(&self) -> tokio::task::JoinHandle<()> {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(KEY_RELOAD);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let life = Duration::from_secs(
                    keys.max_token_life
                        .load(std::sync::atomic::Ordering::Relaxed),
                );
                if let Err(e) = keys.ensure(life).await {
                    tracing::warn!(error = %e, "reloading the signing keys failed");
                }
            }
        })
    }

    /// Reloads the published keys after a token named a `kid` we do not know (another
    /// instance rotated), at most every [`UNKNOWN_KID_RELOAD`].
    async fn reload_for_unknown_kid(&self) -> bool {
        {
            let mut last = self
                .last_unknown_reload
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < UNKNOWN_KID_RELOAD) {
                return false;
            }
            *last = Some(now);
        }
        match self.store.list_signing_keys(&self.tenant, unix_now()).await {
            Ok(rows) => {
                *self.public.write().await = decoding_keys(&rows);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "reloading the published keys failed");
                false
            }
        }
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
        self.sign_as(claims, false).await
    }

    /// Signs an OpenID Connect ID token (`typ: JWT`) with the current key.
    pub async fn sign_id_token(&self, claims: &IdTokenClaims) -> Result<String, KeyError> {
        self.sign_as(claims, true).await
    }

    async fn sign_as<C: Serialize>(&self, claims: &C, id_token: bool) -> Result<String, KeyError> {
        let claims = serde_json::to_vec(claims)
            .map_err(|e| KeyError::Crypto(format!("cannot encode the claims ({e})")))?;
        let guard = self.current.read().await;
        let cur = guard
            .as_ref()
            .ok_or_else(|| KeyError::Crypto("keys not loaded (call ensure first)".into()))?;
        let header = if id_token {
            &cur.encoded_id_header
        } else {
            &cur.encoded_header
        };
        // 86 characters: the base64url of the 64-byte signature.
        let mut jwt =
            String::with_capacity(header.len() + 1 + claims.len().div_ceil(3) * 4 + 1 + 86);
        jwt.push_str(header);
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
        let known = |public: &[(String, DecodingKey)]| public.iter().any(|(k, _)| *k == kid);
        if !known(&self.public.read().await) && !self.reload_for_unknown_kid().await {
            return None;
        }
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
            cnf: None,
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

    /// Instances over one store starting at once end up signing with one key, publish the
    /// same JWKS, and verify each other's tokens.
    #[tokio::test]
    async fn instances_sharing_a_store_agree_on_one_key() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let instances: Vec<Keys> = (0..8)
            .map(|_| Keys::new(store.clone(), "default"))
            .collect();
        let mut starts = tokio::task::JoinSet::new();
        for k in &instances {
            let k = k.clone();
            starts.spawn(async move { k.ensure(Duration::from_secs(3600)).await });
        }
        while let Some(r) = starts.join_next().await {
            r.unwrap().unwrap();
        }
        let jwks = instances[0].jwks().await.unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1, "{jwks}");
        let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
        assert_eq!(kid, period_kid(unix_now()));
        for k in &instances {
            assert_eq!(k.jwks().await.unwrap(), jwks);
            let token = k.sign(&claims()).await.unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
            assert!(
                instances[0]
                    .verify(&token, ISSUER, Some(AUDIENCE))
                    .await
                    .is_some()
            );
        }
    }

    /// An instance that has not seen a key yet (another instance rotated) loads it when a
    /// token names it.
    #[tokio::test]
    async fn unknown_kid_reloads_the_published_keys() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let late = Keys::new(store.clone(), "default");
        let signer = Keys::new(store.clone(), "default");
        signer.ensure(Duration::from_secs(3600)).await.unwrap();
        let token = signer.sign(&claims()).await.unwrap();
        assert!(late.verify(&token, ISSUER, Some(AUDIENCE)).await.is_some());
        // A key no instance stored stays unknown, reload or not.
        let other = Keys::new(Arc::new(MemoryStore::new()), "default");
        other.ensure(Duration::from_secs(3600)).await.unwrap();
        let foreign = other.sign(&claims()).await.unwrap();
        assert!(
            late.verify(&foreign, ISSUER, Some(AUDIENCE))
                .await
                .is_none()
        );
    }

    /// A key from an earlier rotation period is retired (still published until its tokens
    /// expire) and the period's key takes over.
    #[tokio::test]
    async fn a_key_from_an_earlier_period_is_rotated() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let then = unix_now() - KEY_ROTATION.as_secs();
        store
            .put_signing_key(&generate("default", "old-key".into(), then).unwrap())
            .await
            .unwrap();
        let keys = Keys::new(store.clone(), "default");
        keys.ensure(Duration::from_secs(900)).await.unwrap();
        let rows = store
            .list_signing_keys("default", unix_now())
            .await
            .unwrap();
        let old = rows.iter().find(|r| r.kid == "old-key").unwrap();
        assert!(old.not_after.is_some_and(|t| t > unix_now()));
        let token = keys.sign(&claims()).await.unwrap();
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        assert_eq!(kid, period_kid(unix_now()));
        assert_eq!(
            keys.jwks().await.unwrap()["keys"].as_array().unwrap().len(),
            2
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
