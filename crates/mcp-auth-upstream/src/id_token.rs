//! OpenID Connect ID token verification (OpenID Connect Core 1.0 §3.1.3.7), as a pure
//! function: the token, the provider's JWKS document, what to expect and the current time
//! in, the claims or a precise refusal out. No I/O, no clock.
//!
//! The header and payload are parsed here, not by `jsonwebtoken::decode`, which reads the
//! system clock and knows neither `nonce` nor `azp`. `jsonwebtoken` is used for turning a
//! JWK into a key and checking a signature.
//!
//! ```
//! use mcp_auth_upstream::id_token::{self, Expected, IdTokenError, SigningAlgorithm};
//!
//! let jwks = serde_json::json!({"keys": []});
//! let expected = Expected {
//!     issuer: "https://accounts.example.com",
//!     issuer_aliases: &[],
//!     client_id: "client-1",
//!     nonce: "n-0S6_WzA2Mj",
//!     now: 1_700_000_000,
//!     allowed_algs: SigningAlgorithm::DEFAULT,
//!     leeway: id_token::DEFAULT_LEEWAY,
//! };
//! // `alg: none` is never accepted.
//! let unsigned = "eyJhbGciOiJub25lIn0.e30.";
//! assert_eq!(
//!     id_token::verify(unsigned, &jwks, &expected),
//!     Err(IdTokenError::AlgorithmNotAllowed("none".into()))
//! );
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use serde::Deserialize;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq as _;

use crate::error::sanitize;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY: u64 = 60;

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Keys beyond this many in one JWKS are ignored.
const MAX_KEYS: usize = 100;

/// OpenID Connect Core §2: `sub` is at most 255 ASCII characters.
const MAX_SUBJECT_LEN: usize = 255;

/// An asymmetric JWS algorithm an ID token may be signed with.
///
/// There is no variant for `none` or the `HS*` family: an ID token "signed" with the client
/// secret (OpenID Connect Core §10.1) proves nothing a secret-holding attacker could not
/// forge, and `none` proves nothing at all (RFC 8725 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256: what most hosted providers (Google included) use.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// ECDSA with P-384 and SHA-384.
    ES384,
    /// Ed25519 (RFC 8037).
    EdDSA,
}

impl SigningAlgorithm {
    /// The default allow-list: `RS256`, `ES256`, `EdDSA`.
    pub const DEFAULT: &'static [SigningAlgorithm] = &[Self::RS256, Self::ES256, Self::EdDSA];

    const RSA: &'static [SigningAlgorithm] = &[
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
    ];

    /// The JOSE name (`"RS256"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    /// The algorithm with this JOSE name; `None` for unknown names, `none` and `HS*`
    /// (names are case-sensitive, RFC 7515 §4.1.1).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            _ => return None,
        })
    }

    fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Self::RS256 => A::RS256,
            Self::RS384 => A::RS384,
            Self::RS512 => A::RS512,
            Self::PS256 => A::PS256,
            Self::PS384 => A::PS384,
            Self::PS512 => A::PS512,
            Self::ES256 => A::ES256,
            Self::ES384 => A::ES384,
            Self::EdDSA => A::EdDSA,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the ID token must say, and the context to check it in.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The provider's issuer; `iss` must equal it exactly (OpenID Connect Core §3.1.3.7
    /// point 2).
    pub issuer: &'a str,
    /// Other exact `iss` values this provider is documented to use (Google:
    /// `accounts.google.com` besides `https://accounts.google.com`). Usually empty.
    pub issuer_aliases: &'a [String],
    /// This client's id, which `aud` must contain (point 3).
    pub client_id: &'a str,
    /// The `nonce` sent in the authorization request (point 11).
    pub nonce: &'a str,
    /// Now, in seconds since the Unix epoch.
    pub now: u64,
    /// The algorithms accepted (point 6-8); `none` and `HS*` cannot be expressed.
    pub allowed_algs: &'a [SigningAlgorithm],
    /// Clock skew tolerated on `exp` and `nbf`, in seconds ([`DEFAULT_LEEWAY`]).
    pub leeway: u64,
}

/// The verified claims of an ID token.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IdTokenClaims {
    /// `sub`: the user's stable identifier at this provider.
    pub subject: String,
    /// `iss`.
    pub issuer: String,
    /// `aud`, as a list.
    pub audience: Vec<String>,
    /// `exp`.
    pub expires_at: u64,
    /// `iat`.
    pub issued_at: u64,
    /// `auth_time`, when present.
    pub auth_time: Option<u64>,
    /// Every claim of the payload, the ones above included (`email`, `name`, ...).
    pub claims: Map<String, Value>,
}

