//! Identifier newtypes.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};
use subtle::ConstantTimeEq;

/// Refuses identifiers that are empty, very long, or contain control characters: no
/// legitimate client id, scope or state has them, and they are how log and header injection
/// start.
pub fn check_identifier(what: &'static str, s: &str) -> Result<(), IdentifierError> {
    if s.is_empty() {
        return Err(IdentifierError {
            what,
            reason: "is empty",
        });
    }
    if s.len() > 4096 {
        return Err(IdentifierError {
            what,
            reason: "is longer than 4096 bytes",
        });
    }
    if s.chars().any(char::is_control) {
        return Err(IdentifierError {
            what,
            reason: "contains control characters",
        });
    }
    Ok(())
}

/// An identifier that failed [`check_identifier`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {reason}")]
pub struct IdentifierError {
    what: &'static str,
    reason: &'static str,
}

/// An OAuth client identifier (RFC 6749 §2.2). With client ID metadata documents it is an
/// `https` URL.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    /// Checks and wraps a client id.
    pub fn new(s: impl Into<String>) -> Result<Self, IdentifierError> {
        let s = s.into();
        check_identifier("client_id", &s)?;
        Ok(Self(s))
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({:?})", self.0)
    }
}

impl<'de> Deserialize<'de> for ClientId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The `state` value of one authorization request (RFC 6749 §10.12): 256 random bits,
/// compared in constant time when the redirect comes back.
#[derive(Clone)]
pub struct CsrfState(String);

impl CsrfState {
    /// A fresh random state.
    pub fn generate() -> Self {
        Self(crate::pkce::random_urlsafe(32))
    }
    /// Wraps a known state value (for example one read back from storage).
    pub fn from_string(s: String) -> Self {
        Self(s)
    }
    /// The value to put on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Constant-time comparison with what came back on the redirect.
    pub fn matches(&self, returned: &str) -> bool {
        self.0.as_bytes().ct_eq(returned.as_bytes()).into()
    }
}

impl fmt::Debug for CsrfState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfState([redacted])")
    }
}

pub(crate) fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_refuses_control_characters() {
        assert!(ClientId::new("abc").is_ok());
        assert!(ClientId::new("").is_err());
        assert!(ClientId::new("a\r\nSet-Cookie: x").is_err());
        assert!(serde_json::from_str::<ClientId>("\"a\\u0000b\"").is_err());
    }

    #[test]
    fn state_is_random_and_compares() {
        let a = CsrfState::generate();
        let b = CsrfState::generate();
        assert_ne!(a.as_str(), b.as_str());
        assert!(a.matches(a.as_str()));
        assert!(!a.matches(b.as_str()));
        assert_eq!(a.as_str().len(), 43);
    }
}
