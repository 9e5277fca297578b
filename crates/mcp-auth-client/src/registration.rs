//! Obtaining a client identity at an authorization server, in the MCP spec's order of
//! preference (2025-11-25 "Client Registration Approaches"): pre-registered credentials, then
//! a client ID metadata document when the AS accepts them, then dynamic registration
//! (RFC 7591).

use mcp_auth_types::{AuthMethod, ClientInformation, ClientMetadata, ClientSecret, SecretString};

use crate::discovery::Discovered;
use crate::error::{Error, Result, Step};
use crate::http::Http;
use crate::store::{ClientRecord, Registration, now_secs};

/// Credentials the user already has for an authorization server.
#[derive(Debug, Clone, Default)]
pub struct PreRegistered {
    /// `client_id`
    pub client_id: String,
    /// `client_secret`, for confidential clients.
    pub client_secret: Option<ClientSecret>,
    /// Force a token endpoint auth method; otherwise chosen from the AS metadata.
    pub auth_method: Option<AuthMethod>,
    /// PEM private key for `private_key_jwt` (RFC 7523).
    pub private_key_pem: Option<SecretString>,
    /// JWS algorithm for the key (default ES256).
    pub signing_alg: Option<String>,
    /// The issuer these credentials belong to. When set, they are only ever sent to that
    /// authorization server: a server that names another AS gets a metadata document or a
    /// dynamic registration instead, never this secret.
    pub issuer: Option<String>,
}

/// Who the client says it is.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// Pre-registered credentials (used first).
    pub pre_registered: Option<PreRegistered>,
    /// The URL of this client's metadata document, used as `client_id` when the AS
    /// advertises `client_id_metadata_document_supported`.
    pub metadata_document_url: Option<String>,
    /// `client_name` for dynamic registration.
    pub client_name: String,
    /// `client_uri`
    pub client_uri: Option<String>,
    /// `software_id`
    pub software_id: Option<String>,
    /// `software_version`
    pub software_version: Option<String>,
}

impl Default for ClientIdentity {
    fn default() -> Self {
        Self {
            pre_registered: None,
            metadata_document_url: None,
            client_name: "mcp-auth".into(),
            client_uri: None,
            software_id: Some("mcp-auth".into()),
            software_version: Some(env!("CARGO_PKG_VERSION").into()),
        }
    }
}

/// Picks the token endpoint auth method for a client that has a secret (or a key), from what
/// the AS accepts (RFC 8414 `token_endpoint_auth_methods_supported`, default
/// `client_secret_basic`).
pub fn choose_auth_method(supported: &[AuthMethod], has_secret: bool, has_key: bool) -> AuthMethod {
    let ok = |m: &AuthMethod| supported.contains(m);
    if has_key && ok(&AuthMethod::PrivateKeyJwt) {
        return AuthMethod::PrivateKeyJwt;
    }
    if has_secret {
        for m in [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost] {
            if ok(&m) {
                return m;
            }
        }
        if has_key {
            return AuthMethod::PrivateKeyJwt;
        }
        return AuthMethod::ClientSecretBasic;
    }
    if has_key {
        return AuthMethod::PrivateKeyJwt;
    }
    AuthMethod::None
}

/// Returns a usable client identity for the discovered AS, reusing `stored` when it was
/// issued by this issuer and still fits. `redirect_uri` is `None` for grants without one.
pub async fn ensure_client(
    http: &Http,
    disc: &Discovered,
    identity: &ClientIdentity,
    stored: Option<&ClientRecord>,
    redirect_uri: Option<&str>,
    scope: Option<&str>,
) -> Result<ClientRecord> {
    let supported = disc.metadata.auth_methods();
    let pre = identity.pre_registered.as_ref().filter(|p| {
        let fits = p.issuer.as_deref().is_none_or(|i| i == disc.issuer);
        if !fits {
            tracing::warn!(
                issuer = %disc.issuer,
                "the pre-registered client belongs to another authorization server; not using it"
            );
        }
        fits
    });
    if let Some(pre) = pre {
        let auth_method = pre.auth_method.clone().unwrap_or_else(|| {
            choose_auth_method(
                &supported,
                pre.client_secret.is_some(),
                pre.private_key_pem.is_some(),
            )
        });
        return Ok(ClientRecord {
            issuer: disc.issuer.clone(),
            client_id: pre.client_id.clone(),
            client_secret: pre.client_secret.clone(),
            client_secret_expires_at: None,
            auth_method,
            private_key_pem: pre.private_key_pem.clone(),
            signing_alg: pre.signing_alg.clone(),
            redirect_uri: redirect_uri.map(str::to_owned),
            registration: Registration::PreRegistered,
            registration_access_token: None,
            registration_client_uri: None,
        });
    }

    if let Some(c) = stored {
        // Credentials are bound to the issuer that issued them (MCP 2026-07-28): a server
        // that moved to another AS gets a new registration.
        let same_issuer = c.issuer == disc.issuer;
        let redirect_ok = c.registration != Registration::Dynamic
            || redirect_uri.is_none()
            || c.redirect_uri.as_deref() == redirect_uri;
        let secret_ok = !matches!(c.client_secret_expires_at, Some(t) if t != 0 && t <= now_secs());
        let cimd_still = c.registration != Registration::MetadataDocument
            || identity.metadata_document_url.as_deref() == Some(c.client_id.as_str());
        if same_issuer
            && redirect_ok
            && secret_ok
            && cimd_still
            && c.registration != Registration::PreRegistered
        {
            return Ok(c.clone());
        }
        tracing::debug!(
            same_issuer,
            redirect_ok,
            secret_ok,
            "stored client identity no longer fits; obtaining a new one"
        );
    }

    if let Some(url) = &identity.metadata_document_url
        && disc.metadata.supports_client_id_metadata_document()
    {
        return Ok(ClientRecord {
            issuer: disc.issuer.clone(),
            client_id: url.clone(),
            client_secret: None,
            client_secret_expires_at: None,
            auth_method: AuthMethod::None,
            private_key_pem: None,
            signing_alg: None,
            redirect_uri: redirect_uri.map(str::to_owned),
            registration: Registration::MetadataDocument,
            registration_access_token: None,
            registration_client_uri: None,
        });
    }

    let Some(endpoint) = disc.metadata.registration_endpoint.clone() else {
        return Err(Error::NoRegistration {
            issuer: disc.issuer.clone(),
        });
    };
    register(http, disc, identity, &endpoint, redirect_uri, scope).await
}

