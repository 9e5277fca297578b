//! Client registration: RFC 7591 dynamic registration and client ID metadata documents.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{AuthMethod, ClientId, ClientSecret};

/// RFC 7591 §2 client metadata: the body of a registration request, and (with `client_id`
/// set to its own URL) a client ID metadata document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientMetadata {
    /// `client_id`: only in a client ID metadata document, where it is the document's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `redirect_uris`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
    /// `token_endpoint_auth_method`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<AuthMethod>,
    /// `grant_types`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grant_types: Vec<String>,
    /// `response_types`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_types: Vec<String>,
    /// `application_type` (OpenID Connect Dynamic Registration §2): `native` for clients
    /// that redirect to loopback, `web` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_type: Option<String>,
    /// `client_name`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// `client_uri`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    /// `logo_uri`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    /// `scope`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `software_id`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    /// `software_version`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    /// `jwks_uri`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// `jwks`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Value>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// RFC 7591 §3.2.1 client information response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientInformation {
    /// `client_id` (required).
    pub client_id: ClientId,
    /// `client_secret`, for confidential clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<ClientSecret>,
    /// `client_id_issued_at` (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_issued_at: Option<u64>,
    /// `client_secret_expires_at`; 0 means never (RFC 7591 §3.2.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<u64>,
    /// `registration_access_token` (RFC 7592).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_access_token: Option<crate::SecretString>,
    /// `registration_client_uri` (RFC 7592).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_client_uri: Option<String>,
    /// The registered metadata as the server echoed it (it may differ from the request).
    #[serde(flatten)]
    pub metadata: ClientMetadata,
}

impl ClientInformation {
    /// Whether the client secret has expired at `now` (seconds since the epoch).
    pub fn secret_expired(&self, now: u64) -> bool {
        matches!(self.client_secret_expires_at, Some(t) if t != 0 && t <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_response_keeps_unknown_fields() {
        let r: ClientInformation = serde_json::from_str(
            r#"{"client_id":"c1","client_secret":"s","client_secret_expires_at":0,
                "redirect_uris":["http://127.0.0.1:3/cb"],"token_endpoint_auth_method":"client_secret_post",
                "vendor_thing":true}"#,
        )
        .unwrap();
        assert_eq!(r.client_id.as_str(), "c1");
        assert_eq!(
            r.metadata.token_endpoint_auth_method,
            Some(AuthMethod::ClientSecretPost)
        );
        assert_eq!(r.metadata.extra["vendor_thing"], true);
        assert!(!r.secret_expired(1));
        assert!(!format!("{r:?}").contains("\"s\""));
    }

    #[test]
    fn request_omits_empty_fields() {
        let m = ClientMetadata {
            redirect_uris: vec!["http://127.0.0.1:1/cb".into()],
            application_type: Some("native".into()),
            ..Default::default()
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"redirect_uris":["http://127.0.0.1:1/cb"],"application_type":"native"})
        );
    }
}
