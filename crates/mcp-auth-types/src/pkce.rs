//! PKCE (RFC 7636), S256 only: OAuth 2.1 §4.1.1 and the MCP spec require it, and `plain` adds
//! nothing over no PKCE against an attacker who can read the authorization request.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::ids::b64url;

/// `n` random bytes, base64url without padding.
pub(crate) fn random_urlsafe(n: usize) -> String {
    let mut buf = Zeroizing::new(vec![0u8; n]);
    // The OS random source failing is not something a caller can recover from, and continuing
    // with a predictable value would be a vulnerability.
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    b64url(&buf)
}

/// A PKCE code verifier (RFC 7636 §4.1). One-shot: not `Clone`, never printed.
pub struct PkceVerifier(Zeroizing<String>);

impl PkceVerifier {
    /// 32 random bytes, base64url: 43 characters from the unreserved set (RFC 7636 §4.1).
    pub fn generate() -> Self {
        Self(Zeroizing::new(random_urlsafe(32)))
    }

    /// Wraps an existing verifier; RFC 7636 §4.1 allows 43–128 unreserved characters.
    pub fn from_string(s: String) -> Option<Self> {
        let ok = (43..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        ok.then(|| Self(Zeroizing::new(s)))
    }

    /// The verifier, sent once, to the token endpoint.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// `BASE64URL(SHA256(ASCII(code_verifier)))` (RFC 7636 §4.2).
    pub fn challenge(&self) -> PkceChallenge {
        PkceChallenge(b64url(&Sha256::digest(self.0.as_bytes())))
    }
}

impl std::fmt::Debug for PkceVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PkceVerifier([redacted])")
    }
}

/// An S256 code challenge (public: it travels in the authorization URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkceChallenge(String);

impl PkceChallenge {
    /// The method this library uses, the only one it accepts.
    pub const METHOD: &'static str = "S256";

    /// Wraps a challenge received by a server.
    pub fn from_string(s: String) -> Self {
        Self(s)
    }

    /// The challenge text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `verifier` hashes to this challenge (constant time).
    pub fn verify(&self, verifier: &str) -> bool {
        let expected = b64url(&Sha256::digest(verifier.as_bytes()));
        expected.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B, verbatim.
    #[test]
    fn rfc7636_appendix_b_vector() {
        let v = PkceVerifier::from_string("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into())
            .unwrap();
        assert_eq!(
            v.challenge().as_str(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(
            v.challenge()
                .verify("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        );
        assert!(
            !v.challenge()
                .verify("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl")
        );
    }

    #[test]
    fn generated_verifier_is_valid() {
        let v = PkceVerifier::generate();
        assert!(PkceVerifier::from_string(v.secret().to_owned()).is_some());
        assert_ne!(v.secret(), PkceVerifier::generate().secret());
        assert_eq!(format!("{v:?}"), "PkceVerifier([redacted])");
    }

    #[test]
    fn verifier_charset_and_length() {
        assert!(PkceVerifier::from_string("a".repeat(42)).is_none());
        assert!(PkceVerifier::from_string("a".repeat(129)).is_none());
        assert!(PkceVerifier::from_string(format!("{}+", "a".repeat(43))).is_none());
    }
}
