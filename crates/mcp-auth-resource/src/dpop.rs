//! DPoP (RFC 9449) for servers: [`DpopGuard`] checks the `DPoP` proof of a request — the
//! pure checks of [`mcp_auth_types::dpop::verify_proof`], plus what needs state: refusing a
//! proof seen before (its `jti`, for the proof's lifetime) and, when configured, requiring
//! a fresh server nonce (RFC 9449 §8, §9).
//!
//! Nonces are stateless: `<period number>.<HMAC of it>`, valid in their period and the next,
//! so instances that share [`DpopOptions::nonce_secret`] accept each other's.
//!
//! Used by the resource layer (when [`crate::ResourceConfig::dpop`] is set) and by the
//! authorization server at its token endpoint.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use mcp_auth_types::dpop::{DpopError, ProofCheck, VerifiedProof, verify_proof};

use crate::cache::TtlCache;
use crate::clock::Clock;

/// How a server treats DPoP.
#[derive(Clone)]
pub struct DpopOptions {
    /// Require a server nonce in every proof (RFC 9449 §8, §9): a client without one gets a
    /// `use_dpop_nonce` error and the nonce to retry with.
    pub require_nonce: bool,
    /// The key nonces are made with; instances behind one name need the same. Default: a
    /// random key per process.
    pub nonce_secret: Option<[u8; 32]>,
    /// How long a nonce period lasts; a nonce is accepted in its period and the next.
    pub nonce_period: Duration,
    /// How old a proof may be (its `iat`).
    pub max_age: Duration,
    /// How far in the future a proof's `iat` may be (clock skew).
    pub leeway: Duration,
    /// How many proof `jti`s are remembered (each for the proof lifetime) to refuse replays.
    pub replay_capacity: usize,
    /// Resource only: refuse tokens that are not DPoP-bound, and advertise
    /// `dpop_bound_access_tokens_required` (RFC 9449 §5.2).
    pub required: bool,
}

impl Default for DpopOptions {
    fn default() -> Self {
        Self {
            require_nonce: false,
            nonce_secret: None,
            nonce_period: Duration::from_secs(120),
            max_age: Duration::from_secs(300),
            leeway: Duration::from_secs(60),
            replay_capacity: 100_000,
            required: false,
        }
    }
}

impl std::fmt::Debug for DpopOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopOptions")
            .field("require_nonce", &self.require_nonce)
            .field("nonce_secret", &self.nonce_secret.map(|_| "***"))
            .field("nonce_period", &self.nonce_period)
            .field("max_age", &self.max_age)
            .field("leeway", &self.leeway)
            .field("replay_capacity", &self.replay_capacity)
            .field("required", &self.required)
            .finish()
    }
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopRefusal {
    /// The proof is invalid (RFC 9449 `invalid_dpop_proof`).
    #[error(transparent)]
    Invalid(#[from] DpopError),
    /// More than one `DPoP` header.
    #[error("more than one DPoP header")]
    Multiple,
    /// The proof was used before.
    #[error("the DPoP proof was used before")]
    Replayed,
    /// A nonce is required and the proof lacks a current one: `use_dpop_nonce`, with the
    /// nonce to send back in a `DPoP-Nonce` header.
    #[error("a fresh DPoP nonce is required")]
    UseNonce {
        /// The current nonce.
        nonce: String,
    },
}

impl DpopRefusal {
    /// The RFC 9449 error code for the response.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::UseNonce { .. } => "use_dpop_nonce",
            _ => "invalid_dpop_proof",
        }
    }
}

/// Checks DPoP proofs for one server (one per process and server; cheap to clone).
#[derive(Clone)]
pub struct DpopGuard {
    inner: Arc<GuardInner>,
}

