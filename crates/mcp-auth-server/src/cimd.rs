//! Client ID metadata documents: a `client_id` that is an HTTPS URL serving the client's
//! own metadata (draft-ietf-oauth-client-id-metadata-document-00, which the MCP
//! authorization specification 2025-11-25 cites in "Client ID Metadata Documents").
//!
//! A client that has never met this server sends its document URL as `client_id`. On the
//! first authorization or token request with that id, [`DocumentFetcher::resolve`] fetches
//! the document, checks it, and stores it as a [`ClientRow`] of kind
//! [`RegistrationKind::MetadataDocument`] whose `expires_at` is the document's HTTP
//! freshness, so later requests read the store until the document goes stale (draft §4.4).
//!
//! # Fetching a URL anyone can choose (draft §6.5, §6.6)
//! - **No private targets.** The server resolves the host itself and refuses the fetch if
//!   *any* address is loopback, private, link-local, CGNAT, unique-local, multicast,
//!   reserved, or an IPv4-mapped/NAT64 form of one ([`is_public_address`]), unless
//!   [`CimdConfig::allow_private_addresses`]. The check runs *inside* the HTTP client's
//!   DNS resolver, so the connection goes to exactly the addresses that were checked: a
//!   name whose answer changes between check and connect (DNS rebinding) gains nothing.
//!   IP-literal hosts skip DNS and are checked before the request.
//! - **No proxy** (a proxy would resolve the name itself, past the check), **no redirects**
//!   (a 3xx is an error, never followed, so a public URL cannot bounce the server inward),
//!   **no body beyond [`CimdConfig::max_bytes`]** (read in chunks, dropped at the limit),
//!   and **one timeout** ([`CimdConfig::timeout`]) over resolution, connection, TLS,
//!   headers and body.
//! - Only a `200` with a JSON content type (`application/json` or `application/*+json`,
//!   draft §4.1) is read.
//!
//! # What a document must say (draft §3, §4.1; MCP 2025-11-25)
//! The URL: `https`, a path, no dot segments, no fragment, no user name or password
//! ([`check_client_id_url`]). The document ([`check_document`]): a JSON object of RFC 7591
//! client metadata whose `client_id` is the URL byte for byte; no `client_secret` or
//! `client_secret_expires_at`; `token_endpoint_auth_method` absent, `none`, or
//! `private_key_jwt` with `jwks` or `jwks_uri`; `redirect_uris` present (for the code
//! grant) and each `https` or `http` on loopback. Errors and invalid documents are never
//! cached (draft §4.4).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use mcp_auth_types::ClientMetadata;
use reqwest::header::{self, HeaderMap};
use serde_json::Value;
use url::{Host, Url};

use crate::config::CimdConfig;
use crate::store::{ClientRow, RegistrationKind, Store, StoreError};

/// The longest `client_id` URL accepted, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 2048;

