//! [`ResourceServer`]: configuration checked once, the verifier, the token cache, and the
//! request check shared by the layer and by callers outside axum.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::{HeaderMap, Method, Uri, header};
use mcp_auth_types::{ProtectedResourceMetadata, ScopeSet};
use subtle::ConstantTimeEq;

use crate::cache::TtlCache;
use crate::challenge::DpopChallenge;
use crate::claims::{check_audience, check_times};
use crate::clock::{Clock, SystemClock};
use crate::config::{ResourceConfig, Verifier};
use crate::dpop::DpopGuard;
use crate::extract::RouteContext;
use crate::introspection::IntrospectionVerifier;
use crate::jwt::JwtVerifier;
use crate::{
    AuthError, Authenticated, Claims, ConfigError, ProtectedLayer, Rejection, TokenVerifier,
    VerifyError,
};

/// Tokens longer than this are refused without being parsed or sent anywhere.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A protected resource: checks requests against its [`ResourceConfig`].
///
/// Cheap to clone (one `Arc`); build it once at startup and hand clones to
/// [`ProtectedLayer`]s. It holds the verified-token cache, so the signature check or the
/// introspection call happens once per token and cache lifetime, not once per request.
#[derive(Clone)]
pub struct ResourceServer {
    inner: Arc<Inner>,
}

struct Inner {
    resource: String,
    issuers: Vec<String>,
    resource_metadata: Arc<str>,
    metadata: ProtectedResourceMetadata,
    metadata_urls: Vec<mcp_auth_types::HttpUrl>,
    metadata_max_age: Duration,
    verifier: Arc<dyn TokenVerifier>,
    cache: TtlCache<CachedToken>,
    cache_ttl: u64,
    clock: Arc<dyn Clock>,
    leeway: u64,
    /// DPoP (RFC 9449), when the resource accepts it.
    dpop: Option<DpopGuard>,
    /// The origin clients reach this resource at, for a proof's `htu`.
    origin: String,
}

/// A verified token in the cache: its claims, and the part of the token that its key does
/// not cover ([`cache_parts`]), which a request's token must repeat exactly to be answered
/// from this entry.
struct CachedToken {
    claims: Arc<Claims>,
    kept: Box<[u8]>,
}

impl Inner {
    /// The cached claims of `token`, if it was verified and the entry has not expired.
    fn cached(&self, token: &[u8], now: u64) -> Option<Arc<Claims>> {
        let (hashed, kept) = cache_parts(token);
        self.cache.get_with(&self.cache.key(hashed), now, |entry| {
            constant_time_eq::constant_time_eq(&entry.kept, kept).then(|| entry.claims.clone())
        })
    }
}

/// The shortest signature segment [`cache_parts`] keys a token by: 43 base64url characters,
/// 32 bytes, an HMAC-SHA-256 (ES256 and EdDSA signatures have 86, RS256 342).
const MIN_SIGNATURE_CHARS: usize = 43;

/// How a token is named in the verified-token cache: `(hashed, kept)`, the bytes hashed into
/// the entry's key and the bytes the entry keeps to compare, together the whole token.
///
/// A JWS in compact form (RFC 7515 §7.1: `header.payload.signature`, JWT access tokens among
/// them) is keyed by its signature alone and keeps `header.payload.`: the signature is the
/// one part no one can produce without the signing key, the other two are readable by whoever
/// holds the token and worth nothing without it, so the cache still holds nothing a caller
/// could replay. Hashing ~90 bytes instead of a ~600-byte JWT is what keeps the cache lookup
/// off the protected call's cost; the byte comparison keeps a token with an altered header or
/// payload from ever being answered from its original's entry (it is verified, and refused).
///
/// Anything else (opaque tokens, JWEs, a last segment too short to be a signature) is hashed
/// whole and keeps nothing.
fn cache_parts(token: &[u8]) -> (&[u8], &[u8]) {
    if let Some(last) = memchr::memrchr(b'.', token) {
        let (kept, signature) = (&token[..=last], &token[last + 1..]);
        let three_parts = memchr::memchr(b'.', &token[..last])
            .is_some_and(|first| memchr::memchr(b'.', &token[first + 1..last]).is_none());
        if three_parts && signature.len() >= MIN_SIGNATURE_CHARS {
            return (signature, kept);
        }
    }
    (token, &[])
}

