//! What a protected resource is and how it checks tokens.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mcp_auth_types::discovery::protected_resource_metadata_urls;
use mcp_auth_types::{
    ClientId, ClientSecret, HttpUrl, Issuer, ProtectedResourceMetadata, ResourceUrl, ScopeSet,
};
use serde_json::{Map, Value};

use crate::TokenVerifier;

/// A JWS algorithm this crate can verify access tokens with (RFC 7518 §3, RFC 8037).
///
/// Only asymmetric algorithms exist here: a resource server holds public keys, and accepting
/// `HS256` would let anyone holding the public key mint tokens (the algorithm confusion
/// attack, RFC 8725 §2.1). `none` does not exist either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// ECDSA with P-384 and SHA-384.
    ES384,
    /// Ed25519 (RFC 8037).
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (what most hosted identity providers sign with).
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
}

impl SigningAlgorithm {
    /// The default allow-list: `ES256` and `EdDSA`. Add [`SigningAlgorithm::RS256`] for
    /// authorization servers that sign with RSA keys.
    pub const DEFAULT: &'static [SigningAlgorithm] = &[Self::ES256, Self::EdDSA];

    /// The JOSE name (`"ES256"` …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
        }
    }

    /// The algorithm with this JOSE name, if it is one of ours (names are case-sensitive,
    /// RFC 7515 §4.1.1).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            _ => return None,
        })
    }

    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Self::ES256 => A::ES256,
            Self::ES384 => A::ES384,
            Self::EdDSA => A::EdDSA,
            Self::RS256 => A::RS256,
            Self::RS384 => A::RS384,
            Self::RS512 => A::RS512,
            Self::PS256 => A::PS256,
            Self::PS384 => A::PS384,
            Self::PS512 => A::PS512,
        }
    }

    pub(crate) const RSA: &'static [SigningAlgorithm] = &[
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
    ];
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Verifying JWT access tokens (RFC 9068) with the authorization server's published keys.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The issuer whose tokens are accepted; `iss` must equal it exactly. Must be one of
    /// [`ResourceConfig::authorization_servers`].
    pub issuer: Issuer,
    /// The issuer's `jwks_uri` (from its RFC 8414 metadata).
    pub jwks_uri: HttpUrl,
    /// Algorithms accepted; default [`SigningAlgorithm::DEFAULT`].
    pub algorithms: Vec<SigningAlgorithm>,
    /// Fewest seconds between two downloads of the key set (default 10 s). An unknown `kid`
    /// triggers a download, so without this a client sending made-up key ids would make us
    /// hammer the authorization server.
    pub min_refetch_interval: Duration,
    /// Age after which the key set is downloaded again before use (default 1 h), so keys
    /// the authorization server withdrew stop being trusted. If that download fails, the
    /// old keys stay in use.
    pub max_key_age: Duration,
    /// Deadline of one key set download (default 10 s).
    pub http_timeout: Duration,
}

impl JwtConfig {
    /// Defaults for everything but the issuer and its key set URL.
    pub fn new(issuer: Issuer, jwks_uri: HttpUrl) -> Self {
        Self {
            issuer,
            jwks_uri,
            algorithms: SigningAlgorithm::DEFAULT.to_vec(),
            min_refetch_interval: Duration::from_secs(10),
            max_key_age: Duration::from_secs(3600),
            http_timeout: Duration::from_secs(10),
        }
    }
}

/// Verifying opaque tokens by asking the authorization server (RFC 7662).
#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    /// The authorization server owning the endpoint; an `iss` in the answer must equal it,
    /// and answers without `iss` are taken to come from it. Must be one of
    /// [`ResourceConfig::authorization_servers`].
    pub issuer: Issuer,
    /// The introspection endpoint.
    pub endpoint: HttpUrl,
    /// This resource server's client id at the authorization server (RFC 7662 §2.1 requires
    /// the caller to authenticate).
    pub client_id: ClientId,
    /// Its client secret, sent with HTTP Basic (RFC 6749 §2.3.1).
    pub client_secret: ClientSecret,
    /// How long an answer is reused (default 60 s; never beyond the token's `exp`). A
    /// revoked token is accepted for at most this long.
    pub cache_ttl: Duration,
    /// Deadline of one introspection call (default 10 s).
    pub http_timeout: Duration,
}

