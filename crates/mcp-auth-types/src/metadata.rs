//! Discovery documents: authorization server metadata (RFC 8414, OpenID Connect Discovery 1.0)
//! and protected resource metadata (RFC 9728).
//!
//! Fields are kept as the server sent them, unknown ones in `extra`, so a document can be
//! shown (`mcp-auth doctor`) and round-tripped. [`AuthorizationServerMetadata::validate`]
//! is what makes a document usable: it checks the issuer and every endpoint before any of them
//! is contacted or shown to a browser.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::urls::{HttpUrl, UrlError};
use crate::{AuthMethod, ScopeSet};

/// Why a metadata document cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// RFC 8414 §3.3: the `issuer` in the document differs from the issuer it was fetched for.
    #[error(
        "authorization server metadata names issuer {found:?}, but it was fetched for {expected:?} (RFC 8414 §3.3)"
    )]
    IssuerMismatch {
        /// The issuer the client expected.
        expected: String,
        /// The issuer the document claims.
        found: String,
    },
    /// A required field is missing.
    #[error("metadata lacks the required field {0:?}")]
    Missing(&'static str),
    /// An endpoint is not an acceptable URL (not http(s), plain http to a remote host, …).
    #[error("metadata field {field:?} is not acceptable: {source}")]
    BadEndpoint {
        /// The field name.
        field: &'static str,
        /// Why.
        #[source]
        source: UrlError,
    },
    /// RFC 9728 §3.3: the `resource` in the document is not the server being accessed.
    #[error("protected resource metadata is for {found:?}, not for {expected:?} (RFC 9728 §3.3)")]
    ResourceMismatch {
        /// The server URL being accessed.
        expected: String,
        /// The resource the document names.
        found: String,
    },
}

