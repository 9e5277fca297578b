//! SipHash-1-3 with a 128-bit output (Aumasson and Bernstein, "SipHash: a fast short-input
//! PRF", with the 128-bit variant of the reference implementation), under a secret random
//! key: what names a token in the verified-token cache.
//!
//! The cache hands out claims, so its key must stand for one token only. A 64-bit key would
//! not: every request is a guess against every cached entry, and over a busy server's life
//! the chance that some token lands on another's entry stops being negligible. 128 bits of
//! a keyed pseudorandom function make it so (~2^-128 per pair), and since the key never
//! leaves the process a client can neither compute a token's cache key nor search for
//! collisions offline. Why not the SHA-256 used before: ~0.45 µs per request on a ~600-byte
//! JWT, three times this, for a property (collision resistance without a secret) the cache
//! does not need. SipHash-1-3 is the round count Rust's standard `HashMap` relies on against
//! hash flooding. The hash itself is the `siphasher` crate's.

use siphasher::sip128::{Hasher128 as _, SipHasher13};

/// A secret SipHash key.
#[derive(Clone)]
pub(crate) struct SipKey([u8; 16]);

impl std::fmt::Debug for SipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SipKey([redacted])")
    }
}

impl SipKey {
    /// A fresh key from the operating system's generator (not aws-lc's, whose first use
    /// costs a ~0.1 s entropy-source setup that a verify-only resource server need not pay).
    ///
    /// # Panics
    ///
    /// When the generator fails, as `std::collections::HashMap::new` does in that case: a
    /// host without working randomness cannot run anything that relies on secrets.
    pub(crate) fn random() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
        Self(bytes)
    }

    /// SipHash-1-3-128 of `data`.
    pub(crate) fn hash128(&self, data: &[u8]) -> [u8; 16] {
        let mut h = SipHasher13::new_with_key(&self.0);
        std::hash::Hasher::write(&mut h, data);
        h.finish128().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_and_hashes_depend_on_key_and_every_byte() {
        let (a, b) = (SipKey::random(), SipKey::random());
        let token = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";
        assert_ne!(a.hash128(token), b.hash128(token));
        assert_eq!(a.hash128(token), a.clone().hash128(token));
        for i in 0..token.len() {
            let mut t = token.to_vec();
            t[i] ^= 1;
            assert_ne!(a.hash128(&t), a.hash128(token), "byte {i}");
        }
        // A prefix is another message (the length is absorbed).
        assert_ne!(
            a.hash128(&token[..8]),
            a.hash128(&[&token[..8], &[0][..]].concat())
        );
    }

    #[test]
    fn debug_does_not_show_the_key() {
        assert_eq!(format!("{:?}", SipKey([7; 16])), "SipKey([redacted])");
    }
}