impl IntrospectionConfig {
    /// Defaults for the cache lifetime and timeout.
    pub fn new(
        issuer: Issuer,
        endpoint: HttpUrl,
        client_id: ClientId,
        client_secret: ClientSecret,
    ) -> Self {
        Self {
            issuer,
            endpoint,
            client_id,
            client_secret,
            cache_ttl: Duration::from_secs(60),
            http_timeout: Duration::from_secs(10),
        }
    }
}

/// How tokens are verified.
#[derive(Clone)]
#[non_exhaustive]
pub enum Verifier {
    /// JWT access tokens (RFC 9068) checked against the issuer's JWKS.
    Jwt(JwtConfig),
    /// Opaque tokens checked by RFC 7662 introspection.
    Introspection(IntrospectionConfig),
    /// Anything else, for example an authorization server in the same process looking its
    /// tokens up directly.
    Custom(Arc<dyn TokenVerifier>),
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Jwt(c) => f.debug_tuple("Jwt").field(c).finish(),
            Self::Introspection(c) => f.debug_tuple("Introspection").field(c).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Everything a protected resource needs: its identity, who may issue its tokens, and how to
/// check them.
#[derive(Debug, Clone)]
pub struct ResourceConfig {
    /// This resource's identifier (RFC 8707, RFC 9728 `resource`), e.g.
    /// `https://mcp.example.com/mcp`. Tokens must name exactly this string in `aud`, and the
    /// metadata publishes it byte for byte.
    pub resource: ResourceUrl,
    /// The issuers of the authorization servers clients may use (RFC 9728
    /// `authorization_servers`).
    pub authorization_servers: Vec<Issuer>,
    /// Scopes this resource understands (RFC 9728 `scopes_supported`).
    pub scopes_supported: Option<ScopeSet>,
    /// A human-readable name (RFC 9728 `resource_name`).
    pub resource_name: Option<String>,
    /// How tokens are verified.
    pub verifier: Verifier,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default 30 s).
    pub leeway: Duration,
    /// How long a verified token is remembered, so the signature check or introspection call
    /// is not repeated on every request (default 60 s; never beyond the token's `exp`; for
    /// introspection, [`IntrospectionConfig::cache_ttl`] when shorter). Zero disables the
    /// cache.
    pub token_cache_ttl: Duration,
    /// Most tokens remembered at once (default 10 000).
    pub token_cache_capacity: usize,
    /// `Cache-Control: max-age` of the metadata documents (default 1 h).
    pub metadata_max_age: Duration,
    /// Further metadata members (`resource_documentation`, `resource_policy_uri` …).
    pub metadata_extra: Map<String, Value>,
    /// Accept plain `http` URLs for non-loopback hosts (the resource, the JWKS, the
    /// introspection endpoint). Dangerous: tokens and keys then travel unprotected. Loopback
    /// `http` is always accepted, for development and tests.
    pub danger_allow_insecure_http: bool,
    /// Accept DPoP-bound tokens (RFC 9449) with their proofs; `None` (the default): bearer
    /// tokens only. Bound tokens presented as bearer tokens are always refused.
    pub dpop: Option<crate::dpop::DpopOptions>,
}

impl ResourceConfig {
    /// A configuration with the defaults above and no `scopes_supported` or name.
    pub fn new(
        resource: ResourceUrl,
        authorization_servers: Vec<Issuer>,
        verifier: Verifier,
    ) -> Self {
        Self {
            resource,
            authorization_servers,
            scopes_supported: None,
            resource_name: None,
            verifier,
            leeway: Duration::from_secs(30),
            token_cache_ttl: Duration::from_secs(60),
            token_cache_capacity: 10_000,
            metadata_max_age: Duration::from_secs(3600),
            metadata_extra: Map::new(),
            danger_allow_insecure_http: false,
            dpop: None,
        }
    }

