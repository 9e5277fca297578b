//! URL newtypes that remember the exact string they came from.
//!
//! Issuer identifiers (RFC 8414 §3.3, RFC 9207 §2.4) and resource identifiers (RFC 9728 §3.3)
//! are compared as strings, so each type keeps the original text beside the parsed [`Url`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

/// Why a string is not an acceptable URL here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URL at all.
    #[error("not a valid URL: {0}")]
    Invalid(String),
    /// A scheme other than `http` or `https` (`javascript:`, `file:`, `calc.exe:` …).
    #[error("URL scheme {scheme:?} is not http or https")]
    Scheme {
        /// The scheme that was found.
        scheme: String,
    },
    /// Plain `http` to a host that is not loopback, without the caller allowing it.
    #[error("plain http is only allowed for loopback hosts (got {0})")]
    InsecureHttp(String),
    /// A fragment where RFC 8414 / 8707 / 9728 forbid one.
    #[error("URL must not contain a fragment: {0}")]
    Fragment(String),
    /// A query where RFC 8414 §2 forbids one (issuer identifiers).
    #[error("URL must not contain a query: {0}")]
    Query(String),
    /// Control characters or whitespace, which no legitimate identifier contains.
    #[error("URL contains control characters or whitespace")]
    ControlCharacters,
}

fn parse_http(s: &str) -> Result<Url, UrlError> {
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(UrlError::ControlCharacters);
    }
    let url = Url::parse(s).map_err(|e| UrlError::Invalid(format!("{e}")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(UrlError::Scheme {
                scheme: other.to_owned(),
            });
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::Invalid(format!("{s:?} has no host")));
    }
    Ok(url)
}

/// True when `url`'s host is a loopback address or `localhost` (RFC 8252 §7.3, §8.3).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An `http` or `https` URL, keeping the exact original string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HttpUrl {
    raw: String,
    url: Url,
}

impl HttpUrl {
    /// Parses an `http`/`https` URL. Any other scheme is refused, which is what keeps an
    /// authorization endpoint from being `javascript:` or a local program (CVE-2025-6514).
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        Ok(Self {
            url: parse_http(s)?,
            raw: s.to_owned(),
        })
    }

    /// Like [`HttpUrl::parse`] and additionally refuses plain `http` unless the host is
    /// loopback or `allow_http` is set (OAuth 2.1 §1.5: TLS for every endpoint).
    pub fn parse_secure(s: &str, allow_http: bool) -> Result<Self, UrlError> {
        let u = Self::parse(s)?;
        u.require_secure(allow_http)?;
        Ok(u)
    }

    /// Fails for plain `http` to a non-loopback host unless `allow_http`.
    pub fn require_secure(&self, allow_http: bool) -> Result<(), UrlError> {
        if self.url.scheme() == "http" && !allow_http && !is_loopback(&self.url) {
            return Err(UrlError::InsecureHttp(self.raw.clone()));
        }
        Ok(())
    }

    /// Wraps an already parsed URL (its serialization becomes the original string).
    pub fn from_url(url: Url) -> Result<Self, UrlError> {
        Self::parse(url.as_str())
    }

    /// The exact original string.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The origin, `scheme://host[:port]`, without a trailing slash.
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }

    /// Whether the host is loopback.
    pub fn is_loopback(&self) -> bool {
        is_loopback(&self.url)
    }

    /// Resolves a possibly relative reference against this URL; the result must be http(s).
    pub fn join(&self, reference: &str) -> Result<Self, UrlError> {
        let joined = self
            .url
            .join(reference)
            .map_err(|e| UrlError::Invalid(format!("{e}")))?;
        Self::from_url(joined)
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.raw)
    }
}

impl std::str::FromStr for HttpUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for HttpUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An authorization server's issuer identifier (RFC 8414 §2): an `https` (or, for loopback
/// and development, `http`) URL with no query and no fragment, compared as an exact string.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Issuer(HttpUrl);

impl Issuer {
    /// Parses an issuer identifier; refuses queries and fragments (RFC 8414 §2).
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let u = HttpUrl::parse(s)?;
        if u.url.query().is_some() {
            return Err(UrlError::Query(s.to_owned()));
        }
        if u.url.fragment().is_some() {
            return Err(UrlError::Fragment(s.to_owned()));
        }
        Ok(Self(u))
    }

    /// The exact issuer string.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// As an [`HttpUrl`].
    pub fn as_url(&self) -> &HttpUrl {
        &self.0
    }

    /// RFC 8414 §3.3 / RFC 9207 §2.4: issuer identifiers match only when identical as strings
    /// (no normalization of case, ports or trailing slashes).
    pub fn matches(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Issuer({:?})", self.0.raw)
    }
}

impl<'de> Deserialize<'de> for Issuer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A resource indicator (RFC 8707 §2) in the canonical form the MCP spec asks clients to
/// send: lower-case scheme and host, no default port, no fragment, and no trailing slash on
/// an empty path.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ResourceUrl(HttpUrl);

