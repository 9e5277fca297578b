//! DPoP (RFC 9449): proofs of possession for sender-constrained tokens, both sides.
//!
//! - [`DpopKey`]: a client's P-256 key pair, kept per server, that signs [`DpopKey::proof`]s
//!   (`typ: dpop+jwt`, the public key in the `jwk` header; `jti`, `htm`, `htu`, `iat`, and
//!   `ath` / `nonce` when given).
//! - [`verify_proof`]: everything RFC 9449 §4.3 asks of a server that receives a proof,
//!   except remembering `jti`s (replay) and issuing nonces, which need state; it returns
//!   the key's thumbprint ([`jwk_thumbprint`], RFC 7638) to bind or compare with `cnf.jkt`.
//!
//! ```
//! use mcp_auth_types::dpop::{DpopKey, ProofCheck, verify_proof, access_token_hash};
//!
//! let key = DpopKey::generate().unwrap();
//! let proof = key.proof("POST", "https://as.example/token", None, None, 1_700_000_000).unwrap();
//! let ok = verify_proof(&proof, &ProofCheck {
//!     method: "POST",
//!     url: "https://as.example/token",
//!     now: 1_700_000_010,
//!     ..ProofCheck::default()
//! }).unwrap();
//! assert_eq!(ok.jkt, key.thumbprint());
//! # let _ = access_token_hash("t");
//! ```

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The proof JWT's `typ` (RFC 9449 §4.2).
pub const PROOF_TYP: &str = "dpop+jwt";

/// The signature algorithms this crate accepts in proofs: asymmetric only, never `none`
/// or an HMAC (RFC 9449 §4.3 check 5).
pub const ACCEPTED_ALGS: &[&str] = &[
    "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
];

/// Why a proof is refused, or a key could not be made. Never holds key material, a token,
/// or the proof itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// The proof is not a well-formed JWS (three base64url parts, JSON header and claims).
    #[error("the DPoP proof is not a well-formed JWT")]
    Malformed,
    /// `typ` is not `dpop+jwt`.
    #[error("the DPoP proof's typ is not dpop+jwt")]
    Typ,
    /// `alg` is missing, symmetric, `none`, or not supported.
    #[error("the DPoP proof's alg is not an accepted asymmetric algorithm")]
    Alg,
    /// The `jwk` header is missing, unusable, or holds a private key.
    #[error("the DPoP proof's jwk header is missing, invalid, or holds a private key")]
    Jwk,
    /// The signature does not verify with the `jwk`.
    #[error("the DPoP proof's signature does not verify")]
    Signature,
    /// A required claim is missing or has the wrong type.
    #[error("the DPoP proof lacks the {0} claim")]
    MissingClaim(&'static str),
    /// `htm` is not the request's method.
    #[error("the DPoP proof's htm does not match the request method")]
    Method,
    /// `htu` is not the request's URI (query and fragment ignored), or holds them.
    #[error("the DPoP proof's htu does not match the request URI")]
    Uri,
    /// `iat` is outside the accepted window.
    #[error("the DPoP proof's iat is outside the accepted window")]
    Iat,
    /// `ath` does not match the presented access token.
    #[error("the DPoP proof's ath does not match the access token")]
    Ath,
    /// The server wants a nonce and the proof has none, or another one.
    #[error("the DPoP proof does not carry the server's current nonce")]
    Nonce,
    /// Making a key or signing failed.
    #[error("DPoP key: {0}")]
    Key(&'static str),
}

/// A client's DPoP key pair (ES256). `Debug` shows only the thumbprint.
#[derive(Clone)]
pub struct DpopKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: std::sync::Arc<EcdsaKeyPair>,
    jwk: Value,
    thumbprint: String,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey")
            .field("alg", &"ES256")
            .field("jkt", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

impl DpopKey {
    /// A fresh P-256 key pair.
    pub fn generate() -> Result<Self, DpopError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| DpopError::Key("generating a P-256 key failed"))?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// The key from its PKCS#8 DER encoding (what [`Self::to_pkcs8`] gives).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, DpopError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| DpopError::Key("not a P-256 PKCS#8 private key"))?;
        let point = pair.public_key().as_ref();
        // Uncompressed SEC1: 0x04 ‖ x ‖ y.
        if point.len() != 65 || point[0] != 4 {
            return Err(DpopError::Key("unexpected public key encoding"));
        }
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        let thumbprint = jwk_thumbprint(&jwk).ok_or(DpopError::Key("thumbprint"))?;
        Ok(Self {
            pkcs8: Zeroizing::new(der.to_vec()),
            pair: std::sync::Arc::new(pair),
            jwk,
            thumbprint,
        })
    }

    /// The PKCS#8 DER encoding of the private key, for storing it (encrypted).
    pub fn to_pkcs8(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// The RFC 7638 SHA-256 thumbprint of the public key: the `jkt` a server binds to.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// A proof for one request: `method` and `url` (query and fragment are dropped, RFC 9449
    /// §4.2), issued at `now` (Unix seconds), with `ath` when presenting `access_token`, and
    /// the server's `nonce` when it gave one.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
        now: u64,
    ) -> Result<String, DpopError> {
        let header = json!({"typ": PROOF_TYP, "alg": "ES256", "jwk": self.jwk});
        let mut claims = Map::new();
        claims.insert("jti".into(), Value::String(random_jti()?));
        claims.insert("htm".into(), Value::String(method.to_ascii_uppercase()));
        claims.insert("htu".into(), Value::String(htu_of(url)));
        claims.insert("iat".into(), Value::from(now));
        if let Some(t) = access_token {
            claims.insert("ath".into(), Value::String(access_token_hash(t)));
        }
        if let Some(n) = nonce {
            claims.insert("nonce".into(), Value::String(n.to_owned()));
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| DpopError::Key("signing failed"))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        ))
    }
}