/// Why an ID token was refused. Each refusal of OpenID Connect Core §3.1.3.7 has its own
/// variant; values quoted from the token are sanitized and shortened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdTokenError {
    /// Not a compact JWS of three base64url parts with a JSON header and JSON object
    /// payload, or longer than [`MAX_TOKEN_LEN`].
    #[error("the id_token is malformed: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not in the allow-list (`none` and `HS*` never are).
    #[error("id_token algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    /// The header lists critical extensions (RFC 7515 §4.1.11); none is understood.
    #[error("id_token header marks extensions critical; none is understood (RFC 7515 §4.1.11)")]
    UnsupportedCritical,
    /// No key in the JWKS for the token's `kid` (or, without a `kid`, no key for its
    /// algorithm). The provider may have rotated its keys: refetch the JWKS once.
    #[error("no key {} in the provider's JWKS", kid.as_deref().map_or_else(|| "for its algorithm".to_owned(), |k| format!("{k:?}")))]
    UnknownKey {
        /// The token's `kid`.
        kid: Option<String>,
    },
    /// The token has no `kid` and several keys could have signed it.
    #[error("the id_token has no kid and several keys could have signed it")]
    AmbiguousKey,
    /// The key named by `kid` is not a key for the token's algorithm (type, curve, or the
    /// JWK's own `alg`), or is not a signature key.
    #[error("key {} is not a signature key for {alg}", kid.as_deref().map_or_else(|| "(no kid)".to_owned(), |k| format!("{k:?}")))]
    KeyAlgorithmMismatch {
        /// The key id.
        kid: Option<String>,
        /// The token's algorithm.
        alg: SigningAlgorithm,
    },
    /// The signature does not verify with the selected key.
    #[error("the id_token signature does not verify")]
    BadSignature,
    /// `iss` is not the provider's issuer.
    #[error("id_token issuer {found:?} is not {expected:?}")]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
        /// The token's `iss`.
        found: String,
    },
    /// `aud` does not contain this client's id.
    #[error("id_token audience {found:?} does not include this client")]
    WrongAudience {
        /// The token's audiences.
        found: Vec<String>,
    },
    /// Several audiences and no `azp`, or an `azp` that is not this client (OpenID Connect
    /// Core §3.1.3.7 points 4-5).
    #[error("id_token authorized party {found:?} is not this client")]
    WrongAuthorizedParty {
        /// The token's `azp`, if any.
        found: Option<String>,
    },
    /// `exp` has passed, beyond the leeway.
    #[error("the id_token expired at {expired_at} (now {now})")]
    Expired {
        /// The token's `exp`.
        expired_at: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// `nbf` is in the future, beyond the leeway.
    #[error("the id_token is not valid before {not_before} (now {now})")]
    NotYetValid {
        /// The token's `nbf`.
        not_before: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// A required claim (`iss`, `sub`, `aud`, `exp`, `iat`, `nonce`) is absent.
    #[error("the id_token has no {0} claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or an unacceptable value (a `sub` over 255 characters).
    #[error("the id_token claim {0} is invalid")]
    InvalidClaim(&'static str),
    /// `nonce` is not the one sent with the authorization request: a replayed or injected
    /// token.
    #[error("the id_token nonce does not match the authorization request's")]
    NonceMismatch,
}

/// The JOSE header members read. `jku`, `x5u` and an embedded `jwk` are ignored on purpose:
/// keys come only from the provider's `jwks_uri`, never from the token.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// A JWS whose signature verified against a key set, with its payload not yet checked: what
/// [`verify_signature`] gives a caller that checks other claims than an ID token's (the
/// authorization server's RFC 7523 jwt-bearer grant).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VerifiedJws {
    /// The header's `alg`, one of the allowed algorithms.
    pub alg: SigningAlgorithm,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// The header's `typ` (RFC 7515 §4.1.9), as written.
    pub typ: Option<String>,
    /// The payload, a JSON object whose claims are unchecked.
    pub payload: Map<String, Value>,
}

/// Checks the form and signature of the compact JWS `token` against the JWKS document
/// `jwks` (`{"keys": [...]}`): at most [`MAX_TOKEN_LEN`], an allowed algorithm (never `none`
/// or `HS*`), no critical header extension, the key named by `kid` (or the only key for the
/// algorithm), a signature that verifies, and a JSON object payload. Nothing in the payload
/// is checked: that is the caller's job. Keys come only from `jwks`, never from the token
/// (`jku`, `x5u` and `jwk` are ignored).
pub fn verify_signature(
    token: &str,
    jwks: &Value,
    allowed_algs: &[SigningAlgorithm],
) -> Result<VerifiedJws, IdTokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(IdTokenError::Malformed("longer than 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdTokenError::Malformed("not three dot-separated parts"));
    };
    let header: Header = decode_json(h).ok_or(IdTokenError::Malformed("header"))?;
    // OpenID Connect Core §3.1.3.7 points 6-8: an algorithm we accept, never `none` or HMAC.
    let alg = SigningAlgorithm::from_name(&header.alg)
        .filter(|a| allowed_algs.contains(a))
        .ok_or_else(|| IdTokenError::AlgorithmNotAllowed(sanitize(&header.alg, 40)))?;
    if header.crit.is_some() {
        return Err(IdTokenError::UnsupportedCritical);
    }
    let kid = header.kid.as_deref();
    let key = select_key(jwks, kid, alg)?;
    // `h` and `p` end where the split found dots, so this slice is on char boundaries.
    let signing_input = &token[..h.len() + 1 + p.len()];
    match jsonwebtoken::crypto::verify(s, signing_input.as_bytes(), &key, alg.to_jsonwebtoken()) {
        Ok(true) => {}
        _ => return Err(IdTokenError::BadSignature),
    }
    let payload: Map<String, Value> =
        decode_json(p).ok_or(IdTokenError::Malformed("payload is not a JSON object"))?;
    Ok(VerifiedJws {
        alg,
        kid: header.kid,
        typ: header.typ,
        payload,
    })
}

/// Verifies `token` against the provider's JWKS document (`{"keys": [...]}`) and
/// `expected`, following OpenID Connect Core §3.1.3.7.
///
/// Order matters: everything in the payload is read only after the signature verified.
pub fn verify(
    token: &str,
    jwks: &Value,
    expected: &Expected<'_>,
) -> Result<IdTokenClaims, IdTokenError> {
    let jws = verify_signature(token, jwks, expected.allowed_algs)?;
    check_claims(jws.payload, expected)
}

fn check_claims(
    claims: Map<String, Value>,
    expected: &Expected<'_>,
) -> Result<IdTokenClaims, IdTokenError> {
    // Point 2: the issuer, exactly.
    let issuer = string_claim(&claims, "iss")?.ok_or(IdTokenError::MissingClaim("iss"))?;
    if issuer != expected.issuer && !expected.issuer_aliases.contains(&issuer) {
        return Err(IdTokenError::WrongIssuer {
            expected: expected.issuer.to_owned(),
            found: sanitize(&issuer, 200),
        });
    }
    // Point 3: aud contains client_id. Points 4-5: with several audiences azp is required,
    // and when present it must be this client.
    let audience = match claims.get("aud") {
        None => return Err(IdTokenError::MissingClaim("aud")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(IdTokenError::InvalidClaim("aud"))?,
        Some(_) => return Err(IdTokenError::InvalidClaim("aud")),
    };
    if !audience.iter().any(|a| a == expected.client_id) {
        return Err(IdTokenError::WrongAudience {
            found: audience.iter().take(10).map(|a| sanitize(a, 200)).collect(),
        });
    }
    let azp = string_claim(&claims, "azp")?;
    let azp_required = audience.len() > 1;
    if (azp_required || azp.is_some()) && azp.as_deref() != Some(expected.client_id) {
        return Err(IdTokenError::WrongAuthorizedParty {
            found: azp.map(|a| sanitize(&a, 200)),
        });
    }
    // Point 9: exp in the future; point 10: iat present.
    let now = expected.now;
    let exp = numeric_date(&claims, "exp")?.ok_or(IdTokenError::MissingClaim("exp"))?;
    if now > exp.saturating_add(expected.leeway) {
        return Err(IdTokenError::Expired {
            expired_at: exp,
            now,
        });
    }
    let iat = numeric_date(&claims, "iat")?.ok_or(IdTokenError::MissingClaim("iat"))?;
    if let Some(nbf) = numeric_date(&claims, "nbf")?
        && nbf > now.saturating_add(expected.leeway)
    {
        return Err(IdTokenError::NotYetValid {
            not_before: nbf,
            now,
        });
    }
    // Point 11: the nonce we sent, compared in constant time (it is a secret until used).
    let nonce = string_claim(&claims, "nonce")?.ok_or(IdTokenError::MissingClaim("nonce"))?;
    if !bool::from(nonce.as_bytes().ct_eq(expected.nonce.as_bytes())) {
        return Err(IdTokenError::NonceMismatch);
    }
    // §2: sub is required, a locally unique identifier of at most 255 ASCII characters.
    let subject = string_claim(&claims, "sub")?.ok_or(IdTokenError::MissingClaim("sub"))?;
    if subject.is_empty()
        || subject.len() > MAX_SUBJECT_LEN
        || subject.chars().any(char::is_control)
    {
        return Err(IdTokenError::InvalidClaim("sub"));
    }
    let auth_time = numeric_date(&claims, "auth_time")?;
    Ok(IdTokenClaims {
        subject,
        issuer,
        audience,
        expires_at: exp,
        issued_at: iat,
        auth_time,
        claims,
    })
}

fn string_claim(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, IdTokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(IdTokenError::InvalidClaim(name)),
    }
}

/// A NumericDate (RFC 7519 §2): seconds, possibly fractional, never negative here.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, IdTokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or(IdTokenError::InvalidClaim(name)),
        Some(_) => Err(IdTokenError::InvalidClaim(name)),
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// One JWK usable for signatures, with the algorithms it may verify.
struct Candidate {
    kid: Option<String>,
    algorithms: Vec<SigningAlgorithm>,
    jwk: Jwk,
}

/// Picks the key for `kid` and `alg` from a JWKS document.
///
/// With a `kid`, the keys with that id (none: [`IdTokenError::UnknownKey`]; some, but none
/// for `alg`: [`IdTokenError::KeyAlgorithmMismatch`]). Without one, the only key for `alg`
/// (OpenID Connect Core §10.1 allows omitting `kid` when the set holds a single key).
fn select_key(
    jwks: &Value,
    kid: Option<&str>,
    alg: SigningAlgorithm,
) -> Result<DecodingKey, IdTokenError> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let candidates = keys.iter().take(MAX_KEYS).filter_map(candidate);
    let chosen = match kid {
        Some(kid) => {
            let mut seen = false;
            let mut found = None;
            for c in candidates.filter(|c| c.kid.as_deref() == Some(kid)) {
                if c.algorithms.contains(&alg) {
                    found = Some(c);
                    break;
                }
                seen = true;
            }
            match (found, seen) {
                (Some(c), _) => c,
                (None, true) => {
                    return Err(IdTokenError::KeyAlgorithmMismatch {
                        kid: Some(sanitize(kid, 100)),
                        alg,
                    });
                }
                (None, false) => {
                    return Err(IdTokenError::UnknownKey {
                        kid: Some(sanitize(kid, 100)),
                    });
                }
            }
        }
        None => {
            let mut fits = candidates.filter(|c| c.algorithms.contains(&alg));
            match (fits.next(), fits.next()) {
                (Some(c), None) => c,
                (None, _) => return Err(IdTokenError::UnknownKey { kid: None }),
                (Some(_), Some(_)) => return Err(IdTokenError::AmbiguousKey),
            }
        }
    };
    DecodingKey::from_jwk(&chosen.jwk).map_err(|_| IdTokenError::KeyAlgorithmMismatch {
        kid: chosen.kid.clone(),
        alg,
    })
}