/// RFC 8414 §2 authorization server metadata, with the OpenID Connect and MCP additions this
/// library uses. Every field is optional on the wire; [`Self::validate`] enforces what is
/// required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthorizationServerMetadata {
    /// `issuer` (required).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    /// `authorization_endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    /// `token_endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// `registration_endpoint` (RFC 7591).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_endpoint: Option<String>,
    /// `revocation_endpoint` (RFC 7009).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// `introspection_endpoint` (RFC 7662).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint: Option<String>,
    /// `device_authorization_endpoint` (RFC 8628).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_authorization_endpoint: Option<String>,
    /// `jwks_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// `scopes_supported`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_supported: Option<Vec<String>>,
    /// `response_types_supported`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_types_supported: Option<Vec<String>>,
    /// `grant_types_supported`; absent means `["authorization_code", "implicit"]` (RFC 8414).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_types_supported: Option<Vec<String>>,
    /// `token_endpoint_auth_methods_supported`; absent means `client_secret_basic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// `token_endpoint_auth_signing_alg_values_supported` (for `private_key_jwt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    /// `code_challenge_methods_supported` (RFC 7636); the MCP spec requires `S256` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// `authorization_response_iss_parameter_supported` (RFC 9207 §3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_response_iss_parameter_supported: Option<bool>,
    /// `client_id_metadata_document_supported` (OAuth client ID metadata documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_metadata_document_supported: Option<bool>,
    /// `dpop_signing_alg_values_supported` (RFC 9449).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
    /// Every other field, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AuthorizationServerMetadata {
    /// Checks a fetched document before use:
    /// - `issuer` identical to `expected_issuer` (RFC 8414 §3.3; MCP 2026-07-28 "Authorization
    ///   Server Metadata Discovery" makes the client stop here);
    /// - `authorization_endpoint` (when `needs_authorization_endpoint`) and `token_endpoint`
    ///   present;
    /// - every endpoint `http`/`https`, and `https` unless loopback or `allow_http`.
    pub fn validate(
        &self,
        expected_issuer: &str,
        needs_authorization_endpoint: bool,
        allow_http: bool,
    ) -> Result<(), MetadataError> {
        if self.issuer != expected_issuer {
            return Err(MetadataError::IssuerMismatch {
                expected: expected_issuer.to_owned(),
                found: self.issuer.clone(),
            });
        }
        if needs_authorization_endpoint && self.authorization_endpoint.is_none() {
            return Err(MetadataError::Missing("authorization_endpoint"));
        }
        if self.token_endpoint.is_none() {
            return Err(MetadataError::Missing("token_endpoint"));
        }
        for (field, value) in self.endpoints() {
            if let Some(v) = value {
                HttpUrl::parse_secure(v, allow_http)
                    .map_err(|source| MetadataError::BadEndpoint { field, source })?;
            }
        }
        Ok(())
    }

    fn endpoints(&self) -> [(&'static str, Option<&String>); 7] {
        [
            (
                "authorization_endpoint",
                self.authorization_endpoint.as_ref(),
            ),
            ("token_endpoint", self.token_endpoint.as_ref()),
            ("registration_endpoint", self.registration_endpoint.as_ref()),
            ("revocation_endpoint", self.revocation_endpoint.as_ref()),
            (
                "introspection_endpoint",
                self.introspection_endpoint.as_ref(),
            ),
            (
                "device_authorization_endpoint",
                self.device_authorization_endpoint.as_ref(),
            ),
            ("jwks_uri", self.jwks_uri.as_ref()),
        ]
    }

    /// An endpoint as a checked URL (`None` when absent or unusable).
    pub fn endpoint(&self, field: &str) -> Option<HttpUrl> {
        self.endpoints()
            .into_iter()
            .find(|(f, _)| *f == field)
            .and_then(|(_, v)| v)
            .and_then(|v| HttpUrl::parse(v).ok())
    }

    /// The scopes the AS supports, when it says.
    pub fn scopes(&self) -> Option<ScopeSet> {
        self.scopes_supported
            .as_ref()
            .and_then(|v| ScopeSet::from_strs(v).ok())
    }

    /// Whether PKCE with S256 is advertised. The MCP spec (2025-11-25 "Authorization Code
    /// Protection") says clients MUST refuse to proceed when it is not.
    pub fn supports_s256(&self) -> bool {
        self.code_challenge_methods_supported
            .as_ref()
            .is_some_and(|m| m.iter().any(|x| x == "S256"))
    }

    /// Whether the AS supports a grant type (RFC 8414 default: code and implicit).
    pub fn supports_grant(&self, grant: &str) -> bool {
        match &self.grant_types_supported {
            Some(g) => g.iter().any(|x| x == grant),
            None => matches!(grant, "authorization_code" | "implicit"),
        }
    }

    /// Token endpoint authentication methods the AS accepts (RFC 8414 default:
    /// `client_secret_basic`).
    pub fn auth_methods(&self) -> Vec<AuthMethod> {
        match &self.token_endpoint_auth_methods_supported {
            Some(m) => m.iter().map(|s| AuthMethod::from(s.as_str())).collect(),
            None => vec![AuthMethod::ClientSecretBasic],
        }
    }

    /// RFC 9207 §3: whether the AS says it sends `iss` in authorization responses.
    pub fn sends_iss(&self) -> bool {
        self.authorization_response_iss_parameter_supported == Some(true)
    }

    /// Whether client ID metadata documents are accepted.
    pub fn supports_client_id_metadata_document(&self) -> bool {
        self.client_id_metadata_document_supported == Some(true)
    }
}