fn random_jti() -> Result<String, DpopError> {
    let mut b = [0u8; 18];
    getrandom::fill(&mut b).map_err(|_| DpopError::Key("no randomness"))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// `ath` (RFC 9449 §4.2): base64url(SHA-256(ASCII access token)).
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK (EC, RSA or OKP): the required members
/// in lexicographic order, no whitespace. `None` for other key types or missing members.
pub fn jwk_thumbprint(jwk: &Value) -> Option<String> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    // serde_json's default map is ordered by key, so `json!` below serializes the required
    // members in lexicographic order, as RFC 7638 §3.2 requires.
    let canonical = match s("kty")? {
        "EC" => json!({"crv": s("crv")?, "kty": "EC", "x": s("x")?, "y": s("y")?}),
        "RSA" => json!({"e": s("e")?, "kty": "RSA", "n": s("n")?}),
        "OKP" => json!({"crv": s("crv")?, "kty": "OKP", "x": s("x")?}),
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.to_string().as_bytes())))
}

/// The `htu` of a request URL: without query and fragment.
pub fn htu_of(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    url[..end].to_owned()
}

/// Compares two `htu` values as RFC 9449 §4.3 check 9 allows: scheme and host
/// case-insensitively, default ports dropped, path as is (an empty path is `/`).
pub fn htu_matches(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(x), Ok(y)) => {
            x.scheme() == y.scheme()
                && x.host_str().map(str::to_ascii_lowercase)
                    == y.host_str().map(str::to_ascii_lowercase)
                && x.port_or_known_default() == y.port_or_known_default()
                && x.path() == y.path()
        }
        _ => false,
    }
}

/// What a server expects of a proof.
#[derive(Debug, Clone, Copy)]
pub struct ProofCheck<'a> {
    /// The request's method.
    pub method: &'a str,
    /// The request's URL as the server knows itself (its public origin and the path).
    pub url: &'a str,
    /// Now, Unix seconds.
    pub now: u64,
    /// How old a proof may be, seconds (default 300).
    pub max_age: u64,
    /// How far in the future `iat` may be, seconds (default 60).
    pub leeway: u64,
    /// The access token presented with the proof (resource requests): `ath` must match.
    pub access_token: Option<&'a str>,
    /// The nonce the server requires, if it requires one.
    pub nonce: Option<&'a str>,
}

impl Default for ProofCheck<'_> {
    fn default() -> Self {
        Self {
            method: "POST",
            url: "",
            now: 0,
            max_age: 300,
            leeway: 60,
            access_token: None,
            nonce: None,
        }
    }
}

/// What a valid proof tells the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The thumbprint of the proof's key (compare with, or bind as, `cnf.jkt`).
    pub jkt: String,
    /// The proof's `jti`, for the server's replay check.
    pub jti: String,
    /// Its `iat`.
    pub iat: u64,
}

