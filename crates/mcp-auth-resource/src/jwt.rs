//! JWT access tokens (RFC 9068) verified against the issuer's JWKS.
//!
//! The header and payload are parsed here, not by `jsonwebtoken`'s `decode`: its validation
//! does not know `typ` (RFC 9068 §4), reads the system clock, and insists that every allowed
//! algorithm belong to one family. `jsonwebtoken` is used for what it is good at: turning a
//! JWK into a key and checking a signature.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use mcp_auth_types::HttpUrl;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::claims::{ClaimReader, check_audience, check_times};
use crate::clock::Clock;
use crate::config::{JwtConfig, SigningAlgorithm};
use crate::{Claims, ConfigError, FetchError, TokenVerifier, VerifyError, fetch};

/// Keys beyond this many in one key set are ignored.
const MAX_KEYS: usize = 100;

/// The claims mapped to fields of [`Claims`]; the rest go to `extra`.
const MAPPED: &[&str] = &["iss", "aud", "exp", "sub", "client_id", "jti", "scope"];

/// The JOSE header members this verifier reads. `jku`, `x5u` and an embedded `jwk` are
/// ignored on purpose: keys come only from the configured `jwks_uri`, never from the token.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Vec<String>>,
}

struct VerificationKey {
    kid: Option<String>,
    /// The algorithms this key may verify: those of its type and curve, narrowed to the
    /// JWK's own `alg` when it has one, and to the configured allow-list.
    algorithms: Vec<SigningAlgorithm>,
    key: DecodingKey,
}

struct KeySet {
    /// Counts downloads, so a task that waited for another's download sees it happened.
    generation: u64,
    fetched_at: u64,
    keys: Vec<Arc<VerificationKey>>,
}

impl KeySet {
    fn find(
        &self,
        kid: Option<&str>,
        alg: SigningAlgorithm,
    ) -> Result<Option<Arc<VerificationKey>>, VerifyError> {
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
                let mut seen = false;
                for k in named.by_ref() {
                    if k.algorithms.contains(&alg) {
                        return Ok(Some(k.clone()));
                    }
                    seen = true;
                }
                if seen {
                    Err(VerifyError::KeyAlgorithmMismatch {
                        kid: Some(kid.to_owned()),
                        alg: alg.as_str().to_owned(),
                    })
                } else {
                    Ok(None)
                }
            }
            // RFC 9068 does not require `kid`; without one, the key is unambiguous only when
            // a single key fits the algorithm.
            None => {
                let mut fits = self.keys.iter().filter(|k| k.algorithms.contains(&alg));
                match (fits.next(), fits.next()) {
                    (Some(k), None) => Ok(Some(k.clone())),
                    (None, _) => Ok(None),
                    (Some(_), Some(_)) => Err(VerifyError::AmbiguousKey),
                }
            }
        }
    }
}

enum RefreshError {
    RateLimited,
    Failed(FetchError),
}

/// Verifies RFC 9068 JWT access tokens with keys from the issuer's `jwks_uri`.
///
/// The key set is downloaded on first use, again when a token names an unknown `kid` (at
/// most once per `min_refetch_interval`), and again when it is older than `max_key_age`.
pub(crate) struct JwtVerifier {
    issuer: String,
    jwks_uri: HttpUrl,
    algorithms: Vec<SigningAlgorithm>,
    audience: String,
    leeway: u64,
    min_refetch: u64,
    max_key_age: u64,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    /// The current key set, swapped whole. A std lock: held only to clone an `Arc`.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Serializes downloads (one in flight, the others wait for its result) and remembers
    /// when the last one started, for the rate limit.
    gate: tokio::sync::Mutex<Option<u64>>,
}

