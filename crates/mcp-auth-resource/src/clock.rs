//! Time, injected so expiry, leeway, cache lifetimes and the JWKS refetch rate limit can be
//! tested without sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
#[cfg(not(target_os = "linux"))]
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in whole seconds since the Unix epoch, the unit of a JWT
/// `NumericDate` (RFC 7519 §2) and of RFC 7662's `exp`/`iat`/`nbf`.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Seconds since 1970-01-01T00:00:00Z.
    fn now_unix(&self) -> u64;
}

/// The system's wall clock.
///
/// On Linux its coarse variant (`CLOCK_REALTIME_COARSE`): the time of the last scheduler
/// tick, a few milliseconds behind at most, read without the hardware counter. Every
/// protected request reads the clock once (is its cached token still valid?), and whole
/// seconds are all any check here uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(target_os = "linux")]
    fn now_unix(&self) -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        // A clock before 1970 is a broken host; every token then looks "issued in the
        // future" and is refused, which is the safe direction.
        u64::try_from(t.tv_sec).unwrap_or(0)
    }

    #[cfg(not(target_os = "linux"))]
    fn now_unix(&self) -> u64 {
        // As above: before 1970, 0.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to; clones share the same time. For tests (here and in
/// crates that embed a resource server).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `now_unix`.
    pub fn new(now_unix: u64) -> Self {
        Self(Arc::new(AtomicU64::new(now_unix)))
    }

    /// A clock starting at the system's current time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_unix())
    }

    /// Sets the time.
    pub fn set(&self, now_unix: u64) {
        self.0.store(now_unix, Ordering::SeqCst);
    }

    /// Moves the time forward (whole seconds; fractions are dropped).
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_agrees_with_the_standard_library() {
        let std_now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        let before = std_now();
        let now = SystemClock.now_unix();
        let after = std_now();
        // The coarse clock may lag by a tick, so it may still show the second before.
        assert!(
            before.saturating_sub(1) <= now && now <= after,
            "{before} {now} {after}"
        );
    }

    #[test]
    fn manual_clock_is_shared_between_clones() {
        let a = ManualClock::new(100);
        let b = a.clone();
        a.advance(Duration::from_millis(2500));
        assert_eq!(b.now_unix(), 102);
        b.set(7);
        assert_eq!(a.now_unix(), 7);
    }
}
