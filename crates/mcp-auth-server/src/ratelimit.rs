//! Per-client-address rate limits for `/register`, `/token` and the login form: a token
//! bucket per IP address. Requests without a known peer address (in-process tests that do
//! not use `into_make_service_with_connect_info`) are not limited.
//!
//! The device verification page (RFC 8628 §5.1, brute forcing of user codes) is limited per
//! address and for the whole tenant (a [`Limiter`] with one bucket, [`Limiter::check_all`]),
//! and an address that enters too many wrong codes is locked out ([`Lockouts`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per minute, sustained.
    pub per_minute: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

/// The limits; `None` turns one off (benchmarks turn them all off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// `POST /register`.
    pub register: Option<Quota>,
    /// `POST /token`.
    pub token: Option<Quota>,
    /// `POST /authorize` (password attempts).
    pub login: Option<Quota>,
    /// User codes entered on the device verification page (`POST /device`), per client
    /// address (RFC 8628 §5.1).
    pub device_verification: Option<Quota>,
    /// User codes entered on the device verification page, all addresses together: bounds
    /// the guesses of an attacker with many addresses (RFC 8628 §5.1).
    pub device_verification_global: Option<Quota>,
    /// Wrong user codes an address may enter before it is locked out.
    pub device_lockout: Option<Lockout>,
}

/// "After `failures` wrong entries within `duration`, refuse the address for `duration`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Wrong entries allowed; the last one locks.
    pub failures: u32,
    /// The window the failures are counted in, and how long the lock lasts.
    pub duration: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            register: Some(Quota {
                per_minute: 60,
                burst: 30,
            }),
            token: Some(Quota {
                per_minute: 1200,
                burst: 200,
            }),
            login: Some(Quota {
                per_minute: 20,
                burst: 10,
            }),
            device_verification: Some(Quota {
                per_minute: 10,
                burst: 5,
            }),
            device_verification_global: Some(Quota {
                per_minute: 600,
                burst: 100,
            }),
            device_lockout: Some(Lockout {
                failures: 10,
                duration: Duration::from_secs(15 * 60),
            }),
        }
    }
}

impl RateLimits {
    /// No limits.
    pub fn off() -> Self {
        Self {
            register: None,
            token: None,
            login: None,
            device_verification: None,
            device_verification_global: None,
            device_lockout: None,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One limiter (one endpoint).
#[derive(Debug, Clone)]
pub struct Limiter {
    quota: Quota,
    buckets: Arc<Mutex<HashMap<IpAddr, Bucket>>>,
}

impl Limiter {
    /// A limiter for `quota`.
    pub fn new(quota: Quota) -> Self {
        Self {
            quota,
            buckets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// `Ok` when `ip` may proceed now, else how long to wait.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(self.quota.per_minute.max(1)) / 60.0;
        let burst = f64::from(self.quota.burst.max(1));
        let mut b = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if b.len() > 100_000 {
            // Forget full buckets: they carry no state worth keeping.
            b.retain(|_, v| v.tokens + now.duration_since(v.at).as_secs_f64() * rate < burst);
        }
        let e = b.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        e.tokens = (e.tokens + now.duration_since(e.at).as_secs_f64() * rate).min(burst);
        e.at = now;
        if e.tokens >= 1.0 {
            e.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - e.tokens) / rate))
        }
    }
}

impl Limiter {
    /// [`check`](Self::check) for everyone together: one bucket for all addresses.
    pub fn check_all(&self, now: Instant) -> Result<(), Duration> {
        self.check(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), now)
    }
}

#[derive(Debug)]
struct Failures {
    count: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

/// Counts wrong entries per address and locks an address out once it reaches
/// [`Lockout::failures`] within [`Lockout::duration`].
#[derive(Debug, Clone)]
pub struct Lockouts {
    policy: Lockout,
    seen: Arc<Mutex<HashMap<IpAddr, Failures>>>,
}

impl Lockouts {
    /// A tracker for `policy`.
    pub fn new(policy: Lockout) -> Self {
        Self {
            policy,
            seen: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(how long)` while `ip` is locked out.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        match self.lock().get(&ip).and_then(|f| f.locked_until) {
            Some(until) if now < until => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a wrong entry from `ip`; returns whether `ip` is now locked out.
    pub fn fail(&self, ip: IpAddr, now: Instant) -> bool {
        let mut seen = self.lock();
        if seen.len() > 100_000 {
            let d = self.policy.duration;
            seen.retain(|_, f| now.duration_since(f.since) < d || f.locked_until > Some(now));
        }
        let f = seen.entry(ip).or_insert(Failures {
            count: 0,
            since: now,
            locked_until: None,
        });
        if now.duration_since(f.since) >= self.policy.duration {
            *f = Failures {
                count: 0,
                since: now,
                locked_until: f.locked_until.filter(|u| now < *u),
            };
        }
        f.count = f.count.saturating_add(1);
        if f.count >= self.policy.failures.max(1) {
            f.locked_until = Some(now + self.policy.duration);
        }
        f.locked_until.is_some_and(|u| now < u)
    }
}

/// Axum middleware: `429` with `Retry-After` when the peer is over its quota.
pub async fn limit(State(limiter): State<Limiter>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = ip
        && let Err(wait) = limiter.check(ip, Instant::now())
    {
        let secs = wait.as_secs().max(1);
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"error": "temporarily_unavailable", "error_description": "too many requests; retry later"})),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let l = Limiter::new(Quota {
            per_minute: 60,
            burst: 3,
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(ip, t0).is_ok());
        }
        let wait = l.check(ip, t0).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::from_millis(900),
            "{wait:?}"
        );
        assert!(l.check(other, t0).is_ok(), "per address");
        assert!(
            l.check(ip, t0 + Duration::from_millis(1100)).is_ok(),
            "one per second comes back"
        );
        assert!(l.check(ip, t0 + Duration::from_millis(1100)).is_err());
    }

    #[test]
    fn global_bucket_is_shared_by_every_caller() {
        let l = Limiter::new(Quota {
            per_minute: 60,
            burst: 2,
        });
        let t0 = Instant::now();
        assert!(l.check_all(t0).is_ok());
        assert!(l.check_all(t0).is_ok());
        assert!(l.check_all(t0).is_err());
    }

    #[test]
    fn lockout_after_n_failures_then_released() {
        let policy = Lockout {
            failures: 3,
            duration: Duration::from_secs(60),
        };
        let l = Lockouts::new(policy);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(!l.fail(ip, t0));
        assert!(!l.fail(ip, t0 + Duration::from_secs(1)));
        assert!(l.check(ip, t0 + Duration::from_secs(1)).is_ok());
        assert!(l.fail(ip, t0 + Duration::from_secs(2)), "the third locks");
        let wait = l.check(ip, t0 + Duration::from_secs(3)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(59));
        assert!(l.check(other, t0 + Duration::from_secs(3)).is_ok());
        assert!(l.check(ip, t0 + Duration::from_secs(62)).is_ok());
        // Failures spread wider than the window never lock.
        for i in 0..5 {
            assert!(!l.fail(other, t0 + Duration::from_secs(100 + 61 * i)));
        }
    }
}