/// Checks one proof (RFC 9449 §4.3, all but the `jti` replay check, which needs state).
pub fn verify_proof(proof: &str, check: &ProofCheck<'_>) -> Result<VerifiedProof, DpopError> {
    let mut parts = proof.split('.');
    let (Some(h), Some(c), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopError::Malformed);
    };
    let header: Map<String, Value> = decode_part(h)?;
    let claims: Map<String, Value> = decode_part(c)?;
    if header.get("typ").and_then(Value::as_str) != Some(PROOF_TYP) {
        return Err(DpopError::Typ);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(DpopError::Alg)?;
    if !ACCEPTED_ALGS.contains(&alg) {
        return Err(DpopError::Alg);
    }
    let jwk = header.get("jwk").ok_or(DpopError::Jwk)?;
    // A private key in the header is a client bug that must not be rewarded (§4.3 check 7).
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| jwk.get(m).is_some())
    {
        return Err(DpopError::Jwk);
    }
    let jkt = jwk_thumbprint(jwk).ok_or(DpopError::Jwk)?;
    let parsed: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(jwk.clone()).map_err(|_| DpopError::Jwk)?;
    let key = jsonwebtoken::DecodingKey::from_jwk(&parsed).map_err(|_| DpopError::Jwk)?;
    let algorithm: jsonwebtoken::Algorithm = alg.parse().map_err(|_| DpopError::Alg)?;
    let mut validation = jsonwebtoken::Validation::new(algorithm);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(proof, &key, &validation).map_err(|_| DpopError::Signature)?;

    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty())
        .ok_or(DpopError::MissingClaim("jti"))?;
    let htm = claims
        .get("htm")
        .and_then(Value::as_str)
        .ok_or(DpopError::MissingClaim("htm"))?;
    if htm != check.method {
        return Err(DpopError::Method);
    }
    let htu = claims
        .get("htu")
        .and_then(Value::as_str)
        .ok_or(DpopError::MissingClaim("htu"))?;
    if htu.contains(['?', '#']) || !htu_matches(htu, &htu_of(check.url)) {
        return Err(DpopError::Uri);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(DpopError::MissingClaim("iat"))?;
    if iat > check.now.saturating_add(check.leeway) || iat.saturating_add(check.max_age) < check.now
    {
        return Err(DpopError::Iat);
    }
    if let Some(token) = check.access_token {
        let ath = claims
            .get("ath")
            .and_then(Value::as_str)
            .ok_or(DpopError::MissingClaim("ath"))?;
        if !bool::from(ath.as_bytes().ct_eq(access_token_hash(token).as_bytes())) {
            return Err(DpopError::Ath);
        }
    }
    if let Some(expected) = check.nonce {
        let got = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        if !bool::from(got.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(DpopError::Nonce);
        }
    }
    Ok(VerifiedProof {
        jkt,
        jti: jti.to_owned(),
        iat,
    })
}

fn decode_part(part: &str) -> Result<Map<String, Value>, DpopError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| DpopError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| DpopError::Malformed)
}