impl JwtVerifier {
    pub(crate) fn new(
        config: JwtConfig,
        audience: &str,
        leeway: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        if config.algorithms.is_empty() {
            return Err(ConfigError::NoAlgorithms);
        }
        Ok(Self {
            issuer: config.issuer.as_str().to_owned(),
            jwks_uri: config.jwks_uri,
            algorithms: config.algorithms,
            audience: audience.to_owned(),
            leeway: leeway.as_secs(),
            min_refetch: config.min_refetch_interval.as_secs(),
            max_key_age: config.max_key_age.as_secs(),
            clock,
            http: fetch::client(config.http_timeout).map_err(ConfigError::Http)?,
            keys: RwLock::new(None),
            gate: tokio::sync::Mutex::new(None),
        })
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn key_for(
        &self,
        kid: Option<&str>,
        alg: SigningAlgorithm,
    ) -> Result<Arc<VerificationKey>, VerifyError> {
        let unknown = || VerifyError::UnknownKey {
            kid: kid.map(str::to_owned),
        };
        let current = self.snapshot();
        if let Some(ks) = &current
            && let Some(key) = ks.find(kid, alg)?
        {
            let now = self.clock.now_unix();
            if now < ks.fetched_at.saturating_add(self.max_key_age) {
                return Ok(key);
            }
            // Known key, old set: refresh if nobody else is (never wait for a download while
            // holding a usable key), and keep the key only if the new set still has it.
            let Ok(mut gate) = self.gate.try_lock() else {
                return Ok(key);
            };
            return match self.refresh(&mut gate, Some(ks.generation)).await {
                Ok(fresh) => fresh.find(kid, alg)?.ok_or_else(unknown),
                Err(RefreshError::RateLimited) => Ok(key),
                Err(RefreshError::Failed(e)) => {
                    tracing::warn!(error = %e, "key set refresh failed; using the keys we have");
                    Ok(key)
                }
            };
        }
        // Unknown key or no key set yet: download (rate-limited, one download at a time).
        let mut gate = self.gate.lock().await;
        match self
            .refresh(&mut gate, current.as_ref().map(|k| k.generation))
            .await
        {
            Ok(fresh) => fresh.find(kid, alg)?.ok_or_else(unknown),
            Err(RefreshError::RateLimited) => match &current {
                Some(_) => Err(unknown()),
                None => Err(VerifyError::Unavailable(FetchError::Backoff {
                    url: self.jwks_uri.as_str().to_owned(),
                })),
            },
            // We cannot tell whether the key exists: not the client's fault.
            Err(RefreshError::Failed(e)) => Err(VerifyError::Unavailable(e)),
        }
    }

    /// Downloads the key set unless another task did so since `seen` or the rate limit
    /// forbids it. Called with the gate held.
    async fn refresh(
        &self,
        last_attempt: &mut Option<u64>,
        seen: Option<u64>,
    ) -> Result<Arc<KeySet>, RefreshError> {
        if let Some(ks) = self.snapshot()
            && Some(ks.generation) != seen
        {
            return Ok(ks);
        }
        let now = self.clock.now_unix();
        if let Some(last) = *last_attempt
            && now < last.saturating_add(self.min_refetch)
        {
            tracing::debug!(url = %self.jwks_uri, "key set refetch rate-limited");
            return Err(RefreshError::RateLimited);
        }
        *last_attempt = Some(now);
        let keys = self.download().await.map_err(RefreshError::Failed)?;
        let ks = Arc::new(KeySet {
            generation: seen.map_or(1, |g| g + 1),
            fetched_at: now,
            keys,
        });
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Some(ks.clone());
        Ok(ks)
    }

    async fn download(&self) -> Result<Vec<Arc<VerificationKey>>, FetchError> {
        #[derive(Deserialize)]
        struct JwksDocument {
            keys: Vec<Value>,
        }
        let url = self.jwks_uri.as_str();
        let doc: JwksDocument = fetch::send_json(url, self.http.get(url)).await?;
        let total = doc.keys.len();
        let keys: Vec<_> = doc
            .keys
            .into_iter()
            .take(MAX_KEYS)
            .filter_map(|jwk| verification_key(jwk, &self.algorithms))
            .map(Arc::new)
            .collect();
        if keys.is_empty() {
            tracing::warn!(%url, total, "the key set has no usable signature key");
        } else {
            tracing::info!(%url, total, usable = keys.len(), "fetched key set");
        }
        Ok(keys)
    }

    fn claims(&self, payload: Map<String, Value>) -> Result<Claims, VerifyError> {
        let r = ClaimReader(payload);
        // RFC 9068 §4: iss exactly the issuer; aud contains this resource; exp in the future.
        let issuer = r.string("iss")?.ok_or(VerifyError::MissingClaim("iss"))?;
        if issuer != self.issuer {
            return Err(VerifyError::WrongIssuer {
                expected: self.issuer.clone(),
                found: issuer,
            });
        }
        let audience = r.audience()?.ok_or(VerifyError::MissingClaim("aud"))?;
        check_audience(&audience, &self.audience)?;
        let exp = r
            .numeric_date("exp")?
            .ok_or(VerifyError::MissingClaim("exp"))?;
        check_times(
            Some(exp),
            r.numeric_date("nbf")?,
            r.numeric_date("iat")?,
            self.clock.now_unix(),
            self.leeway,
        )?;
        // RFC 9068 §2.2: sub and client_id are required.
        let subject = r.string("sub")?.ok_or(VerifyError::MissingClaim("sub"))?;
        let client_id = r
            .string("client_id")?
            .ok_or(VerifyError::MissingClaim("client_id"))?;
        let jti = r.string("jti")?;
        let scopes = r.scope()?;
        Ok(Claims {
            subject,
            client_id: Some(client_id),
            scopes,
            issuer,
            audience,
            expires_at: Some(exp),
            jti,
            extra: r.into_extra(MAPPED),
        })
    }
}

#[async_trait::async_trait]
impl TokenVerifier for JwtVerifier {
    async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed("not three dot-separated parts"));
        };
        let header: JoseHeader = decode_part(h).ok_or(VerifyError::Malformed("header"))?;
        check_typ(header.typ.as_deref())?;
        if let Some(crit) = header.crit {
            return Err(VerifyError::UnsupportedCritical(crit));
        }
        let alg = SigningAlgorithm::from_name(&header.alg)
            .filter(|a| self.algorithms.contains(a))
            .ok_or(VerifyError::AlgorithmNotAllowed(header.alg))?;
        let key = self.key_for(header.kid.as_deref(), alg).await?;
        let signing_input = &token[..h.len() + 1 + p.len()];
        match jsonwebtoken::crypto::verify(
            s,
            signing_input.as_bytes(),
            &key.key,
            alg.to_jsonwebtoken(),
        ) {
            Ok(true) => {}
            _ => return Err(VerifyError::BadSignature),
        }
        // Only now, with the signature checked, is the payload worth reading.
        let payload: Map<String, Value> =
            decode_part(p).ok_or(VerifyError::Malformed("payload is not a JSON object"))?;
        self.claims(payload)
    }
}