struct GuardInner {
    opts: DpopOptions,
    nonce_key: hmac::Key,
    seen: TtlCache<()>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DpopGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopGuard")
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl DpopGuard {
    /// A guard with these options and clock.
    pub fn new(opts: DpopOptions, clock: Arc<dyn Clock>) -> Self {
        let secret = opts.nonce_secret.unwrap_or_else(|| {
            let mut b = [0u8; 32];
            // Without randomness the nonces would be guessable; nothing sensible continues.
            getrandom::fill(&mut b)
                .unwrap_or_else(|e| panic!("no randomness for DPoP nonces: {e}"));
            b
        });
        Self {
            inner: Arc::new(GuardInner {
                nonce_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
                seen: TtlCache::new(opts.replay_capacity),
                clock,
                opts,
            }),
        }
    }

    /// The options.
    pub fn options(&self) -> &DpopOptions {
        &self.inner.opts
    }

    fn period(&self, now: u64) -> u64 {
        now / self.inner.opts.nonce_period.as_secs().max(1)
    }

    fn nonce_for(&self, period: u64) -> String {
        let tag = hmac::sign(&self.inner.nonce_key, &period.to_be_bytes());
        format!("{period:x}.{}", URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16]))
    }

    /// The nonce to hand out now.
    pub fn current_nonce(&self) -> String {
        self.nonce_for(self.period(self.inner.clock.now_unix()))
    }

    /// Whether `nonce` is one this server made in this period or the last.
    pub fn nonce_is_fresh(&self, nonce: &str) -> bool {
        let Some((p, tag)) = nonce.split_once('.') else {
            return false;
        };
        let (Ok(period), Ok(tag)) = (u64::from_str_radix(p, 16), URL_SAFE_NO_PAD.decode(tag))
        else {
            return false;
        };
        let current = self.period(self.inner.clock.now_unix());
        if period != current && period.saturating_add(1) != current {
            return false;
        }
        let full = hmac::sign(&self.inner.nonce_key, &period.to_be_bytes());
        tag.len() == 16
            && aws_lc_rs::constant_time::verify_slices_are_equal(&full.as_ref()[..16], &tag).is_ok()
    }

    /// The request's `DPoP` header, if any; more than one is refused.
    pub fn proof_header(headers: &HeaderMap) -> Result<Option<&str>, DpopRefusal> {
        let mut values = headers.get_all("dpop").iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(DpopRefusal::Multiple);
        }
        first
            .to_str()
            .map(Some)
            .map_err(|_| DpopRefusal::Invalid(DpopError::Malformed))
    }

    /// Checks `proof` for `method url` (the URL as clients reach this server), with `ath`
    /// against `access_token` when one is presented. A valid proof is remembered, so the
    /// same proof is refused the next time.
    pub fn check(
        &self,
        proof: &str,
        method: &str,
        url: &str,
        access_token: Option<&str>,
    ) -> Result<VerifiedProof, DpopRefusal> {
        let opts = &self.inner.opts;
        let now = self.inner.clock.now_unix();
        let verified = verify_proof(
            proof,
            &ProofCheck {
                method,
                url,
                now,
                max_age: opts.max_age.as_secs(),
                leeway: opts.leeway.as_secs(),
                access_token,
                nonce: None,
            },
        )?;
        if opts.require_nonce {
            let fresh = mcp_auth_types::dpop::unverified_nonce(proof)
                .is_some_and(|n| self.nonce_is_fresh(&n));
            if !fresh {
                return Err(DpopRefusal::UseNonce {
                    nonce: self.current_nonce(),
                });
            }
        }
        // Remembered until it could no longer pass the iat check anyway.
        let until = verified
            .iat
            .saturating_add(opts.max_age.as_secs())
            .max(now)
            .saturating_add(opts.leeway.as_secs() + 1);
        let key = self.inner.seen.key(verified.jti.as_bytes());
        if !self.inner.seen.insert_new(key, (), until, now) {
            return Err(DpopRefusal::Replayed);
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use mcp_auth_types::dpop::DpopKey;

    const NOW: u64 = 1_700_000_000;

    fn guard(require_nonce: bool) -> (DpopGuard, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(NOW));
        let g = DpopGuard::new(
            DpopOptions {
                require_nonce,
                ..DpopOptions::default()
            },
            clock.clone(),
        );
        (g, clock)
    }

    #[test]
    fn a_proof_is_accepted_once() {
        let (g, _) = guard(false);
        let k = DpopKey::generate().unwrap();
        let p = k
            .proof("POST", "https://as/token", None, None, NOW)
            .unwrap();
        let v = g.check(&p, "POST", "https://as/token", None).unwrap();
        assert_eq!(v.jkt, k.thumbprint());
        assert_eq!(
            g.check(&p, "POST", "https://as/token", None),
            Err(DpopRefusal::Replayed)
        );
        let other = k
            .proof("POST", "https://as/token", None, None, NOW)
            .unwrap();
        assert!(g.check(&other, "POST", "https://as/token", None).is_ok());
        assert!(matches!(
            g.check(&other, "GET", "https://as/token", None),
            Err(DpopRefusal::Invalid(DpopError::Method))
        ));
    }

    #[test]
    fn nonces_are_required_fresh_and_unforgeable() {
        let (g, clock) = guard(true);
        let k = DpopKey::generate().unwrap();
        let url = "https://rs/mcp";
        let p = k.proof("POST", url, Some("t"), None, NOW).unwrap();
        let Err(DpopRefusal::UseNonce { nonce }) = g.check(&p, "POST", url, Some("t")) else {
            panic!("a nonce is required");
        };
        assert_eq!(
            DpopRefusal::UseNonce {
                nonce: nonce.clone()
            }
            .error_code(),
            "use_dpop_nonce"
        );
        let p = k.proof("POST", url, Some("t"), Some(&nonce), NOW).unwrap();
        assert!(g.check(&p, "POST", url, Some("t")).is_ok());
        // Still good in the next period, not the one after.
        clock.advance(Duration::from_secs(120));
        assert!(g.nonce_is_fresh(&nonce));
        clock.advance(Duration::from_secs(120));
        assert!(!g.nonce_is_fresh(&nonce));
        // Another server's nonce, or a made-up one, is not fresh.
        let (other, _) = guard(true);
        assert!(!g.nonce_is_fresh(&other.current_nonce()));
        for bad in [
            "",
            "x",
            "zz.AAAA",
            "1.",
            &format!("{}.AAAAAAAAAAAAAAAAAAAAAA", NOW / 120),
        ] {
            assert!(!g.nonce_is_fresh(bad), "{bad}");
        }
    }

    #[test]
    fn two_headers_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(DpopGuard::proof_header(&h), Ok(None));
        h.append("dpop", http::HeaderValue::from_static("a.b.c"));
        assert_eq!(DpopGuard::proof_header(&h), Ok(Some("a.b.c")));
        h.append("dpop", http::HeaderValue::from_static("d.e.f"));
        assert_eq!(DpopGuard::proof_header(&h), Err(DpopRefusal::Multiple));
    }
}