impl fmt::Debug for ResourceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceServer")
            .field("resource", &self.inner.resource)
            .field("authorization_servers", &self.inner.issuers)
            .finish_non_exhaustive()
    }
}

impl ResourceServer {
    /// Checks the configuration and builds the verifier (no network access yet: the key
    /// set is fetched on first use).
    pub fn new(config: ResourceConfig) -> Result<Self, ConfigError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// Like [`ResourceServer::new`] with an injected clock (tests, simulations).
    pub fn with_clock(config: ResourceConfig, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        let allow_http = config.danger_allow_insecure_http;
        config
            .resource
            .as_url()
            .require_secure(allow_http)
            .map_err(|source| ConfigError::Url {
                field: "resource",
                source,
            })?;
        if config.authorization_servers.is_empty() {
            return Err(ConfigError::NoAuthorizationServer);
        }
        let issuers: Vec<String> = config
            .authorization_servers
            .iter()
            .map(|i| i.as_str().to_owned())
            .collect();
        let listed = |issuer: &str| {
            if issuers.iter().any(|i| i == issuer) {
                Ok(())
            } else {
                Err(ConfigError::IssuerNotListed(issuer.to_owned()))
            }
        };
        let resource = config.resource.as_str().to_owned();
        let verifier: Arc<dyn TokenVerifier> = match config.verifier.clone() {
            Verifier::Jwt(c) => {
                listed(c.issuer.as_str())?;
                c.jwks_uri
                    .require_secure(allow_http)
                    .map_err(|source| ConfigError::Url {
                        field: "jwks_uri",
                        source,
                    })?;
                Arc::new(JwtVerifier::new(
                    c,
                    &resource,
                    config.leeway,
                    clock.clone(),
                )?)
            }
            Verifier::Introspection(c) => {
                listed(c.issuer.as_str())?;
                c.endpoint
                    .require_secure(allow_http)
                    .map_err(|source| ConfigError::Url {
                        field: "introspection endpoint",
                        source,
                    })?;
                Arc::new(IntrospectionVerifier::new(
                    c,
                    &resource,
                    config.leeway,
                    clock.clone(),
                )?)
            }
            Verifier::Custom(v) => v,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                resource_metadata: Arc::from(config.resource_metadata_url()),
                metadata: config.metadata(),
                metadata_urls: config.metadata_urls(),
                metadata_max_age: config.metadata_max_age,
                resource,
                issuers,
                verifier,
                cache: TtlCache::new(config.token_cache_capacity),
                cache_ttl: config.token_cache_ttl.as_secs(),
                dpop: config
                    .dpop
                    .clone()
                    .map(|o| DpopGuard::new(o, clock.clone())),
                origin: config.resource.as_url().origin(),
                clock,
                leeway: config.leeway.as_secs(),
            }),
        })
    }

    /// This resource's identifier, exactly as configured.
    pub fn resource(&self) -> &str {
        &self.inner.resource
    }

    /// The path-inserted metadata URL sent as `resource_metadata` in challenges.
    pub fn resource_metadata_url(&self) -> &str {
        &self.inner.resource_metadata
    }

    /// The protected resource metadata document (RFC 9728 §2).
    pub fn metadata(&self) -> &ProtectedResourceMetadata {
        &self.inner.metadata
    }

    /// The router serving the metadata at both well-known URLs; see [`crate::prm_router`].
    pub fn metadata_router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        crate::metadata::router_for(
            &self.inner.metadata,
            &self.inner.metadata_urls,
            self.inner.metadata_max_age,
        )
    }

    /// A layer protecting routes with this server (no scope required yet; add some with
    /// [`ProtectedLayer::require_scopes`]).
    pub fn layer(&self) -> ProtectedLayer {
        ProtectedLayer::new(self.clone())
    }

    /// Verifies a token: from the cache when it was verified recently, else with the
    /// verifier, then checks what every verifier's result must satisfy (issuer among the
    /// authorization servers, audience naming this resource when given, not expired).
    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>, VerifyError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::Malformed("longer than 16 KiB"));
        }
        let inner = &*self.inner;
        let now = inner.clock.now_unix();
        if let Some(claims) = inner.cached(token.as_bytes(), now) {
            return Ok(claims);
        }
        let claims = inner.verifier.verify(token).await?;
        self.check(&claims, now)?;
        let claims = Arc::new(claims);
        let ttl = inner.cache_ttl.min(inner.verifier.cache_ttl().as_secs());
        // Only b64tokens are cached (a caller of this method may pass anything): the layer's
        // fast path skips the character check on a cache hit, because a hit means these
        // exact bytes passed it here.
        if ttl > 0 && is_b64token(token) {
            let mut until = now.saturating_add(ttl);
            if let Some(exp) = claims.expires_at {
                until = until.min(exp);
            }
            let (hashed, kept) = cache_parts(token.as_bytes());
            let entry = CachedToken {
                claims: claims.clone(),
                kept: kept.into(),
            };
            inner
                .cache
                .insert(inner.cache.key(hashed), entry, until, now);
        }
        Ok(claims)
    }

    /// Defence in depth for every verifier, custom ones included.
    fn check(&self, claims: &Claims, now: u64) -> Result<(), VerifyError> {
        let inner = &*self.inner;
        if !inner.issuers.contains(&claims.issuer) {
            return Err(VerifyError::WrongIssuer {
                expected: inner.issuers.join(" "),
                found: claims.issuer.clone(),
            });
        }
        if !claims.audience.is_empty() {
            check_audience(&claims.audience, &inner.resource)?;
        }
        check_times(claims.expires_at, None, None, now, inner.leeway)
    }

    /// Checks one request: extracts the bearer token (RFC 6750 §2.1, header only), verifies
    /// it and requires `required`. The error side is a complete response
    /// ([`Rejection`] is `IntoResponse`). For servers that do not use the layer.
    pub async fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
        uri: &Uri,
        required: &ScopeSet,
    ) -> Result<Authenticated, Rejection> {
        let route = self.route_context(required.clone());
        match self.cached_claims(headers, uri) {
            Some(claims) => Self::admit(claims, route, false),
            None => self.authenticate_shared(method, headers, uri, &route).await,
        }
    }

    /// What [`Authenticated`] carries from a route requiring `required`.
    pub(crate) fn route_context(&self, required: ScopeSet) -> Arc<RouteContext> {
        Arc::new(RouteContext {
            server: self.clone(),
            required,
            resource_metadata: self.inner.resource_metadata.clone(),
        })
    }

    /// The fast path of the layer and of [`crate::ProtectedLayer::protect`]: the claims of a
    /// request whose token is in the cache, without awaiting anything or checking the token's
    /// characters again; [`Self::admit`] then decides. `None` when
    /// [`Self::authenticate_shared`] must decide: no usable `Authorization: Bearer` header,
    /// an `access_token` query parameter, a token not in the cache (never verified, expired
    /// from the cache, or malformed: only b64tokens are ever cached, see [`Self::verify`]).
    ///
    /// Same answer as the full check: a hit means the header is `Bearer`, spaces, and bytes
    /// that passed [`is_b64token`] when cached — so it is visible ASCII and [`bearer_token`]
    /// would return the same token — and the claims are the cached ones the full check's
    /// [`Self::verify`] would return at this time.
    pub(crate) fn cached_claims(&self, headers: &HeaderMap, uri: &Uri) -> Option<Arc<Claims>> {
        let token = bearer_token_unchecked(headers, uri.query())?;
        let inner = &*self.inner;
        inner.cached(token, inner.clock.now_unix())
    }

    /// The full check of one request.
    pub(crate) async fn authenticate_shared(
        &self,
        method: &Method,
        headers: &HeaderMap,
        uri: &Uri,
        route: &Arc<RouteContext>,
    ) -> Result<Authenticated, Rejection> {
        let (token, dpop) = presented_token(headers, uri.query(), self.inner.dpop.is_some())
            .map_err(|e| {
                tracing::debug!(error = %e, "request refused");
                self.rejection(e, &route.required, false)
            })?;
        let claims = self.verify(token).await.map_err(|e| {
            if e.is_unavailable() {
                tracing::warn!(error = %e, "cannot verify bearer token");
            } else {
                tracing::debug!(error = %e, "bearer token refused");
            }
            self.rejection(AuthError::Token(e), &route.required, dpop)
        })?;
        if dpop {
            self.check_dpop(method, headers, uri, token, &claims)
                .map_err(|e| {
                    tracing::debug!(error = %e, "DPoP-bound token refused");
                    self.rejection(e, &route.required, true)
                })?;
        }
        Self::admit(claims, route.clone(), dpop)
    }

    /// RFC 9449 §7.1: a token presented with the `DPoP` scheme must be bound to a key, and
    /// come with a valid, unused proof of that key for this request.
    fn check_dpop(
        &self,
        method: &Method,
        headers: &HeaderMap,
        uri: &Uri,
        token: &str,
        claims: &Claims,
    ) -> Result<(), AuthError> {
        let Some(guard) = &self.inner.dpop else {
            return Err(AuthError::MissingToken);
        };
        let Some(bound) = claims.dpop_jkt() else {
            return Err(AuthError::Token(VerifyError::Rejected(
                "a token presented with the DPoP scheme is not DPoP-bound".into(),
            )));
        };
        let proof = DpopGuard::proof_header(headers)?.ok_or(crate::dpop::DpopRefusal::Invalid(
            mcp_auth_types::dpop::DpopError::Malformed,
        ))?;
        let htu = format!("{}{}", self.inner.origin, uri.path());
        let proved = guard.check(proof, method.as_str(), &htu, Some(token))?;
        if !bool::from(proved.jkt.as_bytes().ct_eq(bound.as_bytes())) {
            return Err(AuthError::Token(VerifyError::Rejected(
                "the DPoP proof is signed with another key than the token is bound to".into(),
            )));
        }
        Ok(())
    }

    /// Verified claims against the required scopes of `route` (one of this server's), which
    /// the [`Authenticated`] keeps: taken by value, so that a caller holding its own reference
    /// passes it on instead of counting another.
    pub(crate) fn admit(
        claims: Arc<Claims>,
        route: Arc<RouteContext>,
        proved: bool,
    ) -> Result<Authenticated, Rejection> {
        let server = &route.server;
        let required = &route.required;
        // RFC 9449 §7.2: a DPoP-bound token used as a bearer token is refused (without its
        // key a stolen one is worth nothing); a resource that requires DPoP refuses unbound
        // tokens too.
        if !proved {
            let bound = claims.dpop_jkt().is_some();
            let required_dpop = server
                .inner
                .dpop
                .as_ref()
                .is_some_and(|g| g.options().required);
            if bound || required_dpop {
                let why = if bound {
                    "a DPoP-bound token was presented without its proof"
                } else {
                    "this resource accepts only DPoP-bound tokens"
                };
                tracing::debug!(subject = %claims.subject, why, "token refused");
                return Err(server.rejection(
                    AuthError::Token(VerifyError::Rejected(why.into())),
                    required,
                    false,
                ));
            }
        }
        if !claims.has_scopes(required) {
            tracing::debug!(
                subject = %claims.subject,
                granted = %claims.scopes,
                required = %required,
                "insufficient scope"
            );
            let error = AuthError::InsufficientScope {
                required: required.clone(),
                granted: claims.scopes.clone(),
            };
            return Err(server.rejection(error, required, proved));
        }
        Ok(Authenticated::new(claims, route))
    }

    fn rejection(&self, error: AuthError, required: &ScopeSet, dpop_scheme: bool) -> Rejection {
        let r = Rejection::new(
            error,
            required.clone(),
            Some(self.inner.resource_metadata.clone()),
        );
        if self.inner.dpop.is_some() {
            r.with_dpop(DpopChallenge {
                scheme_used: dpop_scheme,
            })
        } else {
            r
        }
    }
}