/// A JWK that can verify signatures, or `None` for the ones to skip: encryption keys, keys
/// whose `key_ops` exclude `verify`, symmetric keys (an HMAC key in a JWKS would let anyone
/// who can read it sign), unknown types and curves.
fn candidate(value: &Value) -> Option<Candidate> {
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
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
        _ => return None,
    };
    let mut algorithms = by_type.to_vec();
    // A JWK's own `alg` (RFC 7517 §4.4) narrows the key to that one algorithm.
    if let Some(declared) = value.get("alg") {
        let declared = declared.as_str().and_then(SigningAlgorithm::from_name)?;
        algorithms.retain(|a| *a == declared);
    }
    Some(Candidate {
        kid: jwk.common.key_id.clone(),
        algorithms,
        jwk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
    };
    use proptest::prelude::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "https://idp.example.com";
    const CLIENT: &str = "client-1";
    const NONCE: &str = "nonce-abc";

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    enum Signer {
        Ec(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
    }

    struct Key {
        kid: String,
        signer: Signer,
        jwk: Value,
    }

    impl Key {
        fn es256(kid: &str) -> Self {
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
            let public = pair.public_key().as_ref().to_vec();
            Self {
                kid: kid.into(),
                jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                            "x": b64(&public[1..33]), "y": b64(&public[33..])}),
                signer: Signer::Ec(pair),
            }
        }

        fn ed25519(kid: &str) -> Self {
            let pair = Ed25519KeyPair::generate().unwrap();
            let public = pair.public_key().as_ref().to_vec();
            Self {
                kid: kid.into(),
                jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&public)}),
                signer: Signer::Ed(pair),
            }
        }

        fn alg(&self) -> &'static str {
            match self.signer {
                Signer::Ec(_) => "ES256",
                Signer::Ed(_) => "EdDSA",
            }
        }

        fn sign_header(&self, header: &Value, claims: &Value) -> String {
            let input = format!(
                "{}.{}",
                b64(&serde_json::to_vec(header).unwrap()),
                b64(&serde_json::to_vec(claims).unwrap())
            );
            let sig = match &self.signer {
                Signer::Ec(p) => p
                    .sign(&SystemRandom::new(), input.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                Signer::Ed(p) => p.sign(input.as_bytes()).as_ref().to_vec(),
            };
            format!("{input}.{}", b64(&sig))
        }

        fn sign(&self, claims: &Value) -> String {
            self.sign_header(&json!({"alg": self.alg(), "kid": self.kid}), claims)
        }
    }

    fn claims() -> Value {
        json!({"iss": ISS, "sub": "user-42", "aud": CLIENT, "exp": NOW + 300, "iat": NOW,
               "nonce": NONCE, "email": "a@example.com"})
    }

    fn expected() -> Expected<'static> {
        Expected {
            issuer: ISS,
            issuer_aliases: &[],
            client_id: CLIENT,
            nonce: NONCE,
            now: NOW,
            allowed_algs: SigningAlgorithm::DEFAULT,
            leeway: DEFAULT_LEEWAY,
        }
    }

    fn jwks(keys: &[&Key]) -> Value {
        json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
    }

    fn check(key: &Key, claims: &Value) -> Result<IdTokenClaims, IdTokenError> {
        verify(&key.sign(claims), &jwks(&[key]), &expected())
    }

    fn with(mut c: Value, name: &str, v: Value) -> Value {
        c[name] = v;
        c
    }

    fn without(mut c: Value, name: &str) -> Value {
        c.as_object_mut().unwrap().remove(name);
        c
    }

    #[test]
    fn accepts_a_good_token() {
        let key = Key::es256("k1");
        let c = check(&key, &claims()).unwrap();
        assert_eq!(c.subject, "user-42");
        assert_eq!(c.issuer, ISS);
        assert_eq!(c.audience, [CLIENT]);
        assert_eq!(c.expires_at, NOW + 300);
        assert_eq!(c.issued_at, NOW);
        assert_eq!(c.claims["email"], "a@example.com");
        let ed = Key::ed25519("e1");
        assert_eq!(check(&ed, &claims()).unwrap().subject, "user-42");
    }

    #[test]
    fn refuses_alg_none() {
        let key = Key::es256("k1");
        let token = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","kid":"k1"}"#),
            b64(&serde_json::to_vec(&claims()).unwrap())
        );
        assert_eq!(
            verify(&token, &jwks(&[&key]), &expected()),
            Err(IdTokenError::AlgorithmNotAllowed("none".into()))
        );
    }

    #[test]
    fn refuses_hs256_even_with_the_key_material_as_secret() {
        use aws_lc_rs::hmac;
        let key = Key::es256("k1");
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","kid":"k1"}"#),
            b64(&serde_json::to_vec(&claims()).unwrap())
        );
        let secret = serde_json::to_vec(&key.jwk).unwrap();
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
        );
        let token = format!("{input}.{}", b64(tag.as_ref()));
        assert_eq!(
            verify(&token, &jwks(&[&key]), &expected()),
            Err(IdTokenError::AlgorithmNotAllowed("HS256".into()))
        );
        // Even a JWKS publishing the "secret" as an oct key does not help.
        let oct = json!({"keys": [{"kty": "oct", "kid": "k1", "k": b64(&secret)}]});
        assert!(verify(&token, &oct, &expected()).is_err());
    }

    #[test]
    fn refuses_an_algorithm_outside_the_allow_list() {
        let key = Key::ed25519("e1");
        let mut e = expected();
        e.allowed_algs = &[SigningAlgorithm::RS256];
        assert_eq!(
            verify(&key.sign(&claims()), &jwks(&[&key]), &e),
            Err(IdTokenError::AlgorithmNotAllowed("EdDSA".into()))
        );
    }

    #[test]
    fn refuses_a_token_signed_by_another_key() {
        let real = Key::es256("k1");
        let impostor = Key::es256("k1");
        assert_eq!(
            verify(&impostor.sign(&claims()), &jwks(&[&real]), &expected()),
            Err(IdTokenError::BadSignature)
        );
    }

    #[test]
    fn refuses_a_tampered_payload() {
        let key = Key::es256("k1");
        let token = key.sign(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = b64(&serde_json::to_vec(&with(claims(), "sub", json!("admin"))).unwrap());
        let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert_eq!(
            verify(&tampered, &jwks(&[&key]), &expected()),
            Err(IdTokenError::BadSignature)
        );
    }

    #[test]
    fn key_selection() {
        let a = Key::es256("a");
        let b = Key::es256("b");
        // Unknown kid.
        let token = Key::es256("zzz").sign(&claims());
        assert_eq!(
            verify(&token, &jwks(&[&a, &b]), &expected()),
            Err(IdTokenError::UnknownKey {
                kid: Some("zzz".into())
            })
        );
        // No kid: fine with one suitable key, ambiguous with two.
        let no_kid = a.sign_header(&json!({"alg": "ES256"}), &claims());
        assert!(verify(&no_kid, &jwks(&[&a]), &expected()).is_ok());
        let ed = Key::ed25519("e");
        assert!(verify(&no_kid, &jwks(&[&a, &ed]), &expected()).is_ok());
        assert_eq!(
            verify(&no_kid, &jwks(&[&a, &b]), &expected()),
            Err(IdTokenError::AmbiguousKey)
        );
        assert_eq!(
            verify(&no_kid, &json!({"keys": []}), &expected()),
            Err(IdTokenError::UnknownKey { kid: None })
        );
        assert_eq!(
            verify(&no_kid, &json!("not a jwks"), &expected()),
            Err(IdTokenError::UnknownKey { kid: None })
        );
    }

    #[test]
    fn refuses_a_key_of_another_type_or_alg() {
        // The header claims ES384 for a P-256 key.
        let key = Key::es256("k1");
        let mut e = expected();
        e.allowed_algs = &[SigningAlgorithm::ES256, SigningAlgorithm::ES384];
        let token = key.sign_header(&json!({"alg": "ES384", "kid": "k1"}), &claims());
        assert_eq!(
            verify(&token, &jwks(&[&key]), &e),
            Err(IdTokenError::KeyAlgorithmMismatch {
                kid: Some("k1".into()),
                alg: SigningAlgorithm::ES384
            })
        );
        // An EC key named by an EdDSA token.
        let token = Key::ed25519("k1").sign(&claims());
        assert!(matches!(
            verify(&token, &jwks(&[&key]), &expected()),
            Err(IdTokenError::KeyAlgorithmMismatch { .. })
        ));
        // The JWK says alg ES384 for itself.
        let mut declared = Key::es256("k1");
        declared.jwk["alg"] = json!("ES384");
        assert!(matches!(
            check(&declared, &claims()),
            Err(IdTokenError::KeyAlgorithmMismatch { .. })
        ));
        // An encryption key is not a candidate at all.
        let mut enc = Key::es256("k1");
        enc.jwk["use"] = json!("enc");
        assert!(matches!(
            check(&enc, &claims()),
            Err(IdTokenError::UnknownKey { .. })
        ));
        let mut ops = Key::es256("k1");
        ops.jwk["key_ops"] = json!(["sign"]);
        assert!(matches!(
            check(&ops, &claims()),
            Err(IdTokenError::UnknownKey { .. })
        ));
    }

    #[test]
    fn refuses_critical_extensions() {
        let key = Key::es256("k1");
        let token = key.sign_header(
            &json!({"alg": "ES256", "kid": "k1", "crit": ["exp"], "exp": 1}),
            &claims(),
        );
        assert_eq!(
            verify(&token, &jwks(&[&key]), &expected()),
            Err(IdTokenError::UnsupportedCritical)
        );
    }

    #[test]
    fn refuses_wrong_issuer() {
        let key = Key::es256("k1");
        assert_eq!(
            check(
                &key,
                &with(claims(), "iss", json!("https://evil.example.com"))
            ),
            Err(IdTokenError::WrongIssuer {
                expected: ISS.into(),
                found: "https://evil.example.com".into()
            })
        );
        // Exact comparison: a trailing slash is another issuer.
        assert!(matches!(
            check(&key, &with(claims(), "iss", json!(format!("{ISS}/")))),
            Err(IdTokenError::WrongIssuer { .. })
        ));
        assert_eq!(
            check(&key, &without(claims(), "iss")),
            Err(IdTokenError::MissingClaim("iss"))
        );
        // A configured alias is accepted.
        let aliases = ["idp.example.com".to_owned()];
        let mut e = expected();
        e.issuer_aliases = &aliases;
        let token = key.sign(&with(claims(), "iss", json!("idp.example.com")));
        assert!(verify(&token, &jwks(&[&key]), &e).is_ok());
    }

    #[test]
    fn refuses_wrong_audience() {
        let key = Key::es256("k1");
        assert_eq!(
            check(&key, &with(claims(), "aud", json!("other-client"))),
            Err(IdTokenError::WrongAudience {
                found: vec!["other-client".into()]
            })
        );
        assert!(matches!(
            check(&key, &with(claims(), "aud", json!(["a", "b"]))),
            Err(IdTokenError::WrongAudience { .. })
        ));
        assert_eq!(
            check(&key, &without(claims(), "aud")),
            Err(IdTokenError::MissingClaim("aud"))
        );
        assert_eq!(
            check(&key, &with(claims(), "aud", json!(7))),
            Err(IdTokenError::InvalidClaim("aud"))
        );
        // An array with only us is fine, no azp needed.
        assert!(check(&key, &with(claims(), "aud", json!([CLIENT]))).is_ok());
    }

    #[test]
    fn several_audiences_need_azp_equal_to_client_id() {
        let key = Key::es256("k1");
        let multi = with(claims(), "aud", json!([CLIENT, "other"]));
        assert_eq!(
            check(&key, &multi),
            Err(IdTokenError::WrongAuthorizedParty { found: None })
        );
        assert_eq!(
            check(&key, &with(multi.clone(), "azp", json!("other"))),
            Err(IdTokenError::WrongAuthorizedParty {
                found: Some("other".into())
            })
        );
        assert!(check(&key, &with(multi, "azp", json!(CLIENT))).is_ok());
        // A present azp must be us even with a single audience.
        assert!(matches!(
            check(&key, &with(claims(), "azp", json!("other"))),
            Err(IdTokenError::WrongAuthorizedParty { .. })
        ));
    }

    #[test]
    fn refuses_expired_and_not_yet_valid() {
        let key = Key::es256("k1");
        assert_eq!(
            check(&key, &with(claims(), "exp", json!(NOW - 61))),
            Err(IdTokenError::Expired {
                expired_at: NOW - 61,
                now: NOW
            })
        );
        // Within the leeway.
        assert!(check(&key, &with(claims(), "exp", json!(NOW - 59))).is_ok());
        assert_eq!(
            check(&key, &without(claims(), "exp")),
            Err(IdTokenError::MissingClaim("exp"))
        );
        assert_eq!(
            check(&key, &with(claims(), "exp", json!("tomorrow"))),
            Err(IdTokenError::InvalidClaim("exp"))
        );
        assert_eq!(
            check(&key, &with(claims(), "nbf", json!(NOW + 120))),
            Err(IdTokenError::NotYetValid {
                not_before: NOW + 120,
                now: NOW
            })
        );
        // Fractional NumericDates are accepted.
        assert!(check(&key, &with(claims(), "exp", json!((NOW + 10) as f64 + 0.5))).is_ok());
    }

    #[test]
    fn requires_iat() {
        let key = Key::es256("k1");
        assert_eq!(
            check(&key, &without(claims(), "iat")),
            Err(IdTokenError::MissingClaim("iat"))
        );
        assert_eq!(
            check(&key, &with(claims(), "iat", json!(-5))),
            Err(IdTokenError::InvalidClaim("iat"))
        );
    }

    #[test]
    fn refuses_wrong_or_missing_nonce() {
        let key = Key::es256("k1");
        assert_eq!(
            check(&key, &with(claims(), "nonce", json!("other-nonce"))),
            Err(IdTokenError::NonceMismatch)
        );
        assert_eq!(
            check(&key, &with(claims(), "nonce", json!(""))),
            Err(IdTokenError::NonceMismatch)
        );
        assert_eq!(
            check(&key, &without(claims(), "nonce")),
            Err(IdTokenError::MissingClaim("nonce"))
        );
    }

    #[test]
    fn requires_a_reasonable_sub() {
        let key = Key::es256("k1");
        assert_eq!(
            check(&key, &without(claims(), "sub")),
            Err(IdTokenError::MissingClaim("sub"))
        );
        assert_eq!(
            check(&key, &with(claims(), "sub", json!(""))),
            Err(IdTokenError::InvalidClaim("sub"))
        );
        assert_eq!(
            check(&key, &with(claims(), "sub", json!("x".repeat(256)))),
            Err(IdTokenError::InvalidClaim("sub"))
        );
        assert_eq!(
            check(&key, &with(claims(), "sub", json!(42))),
            Err(IdTokenError::InvalidClaim("sub"))
        );
    }

    #[test]
    fn malformed_tokens() {
        let keys = jwks(&[&Key::es256("k1")]);
        for (token, why) in [
            ("", "not three dot-separated parts"),
            ("a.b", "not three dot-separated parts"),
            ("a.b.c.d", "not three dot-separated parts"),
            ("!!!.e30.", "header"),
            ("e30.e30.", "header"),
        ] {
            assert_eq!(
                verify(token, &keys, &expected()),
                Err(IdTokenError::Malformed(why)),
                "{token}"
            );
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            verify(&long, &keys, &expected()),
            Err(IdTokenError::Malformed(_))
        ));
    }

    #[test]
    fn quoted_values_are_sanitized() {
        let token = format!(
            "{}.e30.",
            b64(&serde_json::to_vec(&json!({"alg": "x\u{1b}[2J\ny"})).unwrap())
        );
        assert_eq!(
            verify(&token, &json!({"keys": []}), &expected()),
            Err(IdTokenError::AlgorithmNotAllowed("x[2Jy".into()))
        );
    }

    #[test]
    fn algorithm_names() {
        for alg in SigningAlgorithm::RSA.iter().chain(
            [
                SigningAlgorithm::ES256,
                SigningAlgorithm::ES384,
                SigningAlgorithm::EdDSA,
            ]
            .iter(),
        ) {
            assert_eq!(SigningAlgorithm::from_name(alg.as_str()), Some(*alg));
        }
        for refused in ["none", "None", "HS256", "HS384", "HS512", "es256", ""] {
            assert_eq!(SigningAlgorithm::from_name(refused), None);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,600}") {
            let keys = json!({"keys": []});
            let _ = verify(&s, &keys, &expected());
        }

        #[test]
        fn arbitrary_parts_never_panic(
            h in proptest::collection::vec(any::<u8>(), 0..80),
            p in proptest::collection::vec(any::<u8>(), 0..200),
            s in "[A-Za-z0-9_-]{0,100}",
            alg in prop_oneof![
                Just("ES256".to_owned()),
                Just("RS256".to_owned()),
                Just("none".to_owned()),
                ".{0,8}",
            ],
        ) {
            let keys = jwks(&[&Key::es256("k1")]);
            let token = format!("{}.{}.{s}", b64(&h), b64(&p));
            let _ = verify(&token, &keys, &expected());
            let header = json!({"alg": alg, "kid": "k1"});
            let token = format!("{}.{}.{s}", b64(&serde_json::to_vec(&header).unwrap()), b64(&p));
            let _ = verify(&token, &keys, &expected());
        }

        #[test]
        fn arbitrary_jwks_never_panic(kty in ".{0,6}", crv in ".{0,8}", x in "[A-Za-z0-9_-]{0,90}", n in "[A-Za-z0-9_-]{0,40}") {
            let key = Key::es256("k1");
            let token = key.sign(&claims());
            let keys = json!({"keys": [
                {"kty": kty, "crv": crv, "x": x, "y": x, "kid": "k1"},
                {"kty": "RSA", "n": n, "e": "AQAB", "kid": "k1"},
                {"kty": "EC", "crv": "P-256", "x": x, "y": x, "kid": "k1"},
            ]});
            let _ = verify(&token, &keys, &expected());
        }
    }
}
