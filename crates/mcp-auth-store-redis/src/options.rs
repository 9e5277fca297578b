//! [`RedisOptions`]: where the Redis server is and how the store uses it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mcp_auth_server::store::unix_now;

/// The clock that turns a row's expiry into a Redis TTL: seconds since the Unix epoch.
pub(crate) type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How [`RedisStore::connect_with`](crate::RedisStore::connect_with) connects and lays out
/// its keys.
///
/// `Debug` prints the address, never the URL's password.
#[derive(Clone)]
pub struct RedisOptions {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) ttl_margin: u64,
    pub(crate) clock: Clock,
}

impl RedisOptions {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "mcp-auth:";
    /// The default timeout of one connection attempt.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default timeout of one command's answer.
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default number of seconds a key outlives its row's expiry: longer than the
    /// server's sweep interval (60 s), so that [`Store::sweep`] normally deletes an expired
    /// row, and removes it from the index sets, before Redis drops the key.
    ///
    /// [`Store::sweep`]: mcp_auth_server::store::Store::sweep
    pub const DEFAULT_TTL_MARGIN_SECS: u64 = 300;

    /// Options for the server at `url`, `redis://[USER:PASSWORD@]HOST:PORT/DB`, with the
    /// defaults: prefix `mcp-auth:`, 5 s connect and response timeouts, a 300 s TTL margin,
    /// and [`unix_now`] as the TTL clock.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            response_timeout: Self::DEFAULT_RESPONSE_TIMEOUT,
            ttl_margin: Self::DEFAULT_TTL_MARGIN_SECS,
            clock: Arc::new(unix_now),
        }
    }

    /// Every key the store writes starts with `prefix`, so several stores (or other
    /// applications) can share one database. Stores with the same prefix share their data.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one connection attempt may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long Redis may take to answer one command.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How many seconds a key outlives the expiry of its row. Reads decide expiry from the
    /// `now` they are given; the key's TTL only reclaims memory, so the margin keeps a row
    /// in Redis while a caller whose clock runs a little behind may still read it, and lets
    /// [`Store::sweep`] delete the row (and its entries in the index sets) before Redis
    /// drops the key.
    ///
    /// [`Store::sweep`]: mcp_auth_server::store::Store::sweep
    pub fn ttl_margin_secs(mut self, secs: u64) -> Self {
        self.ttl_margin = secs;
        self
    }

    /// The clock (seconds since the Unix epoch) that turns a row's `expires_at` into a key
    /// TTL; [`unix_now`] by default. Tests with a fake "now" give the same fake clock.
    pub fn ttl_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("ttl_margin", &self.ttl_margin)
            .finish_non_exhaustive()
    }
}

/// The URL with any user information (`USER:PASSWORD@`) replaced by `[redacted]@`.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // The authority ends at the first `/`, `?` or `#`; user information ends at its last `@`.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}[redacted]@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_user_information() {
        assert_eq!(
            redact_url("redis://user:hunter2@example.com:6380/3"),
            "redis://[redacted]@example.com:6380/3"
        );
        assert_eq!(
            redact_url("redis://:p@ss@h:1/0"),
            "redis://[redacted]@h:1/0"
        );
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        let printed = format!("{:?}", RedisOptions::new("redis://u:hunter2@h:1/0"));
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