/// The bearer token of a request (RFC 6750 §2.1), or why there is none.
///
/// - An `access_token` query parameter (RFC 6750 §2.3) is refused outright: OAuth 2.1 §5.2
///   forbids it, and URLs end up in logs.
/// - Two `Authorization` headers are a malformed request, not a choice.
/// - Another scheme (`Basic`, `DPoP` …) counts as no token: RFC 6750 §3.1 says to answer
///   without an error code then.
fn bearer_token<'h>(headers: &'h HeaderMap, query: Option<&str>) -> Result<&'h str, AuthError> {
    if query.is_some_and(has_access_token) {
        return Err(AuthError::InvalidRequest(
            "access_token in the query string is not supported",
        ));
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::MissingToken);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidRequest(
            "more than one Authorization header",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::InvalidRequest("Authorization header is not visible ASCII"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    // Auth schemes are case-insensitive (RFC 9110 §11.1).
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return Err(AuthError::MissingToken);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(AuthError::InvalidRequest("Bearer scheme without a token"));
    }
    if !is_b64token(token) {
        return Err(AuthError::InvalidRequest(
            "the bearer token is not a b64token",
        ));
    }
    Ok(token)
}

/// The token of a request and whether it came with the `DPoP` scheme (accepted only when
/// `dpop` is; otherwise, like any other scheme, it counts as no token).
fn presented_token<'h>(
    headers: &'h HeaderMap,
    query: Option<&str>,
    dpop: bool,
) -> Result<(&'h str, bool), AuthError> {
    if dpop && let Some(token) = dpop_token(headers)? {
        if query.is_some_and(has_access_token) {
            return Err(AuthError::InvalidRequest(
                "access_token in the query string is not supported",
            ));
        }
        return Ok((token, true));
    }
    bearer_token(headers, query).map(|t| (t, false))
}

