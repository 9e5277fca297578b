//! Discovery, in the order the MCP authorization spec gives (2025-11-25 §"Authorization Server
//! Discovery", 2026-07-28 the same plus the issuer check made fatal), with the 2025-03-26
//! fallbacks for servers that publish no protected resource metadata.

use mcp_auth_types::challenge::Challenge;
use mcp_auth_types::discovery::{
    authorization_server_metadata_urls, legacy_default_endpoints, protected_resource_metadata_urls,
};
use mcp_auth_types::metadata::MetadataError;
use mcp_auth_types::{
    AuthorizationServerMetadata, HttpUrl, ProtectedResourceMetadata, ResourceUrl,
};

use crate::error::{Error, Result, Step};
use crate::http::Http;

/// What discovery found for one MCP server.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The MCP server URL, canonical.
    pub server: ResourceUrl,
    /// The protected resource metadata, when the server publishes it.
    pub resource_metadata: Option<ProtectedResourceMetadata>,
    /// Where it was found.
    pub resource_metadata_url: Option<String>,
    /// The resource identifier to send as RFC 8707 `resource`.
    pub resource: ResourceUrl,
    /// The issuer in use.
    pub issuer: String,
    /// Its metadata (synthesized from the default endpoints in the 2025-03-26 fallback).
    pub metadata: AuthorizationServerMetadata,
    /// Where the metadata was found (`None` when synthesized).
    pub metadata_url: Option<String>,
    /// Whether the 2025-03-26 fallback was used (no protected resource metadata).
    pub legacy: bool,
}

/// Discovery options.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryOptions {
    /// Allow plain http endpoints on non-loopback hosts.
    pub allow_http: bool,
    /// Use this authorization server instead of the one the resource names (escape hatch).
    pub issuer_override: Option<String>,
}

/// Runs discovery for `server`, starting from the 401 challenge when there was one.
pub async fn discover(
    http: &Http,
    server: &HttpUrl,
    challenge: Option<&Challenge>,
    opts: &DiscoveryOptions,
) -> Result<Discovered> {
    let canonical = ResourceUrl::canonicalize(server.as_str()).map_err(|source| Error::Url {
        what: "the MCP server URL".into(),
        source,
    })?;

    // 1. Protected resource metadata: the challenge's URL, then the well-known locations.
    let mut candidates = Vec::new();
    if let Some(url) = challenge.and_then(Challenge::resource_metadata) {
        match HttpUrl::parse_secure(url, opts.allow_http) {
            Ok(u) => candidates.push(u),
            Err(source) => {
                return Err(Error::Url {
                    what: "the resource_metadata URL of the WWW-Authenticate challenge".into(),
                    source,
                });
            }
        }
    }
    candidates.extend(protected_resource_metadata_urls(server));

    let mut prm = None;
    for url in &candidates {
        if let Some(doc) = http
            .get_json_optional::<ProtectedResourceMetadata>(
                Step::ResourceMetadata,
                url.as_str(),
                &[],
            )
            .await?
        {
            tracing::info!(url = url.as_str(), "found protected resource metadata");
            prm = Some((doc, url.as_str().to_owned()));
            break;
        }
    }

    match prm {
        Some((doc, url)) => {
            // RFC 9728 §3.3: a document for another resource must not be used — stop before
            // anything is sent to an authorization server.
            let resource = doc
                .check_resource(&canonical)
                .map_err(|source| Error::Metadata {
                    step: Step::ResourceMetadata,
                    source,
                })?;
            let issuer = match &opts.issuer_override {
                Some(i) => i.clone(),
                None => doc
                    .authorization_servers
                    .first()
                    .cloned()
                    .ok_or(Error::Metadata {
                        step: Step::ResourceMetadata,
                        source: MetadataError::Missing("authorization_servers"),
                    })?,
            };
            let (metadata, metadata_url) =
                fetch_as_metadata(http, &issuer, opts.allow_http).await?;
            Ok(Discovered {
                server: canonical,
                resource_metadata: Some(doc),
                resource_metadata_url: Some(url),
                resource,
                issuer,
                metadata,
                metadata_url: Some(metadata_url),
                legacy: false,
            })
        }
        None => legacy(http, server, canonical, opts).await,
    }
}