async fn register(
    http: &Http,
    disc: &Discovered,
    identity: &ClientIdentity,
    endpoint: &str,
    redirect_uri: Option<&str>,
    scope: Option<&str>,
) -> Result<ClientRecord> {
    let supported = disc.metadata.auth_methods();
    // A native app cannot keep a secret (RFC 8252 §8.5): ask to be a public client when the AS
    // allows it, else take whatever secret-based method it offers.
    let method = if disc
        .metadata
        .token_endpoint_auth_methods_supported
        .is_none()
        || supported.contains(&AuthMethod::None)
    {
        AuthMethod::None
    } else {
        choose_auth_method(&supported, true, false)
    };
    // Without a redirect URI (the device flow) there is no code grant to register; with one,
    // the same client may log in by the device flow later (another terminal, no browser).
    let mut grant_types = Vec::new();
    if redirect_uri.is_some() {
        grant_types.push("authorization_code".to_owned());
    }
    if disc.metadata.supports_grant("refresh_token") {
        grant_types.push("refresh_token".to_owned());
    }
    if disc.metadata.device_authorization_endpoint.is_some() {
        grant_types.push(crate::device::DEVICE_CODE_GRANT.to_owned());
    }
    let loopback = redirect_uri.is_none_or(|u| {
        url::Url::parse(u)
            .map(|u| mcp_auth_types::is_loopback_url(&u))
            .unwrap_or(false)
    });
    let body = ClientMetadata {
        redirect_uris: redirect_uri.map(|u| vec![u.to_owned()]).unwrap_or_default(),
        token_endpoint_auth_method: Some(method.clone()),
        response_types: if redirect_uri.is_some() {
            vec!["code".into()]
        } else {
            Vec::new()
        },
        grant_types,
        application_type: Some(if loopback { "native" } else { "web" }.into()),
        client_name: Some(identity.client_name.clone()),
        client_uri: identity.client_uri.clone(),
        software_id: identity.software_id.clone(),
        software_version: identity.software_version.clone(),
        scope: scope.map(str::to_owned),
        ..Default::default()
    };
    let req = http.post(endpoint)?.json(&body);
    let info: ClientInformation = http.send_oauth(Step::Registration, req, endpoint).await?;
    let auth_method = info.metadata.token_endpoint_auth_method.clone().unwrap_or(
        if info.client_secret.is_some() && method == AuthMethod::None {
            AuthMethod::ClientSecretBasic
        } else {
            method
        },
    );
    tracing::info!(issuer = %disc.issuer, client_id = %info.client_id, "registered client");
    Ok(ClientRecord {
        issuer: disc.issuer.clone(),
        client_id: info.client_id.as_str().to_owned(),
        client_secret: info.client_secret,
        client_secret_expires_at: info.client_secret_expires_at,
        auth_method,
        private_key_pem: None,
        signing_alg: None,
        redirect_uri: redirect_uri.map(str::to_owned),
        registration: Registration::Dynamic,
        registration_access_token: info.registration_access_token,
        registration_client_uri: info.registration_client_uri,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_method_choice() {
        use AuthMethod::*;
        assert_eq!(
            choose_auth_method(&[None, ClientSecretPost], true, false),
            ClientSecretPost
        );
        assert_eq!(
            choose_auth_method(&[ClientSecretBasic, ClientSecretPost], true, false),
            ClientSecretBasic
        );
        assert_eq!(choose_auth_method(&[None], false, false), None);
        assert_eq!(
            choose_auth_method(&[PrivateKeyJwt], false, true),
            PrivateKeyJwt
        );
    }
}