/// The `nonce` claim of a proof, unverified (a server that issues nonces may want to know
/// which one was used). `None` when the proof does not parse or has none.
pub fn unverified_nonce(proof: &str) -> Option<String> {
    let c = proof.split('.').nth(1)?;
    let claims = decode_part(c).ok()?;
    claims.get("nonce")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000;

    fn check<'a>(method: &'a str, url: &'a str) -> ProofCheck<'a> {
        ProofCheck {
            method,
            url,
            now: NOW,
            ..ProofCheck::default()
        }
    }

    #[test]
    fn a_proof_verifies_and_binds_to_the_thumbprint() {
        let k = DpopKey::generate().unwrap();
        let p = k
            .proof("post", "https://as.example/token?x=1#f", None, None, NOW)
            .unwrap();
        let v = verify_proof(&p, &check("POST", "https://AS.example:443/token")).unwrap();
        assert_eq!(v.jkt, k.thumbprint());
        assert_eq!(v.iat, NOW);
        // Two proofs never share a jti.
        let p2 = k
            .proof("POST", "https://as.example/token", None, None, NOW)
            .unwrap();
        assert_ne!(
            verify_proof(&p2, &check("POST", "https://as.example/token"))
                .unwrap()
                .jti,
            v.jti
        );
    }

    #[test]
    fn the_key_survives_a_round_trip_through_pkcs8() {
        let k = DpopKey::generate().unwrap();
        let again = DpopKey::from_pkcs8(&k.to_pkcs8()).unwrap();
        assert_eq!(again.thumbprint(), k.thumbprint());
        assert_eq!(k.clone().thumbprint(), k.thumbprint());
        assert!(!format!("{k:?}").contains(&URL_SAFE_NO_PAD.encode(&*k.to_pkcs8())));
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            jwk_thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let k = DpopKey::generate().unwrap();
        let url = "https://rs.example/mcp";
        let good =
            |at: Option<&str>, n: Option<&str>, iat| k.proof("POST", url, at, n, iat).unwrap();
        let c = check("POST", url);
        assert_eq!(
            verify_proof(&good(None, None, NOW), &check("GET", url)),
            Err(DpopError::Method)
        );
        assert_eq!(
            verify_proof(
                &good(None, None, NOW),
                &check("POST", "https://rs.example/other")
            ),
            Err(DpopError::Uri)
        );
        assert_eq!(
            verify_proof(&good(None, None, NOW - 301), &c),
            Err(DpopError::Iat)
        );
        assert_eq!(
            verify_proof(&good(None, None, NOW + 61), &c),
            Err(DpopError::Iat)
        );
        let with_token = ProofCheck {
            access_token: Some("tok"),
            ..c
        };
        assert_eq!(
            verify_proof(&good(None, None, NOW), &with_token),
            Err(DpopError::MissingClaim("ath"))
        );
        assert_eq!(
            verify_proof(&good(Some("other"), None, NOW), &with_token),
            Err(DpopError::Ath)
        );
        assert!(verify_proof(&good(Some("tok"), None, NOW), &with_token).is_ok());
        let with_nonce = ProofCheck {
            nonce: Some("n1"),
            ..c
        };
        assert_eq!(
            verify_proof(&good(None, None, NOW), &with_nonce),
            Err(DpopError::Nonce)
        );
        assert_eq!(
            verify_proof(&good(None, Some("n0"), NOW), &with_nonce),
            Err(DpopError::Nonce)
        );
        assert!(verify_proof(&good(None, Some("n1"), NOW), &with_nonce).is_ok());
        assert_eq!(
            unverified_nonce(&good(None, Some("n1"), NOW)).as_deref(),
            Some("n1")
        );

        // Tampered claims: the signature no longer verifies.
        let p = good(None, None, NOW);
        let mut parts: Vec<String> = p.split('.').map(str::to_owned).collect();
        let forged = json!({"jti":"x","htm":"POST","htu":url,"iat":NOW});
        parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
        assert_eq!(
            verify_proof(&parts.join("."), &c),
            Err(DpopError::Signature)
        );

        // Header problems.
        let resign = |header: Value| {
            let claims = json!({"jti":"x","htm":"POST","htu":url,"iat":NOW});
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = k.pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        };
        let jwk = k.public_jwk().clone();
        assert!(
            verify_proof(
                &resign(json!({"typ":"dpop+jwt","alg":"ES256","jwk":jwk})),
                &c
            )
            .is_ok()
        );
        assert_eq!(
            verify_proof(&resign(json!({"typ":"JWT","alg":"ES256","jwk":jwk})), &c),
            Err(DpopError::Typ)
        );
        assert_eq!(
            verify_proof(
                &resign(json!({"typ":"dpop+jwt","alg":"HS256","jwk":jwk})),
                &c
            ),
            Err(DpopError::Alg)
        );
        assert_eq!(
            verify_proof(
                &resign(json!({"typ":"dpop+jwt","alg":"none","jwk":jwk})),
                &c
            ),
            Err(DpopError::Alg)
        );
        assert_eq!(
            verify_proof(&resign(json!({"typ":"dpop+jwt","alg":"ES256"})), &c),
            Err(DpopError::Jwk)
        );
        let mut private = jwk.clone();
        private["d"] = json!("AAAA");
        assert_eq!(
            verify_proof(
                &resign(json!({"typ":"dpop+jwt","alg":"ES256","jwk":private})),
                &c
            ),
            Err(DpopError::Jwk)
        );
        // Someone else's key in the header: the signature does not verify with it.
        let other = DpopKey::generate().unwrap();
        assert_eq!(
            verify_proof(
                &resign(json!({"typ":"dpop+jwt","alg":"ES256","jwk":other.public_jwk()})),
                &c
            ),
            Err(DpopError::Signature)
        );
        assert_eq!(verify_proof("a.b", &c), Err(DpopError::Malformed));
    }

    #[test]
    fn htu_comparison() {
        assert!(htu_matches(
            "https://a.example/mcp",
            "HTTPS://A.EXAMPLE:443/mcp"
        ));
        assert!(htu_matches(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/"
        ));
        assert!(!htu_matches(
            "https://a.example/mcp",
            "https://a.example/MCP"
        ));
        assert!(!htu_matches(
            "https://a.example:8443/mcp",
            "https://a.example/mcp"
        ));
        assert_eq!(htu_of("https://a/b?c#d"), "https://a/b");
    }

    proptest! {
        #[test]
        fn arbitrary_proofs_never_panic(s in ".{0,400}") {
            let _ = verify_proof(&s, &check("POST", "https://a/b"));
            let _ = unverified_nonce(&s);
        }

        #[test]
        fn arbitrary_jwks_never_panic(v in prop::collection::hash_map("[a-z]{1,3}", ".{0,20}", 0..6)) {
            let map: Map<String, Value> = v.into_iter().map(|(k, s)| (k, Value::String(s))).collect();
            let _ = jwk_thumbprint(&Value::Object(map));
        }
    }
}
