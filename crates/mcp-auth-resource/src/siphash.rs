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
//! hash flooding; the tests check the rounds and the 128-bit finalization against the
//! reference implementation's vectors.

/// A secret SipHash key.
#[derive(Clone)]
pub(crate) struct SipKey {
    k0: u64,
    k1: u64,
}

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
        Self::from_bytes(bytes)
    }

    fn from_bytes(bytes: [u8; 16]) -> Self {
        let (k0, k1) = bytes.split_at(8);
        Self {
            k0: u64::from_le_bytes(k0.try_into().expect("8 bytes")),
            k1: u64::from_le_bytes(k1.try_into().expect("8 bytes")),
        }
    }

    /// SipHash-1-3-128 of `data`.
    pub(crate) fn hash128(&self, data: &[u8]) -> [u8; 16] {
        let mut out = [0u8; 16];
        siphash::<1, 3>(self.k0, self.k1, data, &mut out);
        out
    }
}

#[derive(Clone, Copy)]
struct State([u64; 4]);

impl State {
    #[inline(always)]
    fn rounds(&mut self, n: usize) {
        let [mut v0, mut v1, mut v2, mut v3] = self.0;
        for _ in 0..n {
            v0 = v0.wrapping_add(v1);
            v1 = v1.rotate_left(13) ^ v0;
            v0 = v0.rotate_left(32);
            v2 = v2.wrapping_add(v3);
            v3 = v3.rotate_left(16) ^ v2;
            v0 = v0.wrapping_add(v3);
            v3 = v3.rotate_left(21) ^ v0;
            v2 = v2.wrapping_add(v1);
            v1 = v1.rotate_left(17) ^ v2;
            v2 = v2.rotate_left(32);
        }
        self.0 = [v0, v1, v2, v3];
    }

    fn fold(&self) -> u64 {
        let [v0, v1, v2, v3] = self.0;
        v0 ^ v1 ^ v2 ^ v3
    }
}

/// SipHash-`C`-`D` of `data` into `out`: 8 bytes (the original 64-bit output) or 16 (the
/// 128-bit variant), each half little-endian as the reference implementation writes it.
fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, data: &[u8], out: &mut [u8]) {
    let wide = match out.len() {
        8 => false,
        16 => true,
        n => unreachable!("SipHash output of {n} bytes"),
    };
    let mut s = State([
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d ^ if wide { 0xee } else { 0 },
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ]);
    let absorb = |s: &mut State, m: u64| {
        s.0[3] ^= m;
        s.rounds(C);
        s.0[0] ^= m;
    };
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        absorb(&mut s, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    // The last word: the remaining bytes, and the length's low byte in the top byte.
    let mut last = (data.len() as u64) << 56;
    for (i, &b) in words.remainder().iter().enumerate() {
        last |= u64::from(b) << (8 * i);
    }
    absorb(&mut s, last);
    s.0[2] ^= if wide { 0xee } else { 0xff };
    s.rounds(D);
    out[..8].copy_from_slice(&s.fold().to_le_bytes());
    if wide {
        s.0[1] ^= 0xdd;
        s.rounds(D);
        out[8..].copy_from_slice(&s.fold().to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference vectors' key, 00 01 … 0f, and message `len` bytes 00 01 02 ….
    fn reference<const C: usize, const D: usize, const N: usize>(len: u8) -> [u8; N] {
        let key = SipKey::from_bytes(std::array::from_fn(|i| i as u8));
        let msg: Vec<u8> = (0..len).collect();
        let mut out = [0u8; N];
        siphash::<C, D>(key.k0, key.k1, &msg, &mut out);
        out
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `vectors_sip64` of github.com/veorq/SipHash `vectors.h` (SipHash-2-4, 64 bits), by
    /// message length: the absorb loop and padding at every length around a word boundary.
    #[test]
    fn siphash_2_4_64_reference_vectors() {
        for (len, expected) in [
            (0, "310e0edd47db6f72"),
            (1, "fd67dc93c539f874"),
            (7, "37d1018bf50002ab"),
            (8, "6224939a79f5f593"),
            (9, "b0e4a90bdf82009e"),
            (15, "e545be4961ca29a1"),
            (16, "db9bc2577fcc2a3f"),
            (63, "724506eb4c328a95"),
        ] {
            assert_eq!(hex(&reference::<2, 4, 8>(len)), expected, "length {len}");
        }
    }

    /// `vectors_sip128` of the same file (SipHash-2-4, 128 bits): the 128-bit finalization.
    #[test]
    fn siphash_2_4_128_reference_vectors() {
        for (len, expected) in [
            (0, "a3817f04ba25a8e66df67214c7550293"),
            (1, "da87c1d86b99af44347659119b22fc45"),
            (7, "a1f1ebbed8dbc153c0b84aa61ff08239"),
            (8, "3b62a9ba6258f5610f83e264f31497b4"),
            (15, "5493e99933b0a8117e08ec0f97cfc3d9"),
            (63, "5150d1772f50834a503e069a973fbd7c"),
        ] {
            assert_eq!(hex(&reference::<2, 4, 16>(len)), expected, "length {len}");
        }
    }

    /// SipHash-1-3, 64 bits, zero key, message 00 01 …: values of the reference
    /// implementation compiled with 1 and 3 rounds (as Rust's `SipHasher13` gives them).
    #[test]
    fn siphash_1_3_64_reference_values() {
        let zero = SipKey::from_bytes([0; 16]);
        for (len, expected) in [
            (0u8, 0xd1fb_a762_150c_532c_u64),
            (1, 0x68a9_1412_8e01_e473),
            (7, 0x2f09_8ab0_c751_325a),
            (8, 0xead4_11e6_7ebe_2eea),
            (15, 0xf30e_b725_bb91_c9ea),
            (16, 0x8972_1884_33a5_c5b7),
        ] {
            let msg: Vec<u8> = (0..len).collect();
            let mut out = [0u8; 8];
            siphash::<1, 3>(zero.k0, zero.k1, &msg, &mut out);
            assert_eq!(u64::from_le_bytes(out), expected, "length {len}");
        }
    }

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
        assert_eq!(
            format!("{:?}", SipKey::from_bytes([7; 16])),
            "SipKey([redacted])"
        );
    }
}