/// The token of a single `Authorization: DPoP <token>` header (RFC 9449 §7.1); `None` when
/// the header has another scheme (or is missing, or repeated: [`bearer_token`] says why).
fn dpop_token(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Ok(None);
    };
    let Ok(value) = value.to_str() else {
        return Ok(None);
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("DPoP") {
        return Ok(None);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || !is_b64token(token) {
        return Err(AuthError::InvalidRequest(
            "the DPoP scheme without a well-formed token",
        ));
    }
    Ok(Some(token))
}

/// Whether a query string has an `access_token` parameter (RFC 6750 §2.3), percent-encoded
/// or not.
fn has_access_token(query: &str) -> bool {
    url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "access_token")
}

/// The token of the common request, for the cache lookup only: one `Authorization` header,
/// scheme `Bearer` (any case), spaces, then the token's bytes, unchecked; no `access_token`
/// in the query. `None` for anything else, which [`bearer_token`] then answers precisely.
fn bearer_token_unchecked<'h>(headers: &'h HeaderMap, query: Option<&str>) -> Option<&'h [u8]> {
    if query.is_some_and(has_access_token) {
        return None;
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?.as_bytes();
    if values.next().is_some() {
        return None;
    }
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"Bearer") {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    let token = &rest[start..];
    (token.len() <= MAX_TOKEN_BYTES).then_some(token)
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| B64TOKEN_CHAR[usize::from(b)])
}

