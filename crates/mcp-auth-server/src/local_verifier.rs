//! Feature `resource`: a [`TokenVerifier`] for a protected MCP endpoint served by the same
//! process as this authorization server — the signature and claims checked with
//! [`Keys::verify`](crate::Keys::verify), then the revocation list; no JWKS round trip.

use std::sync::Arc;
use std::time::Duration;

use mcp_auth_resource::{Claims, TokenVerifier, VerifyError};

use crate::store::Store;
use crate::{AuthorizationServer, Keys};

/// Verifies this server's own access tokens for one audience.
pub struct LocalVerifier {
    keys: Keys,
    store: Arc<dyn Store>,
    tenant: String,
    issuer: String,
    audience: String,
    cache_ttl: Duration,
}

impl LocalVerifier {
    /// For tokens `server` issued for `audience`. The resource server caches a verified token
    /// for 5 s, which bounds how long a revoked token is still accepted.
    pub fn new(server: &AuthorizationServer, audience: impl Into<String>) -> Self {
        let s = server.state();
        Self {
            keys: s.keys.clone(),
            store: s.store.clone(),
            tenant: s.config.tenant.clone(),
            issuer: s.config.issuer.clone(),
            audience: audience.into(),
            cache_ttl: Duration::from_secs(5),
        }
    }
}

#[async_trait::async_trait]
impl TokenVerifier for LocalVerifier {
    async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let c = self
            .keys
            .verify(token, &self.issuer, Some(&self.audience))
            .await
            .ok_or_else(|| {
                VerifyError::Rejected("not a valid access token for this server".into())
            })?;
        if crate::handlers::access_revoked(self.store.as_ref(), &self.tenant, &c)
            .await
            .map_err(|e| VerifyError::Backend(Box::new(e)))?
        {
            return Err(VerifyError::Rejected("the token was revoked".into()));
        }
        Ok(Claims {
            subject: c.sub,
            client_id: Some(c.client_id),
            scopes: c.scope.parse().unwrap_or_default(),
            issuer: c.iss,
            audience: vec![c.aud],
            expires_at: Some(c.exp),
            jti: Some(c.jti),
            // The DPoP binding (RFC 9449 §6.1), which the resource layer enforces.
            extra: match c.cnf {
                Some(cnf) => {
                    let mut m = serde_json::Map::new();
                    m.insert("cnf".into(), serde_json::json!({"jkt": cnf.jkt}));
                    m
                }
                None => serde_json::Map::new(),
            },
        })
    }

    fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }
}
