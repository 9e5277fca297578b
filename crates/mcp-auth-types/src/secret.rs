//! Secret values: tokens, codes, client secrets.
//!
//! They never print (`Debug` shows `[redacted]`), are reached only through `secret()`, compare
//! in constant time, and are wiped from memory when dropped.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Zeroizing<String>);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(Zeroizing::new(value.into()))
            }
            /// The secret itself. Every call site is a place where it may leak: keep them few.
            pub fn secret(&self) -> &str {
                &self.0
            }
            /// Constant-time equality with another secret of the same kind.
            pub fn ct_eq(&self, other: &Self) -> bool {
                self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(Self::new)
            }
        }
    };
}

secret_type!(
    /// An OAuth access token (RFC 6749 §1.4).
    AccessToken
);
secret_type!(
    /// An OAuth refresh token (RFC 6749 §1.5).
    RefreshToken
);
secret_type!(
    /// A client secret (RFC 6749 §2.3.1).
    ClientSecret
);
secret_type!(
    /// An authorization code (RFC 6749 §4.1.2).
    AuthorizationCode
);
secret_type!(
    /// Any other secret string (a private key, an assertion, a verifier in transit).
    SecretString
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let t = AccessToken::new("very-secret-value");
        assert_eq!(format!("{t:?}"), "AccessToken([redacted])");
        assert!(!format!("{:?}", Some(&t)).contains("very-secret"));
    }

    #[test]
    fn constant_time_eq() {
        assert!(RefreshToken::new("a").ct_eq(&RefreshToken::new("a")));
        assert!(!RefreshToken::new("a").ct_eq(&RefreshToken::new("b")));
        assert!(!RefreshToken::new("a").ct_eq(&RefreshToken::new("ab")));
    }

    #[test]
    fn serde_roundtrip_is_transparent() {
        let t: ClientSecret = serde_json::from_str("\"s3\"").unwrap();
        assert_eq!(t.secret(), "s3");
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"s3\"");
    }
}