/// Fetches and checks an issuer's metadata, trying the spec's URLs in order; the document's
/// `issuer` must equal `issuer` (RFC 8414 §3.3).
pub async fn fetch_as_metadata(
    http: &Http,
    issuer: &str,
    allow_http: bool,
) -> Result<(AuthorizationServerMetadata, String)> {
    fetch_metadata(http, issuer, true, allow_http).await
}

/// Tries the metadata URLs derived from `base` in order and validates the first document
/// found. With `check_issuer` its `issuer` must equal `base`; without (the 2025-03-26
/// fallback, see [`legacy`]) only its endpoints are checked.
async fn fetch_metadata(
    http: &Http,
    base: &str,
    check_issuer: bool,
    allow_http: bool,
) -> Result<(AuthorizationServerMetadata, String)> {
    let base_url = HttpUrl::parse_secure(base, allow_http).map_err(|source| Error::Url {
        what: format!("the authorization server {base:?}"),
        source,
    })?;
    let urls = authorization_server_metadata_urls(&base_url);
    for url in &urls {
        let Some(doc) = http
            .get_json_optional::<AuthorizationServerMetadata>(
                Step::AuthorizationServerMetadata,
                url.as_str(),
                &[],
            )
            .await?
        else {
            continue;
        };
        let expected = if check_issuer || doc.issuer.is_empty() {
            base
        } else {
            doc.issuer.as_str()
        };
        doc.validate(expected, true, allow_http)
            .map_err(|source| Error::Metadata {
                step: Step::AuthorizationServerMetadata,
                source,
            })?;
        tracing::info!(url = url.as_str(), issuer = %doc.issuer, "found authorization server metadata");
        return Ok((doc, url.as_str().to_owned()));
    }
    Err(Error::NoAuthorizationServer {
        server: base.to_owned(),
        tried: urls
            .iter()
            .map(HttpUrl::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// 2025-03-26: the server's origin is the authorization server; its metadata, else the
/// default endpoints `/authorize`, `/token`, `/register`.
async fn legacy(
    http: &Http,
    server: &HttpUrl,
    canonical: ResourceUrl,
    opts: &DiscoveryOptions,
) -> Result<Discovered> {
    let defaults = legacy_default_endpoints(server);
    let issuer = opts
        .issuer_override
        .clone()
        .unwrap_or_else(|| server.origin());
    tracing::debug!(%issuer, "no protected resource metadata; using the 2025-03-26 fallback");
    let resource = canonical.clone();
    match fetch_metadata(http, &issuer, false, opts.allow_http).await {
        Ok((metadata, url)) => Ok(Discovered {
            server: canonical,
            resource_metadata: None,
            resource_metadata_url: None,
            resource,
            // 2025-03-26 derived the metadata location from the server's origin instead of
            // from an issuer identifier, and servers of that era name an issuer that differs
            // from it (`https://host/oauth`). There is no expected issuer to compare with;
            // the one the document names is used for the RFC 9207 check.
            issuer: if metadata.issuer.is_empty() {
                issuer
            } else {
                metadata.issuer.clone()
            },
            metadata,
            metadata_url: Some(url),
            legacy: true,
        }),
        Err(Error::NoAuthorizationServer { .. }) => {
            let s = |u: Option<HttpUrl>| u.map(|u| u.as_str().to_owned());
            let metadata = AuthorizationServerMetadata {
                issuer: issuer.clone(),
                authorization_endpoint: s(defaults.authorization),
                token_endpoint: s(defaults.token),
                registration_endpoint: s(defaults.registration),
                // The 2025-03-26 defaults imply PKCE S256 support: the spec made PKCE
                // mandatory for every MCP authorization server.
                code_challenge_methods_supported: Some(vec!["S256".into()]),
                grant_types_supported: Some(vec![
                    "authorization_code".into(),
                    "refresh_token".into(),
                ]),
                token_endpoint_auth_methods_supported: Some(vec![
                    "none".into(),
                    "client_secret_post".into(),
                    "client_secret_basic".into(),
                ]),
                ..Default::default()
            };
            Ok(Discovered {
                server: canonical,
                resource_metadata: None,
                resource_metadata_url: None,
                resource,
                issuer,
                metadata,
                metadata_url: None,
                legacy: true,
            })
        }
        Err(e) => Err(e),
    }
}