/// RFC 9728 §2 protected resource metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtectedResourceMetadata {
    /// `resource` (required): the protected resource's identifier.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// `authorization_servers`: issuer identifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_servers: Vec<String>,
    /// `scopes_supported`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_supported: Option<Vec<String>>,
    /// `bearer_methods_supported`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_methods_supported: Option<Vec<String>>,
    /// `resource_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// `jwks_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Every other field, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ProtectedResourceMetadata {
    /// The scopes the resource supports, when it says.
    pub fn scopes(&self) -> Option<ScopeSet> {
        self.scopes_supported
            .as_ref()
            .and_then(|v| ScopeSet::from_strs(v).ok())
    }

    /// RFC 9728 §3.3 and the MCP spec: the `resource` must identify the server being
    /// accessed (identical after canonicalization, or a parent path on the same origin), or
    /// the client must not use the document. Returns the resource identifier to send as
    /// RFC 8707 `resource`.
    pub fn check_resource(
        &self,
        server: &crate::ResourceUrl,
    ) -> Result<crate::ResourceUrl, MetadataError> {
        let mismatch = || MetadataError::ResourceMismatch {
            expected: server.as_str().to_owned(),
            found: self.resource.clone(),
        };
        if self.resource.is_empty() {
            return Err(MetadataError::Missing("resource"));
        }
        let declared = crate::ResourceUrl::canonicalize(&self.resource).map_err(|_| mismatch())?;
        if !declared.covers(server) {
            return Err(mismatch());
        }
        // The identifier to send is the resource's own, byte for byte: the AS compares it
        // with what it knows as a string.
        crate::ResourceUrl::parse_exact(&self.resource).map_err(|_| mismatch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResourceUrl;

    fn asm(json: &str) -> AuthorizationServerMetadata {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn unknown_fields_are_kept() {
        let m = asm(r#"{"issuer":"https://a","token_endpoint":"https://a/t","x_new":{"k":1}}"#);
        assert_eq!(m.extra["x_new"]["k"], 1);
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(back["x_new"]["k"], 1);
    }

    #[test]
    fn issuer_must_match_exactly() {
        let m = asm(
            r#"{"issuer":"https://a.example/","authorization_endpoint":"https://a.example/auth","token_endpoint":"https://a.example/t"}"#,
        );
        assert!(m.validate("https://a.example/", true, false).is_ok());
        assert!(matches!(
            m.validate("https://a.example", true, false),
            Err(MetadataError::IssuerMismatch { .. })
        ));
    }

    #[test]
    fn endpoints_must_be_http() {
        let m = asm(
            r#"{"issuer":"https://a","authorization_endpoint":"javascript:alert(1)","token_endpoint":"https://a/t"}"#,
        );
        let err = m.validate("https://a", true, false).unwrap_err();
        assert!(matches!(
            err,
            MetadataError::BadEndpoint {
                field: "authorization_endpoint",
                ..
            }
        ));
        let m = asm(
            r#"{"issuer":"https://a","authorization_endpoint":"http://evil.example/a","token_endpoint":"https://a/t"}"#,
        );
        assert!(m.validate("https://a", true, false).is_err());
        assert!(m.validate("https://a", true, true).is_ok());
    }

    #[test]
    fn defaults() {
        let m = asm(r#"{"issuer":"https://a"}"#);
        assert!(m.supports_grant("authorization_code"));
        assert!(!m.supports_grant("refresh_token"));
        assert_eq!(m.auth_methods(), vec![AuthMethod::ClientSecretBasic]);
        assert!(!m.supports_s256());
        assert!(!m.sends_iss());
    }

    #[test]
    fn prm_resource_check() {
        let server = ResourceUrl::canonicalize("https://mcp.example.com/mcp").unwrap();
        let prm: ProtectedResourceMetadata = serde_json::from_str(
            r#"{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://as"]}"#,
        )
        .unwrap();
        assert_eq!(
            prm.check_resource(&server).unwrap().as_str(),
            "https://mcp.example.com/mcp"
        );
        let prm: ProtectedResourceMetadata =
            serde_json::from_str(r#"{"resource":"https://evil.example.com/mcp"}"#).unwrap();
        assert!(matches!(
            prm.check_resource(&server),
            Err(MetadataError::ResourceMismatch { .. })
        ));
    }
}