    /// The protected resource metadata document (RFC 9728 §2). `bearer_methods_supported` is
    /// `["header"]`: tokens in a form body or the query string (RFC 6750 §2.2, §2.3) are not
    /// accepted.
    pub fn metadata(&self) -> ProtectedResourceMetadata {
        ProtectedResourceMetadata {
            resource: self.resource.as_str().to_owned(),
            authorization_servers: self
                .authorization_servers
                .iter()
                .map(|i| i.as_str().to_owned())
                .collect(),
            scopes_supported: self
                .scopes_supported
                .as_ref()
                .map(|s| s.iter().map(|s| s.as_str().to_owned()).collect()),
            bearer_methods_supported: Some(vec!["header".to_owned()]),
            resource_name: self.resource_name.clone(),
            jwks_uri: None,
            extra: {
                let mut extra = self.metadata_extra.clone();
                if let Some(d) = &self.dpop {
                    // RFC 9449 §5.2 (RFC 9728 §2 members).
                    extra.insert(
                        "dpop_signing_alg_values_supported".into(),
                        mcp_auth_types::dpop::ACCEPTED_ALGS.into(),
                    );
                    if d.required {
                        extra.insert("dpop_bound_access_tokens_required".into(), true.into());
                    }
                }
                extra
            },
        }
    }

    /// The metadata URLs (RFC 9728 §3.1): the path-inserted one first (the
    /// `resource_metadata` of every challenge), then the root one. A resource without a path
    /// has only the root one.
    pub fn metadata_urls(&self) -> Vec<HttpUrl> {
        protected_resource_metadata_urls(self.resource.as_url())
    }

    /// The URL sent as `resource_metadata` in challenges (RFC 9728 §5.1): the path-inserted
    /// metadata URL.
    pub fn resource_metadata_url(&self) -> String {
        match self.metadata_urls().into_iter().next() {
            Some(u) => u.as_str().to_owned(),
            // Unreachable for a valid resource URL; kept total rather than panicking.
            None => format!(
                "{}/.well-known/oauth-protected-resource",
                self.resource.as_url().origin()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(resource: &str) -> ResourceConfig {
        let issuer = Issuer::parse("https://as.example.com").unwrap();
        let jwks = HttpUrl::parse("https://as.example.com/jwks").unwrap();
        ResourceConfig::new(
            ResourceUrl::parse_exact(resource).unwrap(),
            vec![issuer.clone()],
            Verifier::Jwt(JwtConfig::new(issuer, jwks)),
        )
    }

    #[test]
    fn metadata_urls_path_inserted_first() {
        let c = config("https://mcp.example.com/v1/mcp");
        assert_eq!(
            c.resource_metadata_url(),
            "https://mcp.example.com/.well-known/oauth-protected-resource/v1/mcp"
        );
        assert_eq!(c.metadata_urls().len(), 2);
        let c = config("https://mcp.example.com");
        assert_eq!(
            c.resource_metadata_url(),
            "https://mcp.example.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(c.metadata_urls().len(), 1);
    }

    #[test]
    fn metadata_document() {
        let mut c = config("https://mcp.example.com/mcp");
        c.scopes_supported = Some("mcp:read mcp:write".parse().unwrap());
        c.resource_name = Some("Example".into());
        let doc = serde_json::to_value(c.metadata()).unwrap();
        assert_eq!(doc["resource"], "https://mcp.example.com/mcp");
        assert_eq!(doc["authorization_servers"][0], "https://as.example.com");
        assert_eq!(doc["scopes_supported"][1], "mcp:write");
        assert_eq!(doc["bearer_methods_supported"][0], "header");
        assert_eq!(doc["resource_name"], "Example");
        assert!(doc.get("jwks_uri").is_none());
    }

    #[test]
    fn algorithm_names_round_trip_and_exclude_symmetric() {
        for a in [
            SigningAlgorithm::ES256,
            SigningAlgorithm::ES384,
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::RS256,
            SigningAlgorithm::PS512,
        ] {
            assert_eq!(SigningAlgorithm::from_name(a.as_str()), Some(a));
        }
        for bad in ["HS256", "none", "es256", ""] {
            assert_eq!(SigningAlgorithm::from_name(bad), None);
        }
    }

    #[test]
    fn secret_does_not_print() {
        let issuer = Issuer::parse("https://as.example.com").unwrap();
        let v = Verifier::Introspection(IntrospectionConfig::new(
            issuer,
            HttpUrl::parse("https://as.example.com/introspect").unwrap(),
            ClientId::new("rs").unwrap(),
            ClientSecret::new("hunter2"),
        ));
        assert!(!format!("{v:?}").contains("hunter2"));
    }
}