impl ResourceUrl {
    /// Canonicalizes a server URL into its resource identifier. The fragment is dropped
    /// (RFC 8707 §2: "MUST NOT include a fragment component").
    pub fn canonicalize(s: &str) -> Result<Self, UrlError> {
        let mut url = parse_http(s)?;
        url.set_fragment(None);
        // `Url` already lower-cases scheme and host and drops the default port.
        let mut text = url.to_string();
        if url.path() == "/" && url.query().is_none() {
            text.pop();
        }
        Ok(Self(HttpUrl { raw: text, url }))
    }

    /// Takes a resource identifier as a server published it (RFC 9728 `resource`), keeping
    /// its exact text; refuses fragments.
    pub fn parse_exact(s: &str) -> Result<Self, UrlError> {
        let u = HttpUrl::parse(s)?;
        if u.url.fragment().is_some() {
            return Err(UrlError::Fragment(s.to_owned()));
        }
        Ok(Self(u))
    }

    /// The resource identifier as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// As an [`HttpUrl`].
    pub fn as_url(&self) -> &HttpUrl {
        &self.0
    }

    /// Whether a protected resource that announces itself as `self` may serve `server`
    /// (RFC 9728 §3.3, MCP authorization "Resource Parameter"): same origin, and `self`'s path
    /// is `server`'s path or a parent of it on a `/` boundary. Comparisons use the canonical
    /// forms, so `HTTPS://Host:443/mcp` and `https://host/mcp` are the same resource.
    pub fn covers(&self, server: &ResourceUrl) -> bool {
        let (a, b) = (&self.0.url, &server.0.url);
        if a.origin() != b.origin() {
            return false;
        }
        let pa = a.path().trim_end_matches('/');
        let pb = b.path().trim_end_matches('/');
        if pa.is_empty() {
            return true;
        }
        pb == pa || (pb.starts_with(pa) && pb.as_bytes().get(pa.len()) == Some(&b'/'))
    }
}

impl fmt::Display for ResourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ResourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceUrl({:?})", self.0.raw)
    }
}

impl<'de> Deserialize<'de> for ResourceUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_exact(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_http_schemes() {
        for bad in [
            "javascript:alert(1)",
            "file:///etc/passwd",
            "calc.exe:foo",
            "data:text/html,x",
            "http://",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            HttpUrl::parse("http://a b.com/"),
            Err(UrlError::ControlCharacters)
        ));
        assert!(matches!(
            HttpUrl::parse("https://a.com/\u{7}"),
            Err(UrlError::ControlCharacters)
        ));
    }

    #[test]
    fn plain_http_only_for_loopback() {
        assert!(HttpUrl::parse_secure("http://127.0.0.1:8/x", false).is_ok());
        assert!(HttpUrl::parse_secure("http://localhost/x", false).is_ok());
        assert!(HttpUrl::parse_secure("http://[::1]:9/", false).is_ok());
        assert!(HttpUrl::parse_secure("http://example.com/", false).is_err());
        assert!(HttpUrl::parse_secure("http://example.com/", true).is_ok());
        assert!(HttpUrl::parse_secure("https://example.com/", false).is_ok());
    }

    #[test]
    fn canonical_resource() {
        let c = |s| ResourceUrl::canonicalize(s).unwrap().as_str().to_owned();
        assert_eq!(
            c("https://MCP.example.com/mcp"),
            "https://mcp.example.com/mcp"
        );
        assert_eq!(c("HTTPS://mcp.example.com:443"), "https://mcp.example.com");
        assert_eq!(c("https://mcp.example.com/"), "https://mcp.example.com");
        assert_eq!(
            c("https://mcp.example.com:8443/a/#f"),
            "https://mcp.example.com:8443/a/"
        );
        assert_eq!(
            c("http://localhost:3000/mcp?x=1"),
            "http://localhost:3000/mcp?x=1"
        );
    }

    #[test]
    fn resource_coverage() {
        let r = |s| ResourceUrl::canonicalize(s).unwrap();
        assert!(r("https://a.com/mcp").covers(&r("https://a.com/mcp")));
        assert!(r("https://a.com").covers(&r("https://a.com/mcp")));
        assert!(r("https://a.com/").covers(&r("https://a.com/mcp")));
        assert!(r("https://a.com/mcp").covers(&r("https://a.com/mcp/sub")));
        assert!(!r("https://a.com/mcp").covers(&r("https://a.com/mcpx")));
        assert!(!r("https://a.com/mcp").covers(&r("https://a.com/")));
        assert!(!r("https://evil.com/mcp").covers(&r("https://a.com/mcp")));
        assert!(!r("http://a.com/mcp").covers(&r("https://a.com/mcp")));
        assert!(!r("https://a.com:444/mcp").covers(&r("https://a.com/mcp")));
    }

    #[test]
    fn issuer_is_exact() {
        let i = Issuer::parse("https://as.example.com").unwrap();
        assert!(i.matches("https://as.example.com"));
        assert!(!i.matches("https://as.example.com/"));
        assert!(!i.matches("https://AS.example.com"));
        assert!(Issuer::parse("https://as.example.com?x=1").is_err());
        assert!(Issuer::parse("https://as.example.com#x").is_err());
    }
}