/// The characters of a b64token before its padding, as a table indexed by byte: one load
/// per byte of a JWT instead of a search of the punctuation list.
static B64TOKEN_CHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn token(values: &[&str], query: Option<&str>) -> Result<String, AuthError> {
        let h = headers(values);
        bearer_token(&h, query).map(str::to_owned)
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(
            token(&["Bearer abc.def-_~+/=="], None).unwrap(),
            "abc.def-_~+/=="
        );
        assert_eq!(token(&["bearer abc"], None).unwrap(), "abc");
        assert_eq!(token(&["BEARER   abc"], None).unwrap(), "abc");
    }

    #[test]
    fn missing_or_other_scheme_is_missing_token() {
        assert!(matches!(token(&[], None), Err(AuthError::MissingToken)));
        assert!(matches!(
            token(&["Basic dXNlcjpwYXNz"], None),
            Err(AuthError::MissingToken)
        ));
        assert!(matches!(
            token(&["DPoP abc"], None),
            Err(AuthError::MissingToken)
        ));
    }

    #[test]
    fn malformed_requests() {
        for bad in [
            &["Bearer a", "Bearer b"][..],
            &["Bearer"],
            &["Bearer "],
            &["Bearer a b"],
            &["Bearer a\"b"],
            &["Bearer ==="],
            &["Bearer a=b"],
        ] {
            assert!(
                matches!(token(bad, None), Err(AuthError::InvalidRequest(_))),
                "{bad:?}"
            );
        }
        for q in ["access_token=x", "a=1&access_token=x", "access%5Ftoken=x"] {
            assert!(
                matches!(
                    token(&["Bearer a"], Some(q)),
                    Err(AuthError::InvalidRequest(_))
                ),
                "{q}"
            );
            assert!(matches!(
                token(&[], Some(q)),
                Err(AuthError::InvalidRequest(_))
            ));
        }
        assert!(token(&["Bearer a"], Some("x=access_token")).is_ok());
    }

    /// The RFC 6750 §2.1 character rule as first written: the table must say the same.
    fn b64token_char_by_rule(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
    }

    #[test]
    fn b64token_table_agrees_with_the_rule_for_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(
                B64TOKEN_CHAR[usize::from(b)],
                b64token_char_by_rule(b),
                "byte {b:#04x}"
            );
        }
    }

    #[test]
    fn b64token_examples() {
        for good in ["a", "abc.def-_~+/", "a==", "A0=", "eyJ.eyJ.c2ln"] {
            assert!(is_b64token(good), "{good}");
        }
        for bad in [
            "", "=", "===", "a=b", "a b", "a\"b", "a,b", "a\tb", "ä", "a%20",
        ] {
            assert!(!is_b64token(bad), "{bad}");
        }
    }

    /// Header values around every branch of both parsers.
    fn header_corpus() -> Vec<Vec<u8>> {
        let schemes: [&[u8]; 7] = [
            b"Bearer", b"bearer", b"BEARER", b"Basic", b"Bearerx", b"", b"DPoP",
        ];
        let gaps: [&[u8]; 5] = [b"", b" ", b"   ", b"\t", b" \t"];
        let tokens: [&[u8]; 12] = [
            b"",
            b"abc",
            b"abc==",
            b"===",
            b"a=b",
            b"a b",
            b"a\"b",
            b"a\tb",
            b"abc ",
            b"a\xffb",
            b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln-_~+/",
            b"\xc3\xa4",
        ];
        let mut out = Vec::new();
        for scheme in schemes {
            for gap in gaps {
                for token in tokens {
                    out.push([scheme, gap, token].concat());
                }
            }
        }
        out
    }

    /// What the layer's fast path relies on: whenever the unchecked parser finds bytes that
    /// could be in the cache (a b64token, the only kind cached), the full parser accepts the
    /// request with exactly that token; and every token the full parser accepts is found.
    #[test]
    fn unchecked_parser_agrees_with_bearer_token() {
        let mut checked = 0;
        for value in header_corpus() {
            let Ok(value) = HeaderValue::from_bytes(&value) else {
                continue;
            };
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.clone());
            for query in [None, Some("x=1"), Some("access_token=x")] {
                let full = bearer_token(&h, query);
                let fast = bearer_token_unchecked(&h, query);
                if let Some(bytes) = fast
                    && std::str::from_utf8(bytes).is_ok_and(is_b64token)
                {
                    assert_eq!(
                        full.as_ref().ok().map(|t| t.as_bytes()),
                        Some(bytes),
                        "{value:?} {query:?}"
                    );
                    checked += 1;
                }
                if let Ok(t) = full {
                    assert_eq!(fast, Some(t.as_bytes()), "{value:?} {query:?}");
                }
            }
            // Two headers: never a token for either parser.
            h.append(header::AUTHORIZATION, value.clone());
            assert!(bearer_token_unchecked(&h, None).is_none());
            assert!(bearer_token(&h, None).is_err());
        }
        assert!(
            checked > 20,
            "the corpus exercises the fast path ({checked})"
        );
    }

    #[test]
    fn unchecked_parser_refuses_oversized_tokens() {
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        let h = headers(&[&big]);
        assert!(bearer_token_unchecked(&h, None).is_none());
        let fits = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES));
        assert!(bearer_token_unchecked(&headers(&[&fits]), None).is_some());
    }

    proptest::proptest! {
        /// Whatever the token, the two parts are the whole token, in order (so equal parts
        /// mean equal tokens), and a token keeps bytes only when it is three segments whose
        /// last one is long enough to be a signature: a kept part is never empty for a JWS
        /// and always empty otherwise, so a JWS and another token keyed alike never match.
        #[test]
        fn cache_parts_split_the_whole_token(token in proptest::prop_oneof![
            "[a-zA-Z0-9._~+/=-]{0,200}",
            // Mostly three segments, with signatures around the minimum length, and now and
            // then a fourth segment or an empty one.
            "[a-zA-Z0-9_-]{0,20}[.]{1,2}[a-zA-Z0-9_.-]{0,20}[.][a-zA-Z0-9_-]{38,48}",
        ]) {
            let (hashed, kept) = cache_parts(token.as_bytes());
            proptest::prop_assert_eq!([kept, hashed].concat(), token.as_bytes());
            let segments = token.split('.').count();
            let jws = segments == 3
                && token.rsplit('.').next().is_some_and(|s| s.len() >= MIN_SIGNATURE_CHARS);
            if jws {
                proptest::prop_assert!(kept.ends_with(b".") && kept.iter().filter(|&&b| b == b'.').count() == 2);
                proptest::prop_assert!(!hashed.contains(&b'.'));
            } else {
                proptest::prop_assert!(kept.is_empty());
            }
        }
    }

    #[test]
    fn a_jws_is_keyed_by_its_signature_and_anything_else_whole() {
        let sig = "s".repeat(MIN_SIGNATURE_CHARS);
        let jws = format!("eyJh.eyJz.{sig}");
        assert_eq!(
            cache_parts(jws.as_bytes()),
            (sig.as_bytes(), &b"eyJh.eyJz."[..])
        );
        // An empty header or payload is still three parts.
        let bare = format!("..{sig}");
        assert_eq!(cache_parts(bare.as_bytes()), (sig.as_bytes(), &b".."[..]));
        let short = format!("eyJh.eyJz.{}", &sig[1..]);
        let whole = [
            short.as_str(),
            // JWE (RFC 7516 §7.1): five parts.
            "eyJh.a2V5.aXY.Y2lwaGVy.dGFnZ2VkdGFnZ2VkdGFnZ2VkdGFnZ2VkdGFnZ2VkdGFnZ2Vk",
            "opaque-token-without-dots-0123456789012345678901234567890123456789",
            "two.parts0123456789012345678901234567890123456789012345",
            "",
        ];
        for t in whole {
            assert_eq!(cache_parts(t.as_bytes()), (t.as_bytes(), &b""[..]), "{t}");
        }
        let four = format!("a.b.c.{sig}");
        assert_eq!(cache_parts(four.as_bytes()).1, b"");
    }

    #[test]
    fn non_ascii_header_is_invalid_request() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xffabc").unwrap(),
        );
        assert!(matches!(
            bearer_token(&h, None),
            Err(AuthError::InvalidRequest(_))
        ));
    }
}
