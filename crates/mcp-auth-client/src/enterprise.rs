//! Enterprise-managed authorization (the MCP extension; cross-app access, SEP-990): the
//! user's ID token from the company's identity provider is exchanged there (RFC 8693) for
//! an *identity assertion JWT authorization grant* (ID-JAG) meant for the MCP server's
//! authorization server, which the client then redeems with the JWT-bearer grant
//! (RFC 7523 §2.1). No browser, no consent screen per server: the company's IdP decides.

use mcp_auth_types::token::basic_auth_header;
use mcp_auth_types::{ClientId, ClientSecret, ScopeSet, SecretString};
use serde::Deserialize;

use crate::discovery::fetch_as_metadata;
use crate::error::{Error, Result, Step};
use crate::http::Http;

/// RFC 8693 token exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The requested token type: an identity assertion JWT authorization grant.
pub const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";
/// The subject token type: an OpenID Connect ID token.
pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

/// The enterprise identity provider and the user's ID token from it.
#[derive(Clone)]
pub struct EnterpriseIdp {
    /// The IdP's issuer: its token endpoint is discovered from its metadata unless
    /// [`Self::token_endpoint`] is given.
    pub issuer: Option<String>,
    /// The IdP's token endpoint (RFC 8693 exchange).
    pub token_endpoint: Option<String>,
    /// This client's ID at the IdP.
    pub client_id: String,
    /// Its secret there, for a confidential client (sent with HTTP Basic).
    pub client_secret: Option<ClientSecret>,
    /// Where the user's ID token comes from.
    pub id_token: IdTokenSource,
}

/// Where the user's ID token for the exchange comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdTokenSource {
    /// A file, read at every exchange (single sign-on tooling refreshes it in place).
    File(std::path::PathBuf),
    /// An environment variable, read at every exchange.
    Env(String),
    /// This client signs the user in at the identity provider itself (OpenID Connect
    /// authorization code flow with PKCE, in the browser; [`crate::sso`]), and keeps the
    /// session in the credential store: the ID token is reused while it is valid, then
    /// refreshed with the IdP's refresh token, and only then is the user sent to the browser
    /// again (or, without interaction, [`crate::Error::LoginRequired`]). Needs
    /// [`EnterpriseIdp::issuer`].
    Login {
        /// The scopes asked for (`openid` is always included).
        scopes: ScopeSet,
    },
}

impl std::fmt::Debug for EnterpriseIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnterpriseIdp")
            .field("issuer", &self.issuer)
            .field("token_endpoint", &self.token_endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("id_token", &self.id_token)
            .finish()
    }
}

#[derive(Deserialize)]
struct ExchangeResponse {
    access_token: SecretString,
    issued_token_type: Option<String>,
}

impl EnterpriseIdp {
    /// The IdP's token endpoint: the configured one, or its metadata's.
    pub(crate) async fn endpoint(&self, http: &Http, allow_http: bool) -> Result<String> {
        if let Some(e) = &self.token_endpoint {
            return Ok(e.clone());
        }
        let issuer = self.issuer.as_deref().ok_or_else(|| {
            Error::Config(
                "enterprise-managed authorization needs the identity provider's issuer or token endpoint"
                    .into(),
            )
        })?;
        let (meta, _) = fetch_as_metadata(http, issuer, allow_http).await?;
        meta.token_endpoint.ok_or_else(|| {
            Error::Config(format!(
                "the identity provider {issuer} names no token_endpoint"
            ))
        })
    }

    /// Exchanges the user's ID token `id_token` (from [`Self::id_token`]; see
    /// [`crate::OAuthClient`], which also runs the [`IdTokenSource::Login`] sign-in) for an
    /// ID-JAG for `audience` (the MCP server's authorization server issuer) and `resource`
    /// (RFC 8693 §2.1; SEP-990).
    pub async fn identity_assertion(
        &self,
        http: &Http,
        id_token: &SecretString,
        audience: &str,
        resource: Option<&str>,
        scope: Option<&ScopeSet>,
        allow_http: bool,
    ) -> Result<SecretString> {
        let endpoint = self.endpoint(http, allow_http).await?;
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", TOKEN_EXCHANGE.into()),
            ("requested_token_type", ID_JAG.into()),
            ("audience", audience.into()),
            ("subject_token", id_token.secret().to_owned()),
            ("subject_token_type", ID_TOKEN.into()),
        ];
        if let Some(r) = resource {
            form.push(("resource", r.into()));
        }
        if let Some(s) = scope.filter(|s| !s.is_empty()) {
            form.push(("scope", s.to_string()));
        }
        let mut req = http.post(&endpoint)?;
        match &self.client_secret {
            Some(secret) => {
                let id = ClientId::new(self.client_id.clone())
                    .map_err(|e| Error::Config(format!("the identity provider client id: {e}")))?;
                req = req.header(http::header::AUTHORIZATION, basic_auth_header(&id, secret));
            }
            None => form.push(("client_id", self.client_id.clone())),
        }
        tracing::info!(idp_token_endpoint = %endpoint, %audience, resource = resource.unwrap_or(""),
            "exchanging the ID token for an identity assertion grant (RFC 8693)");
        let resp: ExchangeResponse = http
            .send_oauth(Step::TokenExchange, req.form(&form), &endpoint)
            .await?;
        if resp.issued_token_type.as_deref() != Some(ID_JAG) {
            return Err(Error::InvalidResponse {
                step: Step::TokenExchange,
                url: endpoint,
                message: format!(
                    "the identity provider issued {:?}, not an identity assertion grant ({ID_JAG})",
                    resp.issued_token_type.unwrap_or_default()
                ),
            });
        }
        let jag = resp.access_token;
        if jag.secret().split('.').count() != 3 {
            return Err(Error::InvalidResponse {
                step: Step::TokenExchange,
                url: endpoint,
                message: "the identity assertion grant is not a JWT".into(),
            });
        }
        Ok(jag)
    }
}
