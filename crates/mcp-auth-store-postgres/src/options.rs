//! [`PostgresOptions`]: where the database is and how the pool behaves, and turning them into
//! a driver configuration.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;

use crate::error::PgError;

/// How to reach the database, for [`PostgresStore::connect_with`](crate::PostgresStore::connect_with).
///
/// `Debug` prints the URL with its password replaced by `[redacted]`.
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB` (or `postgresql://`), with optional
    /// libpq-style query parameters. Without a password in the URL, the `PGPASSWORD`
    /// environment variable is used, if set.
    pub url: String,
    /// The most connections the pool opens. Default 16.
    pub pool_size: usize,
    /// How long opening one connection (TCP, startup, authentication) may take. Default 5 s.
    pub connect_timeout: Duration,
    /// How long one call may wait for a free connection, and then how long its statements
    /// may run (the server's `statement_timeout`, and a deadline on the client side for a
    /// server that stopped answering). Default 5 s.
    pub statement_timeout: Duration,
    /// The schema holding the tables; `None` means `public`. A named schema is created if
    /// missing, and every pooled connection uses it through `search_path`, so several
    /// deployments (or tests) can share one database. It must be a plain lowercase SQL
    /// identifier: `[a-z_][a-z0-9_]*`, at most 63 bytes, not starting with `pg_`.
    pub schema: Option<String>,
}

impl PostgresOptions {
    /// The defaults, for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            schema: None,
        }
    }

    /// Sets [`pool_size`](Self::pool_size).
    pub fn pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`statement_timeout`](Self::statement_timeout).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Sets [`schema`](Self::schema).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("schema", &self.schema)
            .finish()
    }
}

/// `url` with the password of its user info and any `password=` parameter replaced.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    // The user info ends at the last `@` before the path or query.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:[redacted]@{hosts}"),
            None => format!("{userinfo}@{hosts}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=[redacted]")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// Whether `name` is a schema name this crate accepts: lowercase, so PostgreSQL's case
/// folding cannot make it name another schema, and safe to splice into SQL and into the
/// `search_path` startup option unquoted.
pub(crate) fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    first_ok
        && name.len() <= 63
        && !name.starts_with("pg_")
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The driver configuration for `options`, and a description of where it points
/// (`host:port`), for error messages.
pub(crate) fn driver_config(
    options: &PostgresOptions,
    schema: &str,
) -> Result<(tokio_postgres::Config, String), PgError> {
    if !(options.url.starts_with("postgres://") || options.url.starts_with("postgresql://")) {
        return Err(PgError::msg(
            "the PostgreSQL URL must start with postgres:// or postgresql://",
        ));
    }
    // The driver's parse errors name the offending option, never its value.
    let mut config = tokio_postgres::Config::from_str(&options.url)
        .map_err(|e| PgError::msg(format!("invalid PostgreSQL URL: {e}")))?;
    if config.get_password().is_none()
        && let Some(password) = std::env::var_os("PGPASSWORD")
    {
        config.password(password.into_encoded_bytes());
    }
    config.connect_timeout(options.connect_timeout);
    // A server that vanished without closing the socket is noticed by TCP keepalives.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    config.application_name("mcp-auth");
    // The server enforces the statement timeout too, and ends a session left idle inside a
    // transaction (a client that vanished mid-call) so its locks are released.
    let millis = options.statement_timeout.as_millis().max(1);
    let idle = millis.saturating_mul(2);
    let ours = format!(
        "-c search_path={schema} -c statement_timeout={millis} \
         -c idle_in_transaction_session_timeout={idle}"
    );
    let startup = match config.get_options() {
        Some(existing) if !existing.trim().is_empty() => format!("{existing} {ours}"),
        _ => ours,
    };
    config.options(startup);
    let target = describe_target(&config);
    Ok((config, target))
}

/// `host:port[,host:port…]`, as the driver will try them.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = match ports {
                [] => 5432,
                [one] => *one,
                many => many.get(i).copied().unwrap_or(5432),
            };
            match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}/.s.PGSQL.{port}", path.display()),
            }
        })
        .collect();
    if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:hunter2@db:5432/x"),
            "postgres://u:[redacted]@db:5432/x"
        );
        assert_eq!(
            redact_url("postgresql://u:p@ss@db/x?password=s3&sslmode=disable"),
            "postgresql://u:[redacted]@db/x?password=[redacted]&sslmode=disable"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        let options = PostgresOptions::new("postgres://u:hunter2@db/x");
        assert!(!format!("{options:?}").contains("hunter2"));
    }

    #[test]
    fn schema_names() {
        for ok in ["public", "t_0af3", "_x", "tenant_a1"] {
            assert!(valid_schema_name(ok), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "1abc",
            "Public",
            "a-b",
            "a b",
            "a;drop",
            "\"q\"",
            "pg_temp",
            long.as_str(),
        ] {
            assert!(!valid_schema_name(bad), "{bad}");
        }
    }

    #[test]
    fn target_and_startup_options() {
        let options = PostgresOptions::new("postgresql://u:p@127.0.0.1:6543/db");
        let (config, target) = driver_config(&options, "s1").unwrap();
        assert_eq!(target, "127.0.0.1:6543");
        assert_eq!(
            config.get_options(),
            Some(
                "-c search_path=s1 -c statement_timeout=5000 \
                 -c idle_in_transaction_session_timeout=10000"
            )
        );
        assert!(driver_config(&PostgresOptions::new("mysql://x"), "s").is_err());
    }
}