/// RFC 9068 §4: "verify that the typ header value is at+jwt or application/at+jwt";
/// media types compare case-insensitively (RFC 7515 §4.1.9).
fn check_typ(typ: Option<&str>) -> Result<(), VerifyError> {
    match typ {
        Some(t)
            if t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt") =>
        {
            Ok(())
        }
        other => Err(VerifyError::WrongType {
            found: other.map(str::to_owned),
        }),
    }
}

fn decode_part<T: DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A JWK usable for verifying signatures with one of `allowed`, or `None` (logged) for keys
/// to skip: encryption keys, symmetric keys (an HMAC key published in a JWKS would let
/// anyone sign), unknown types and curves, keys whose `alg` is not allowed.
fn verification_key(jwk: Value, allowed: &[SigningAlgorithm]) -> Option<VerificationKey> {
    let jwk: Jwk = match serde_json::from_value(jwk) {
        Ok(j) => j,
        Err(e) => {
            tracing::debug!(error = %e, "skipping an unparseable JWK");
            return None;
        }
    };
    let kid = jwk.common.key_id.clone();
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        tracing::debug!(?kid, "skipping a JWK not meant for signatures");
        return None;
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        tracing::debug!(?kid, "skipping a JWK whose key_ops exclude verify");
        return None;
    }
    let by_type: &[SigningAlgorithm] = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[SigningAlgorithm::ES256],
            EllipticCurve::P384 => &[SigningAlgorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => &[SigningAlgorithm::EdDSA],
            _ => return None,
        },
        AlgorithmParameters::RSA(_) => SigningAlgorithm::RSA,
        _ => {
            tracing::debug!(?kid, "skipping a symmetric or unknown JWK");
            return None;
        }
    };
    let mut algorithms: Vec<SigningAlgorithm> = by_type
        .iter()
        .copied()
        .filter(|a| allowed.contains(a))
        .collect();
    if let Some(declared) = &jwk.common.key_algorithm {
        let declared = serde_json::to_value(declared).ok()?;
        let declared = declared.as_str().and_then(SigningAlgorithm::from_name)?;
        algorithms.retain(|a| *a == declared);
    }
    if algorithms.is_empty() {
        tracing::debug!(?kid, "skipping a JWK for algorithms not allowed");
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(VerificationKey {
        kid,
        algorithms,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALL: &[SigningAlgorithm] = &[
        SigningAlgorithm::ES256,
        SigningAlgorithm::ES384,
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::RS256,
    ];

    fn ec(kid: &str, crv: &str) -> Value {
        json!({"kty": "EC", "crv": crv, "kid": kid,
               "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
               "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})
    }

    #[test]
    fn typ_must_be_at_jwt() {
        assert!(check_typ(Some("at+jwt")).is_ok());
        assert!(check_typ(Some("AT+JWT")).is_ok());
        assert!(check_typ(Some("application/at+jwt")).is_ok());
        assert!(check_typ(Some("JWT")).is_err());
        assert!(check_typ(Some("at+jwt; x")).is_err());
        assert!(check_typ(None).is_err());
    }

    #[test]
    fn key_selection_from_jwks() {
        assert_eq!(
            verification_key(ec("a", "P-256"), ALL).unwrap().algorithms,
            [SigningAlgorithm::ES256]
        );
        // Not allowed, wrong use, wrong key_ops, symmetric, unknown curve.
        assert!(verification_key(ec("a", "P-256"), &[SigningAlgorithm::EdDSA]).is_none());
        let mut enc = ec("a", "P-256");
        enc["use"] = json!("enc");
        assert!(verification_key(enc, ALL).is_none());
        let mut ops = ec("a", "P-256");
        ops["key_ops"] = json!(["sign"]);
        assert!(verification_key(ops, ALL).is_none());
        let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h", "alg": "HS256"});
        assert!(verification_key(oct, ALL).is_none());
        assert!(verification_key(ec("a", "P-521"), ALL).is_none());
        // A declared alg narrows, and must itself be one of ours.
        let mut declared = ec("a", "P-256");
        declared["alg"] = json!("ES384");
        assert!(verification_key(declared, ALL).is_none());
        assert!(verification_key(json!({"kty": "weird"}), ALL).is_none());
    }

    #[test]
    fn find_by_kid_or_unique_key() {
        let keys = [ec("a", "P-256"), ec("b", "P-256")]
            .into_iter()
            .filter_map(|j| verification_key(j, ALL))
            .map(Arc::new)
            .collect();
        let ks = KeySet {
            generation: 1,
            fetched_at: 0,
            keys,
        };
        assert!(
            ks.find(Some("a"), SigningAlgorithm::ES256)
                .unwrap()
                .is_some()
        );
        assert!(
            ks.find(Some("z"), SigningAlgorithm::ES256)
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            ks.find(Some("a"), SigningAlgorithm::EdDSA),
            Err(VerifyError::KeyAlgorithmMismatch { .. })
        ));
        assert!(matches!(
            ks.find(None, SigningAlgorithm::ES256),
            Err(VerifyError::AmbiguousKey)
        ));
        assert!(ks.find(None, SigningAlgorithm::EdDSA).unwrap().is_none());
    }
}