/// Why a client ID metadata document (or the `jwks_uri` it names) could not be used.
///
/// `Display` is for logs: it may name addresses. [`CimdError::public_message`] is what a
/// user or client may see.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CimdError {
    /// The `client_id` is not an absolute URL, or is longer than [`MAX_CLIENT_ID_LEN`], or
    /// holds characters other than printable ASCII (or a backslash).
    #[error("the client_id is not a usable URL")]
    NotAUrl,
    /// Draft §3: "Client identifier URLs MUST have an https scheme".
    #[error("the client_id URL does not use https")]
    NotHttps,
    /// Draft §3: "MUST contain a path component" (a bare `/` is none).
    #[error("the client_id URL has no path")]
    NoPath,
    /// Draft §3: "MUST NOT contain single-dot or double-dot path segments".
    #[error("the client_id URL contains a . or .. path segment")]
    DotSegment,
    /// Draft §3: "MUST NOT contain a fragment component".
    #[error("the client_id URL contains a fragment")]
    Fragment,
    /// Draft §3: "MUST NOT contain a username or password".
    #[error("the client_id URL contains a user name or password")]
    Userinfo,

    /// Draft §6.5: the host is, or resolves to, a non-public address (any one of them).
    #[error("{host} resolves to the non-public address {addr}")]
    NonPublicAddress {
        /// The host of the URL.
        host: String,
        /// The first refused address.
        addr: IpAddr,
    },
    /// The host name has no address.
    #[error("{host} has no address")]
    NoAddress {
        /// The host of the URL.
        host: String,
    },
    /// The host name could not be resolved.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The host of the URL.
        host: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Connecting, TLS, or reading the response failed.
    #[error("the request failed")]
    Request(#[source] reqwest::Error),
    /// The whole fetch took longer than [`CimdConfig::timeout`].
    #[error("no complete response within {0:?}")]
    Timeout(Duration),
    /// The server answered with a redirect; it is not followed (draft §6.5).
    #[error("the server answered {status}, a redirect, which is not followed")]
    Redirect {
        /// The HTTP status.
        status: u16,
        /// The `Location` header, if readable.
        location: Option<String>,
    },
    /// The server answered something other than `200` (draft §4.3).
    #[error("the server answered {0}")]
    Status(u16),
    /// The response is not JSON (draft §4.1).
    #[error("the response is not JSON (content type {0:?})")]
    NotJson(Option<String>),
    /// The body is larger than [`CimdConfig::max_bytes`] (draft §6.6).
    #[error("the response is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },

    /// The body is not a JSON object of RFC 7591 client metadata.
    #[error("the document is not JSON client metadata")]
    Malformed {
        /// The parse error.
        #[source]
        source: serde_json::Error,
        /// The body as received (lossily decoded; at most `max_bytes`).
        body: String,
    },
    /// Draft §4.1: the document's `client_id` "MUST match the URL of the document using
    /// simple string comparison".
    #[error("the document's client_id is not its URL")]
    ClientIdMismatch {
        /// The document's `client_id`, if it has one.
        found: Option<String>,
    },
    /// Draft §4.1: "the client_secret and client_secret_expires_at properties MUST NOT be
    /// used".
    #[error("the document contains {0}, which a metadata document must not")]
    SecretField(&'static str),
    /// Draft §4.1, §6.2: no method based on a shared secret; this server accepts `none`
    /// and `private_key_jwt`.
    #[error("token_endpoint_auth_method {0} cannot be used with a metadata document")]
    AuthMethod(String),
    /// `private_key_jwt` without `jwks` or `jwks_uri` (draft §6.2).
    #[error("private_key_jwt needs jwks or jwks_uri")]
    MissingKeys,
    /// RFC 7591 §2: "The jwks_uri and jwks parameters MUST NOT both be present".
    #[error("the document has both jwks and jwks_uri")]
    BothKeys,
    /// `jwks_uri` is not an `https` URL.
    #[error("the document's jwks_uri is not an https URL")]
    BadJwksUri,
    /// Draft §4.5: redirect URIs are registered through the document; there are none.
    #[error("the document has no redirect_uris")]
    NoRedirectUris,
    /// A redirect URI that is neither `https` nor `http` on loopback (MCP 2025-11-25,
    /// "Communication Security"), or has a fragment (RFC 6749 §3.1.2).
    #[error("redirect URI {uri} is not allowed: {reason}")]
    BadRedirectUri {
        /// The URI.
        uri: String,
        /// Why.
        reason: &'static str,
    },

    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CimdError {
    /// The text a user (error page) or client (`error_description`) may see: no addresses,
    /// no internal detail.
    pub fn public_message(&self) -> String {
        match self {
            Self::NonPublicAddress { .. } => {
                "the client_id URL points to a non-public network address".into()
            }
            Self::NoAddress { .. } | Self::Resolve { .. } => {
                "the host of the client_id URL cannot be resolved".into()
            }
            Self::Request(_) => "the client's metadata document cannot be fetched".into(),
            Self::Redirect { .. } => {
                "the client's metadata document URL answers with a redirect, which is not followed"
                    .into()
            }
            Self::Timeout(_) => "the client's metadata document was not served in time".into(),
            Self::Malformed { .. } => {
                "the client's metadata document is not JSON client metadata".into()
            }
            Self::Client(_) | Self::Store(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
}

/// Whether `client_id` is meant as a metadata document URL: it starts with `https://`
/// (or `http://` when `allow_http`), in any case. Whether it is a *valid* one is
/// [`check_client_id_url`]'s question.
pub fn is_document_url(client_id: &str, allow_http: bool) -> bool {
    let starts = |p: &str| {
        client_id
            .get(..p.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(p))
    };
    starts("https://") || (allow_http && starts("http://"))
}

/// Checks a `client_id` against draft §3 and returns the URL to fetch.
///
/// `http` is accepted only when `allow_http` (tests). A query is allowed (the draft says
/// SHOULD NOT, not MUST NOT); so is a port.
pub fn check_client_id_url(client_id: &str, allow_http: bool) -> Result<Url, CimdError> {
    if client_id.len() > MAX_CLIENT_ID_LEN
        || !client_id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\\')
    {
        return Err(CimdError::NotAUrl);
    }
    let url = Url::parse(client_id).map_err(|_| CimdError::NotAUrl)?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ => return Err(CimdError::NotHttps),
    }
    if url.host().is_none() {
        return Err(CimdError::NotAUrl);
    }
    if url.fragment().is_some() {
        return Err(CimdError::Fragment);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CimdError::Userinfo);
    }
    // The parser removes dot segments, so look at the string as sent.
    if has_dot_segment(client_id) {
        return Err(CimdError::DotSegment);
    }
    if url.path().is_empty() || url.path() == "/" {
        return Err(CimdError::NoPath);
    }
    Ok(url)
}

/// Whether the path of the raw URL `s` has a `.` or `..` segment, percent-encoded or not
/// (RFC 3986 §5.2.4 and the WHATWG URL parser treat `%2e` as a dot).
fn has_dot_segment(s: &str) -> bool {
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let path_start = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let path = rest[path_start..].split(['?', '#']).next().unwrap_or("");
    path.split('/').any(|seg| {
        let seg = seg.to_ascii_lowercase().replace("%2e", ".");
        seg == "." || seg == ".."
    })
}

/// Whether an address may be fetched from: `false` for everything that is not a globally
/// routable unicast address (draft §6.5 "private or loopback addresses", and the rest of
/// the IANA special-purpose registries for IPv4 and IPv6).
///
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`)
/// and 6to4 (`2002::/16`) addresses are judged by the IPv4 address they carry.
pub fn is_public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let reserved = a == 0 // "this network" (0.0.0.0/8), includes unspecified
        || a == 10 // private (RFC 1918)
        || (a == 100 && (64..128).contains(&b)) // shared address space, CGNAT (RFC 6598)
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local
        || (a == 172 && (16..32).contains(&b)) // private (RFC 1918)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168) // private (RFC 1918)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast (224/4), reserved (240/4), broadcast
    !reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    if s[..6] == [0; 6] {
        // ::/128 unspecified, ::1 loopback, and the deprecated IPv4-compatible ::a.b.c.d.
        return s[6] != 0 && is_public_v4(embedded_v4(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 well-known prefix (RFC 6052): reaches the IPv4 address it carries.
        return is_public_v4(embedded_v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        // 6to4 (RFC 3056): the IPv4 address is in the next 32 bits.
        return is_public_v4(embedded_v4(s[1], s[2]));
    }
    let reserved = (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 (RFC 8215)
        || (s[0] == 0x100 && s[1..4] == [0; 3]) // discard-only (RFC 6666)
        || (s[0] == 0x2001 && s[1] < 0x200) // IETF protocol assignments (Teredo, ORCHID, ...)
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] & 0xfff0) == 0x3ff0 // documentation (3fff::/20, RFC 9637)
        || (s[0] & 0xfe00) == 0xfc00 // unique local (fc00::/7)
        || (s[0] & 0xffc0) == 0xfe80 // link-local (fe80::/10)
        || (s[0] & 0xffc0) == 0xfec0 // site-local, deprecated (fec0::/10)
        || (s[0] & 0xff00) == 0xff00; // multicast
    !reserved
}

/// Checks a fetched document (draft §4.1, §6.2; RFC 7591 §2) for the `client_id` it was
/// fetched from, and returns it as stored: the JSON object as served, unknown fields kept.
///
/// `allow_http` also admits an `http` `jwks_uri` (tests).
pub fn check_document(client_id: &str, body: &[u8], allow_http: bool) -> Result<Value, CimdError> {
    let malformed = |source| CimdError::Malformed {
        source,
        body: String::from_utf8_lossy(body).into_owned(),
    };
    let value: Value = serde_json::from_slice(body).map_err(malformed)?;
    // Field types (redirect_uris a list of strings, ...) are checked by parsing; a
    // non-object fails here too.
    let meta: ClientMetadata = serde_json::from_value(value.clone()).map_err(malformed)?;
    if meta.client_id.as_deref() != Some(client_id) {
        return Err(CimdError::ClientIdMismatch {
            found: meta.client_id,
        });
    }
    for field in ["client_secret", "client_secret_expires_at"] {
        if value.get(field).is_some() {
            return Err(CimdError::SecretField(field));
        }
    }
    // RFC 7591's default (client_secret_basic) cannot apply: no secret can be shared with
    // a document (draft §4.1). Absent means a public client, as `none`.
    match meta.token_endpoint_auth_method.as_ref().map(|m| m.as_str()) {
        None | Some("none") => {}
        Some("private_key_jwt") => match (&meta.jwks, &meta.jwks_uri) {
            (Some(_), Some(_)) => return Err(CimdError::BothKeys),
            (None, None) => return Err(CimdError::MissingKeys),
            (Some(_), None) => {}
            (None, Some(uri)) => {
                let ok = Url::parse(uri).is_ok_and(|u| {
                    (u.scheme() == "https" || (allow_http && u.scheme() == "http"))
                        && u.host().is_some()
                        && u.username().is_empty()
                        && u.password().is_none()
                });
                if !ok {
                    return Err(CimdError::BadJwksUri);
                }
            }
        },
        Some(other) => return Err(CimdError::AuthMethod(other.to_owned())),
    }
    let code_grant =
        meta.grant_types.is_empty() || meta.grant_types.iter().any(|g| g == "authorization_code");
    if code_grant && meta.redirect_uris.is_empty() {
        return Err(CimdError::NoRedirectUris);
    }
    for uri in &meta.redirect_uris {
        check_redirect_uri(uri)?;
    }
    Ok(value)
}

/// MCP 2025-11-25 "Communication Security": "All redirect URIs MUST be either localhost or
/// use HTTPS"; RFC 6749 §3.1.2: absolute, no fragment.
fn check_redirect_uri(uri: &str) -> Result<(), CimdError> {
    let bad = |reason| CimdError::BadRedirectUri {
        uri: uri.to_owned(),
        reason,
    };
    let u = Url::parse(uri).map_err(|_| bad("not an absolute URI"))?;
    if u.fragment().is_some() {
        return Err(bad("it has a fragment"));
    }
    match u.scheme() {
        "https" => Ok(()),
        "http" if u.host_str().is_some_and(crate::handlers::is_loopback_host) => Ok(()),
        "http" => Err(bad("plain http is only allowed for loopback")),
        _ => Err(bad("only https and loopback http are allowed")),
    }
}

/// How long a response may be used (RFC 9111 §4.2.1), clamped to the configured bounds.
///
/// The server is the only user of what it stores (it never serves the document to
/// anyone), so it reads the response as a private cache would: `max-age`, else `Expires`
/// minus `Date`, less `Age`; `s-maxage` and `private` do not concern it. `no-store` and
/// `no-cache` (this server never revalidates) give the minimum, as does a `max-age` or
/// `Expires` that does not parse (RFC 9111 §4.2.1, §5.3: treat as stale). Without any of
/// these, [`CimdConfig::default_cache`].
pub fn freshness(headers: &HeaderMap, config: &CimdConfig, now: SystemTime) -> Duration {
    let directives: Vec<(String, Option<String>)> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                Some((k, v)) => (
                    k.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"').to_owned()),
                ),
                None => (d.to_ascii_lowercase(), None),
            })
        })
        .collect();
    let has = |name: &str| directives.iter().any(|(k, _)| k == name);
    let seconds = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<u64>().ok());
    let lifetime = if has("no-store") || has("no-cache") {
        Some(0)
    } else if let Some((_, v)) = directives.iter().find(|(k, _)| k == "max-age") {
        Some(seconds(v).unwrap_or(0))
    } else if let Some(expires) = headers.get(header::EXPIRES) {
        let date = headers
            .get(header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .unwrap_or(now);
        Some(
            expires
                .to_str()
                .ok()
                .and_then(|e| httpdate::parse_http_date(e).ok())
                .and_then(|e| e.duration_since(date).ok())
                .map_or(0, |d| d.as_secs()),
        )
    } else {
        None
    };
    let age = headers
        .get(header::AGE)
        .and_then(|a| a.to_str().ok())
        .and_then(|a| a.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let fresh = match lifetime {
        Some(l) => Duration::from_secs(l.saturating_sub(age)),
        None => config.default_cache,
    };
    // max then min, not clamp: a configuration with min > max must not panic.
    let min = config.min_cache.max(Duration::from_secs(1));
    fresh.max(min).min(config.max_cache.max(min))
}

/// A checked document and how long it may be cached.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document as served (a JSON object).
    pub metadata: Value,
    /// Its freshness ([`freshness`]).
    pub lifetime: Duration,
}

/// Fetches client ID metadata documents (and `jwks_uri` key sets) under the rules of the
/// [module docs](self), and caches documents in the [`Store`].
///
/// Cheap to clone; the HTTP client is built on first use and shared.
#[derive(Clone)]
pub struct DocumentFetcher {
    inner: Arc<Inner>,
}

struct Inner {
    config: CimdConfig,
    http: OnceLock<reqwest::Client>,
}

impl std::fmt::Debug for DocumentFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentFetcher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl DocumentFetcher {
    /// A fetcher with `config`.
    pub fn new(config: CimdConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                http: OnceLock::new(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CimdConfig {
        &self.inner.config
    }

    /// The client `client_id` of `tenant`: the stored row while it has not expired,
    /// otherwise the document fetched, checked and stored now (expiring after its
    /// [`freshness`]). Nothing is stored when the fetch or a check fails (draft §4.4).
    pub async fn resolve(
        &self,
        store: &dyn Store,
        tenant: &str,
        client_id: &str,
        now: u64,
    ) -> Result<ClientRow, CimdError> {
        if let Some(row) = store.get_client(tenant, client_id, now).await? {
            return Ok(row);
        }
        let doc = self.fetch_document(client_id).await?;
        let row = ClientRow {
            tenant: tenant.to_owned(),
            client_id: client_id.to_owned(),
            secret_hash: None,
            metadata: doc.metadata,
            registration_kind: RegistrationKind::MetadataDocument,
            registration_token_hash: None,
            created_at: now,
            expires_at: Some(now.saturating_add(doc.lifetime.as_secs())),
        };
        store.put_client(&row).await?;
        tracing::info!(client_id = ?client_id, lifetime = ?doc.lifetime, "client metadata document fetched");
        Ok(row)
    }

    /// Fetches and checks the document at `client_id`, without the store.
    pub async fn fetch_document(&self, client_id: &str) -> Result<Document, CimdError> {
        let config = &self.inner.config;
        let url = check_client_id_url(client_id, config.allow_http)?;
        let (headers, body) = self.get(url).await?;
        let metadata = check_document(client_id, &body, config.allow_http)?;
        Ok(Document {
            metadata,
            lifetime: freshness(&headers, config, SystemTime::now()),
        })
    }

    /// Fetches a client's `jwks_uri` (RFC 7591 §2) under the same guards; the JSON as
    /// served. Not cached: a key rotation is seen on the next assertion (draft §6.3).
    pub async fn fetch_jwks(&self, jwks_uri: &str) -> Result<Value, CimdError> {
        let url = Url::parse(jwks_uri).map_err(|_| CimdError::BadJwksUri)?;
        let scheme_ok =
            url.scheme() == "https" || (self.inner.config.allow_http && url.scheme() == "http");
        if !scheme_ok || !url.username().is_empty() || url.password().is_some() {
            return Err(CimdError::BadJwksUri);
        }
        let (_, body) = self.get(url).await?;
        serde_json::from_slice(&body).map_err(|source| CimdError::Malformed {
            source,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    fn http(&self) -> Result<&reqwest::Client, CimdError> {
        if let Some(c) = self.inner.http.get() {
            return Ok(c);
        }
        let config = &self.inner.config;
        let client = reqwest::Client::builder()
            .dns_resolver(VettingResolver {
                allow_private: config.allow_private_addresses,
            })
            // A proxy resolves names itself, past the check.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!config.allow_http)
            .user_agent(concat!("mcp-auth-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(CimdError::Client)?;
        // Another task may have won the race; either client is as good.
        Ok(self.inner.http.get_or_init(|| client))
    }

    /// GET `url` under every guard; the headers and the body of a `200` JSON response.
    async fn get(&self, url: Url) -> Result<(HeaderMap, Vec<u8>), CimdError> {
        let config = &self.inner.config;
        let limit = config.timeout;
        tokio::time::timeout(limit, self.get_unbounded(url))
            .await
            .unwrap_or(Err(CimdError::Timeout(limit)))
    }

    async fn get_unbounded(&self, url: Url) -> Result<(HeaderMap, Vec<u8>), CimdError> {
        let config = &self.inner.config;
        // IP literals never reach the resolver; check them here. Names are checked by the
        // resolver, at connection time.
        let literal = match url.host() {
            Some(Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            Some(Host::Domain(_)) => None,
            None => return Err(CimdError::NotAUrl),
        };
        if let Some(addr) = literal
            && !config.allow_private_addresses
            && !is_public_address(addr)
        {
            return Err(CimdError::NonPublicAddress {
                host: url.host_str().unwrap_or_default().to_owned(),
                addr,
            });
        }
        let mut resp = self
            .http()?
            .get(url)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(request_error)?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(CimdError::Redirect {
                status: status.as_u16(),
                location: resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .map(str::to_owned),
            });
        }
        if status != reqwest::StatusCode::OK {
            return Err(CimdError::Status(status.as_u16()));
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .map(str::to_owned);
        if !content_type.as_deref().is_some_and(is_json) {
            return Err(CimdError::NotJson(content_type));
        }
        let max = config.max_bytes;
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(CimdError::TooLarge { limit: max });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > max {
                return Err(CimdError::TooLarge { limit: max });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((resp.headers().clone(), body))
    }
}

/// `application/json` or `application/<anything>+json` (draft §4.1), parameters ignored.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|s| s.ends_with("+json") && s.len() > "+json".len())
}

/// Recovers the resolver's refusal from inside reqwest's error, so a refused address is
/// reported as such and not as a generic connection failure.
fn request_error(e: reqwest::Error) -> CimdError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<Refused>() {
            return match r {
                Refused::NonPublic { host, addr } => CimdError::NonPublicAddress {
                    host: host.clone(),
                    addr: *addr,
                },
                Refused::NoAddress { host } => CimdError::NoAddress { host: host.clone() },
            };
        }
        cause = c.source();
    }
    CimdError::Request(e)
}

/// Why the resolver refused a name.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{host} resolves to the non-public address {addr}")]
    NonPublic { host: String, addr: IpAddr },
    #[error("{host} has no address")]
    NoAddress { host: String },
}

/// The HTTP client's DNS resolver: resolves with the system resolver and refuses the whole
/// name if any address is not public. The client connects only to what this returns.
struct VettingResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for VettingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(Box::new(Refused::NoAddress { host }) as _);
            }
            if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public_address(a.ip())) {
                return Err(Box::new(Refused::NonPublic {
                    host,
                    addr: bad.ip(),
                }) as _);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for a in [
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fdff:ffff::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:c0a8:101::1",
            "2001::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
        ] {
            assert!(!is_public_address(ip(a)), "{a} should be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "169.253.0.1",
            "11.0.0.1",
            "2606:4700::1",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public_address(ip(a)), "{a} should be allowed");
        }
    }

    #[test]
    fn client_id_urls_follow_draft_section_3() {
        let ok = |s: &str| check_client_id_url(s, false).map(|u| u.to_string());
        assert_eq!(
            ok("https://app.example.com/client.json").unwrap(),
            "https://app.example.com/client.json"
        );
        assert!(ok("https://app.example.com:8443/c?v=1").is_ok());
        assert!(matches!(
            ok("http://app.example.com/c"),
            Err(CimdError::NotHttps)
        ));
        assert!(check_client_id_url("http://127.0.0.1:1/c", true).is_ok());
        assert!(matches!(ok("ftp://x.example/c"), Err(CimdError::NotHttps)));
        assert!(matches!(
            ok("https://app.example.com"),
            Err(CimdError::NoPath)
        ));
        assert!(matches!(
            ok("https://app.example.com/"),
            Err(CimdError::NoPath)
        ));
        assert!(matches!(
            ok("https://app.example.com/c#x"),
            Err(CimdError::Fragment)
        ));
        assert!(matches!(
            ok("https://u:p@app.example.com/c"),
            Err(CimdError::Userinfo)
        ));
        assert!(matches!(
            ok("https://u@app.example.com/c"),
            Err(CimdError::Userinfo)
        ));
        for dots in [
            "https://app.example.com/a/../c",
            "https://app.example.com/./c",
            "https://app.example.com/a/%2E%2e/c",
            "https://app.example.com/a/..",
        ] {
            assert!(matches!(ok(dots), Err(CimdError::DotSegment)), "{dots}");
        }
        // Dots inside a segment, or in the query, are fine.
        assert!(ok("https://app.example.com/.well-known/c..json?x=..").is_ok());
        assert!(matches!(
            ok("https://app.example.com/a b"),
            Err(CimdError::NotAUrl)
        ));
        assert!(matches!(
            ok("https://app.example.com\\c"),
            Err(CimdError::NotAUrl)
        ));
        let long = format!("https://app.example.com/{}", "a".repeat(MAX_CLIENT_ID_LEN));
        assert!(matches!(ok(&long), Err(CimdError::NotAUrl)));
        assert!(matches!(ok("not a url"), Err(CimdError::NotAUrl)));
    }

    #[test]
    fn document_urls_are_recognised_by_scheme() {
        assert!(is_document_url("https://a.example/c", false));
        assert!(is_document_url("HTTPS://a.example/c", false));
        assert!(!is_document_url("http://a.example/c", false));
        assert!(is_document_url("http://a.example/c", true));
        assert!(!is_document_url("Xy3_random-client-id", true));
        assert!(!is_document_url("https:", false));
    }

    const ID: &str = "https://app.example.com/client.json";

    fn doc(extra: serde_json::Value) -> Vec<u8> {
        let mut v = serde_json::json!({
            "client_id": ID,
            "client_name": "Example",
            "redirect_uris": ["http://127.0.0.1:3000/callback", "https://app.example.com/cb"],
        });
        for (k, x) in extra.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        serde_json::to_vec(&v).unwrap()
    }

    fn check(extra: serde_json::Value) -> Result<Value, CimdError> {
        check_document(ID, &doc(extra), false)
    }

    #[test]
    fn a_valid_document_is_kept_as_served() {
        let v = check(serde_json::json!({"logo_uri": "https://app.example.com/l.png", "x-new": 1}))
            .unwrap();
        assert_eq!(v["x-new"], 1);
        assert_eq!(v["client_name"], "Example");
        assert!(check(serde_json::json!({"token_endpoint_auth_method": "none"})).is_ok());
        // The MCP specification's example document.
        let mcp = br#"{
          "client_id": "https://app.example.com/client.json",
          "client_name": "Example MCP Client",
          "client_uri": "https://app.example.com",
          "logo_uri": "https://app.example.com/logo.png",
          "redirect_uris": ["http://127.0.0.1:3000/callback", "http://localhost:3000/callback"],
          "grant_types": ["authorization_code"],
          "response_types": ["code"],
          "token_endpoint_auth_method": "none"
        }"#;
        assert!(check_document(ID, mcp, false).is_ok());
    }

    #[test]
    fn client_id_must_equal_the_url_byte_for_byte() {
        for other in [
            "https://app.example.com/client.json/",
            "https://APP.example.com/client.json",
            "https://app.example.com:443/client.json",
            "https://evil.example/client.json",
        ] {
            let e = check(serde_json::json!({ "client_id": other })).unwrap_err();
            assert!(
                matches!(e, CimdError::ClientIdMismatch { found: Some(ref f) } if f == other),
                "{other}: {e:?}"
            );
        }
        let e = check(serde_json::json!({ "client_id": null })).unwrap_err();
        assert!(matches!(e, CimdError::ClientIdMismatch { found: None }));
    }

    #[test]
    fn secrets_and_shared_secret_methods_are_refused() {
        let e = check(serde_json::json!({"client_secret": "s"})).unwrap_err();
        assert!(matches!(e, CimdError::SecretField("client_secret")));
        let e = check(serde_json::json!({"client_secret_expires_at": 0})).unwrap_err();
        assert!(matches!(
            e,
            CimdError::SecretField("client_secret_expires_at")
        ));
        for m in [
            "client_secret_basic",
            "client_secret_post",
            "client_secret_jwt",
        ] {
            let e = check(serde_json::json!({"token_endpoint_auth_method": m})).unwrap_err();
            assert!(matches!(e, CimdError::AuthMethod(ref x) if x == m), "{m}");
        }
    }

    #[test]
    fn private_key_jwt_needs_exactly_one_key_source() {
        let pkj = |extra: serde_json::Value| {
            let mut e = serde_json::json!({"token_endpoint_auth_method": "private_key_jwt"});
            for (k, v) in extra.as_object().unwrap() {
                e[k] = v.clone();
            }
            check(e)
        };
        assert!(pkj(serde_json::json!({"jwks": {"keys": []}})).is_ok());
        assert!(pkj(serde_json::json!({"jwks_uri": "https://app.example.com/jwks"})).is_ok());
        assert!(matches!(
            pkj(serde_json::json!({})),
            Err(CimdError::MissingKeys)
        ));
        assert!(matches!(
            pkj(serde_json::json!({"jwks": {"keys": []}, "jwks_uri": "https://a.example/j"})),
            Err(CimdError::BothKeys)
        ));
        assert!(matches!(
            pkj(serde_json::json!({"jwks_uri": "http://app.example.com/jwks"})),
            Err(CimdError::BadJwksUri)
        ));
    }

    #[test]
    fn redirect_uris_are_required_and_must_be_https_or_loopback() {
        let e = check(serde_json::json!({"redirect_uris": null})).unwrap_err();
        assert!(matches!(e, CimdError::NoRedirectUris));
        let e = check(serde_json::json!({"redirect_uris": []})).unwrap_err();
        assert!(matches!(e, CimdError::NoRedirectUris));
        // Not needed by a client that does not use the code grant.
        assert!(
            check(serde_json::json!({
                "redirect_uris": null,
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": []},
            }))
            .is_ok()
        );
        for bad in [
            "http://app.example.com/cb",
            "https://app.example.com/cb#frag",
            "com.example.app:/cb",
            "javascript:alert(1)",
            "/relative",
        ] {
            let e = check(serde_json::json!({"redirect_uris": [bad]})).unwrap_err();
            assert!(
                matches!(e, CimdError::BadRedirectUri { ref uri, .. } if uri == bad),
                "{bad}: {e:?}"
            );
        }
        for good in [
            "http://localhost:8080/cb",
            "http://[::1]/cb",
            "http://127.0.0.1/cb",
        ] {
            assert!(
                check(serde_json::json!({"redirect_uris": [good]})).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn malformed_documents_keep_the_body() {
        for body in [&b"not json"[..], b"[1,2]", br#"{"client_id": 5}"#] {
            let e = check_document(ID, body, false).unwrap_err();
            match e {
                CimdError::Malformed { body: b, .. } => {
                    assert_eq!(b.as_bytes(), body)
                }
                other => panic!("{other:?}"),
            }
        }
        let e = check_document(
            ID,
            br#"{"client_id": "https://app.example.com/client.json", "redirect_uris": "x"}"#,
            false,
        )
        .unwrap_err();
        assert!(matches!(e, CimdError::Malformed { .. }));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/oauth-client+json"));
        assert!(!is_json("application/+json"));
        assert!(!is_json("text/html"));
        assert!(!is_json("text/json"));
        assert!(!is_json("application/jsonx"));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn freshness_follows_http_caching() {
        let c = CimdConfig::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let f = |pairs: &[(&str, &str)]| freshness(&headers(pairs), &c, now).as_secs();
        assert_eq!(f(&[]), 300, "default");
        assert_eq!(f(&[("cache-control", "public, max-age=600")]), 600);
        assert_eq!(f(&[("cache-control", "max-age=\"700\"")]), 700);
        assert_eq!(f(&[("cache-control", "Max-Age=600"), ("age", "100")]), 500);
        assert_eq!(f(&[("cache-control", "max-age=9999999")]), 86_400, "capped");
        assert_eq!(f(&[("cache-control", "max-age=0")]), 10, "floored");
        assert_eq!(f(&[("cache-control", "no-store")]), 10);
        assert_eq!(
            f(&[
                ("cache-control", "max-age=600"),
                ("cache-control", "no-cache")
            ]),
            10
        );
        assert_eq!(
            f(&[("cache-control", "max-age=soon")]),
            10,
            "invalid = stale"
        );
        assert_eq!(f(&[("cache-control", "s-maxage=900")]), 300, "not for us");
        assert_eq!(
            f(&[
                ("date", "Tue, 14 Nov 2023 22:13:20 GMT"),
                ("expires", "Tue, 14 Nov 2023 22:33:20 GMT"),
            ]),
            1200
        );
        // max-age wins over Expires (RFC 9111 §5.3).
        assert_eq!(
            f(&[
                ("cache-control", "max-age=60"),
                ("expires", "Tue, 14 Nov 2023 22:33:20 GMT"),
            ]),
            60
        );
        assert_eq!(f(&[("expires", "0")]), 10, "invalid Expires = stale");
        let tight = CimdConfig {
            min_cache: Duration::from_secs(100),
            max_cache: Duration::from_secs(50),
            ..CimdConfig::default()
        };
        // A contradictory configuration does not panic.
        assert_eq!(freshness(&HeaderMap::new(), &tight, now).as_secs(), 100);
    }

    #[test]
    fn public_messages_hide_addresses() {
        let e = CimdError::NonPublicAddress {
            host: "internal.example".into(),
            addr: ip("10.1.2.3"),
        };
        assert!(e.to_string().contains("10.1.2.3"));
        assert!(!e.public_message().contains("10.1.2.3"));
        assert!(!e.public_message().contains("internal.example"));
    }
}
