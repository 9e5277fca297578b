//! Errors: [`ProxyError`] ends the proxy; [`SendError`] fails one message (a request's
//! client gets it as a JSON-RPC error, the proxy goes on).

/// Why the proxy could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration is unusable (a header that is not a valid HTTP header, a URL that
    /// is not http(s)).
    #[error("proxy configuration: {0}")]
    Config(String),
    /// Reading stdin or writing stdout failed.
    #[error("stdio: {0}")]
    Io(#[from] std::io::Error),
}

/// Why one message could not be delivered to the server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The server answered with this HTTP status (body excerpt, sanitized).
    #[error("the server answered HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status { status: u16, body: String },
    /// No answer: connection, timeout, or authorization failed (the message says which).
    #[error("{0}")]
    Http(String),
    /// The response stream broke before the answer and could not be resumed.
    #[error("the response stream ended before the answer and could not be resumed")]
    StreamLost,
    /// The server ended the session and a new one could not be initialized.
    #[error("the server ended the MCP session and a new one could not be initialized: {0}")]
    Reinit(String),
    /// The old HTTP+SSE transport has not (yet) given a message endpoint.
    #[error("the server's SSE stream gave no message endpoint: {0}")]
    NoEndpoint(String),
}

impl SendError {
    /// The HTTP status, when the server answered with one.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// From a reqwest-middleware error: the OAuth middleware's own errors (a failed login,
    /// a refused refresh) keep their message; transport errors are described without URLs'
    /// query strings.
    pub(crate) fn from_middleware(e: reqwest_middleware::Error) -> Self {
        match e {
            reqwest_middleware::Error::Middleware(any) => {
                Self::Http(format!("authorization failed: {any}"))
            }
            reqwest_middleware::Error::Reqwest(err) => {
                let err = err.without_url();
                Self::Http(format!("cannot reach the server: {err}"))
            }
        }
    }
}

/// A short, printable excerpt of a response body for error messages: control characters
/// removed, at most `max` characters.
pub(crate) fn excerpt(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}
