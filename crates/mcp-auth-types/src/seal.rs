//! Sealing secrets at rest: XChaCha20-Poly1305 with a random 192-bit nonce, the associated
//! data binding a ciphertext to its context (a row copied elsewhere does not open), and named
//! keys so that keys can be rotated (the current one seals, older ones still open).
//!
//! The sealed form is text: `v1.<key id>.<base64url(nonce ‖ ciphertext)>`.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};

/// Why sealing or opening failed. The message never holds key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SealError(pub String);

/// The AEAD keys that seal upstream tokens: the current one seals, all of them open.
#[derive(Clone)]
pub struct SealKeys {
    current: String,
    keys: HashMap<String, XChaCha20Poly1305>,
}

impl std::fmt::Debug for SealKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("SealKeys")
            .field("current", &self.current)
            .field("key_ids", &ids)
            .finish()
    }
}

impl SealKeys {
    /// One key, with id `kid` (no `.`, `:` or `,`).
    pub fn new(kid: &str, key: [u8; 32]) -> Result<Self, String> {
        check_kid(kid)?;
        let mut keys = HashMap::new();
        keys.insert(
            kid.to_owned(),
            XChaCha20Poly1305::new(Key::from_slice(&key)),
        );
        Ok(Self {
            current: kid.to_owned(),
            keys,
        })
    }

    /// Adds an older key that still opens what it sealed.
    pub fn with_previous(mut self, kid: &str, key: [u8; 32]) -> Result<Self, String> {
        check_kid(kid)?;
        if self.keys.contains_key(kid) {
            return Err(format!("the key id {kid:?} appears twice"));
        }
        self.keys.insert(
            kid.to_owned(),
            XChaCha20Poly1305::new(Key::from_slice(&key)),
        );
        Ok(self)
    }

    /// Parses `kid:base64key[,kid:base64key…]` (the first is current; keys are 32 bytes in
    /// standard or URL-safe base64). Errors never echo key material.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut out: Option<Self> = None;
        for (i, part) in spec
            .split([',', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let (kid, b64) = part
                .split_once(':')
                .ok_or_else(|| format!("key {} is not kid:base64key", i + 1))?;
            let bytes = STANDARD
                .decode(b64.trim())
                .or_else(|_| URL_SAFE_NO_PAD.decode(b64.trim().trim_end_matches('=')))
                .map_err(|_| format!("key {kid:?} is not base64"))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| format!("key {kid:?} is not 32 bytes"))?;
            out = Some(match out {
                None => Self::new(kid.trim(), key)?,
                Some(k) => k.with_previous(kid.trim(), key)?,
            });
        }
        out.ok_or_else(|| "no key given".to_owned())
    }

    /// A new random key spec (`k<unix time>:<base64>`), for a first start.
    pub fn generate_spec() -> Result<String, String> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no randomness: {e}"))?;
        Ok(format!("k{}:{}", now_secs(), STANDARD.encode(key)))
    }

    /// Seals `plaintext`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<String, SealError> {
        let cipher = self
            .keys
            .get(&self.current)
            .ok_or_else(|| SealError("no current key".into()))?;
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| SealError(format!("no randomness: {e}")))?;
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SealError("encryption failed".into()))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        Ok(format!(
            "v1.{}.{}",
            self.current,
            URL_SAFE_NO_PAD.encode(blob)
        ))
    }

    /// Opens what [`Self::seal`] made with any of the keys.
    pub fn open(&self, aad: &[u8], sealed: &str) -> Result<Vec<u8>, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(kid), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError("unknown format".into()));
        };
        let cipher = self
            .keys
            .get(kid)
            .ok_or_else(|| SealError(format!("sealed with unknown key {kid:?}")))?;
        let blob = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| SealError("not base64url".into()))?;
        if blob.len() < 24 + 16 {
            return Err(SealError("too short".into()));
        }
        let (nonce, ct) = blob.split_at(24);
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| SealError("authentication failed".into()))
    }

    /// Whether `sealed` was sealed with the current key (older rows are re-sealed at their
    /// next write).
    pub fn is_current(&self, sealed: &str) -> bool {
        sealed
            .split('.')
            .nth(1)
            .is_some_and(|kid| kid == self.current)
    }
}

fn check_kid(kid: &str) -> Result<(), String> {
    if kid.is_empty() || kid.contains(['.', ':', ',']) || kid.chars().any(char::is_whitespace) {
        return Err(format!(
            "the key id {kid:?} must be non-empty, without '.', ':', ',' or spaces"
        ));
    }
    Ok(())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SealKeys {
        SealKeys::new("k1", [7u8; 32]).unwrap()
    }

    #[test]
    fn seal_opens_with_the_same_aad_only() {
        let k = keys();
        let sealed = k.seal(b"t\0alice", b"secret tokens").unwrap();
        assert!(sealed.starts_with("v1.k1."));
        assert!(!sealed.contains("secret"));
        assert_eq!(k.open(b"t\0alice", &sealed).unwrap(), b"secret tokens");
        assert!(k.open(b"t\0mallory", &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(k.open(b"t\0alice", &tampered).is_err());
    }

    #[test]
    fn rotated_keys_still_open_old_rows() {
        let old = SealKeys::new("k1", [1u8; 32]).unwrap();
        let sealed = old.seal(b"a", b"x").unwrap();
        let rotated = SealKeys::new("k2", [2u8; 32])
            .unwrap()
            .with_previous("k1", [1u8; 32])
            .unwrap();
        assert_eq!(rotated.open(b"a", &sealed).unwrap(), b"x");
        assert!(!rotated.is_current(&sealed));
        assert!(rotated.seal(b"a", b"x").unwrap().starts_with("v1.k2."));
        let without = SealKeys::new("k2", [2u8; 32]).unwrap();
        assert!(matches!(without.open(b"a", &sealed), Err(SealError(_))));
    }

    #[test]
    fn parse_reads_several_keys_and_never_echoes_them() {
        let spec = format!(
            "new:{}, old:{}",
            STANDARD.encode([3u8; 32]),
            URL_SAFE_NO_PAD.encode([4u8; 32])
        );
        let k = SealKeys::parse(&spec).unwrap();
        assert_eq!(k.current, "new");
        assert_eq!(k.keys.len(), 2);
        let printed = format!("{k:?}");
        assert!(!printed.contains(&STANDARD.encode([3u8; 32])), "{printed}");
        let err = SealKeys::parse("k:c2hvcnQ=").unwrap_err();
        assert!(
            err.contains("32 bytes") && !err.contains("c2hvcnQ"),
            "{err}"
        );
        assert!(SealKeys::parse("").is_err());
        assert!(SealKeys::parse("a.b:AAAA").is_err());
        let generated = SealKeys::generate_spec().unwrap();
        assert!(SealKeys::parse(&generated).is_ok());
    }
}
