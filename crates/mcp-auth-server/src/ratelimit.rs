//! Per-client-address rate limits for `/register`, `/token` and the login form: a token
//! bucket per IP address. Requests without a known peer address (in-process tests that do
//! not use `into_make_service_with_connect_info`) are not limited.

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
}
