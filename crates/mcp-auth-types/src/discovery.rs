//! The MCP authorization spec's ordered lists of discovery URLs.
//!
//! 2025-11-25 "Protected Resource Metadata Discovery Requirements": the `resource_metadata`
//! URL of the 401 challenge first, then the path-inserted well-known URL, then the root one.
//! "Authorization Server Metadata Discovery": RFC 8414 path insertion, then OpenID Connect
//! discovery with path insertion, then OpenID Connect discovery appended to the path; without
//! a path, RFC 8414 then OIDC at the root. 2025-03-26 (no protected resource metadata at all):
//! the MCP server's origin is the authorization server, its metadata at
//! `/.well-known/oauth-authorization-server`, else the default endpoints.

use crate::urls::HttpUrl;

fn path_of(url: &HttpUrl) -> String {
    // RFC 8414 §3.1: a terminating "/" is removed before inserting the well-known suffix.
    url.url().path().trim_end_matches('/').to_owned()
}

fn well_known(url: &HttpUrl, suffix: &str, path: &str) -> Option<HttpUrl> {
    HttpUrl::parse(&format!("{}/.well-known/{suffix}{path}", url.origin())).ok()
}

/// Where to look for a server's protected resource metadata when the challenge did not say
/// (RFC 9728 §3.1): path-inserted first, then the root. A server URL without a path gives one
/// candidate.
pub fn protected_resource_metadata_urls(server: &HttpUrl) -> Vec<HttpUrl> {
    let path = path_of(server);
    let mut out = Vec::with_capacity(2);
    if !path.is_empty() {
        out.extend(well_known(server, "oauth-protected-resource", &path));
    }
    out.extend(well_known(server, "oauth-protected-resource", ""));
    out
}

/// Where to look for an issuer's metadata, in the MCP spec's order.
pub fn authorization_server_metadata_urls(issuer: &HttpUrl) -> Vec<HttpUrl> {
    let path = path_of(issuer);
    let mut out = Vec::with_capacity(3);
    if path.is_empty() {
        out.extend(well_known(issuer, "oauth-authorization-server", ""));
        out.extend(well_known(issuer, "openid-configuration", ""));
    } else {
        out.extend(well_known(issuer, "oauth-authorization-server", &path));
        out.extend(well_known(issuer, "openid-configuration", &path));
        out.extend(HttpUrl::parse(&format!(
            "{}{path}/.well-known/openid-configuration",
            issuer.origin()
        )));
    }
    out
}

/// 2025-03-26 fallback: the authorization base URL is the MCP server's origin (its path is
/// discarded), and these are its endpoints when it publishes no metadata either.
pub fn legacy_default_endpoints(server: &HttpUrl) -> LegacyEndpoints {
    let origin = server.origin();
    let make = |p: &str| HttpUrl::parse(&format!("{origin}{p}")).ok();
    LegacyEndpoints {
        authorization_base: HttpUrl::parse(&origin).ok(),
        authorization: make("/authorize"),
        token: make("/token"),
        registration: make("/register"),
    }
}

/// The 2025-03-26 default endpoints.
#[derive(Debug, Clone)]
pub struct LegacyEndpoints {
    /// The origin, used as issuer for metadata discovery.
    pub authorization_base: Option<HttpUrl>,
    /// `/authorize`.
    pub authorization: Option<HttpUrl>,
    /// `/token`.
    pub token: Option<HttpUrl>,
    /// `/register`.
    pub registration: Option<HttpUrl>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> HttpUrl {
        HttpUrl::parse(s).unwrap()
    }
    fn strs(v: Vec<HttpUrl>) -> Vec<String> {
        v.into_iter().map(|u| u.as_str().to_owned()).collect()
    }

    #[test]
    fn prm_order() {
        assert_eq!(
            strs(protected_resource_metadata_urls(&u(
                "https://example.com/public/mcp"
            ))),
            [
                "https://example.com/.well-known/oauth-protected-resource/public/mcp",
                "https://example.com/.well-known/oauth-protected-resource"
            ]
        );
        assert_eq!(
            strs(protected_resource_metadata_urls(&u("https://example.com/"))),
            ["https://example.com/.well-known/oauth-protected-resource"]
        );
    }

    #[test]
    fn as_order_with_path() {
        assert_eq!(
            strs(authorization_server_metadata_urls(&u(
                "https://auth.example.com/tenant1/"
            ))),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example.com/.well-known/openid-configuration/tenant1",
                "https://auth.example.com/tenant1/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn as_order_without_path() {
        assert_eq!(
            strs(authorization_server_metadata_urls(&u(
                "http://127.0.0.1:9000"
            ))),
            [
                "http://127.0.0.1:9000/.well-known/oauth-authorization-server",
                "http://127.0.0.1:9000/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn legacy() {
        let e = legacy_default_endpoints(&u("https://mcp.example.com:8443/v1/mcp"));
        assert_eq!(
            e.authorization.unwrap().as_str(),
            "https://mcp.example.com:8443/authorize"
        );
        assert_eq!(
            e.token.unwrap().as_str(),
            "https://mcp.example.com:8443/token"
        );
        assert_eq!(
            e.registration.unwrap().as_str(),
            "https://mcp.example.com:8443/register"
        );
    }
}
