//! A [`reqwest_middleware::Middleware`] that makes any reqwest user an OAuth-enabled MCP
//! client: it attaches the token, and on `401` refreshes or logs in, on
//! `403 insufficient_scope` steps up, then replays the request.
//!
//! ```no_run
//! # async fn demo(client: mcp_auth_client::OAuthClient) -> Result<(), Box<dyn std::error::Error>> {
//! let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(mcp_auth_client::OAuthMiddleware::new(client, "https://mcp.example.com/mcp"))
//!     .build();
//! let resp = http.post("https://mcp.example.com/mcp").body("{}").send().await?;
//! # Ok(()) }
//! ```

use http::Extensions;
use mcp_auth_types::challenge::Challenge;
use reqwest::{Request, Response, StatusCode};
use reqwest_middleware::{Middleware, Next};

use crate::client::{OAuthClient, Token, challenge_of};
use crate::error::Error;

/// Attaches tokens for one MCP server and runs the OAuth dance when the server asks.
#[derive(Debug, Clone)]
pub struct OAuthMiddleware {
    client: OAuthClient,
    server: String,
    max_step_up: u32,
}

impl OAuthMiddleware {
    /// For requests to `server` (the MCP server URL; tokens are looked up under it).
    pub fn new(client: OAuthClient, server: impl Into<String>) -> Self {
        Self {
            client,
            server: server.into(),
            max_step_up: 3,
        }
    }

    /// Bounds the authorizations one request may trigger (default 3: the 401 and the
    /// step-ups together), so a server that keeps asking for scopes it will never grant
    /// cannot loop the user through the browser.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_step_up = n;
        self
    }
}

fn mw(e: Error) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(e)
}

/// Whether any `DPoP` challenge of the response is `error="use_dpop_nonce"` (RFC 9449 §9).
fn asks_for_dpop_nonce(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| mcp_auth_types::parse_www_authenticate(v).ok())
        .flatten()
        .any(|c| c.is_scheme("DPoP") && c.error() == Some("use_dpop_nonce"))
}

fn insufficient_scope(resp: &Response) -> Option<Challenge> {
    (resp.status() == StatusCode::FORBIDDEN)
        .then(|| challenge_of(resp.headers()))
        .flatten()
        .filter(|c| c.error() == Some("insufficient_scope"))
}

#[async_trait::async_trait]
impl Middleware for OAuthMiddleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        // A stored token if there is one; otherwise go without and let the 401 drive
        // discovery, as the spec's flow starts.
        let mut token: Option<Token> = match self.client.token(&self.server).await {
            Ok(t) => Some(t),
            Err(Error::LoginRequired { .. }) => None,
            Err(e) => return Err(mw(e)),
        };
        let mut refreshed = false;
        let mut nonce_retried = false;
        let mut attempts = 0u32;
        loop {
            let mut attempt = req.try_clone().ok_or_else(|| {
                mw(Error::Config(
                    "the request body cannot be replayed after authorization (use a buffered body)"
                        .into(),
                ))
            })?;
            if let Some(t) = &token {
                let value =
                    http::HeaderValue::from_str(&t.authorization_header()).map_err(|_| {
                        mw(Error::Config(
                            "the access token is not a valid header value".into(),
                        ))
                    })?;
                let mut value = value;
                value.set_sensitive(true);
                attempt
                    .headers_mut()
                    .insert(http::header::AUTHORIZATION, value);
                // A DPoP-bound token goes with a fresh proof of the key (RFC 9449 §7.1).
                if let Some(proof) = self
                    .client
                    .dpop_proof(t, attempt.method().as_str(), attempt.url().as_str())
                    .map_err(mw)?
                {
                    let proof = http::HeaderValue::from_str(&proof).map_err(|_| {
                        mw(Error::Config("the DPoP proof is not a header value".into()))
                    })?;
                    attempt.headers_mut().insert("dpop", proof);
                }
            }
            let url = attempt.url().as_str().to_owned();
            let resp = next.clone().run(attempt, extensions).await?;
            let fresh_nonce = self.client.dpop_nonce_from(&url, resp.headers());
            if resp.status() == StatusCode::UNAUTHORIZED
                && fresh_nonce
                && !nonce_retried
                && token.as_ref().is_some_and(Token::is_dpop)
                && asks_for_dpop_nonce(resp.headers())
            {
                // RFC 9449 §9: the resource wants a nonce; the same token, a new proof.
                nonce_retried = true;
                continue;
            }
            if resp.status() == StatusCode::UNAUTHORIZED {
                if refreshed {
                    return Ok(resp);
                }
                refreshed = true;
                attempts += 1;
                let challenge = challenge_of(resp.headers());
                let rejected = token
                    .as_ref()
                    .map(|t| t.record.access_token.secret().to_owned());
                token = Some(
                    self.client
                        .on_unauthorized(&self.server, rejected.as_deref(), challenge)
                        .await
                        .map_err(mw)?,
                );
                continue;
            }
            if let Some(challenge) = insufficient_scope(&resp) {
                if attempts >= self.max_step_up {
                    return Err(mw(Error::StepUpExhausted {
                        attempts,
                        scopes: challenge.param("scope").unwrap_or("").to_owned(),
                    }));
                }
                attempts += 1;
                let rejected = token
                    .as_ref()
                    .map(|t| t.record.access_token.secret().to_owned());
                token = Some(
                    self.client
                        .step_up(&self.server, rejected.as_deref(), challenge)
                        .await
                        .map_err(mw)?,
                );
                continue;
            }
            return Ok(resp);
        }
    }
}
