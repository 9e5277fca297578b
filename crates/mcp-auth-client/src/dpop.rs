//! The client's side of DPoP (RFC 9449): when to use it, its per-server key (kept in the
//! credential store beside the tokens it binds), proofs on token and resource requests, and
//! the nonces servers hand out (`DPoP-Nonce`, RFC 9449 §8 and §9).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_auth_types::dpop::DpopKey;
use mcp_auth_types::{AuthorizationServerMetadata, ProtectedResourceMetadata, SecretString};

use crate::error::{Error, Result};

/// When the client asks for DPoP-bound tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DpopPolicy {
    /// When the authorization server advertises ES256 in `dpop_signing_alg_values_supported`
    /// or the resource says `dpop_bound_access_tokens_required` (RFC 9449 §5.1, §5.2).
    #[default]
    Auto,
    /// Always; an authorization server that does not advertise DPoP is an error.
    Required,
    /// Never: bearer tokens only.
    Off,
}

impl DpopPolicy {
    /// Whether to use DPoP with this server. `Err` when required and not offered.
    pub(crate) fn decide(
        self,
        issuer: &str,
        asm: &AuthorizationServerMetadata,
        prm: Option<&ProtectedResourceMetadata>,
    ) -> Result<bool> {
        let offered = asm
            .dpop_signing_alg_values_supported
            .as_ref()
            .is_some_and(|a| a.iter().any(|x| x == "ES256"));
        let demanded = prm.is_some_and(|p| {
            p.extra
                .get("dpop_bound_access_tokens_required")
                .and_then(serde_json::Value::as_bool)
                == Some(true)
        });
        match self {
            Self::Off => Ok(false),
            Self::Auto => Ok(offered || demanded),
            Self::Required if offered => Ok(true),
            Self::Required => Err(Error::Config(format!(
                "DPoP is required, and the authorization server {issuer} does not offer it with ES256 (dpop_signing_alg_values_supported)"
            ))),
        }
    }
}

/// The stored form of a key: base64url of its PKCS#8 DER (the store encrypts the record).
pub(crate) fn encode_key(key: &DpopKey) -> SecretString {
    SecretString::new(URL_SAFE_NO_PAD.encode(&*key.to_pkcs8()))
}

/// The key from its stored form.
pub(crate) fn decode_key(stored: &SecretString) -> Result<DpopKey> {
    let der = zeroize::Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(stored.secret())
            .map_err(|_| Error::Config("the stored DPoP key is not base64url".into()))?,
    );
    DpopKey::from_pkcs8(&der).map_err(|e| Error::Config(format!("the stored DPoP key: {e}")))
}

/// The last nonce each server gave, by origin. Nonces are not secrets, but they are
/// per-server state that a retry must see.
#[derive(Debug, Default)]
pub struct NonceCache {
    by_origin: Mutex<HashMap<String, String>>,
}

fn origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => url.to_owned(),
    }
}

impl NonceCache {
    /// The nonce to put in the next proof for `url`, if its server gave one.
    pub fn get(&self, url: &str) -> Option<String> {
        self.by_origin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&origin(url))
            .cloned()
    }

    /// Remembers the `DPoP-Nonce` a response from `url` carried. `true` when it is new.
    pub fn update(&self, url: &str, headers: &http::HeaderMap) -> bool {
        let Some(nonce) = headers
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            // RFC 9449 §8.1: nonce = 1*NQCHAR (printable ASCII without `"` and `\`).
            .filter(|n| {
                !n.is_empty()
                    && n.len() <= 512
                    && n.bytes()
                        .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
            })
        else {
            return false;
        };
        let mut map = self
            .by_origin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(origin(url), nonce.to_owned()).as_deref() != Some(nonce)
    }
}

/// A key and the nonces, what a request needs to carry a proof.
#[derive(Clone, Copy)]
pub(crate) struct Dpop<'a> {
    pub key: &'a DpopKey,
    pub nonces: &'a NonceCache,
}

impl Dpop<'_> {
    /// A proof for `method url`, with `ath` of `access_token` when given.
    pub fn proof(&self, method: &str, url: &str, access_token: Option<&str>) -> Result<String> {
        let nonce = self.nonces.get(url);
        self.key
            .proof(
                method,
                url,
                access_token,
                nonce.as_deref(),
                crate::store::now_secs(),
            )
            .map_err(|e| Error::Config(format!("making a DPoP proof: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_store_form() {
        let k = DpopKey::generate().unwrap();
        let again = decode_key(&encode_key(&k)).unwrap();
        assert_eq!(again.thumbprint(), k.thumbprint());
        assert!(decode_key(&SecretString::new("%%%".to_owned())).is_err());
    }

    #[test]
    fn nonces_are_per_origin_and_only_printable() {
        let c = NonceCache::default();
        let mut h = http::HeaderMap::new();
        h.insert("dpop-nonce", http::HeaderValue::from_static("n-1"));
        assert!(c.update("https://as.example/token", &h));
        assert!(!c.update("https://as.example/other", &h));
        assert_eq!(c.get("https://as.example:443/x").as_deref(), Some("n-1"));
        assert_eq!(c.get("https://rs.example/mcp"), None);
        h.insert("dpop-nonce", http::HeaderValue::from_static("bad\"nonce"));
        assert!(!c.update("https://as.example/token", &h));
        assert_eq!(c.get("https://as.example/").as_deref(), Some("n-1"));
    }

    #[test]
    fn policy() {
        let mut asm: AuthorizationServerMetadata =
            serde_json::from_value(serde_json::json!({"issuer": "https://as.example"})).unwrap();
        assert!(!DpopPolicy::Auto.decide("i", &asm, None).unwrap());
        assert!(DpopPolicy::Required.decide("i", &asm, None).is_err());
        asm.dpop_signing_alg_values_supported = Some(vec!["ES256".into()]);
        assert!(DpopPolicy::Auto.decide("i", &asm, None).unwrap());
        assert!(!DpopPolicy::Off.decide("i", &asm, None).unwrap());
        asm.dpop_signing_alg_values_supported = Some(vec!["RS256".into()]);
        assert!(!DpopPolicy::Auto.decide("i", &asm, None).unwrap());
    }
}
